"""Benchmark of ingest on a real corpus: prints figures, asserts nothing about time.

    .venv/bin/python bench/ingest.py [--corpus DIR] [--jobs 2] [--json]

The corpus is Debian's ``drascula-music`` (31 Ogg Vorbis tracks, about 47 minutes of
44.1 kHz stereo; ``apt-get install -y drascula-music``), plus one deliberately broken
file (random bytes named ``.flac``). Everything goes into a fresh temporary data
directory, through the same code as ``cadenza ingest``. Prints:

1. throughput: tracks per second and seconds of audio per wall-clock second, with the
   CPU time of this process and of the encoders (children);
2. the measured bitrate of each quality tier (mean over files, and overall);
3. failures (the broken file must be among them, and nothing else);
4. checks: every track is found by searching its title, and every stored file's
   chunks verify against its signed manifest.

Exit status 0 if the checks pass and the broken file was reported, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cadenza import net
from cadenza.cli.ingest import ProgressPrinter
from cadenza.protocol import api
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.manifest import ManifestSigner, ManifestVerifier
from cadenza.protocol.noise import KeyPair
from cadenza.service.accounts import Accounts
from cadenza.service.catalog import MAX_SEARCH_LIMIT, Catalog, Track
from cadenza.service.db import Database
from cadenza.service.ingest import QUALITIES, ingest
from cadenza.service.keys import load_or_create_signing_key
from cadenza.service.serve import ServeConfig, run_service
from cadenza.service.storage import Storage

CORPUS = Path("/usr/share/scummvm/drascula/audio")


def bench(corpus: Path, jobs: int, quiet: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-ingest-") as tmp:
        data = Path(tmp) / "data"
        broken = Path(tmp) / "broken" / "broken.flac"
        broken.parent.mkdir(parents=True)
        broken.write_bytes(os.urandom(64 * 1024))

        data.mkdir()
        db = Database(data / "service.db")
        try:
            catalog = Catalog(db)
            storage = Storage(
                data / "storage",
                ManifestSigner(load_or_create_signing_key(data / "keys" / "signing.key")),
            )
            sources = sorted(corpus.iterdir())
            source_bytes = sum(p.stat().st_size for p in sources if p.is_file())
            progress = None if quiet else ProgressPrinter(sys.stderr)
            cpu_before = _cpu()
            report = ingest(
                [corpus, broken], storage=storage, catalog=catalog, progress=progress, jobs=jobs
            )
            cpu_after = _cpu()
            if progress is not None:
                progress.close()

            tiers: dict[int, list[float]] = {q.bitrate: [] for q in QUALITIES}
            tier_bytes = dict.fromkeys(tiers, 0)
            unsearchable: list[str] = []
            files_checked = 0
            bad_files: list[str] = []
            loudness = []
            for added in report.added:
                track = added.track
                seconds = track.duration_ms / 1000
                for ref in track.files:
                    tiers[ref.bitrate].append(ref.size * 8 / seconds / 1000)
                    tier_bytes[ref.bitrate] += ref.size
                    files_checked += 1
                    if not storage.verify(ref.file_id):
                        bad_files.append(ref.file_id)
                if not _searchable(catalog, track):
                    unsearchable.append(track.title)
                if track.loudness_lufs is not None:
                    loudness.append(track.loudness_lufs)
            # Idempotence: a second pass must find everything already there.
            again = ingest([corpus], storage=storage, catalog=catalog, jobs=jobs)
            Accounts(db).add_user("bench", "bench password")
        finally:
            db.close()
        # Streamable: every file of every track through a running access point, every chunk
        # checked against the signed manifest.
        streamed = trio.run(
            _stream_all, data, [ref.file_id for a in report.added for ref in a.track.files]
        )

    audio = report.audio_seconds
    failed = {str(p): reason for p, reason in report.failed}
    return {
        "corpus": str(corpus),
        "jobs": jobs,
        "cores": os.cpu_count(),
        "files": report.files,
        "added": len(report.added),
        "failed": failed,
        "audio_seconds": round(audio, 1),
        "wall_seconds": round(report.seconds, 2),
        "tracks_per_second": round(len(report.added) / report.seconds, 3),
        "audio_seconds_per_wall_second": round(audio / report.seconds, 1),
        "cpu_seconds": {
            "this_process": round(cpu_after[0] - cpu_before[0], 1),
            "encoders": round(cpu_after[1] - cpu_before[1], 1),
        },
        "source_kbps": round(source_bytes * 8 / audio / 1000, 1) if audio else None,
        "kbps": {
            str(bitrate): {
                "nominal": bitrate,
                "mean_over_files": round(statistics.fmean(rates), 1) if rates else None,
                "min": round(min(rates), 1) if rates else None,
                "max": round(max(rates), 1) if rates else None,
                "overall": round(tier_bytes[bitrate] * 8 / audio / 1000, 1) if audio else None,
            }
            for bitrate, rates in tiers.items()
        },
        "loudness_lufs": {
            "min": round(min(loudness), 1) if loudness else None,
            "median": round(statistics.median(loudness), 1) if loudness else None,
            "max": round(max(loudness), 1) if loudness else None,
        },
        "checks": {
            "broken_file_reported": str(broken) in failed,
            "only_the_broken_file_failed": list(failed) == [str(broken)],
            "searchable_by_title": f"{len(report.added) - len(unsearchable)}/{len(report.added)}",
            "unsearchable": unsearchable,
            "files_verified": f"{files_checked - len(bad_files)}/{files_checked}",
            "bad_files": bad_files,
            "second_pass_already_present": f"{len(again.already_present)}/{again.files}",
            "streamed_through_access_point": f"{streamed['ok']}/{streamed['files']}",
            "streamed_mb_per_s": streamed["mb_per_s"],
        },
        "ok": (
            list(failed) == [str(broken)]
            and not unsearchable
            and not bad_files
            and files_checked == len(QUALITIES) * len(report.added)
            and len(again.already_present) == len(report.added) == again.files
            and streamed["ok"] == streamed["files"]
        ),
    }


async def _stream_all(data: Path, file_ids: list[str]) -> dict[str, Any]:
    config = ServeConfig(data=data, listen=("127.0.0.1", 0), http=None, advertise=False)
    ok = 0
    nbytes = 0
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_service, config)
        identity = net.Identity(KeyPair.generate(), hello_payload("bench-ingest"))
        async with net.open_connection(
            "127.0.0.1", running.ap_address[1], identity=identity
        ) as conn:
            login = await conn.request(api.Login(username="bench", password="bench password"))
            assert isinstance(login, api.LoginOk)
            verifier = ManifestVerifier(
                [Ed25519PublicKey.from_public_bytes(k) for k in login.signing_keys]
            )
            t0 = time.perf_counter()
            for file_id in file_ids:
                reply = await conn.request(api.GetManifest(file_id))
                assert isinstance(reply, api.ManifestReply)
                manifest = verifier.verify(reply.manifest, file_id=file_id)
                seen = 0
                async with conn.open_channel() as ch:
                    await ch.send(api.GetChunks(file_id, 0, manifest.num_chunks), end=True)
                    async for item in ch:
                        assert isinstance(item, net.Bulk)
                        manifest.verify_chunk(item.index, item.data)
                        seen += 1
                        nbytes += len(item.data)
                ok += seen == manifest.num_chunks
            dt = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return {"ok": ok, "files": len(file_ids), "mb_per_s": round(nbytes / dt / 1e6, 1)}


def _searchable(catalog: Catalog, track: Track) -> bool:
    results, _ = catalog.search("track", track.title, limit=MAX_SEARCH_LIMIT)
    return any(isinstance(r, Track) and r.id == track.id for r in results)


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def print_text(r: dict[str, Any]) -> None:
    print(f"corpus: {r['corpus']} ({r['files'] - 1} files + 1 broken), jobs {r['jobs']}")
    print(
        f"  {r['added']} tracks, {r['audio_seconds']:.0f} s of audio in {r['wall_seconds']} s"
        f" on {r['cores']} cores"
    )
    print(f"  {r['tracks_per_second']} tracks/s, {r['audio_seconds_per_wall_second']}x real time")
    cpu = r["cpu_seconds"]
    print(f"  CPU: {cpu['this_process']} s in this process, {cpu['encoders']} s in oggenc")
    print(f"measured bitrates (source: {r['source_kbps']} kbps):")
    for tier in r["kbps"].values():
        print(
            f"  nominal {tier['nominal']:>3} kbps: mean over files {tier['mean_over_files']}"
            f" kbps (min {tier['min']}, max {tier['max']}), overall {tier['overall']} kbps"
        )
    lufs = r["loudness_lufs"]
    print(f"loudness: {lufs['min']} .. {lufs['max']} LUFS (median {lufs['median']})")
    print("failures:")
    for path, reason in r["failed"].items():
        print(f"  {path}: {reason}")
    c = r["checks"]
    print("checks:")
    print(f"  broken file reported and skipped: {c['broken_file_reported']}")
    print(f"  nothing else failed: {c['only_the_broken_file_failed']}")
    print(f"  searchable by title: {c['searchable_by_title']}")
    print(f"  files whose chunks verify against the manifest: {c['files_verified']}")
    print(f"  second pass, already present: {c['second_pass_already_present']}")
    print(
        f"  streamed through the access point, every chunk verified: "
        f"{c['streamed_through_access_point']} files ({c['streamed_mb_per_s']} MB/s)"
    )
    print("OK" if r["ok"] else "CHECKS FAILED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help=f"default {CORPUS}")
    parser.add_argument("--jobs", type=int, default=2, help="files prepared at once (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if not args.corpus.is_dir() or not any(args.corpus.iterdir()):
        print(
            f"no corpus in {args.corpus}: install it with apt-get install -y drascula-music",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    results = bench(args.corpus, args.jobs, quiet=args.json)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_text(results)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
