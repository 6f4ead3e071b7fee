"""Benchmark of peer-assisted streaming: a service and N speakers in network namespaces,
Zipf-popular tracks played in sessions, with peers and (same workload) without; prints figures,
asserts nothing.

    .venv/bin/python bench/p2p.py [--speakers 8] [--plays 6] [--tracks 16] [--seed 1] [--json]

Needs root (ip netns, tc), and Debian's drascula-music (real music: 44.1 kHz Ogg Vorbis); the
``--tracks`` shortest of its 31 tracks make the catalogue (7 s to about 80 s for 16, so a run
plays whole tracks in a few minutes). Host 0 runs ``cadenza serve``; hosts 1..N run
``cadenzad`` playing to ALSA ``null`` paced by the clock (real-time playback, real underruns).

Links are shaped with ``tc ... tbf`` (bandwidth only): this kernel has no ``sch_netem``, so no
added delay or loss; round trips are the namespaces' own (well under a millisecond). Each
speaker's uplink and downlink are drawn from home-broadband-like values; the service's
uplink is capped too. Each speaker runs one session of ``--plays`` plays: the first play a
Zipf draw (s = 1) over the catalogue, then 61% of plays follow on (the next track, as in an
album or playlist) and 39% are new Zipf draws (the paper's split); a play lasts the whole
track, except that 20% are skipped after a random part of it. Speakers start a few seconds
apart. Caches start empty in both runs; the peers-disabled run uses ``[p2p] enabled = false``.

Per play: start latency (the speaker's own figure: play request to first sample written),
underruns during it. Per run: bytes by source (cache, peers, service) over all speakers,
which mechanisms found peers per streamed track, and the wire overhead (bytes received
beyond the music).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cadenza.sim.lab import bench_plan  # noqa: E402  (its FOLLOW_ON, SKIP, rates)
from netns import Lan, unavailable_reason  # noqa: E402
from p2plab import P2PLab, Speaker  # noqa: E402

DRASCULA = Path("/usr/share/scummvm/drascula/audio")
UPLINKS = ["1mbit", "2mbit", "4mbit", "8mbit"]
DOWNLINKS = ["8mbit", "16mbit", "30mbit", "50mbit"]
SERVICE_UPLINK = "20mbit"


@dataclass
class Play:
    track: str
    seconds: float  # how long to let it play (the whole track unless skipped)


@dataclass
class PlayResult:
    speaker: int
    track: str
    latency_ms: float | None
    underruns: int


@dataclass
class RunResult:
    mode: str
    plays: list[PlayResult] = field(default_factory=list)
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    found_by: dict[str, int] = field(default_factory=dict)
    streamed_tracks: int = 0
    wire_in: int = 0
    music_in: int = 0
    uploaded: int = 0
    wall_s: float = 0.0


def pick_music(n: int, folder: Path) -> Path:
    """The ``n`` shortest drascula tracks, copied to ``folder`` (ingest reads a folder)."""
    import mutagen

    lengths = []
    for path in sorted(DRASCULA.glob("*.ogg")):
        info = mutagen.File(path)
        lengths.append((info.info.length, path))
    lengths.sort()
    folder.mkdir(parents=True)
    for _, path in lengths[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def workload(
    names: list[str], durations: dict[str, float], speakers: int, plays: int, seed: int
) -> dict[int, list[Play]]:
    # The draw lives beside its simulated twin (cadenza.sim.lab), so both use the same plan.
    plan = bench_plan(names, durations, speakers, plays, seed)
    return {s: [Play(track, seconds) for track, seconds in session] for s, session in plan.items()}


def run_session(speaker: Speaker, lab: P2PLab, plays: list[Play], out: list[PlayResult]) -> None:
    state = speaker.state()
    for play in plays:
        before_latencies = state["start_latency_ms"]
        before_underruns = state["underruns"]
        speaker.play([lab.tracks[play.track].uri])
        deadline = time.monotonic() + 60
        latency = None
        while time.monotonic() < deadline:
            state = speaker.state()
            if state["start_latency_ms"] != before_latencies:
                latency = state["start_latency_ms"][-1]
                break
            time.sleep(0.05)
        end = time.monotonic() + play.seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            state = speaker.state()
            if state["status"] == "stopped":
                break
        state = speaker.state()
        out.append(
            PlayResult(speaker.index, play.track, latency, state["underruns"] - before_underruns)
        )


def run(
    mode: str, args: argparse.Namespace, data: Path, music: Path, plan: dict[int, list[Play]]
) -> RunResult:
    result = RunResult(mode)
    rng = random.Random(args.seed)
    with (
        tempfile.TemporaryDirectory(prefix=f"cadenza-p2p-{mode}-") as tmp,
        Lan(args.speakers + 1) as lan,
    ):
        lab = P2PLab(lan, Path(tmp), music)
        shutil.copytree(data, lab.data)
        (Path(tmp) / "password").write_text((data.parent / "password").read_text())
        lab.load_tracks()
        lab.start_service()
        lan.hosts[0].limit_rate(SERVICE_UPLINK)
        for host in lan.hosts[1:]:
            host.limit_rate(rng.choice(UPLINKS))
            lan.limit_download(host, rng.choice(DOWNLINKS))
        p2p = "" if mode == "peers" else "enabled = false"
        speakers = [
            lab.start_speaker(i, device="null", p2p=p2p, streaming="")
            for i in range(1, args.speakers + 1)
        ]
        started = time.monotonic()
        threads = []
        for n, speaker in enumerate(speakers):
            out: list[PlayResult] = []

            def go(
                speaker: Speaker = speaker, out: list[PlayResult] = out, delay: float = n * 3.0
            ) -> None:
                time.sleep(delay)
                speaker.host.call(run_session, speaker, lab, plan[speaker.index], out)
                result.plays.extend(out)

            thread = threading.Thread(target=go)
            thread.start()
            threads.append(thread)
            print(f"  speaker {speaker.index}: {len(plan[speaker.index])} plays", flush=True)
        for thread in threads:
            thread.join()
        result.wall_s = time.monotonic() - started
        for speaker in speakers:
            state = speaker.state()
            for source, n in state["bytes_by_source"].items():
                result.bytes_by_source[source] = result.bytes_by_source.get(source, 0) + n
            for entry in state["tracks_streamed"]:
                if entry["bytes_by_source"].get("cache"):
                    continue
                result.streamed_tracks += 1
                found = entry["peers_found_by"]
                key = " + ".join(sorted(k for k, v in found.items() if v)) or "none"
                result.found_by[key] = result.found_by.get(key, 0) + 1
            result.wire_in += state["traffic"]["wire_in"]
            result.music_in += state["traffic"]["music_in"]
            if state["p2p"]:
                result.uploaded += state["p2p"]["uploaded"]
        lab.close()
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


def summary(r: RunResult) -> dict[str, Any]:
    lat = [p.latency_ms for p in r.plays if p.latency_ms is not None]
    total = sum(r.bytes_by_source.values()) or 1
    return {
        "plays": len(r.plays),
        "latency_p50_ms": round(pct(lat, 50), 1),
        "latency_p75_ms": round(pct(lat, 75), 1),
        "latency_p90_ms": round(pct(lat, 90), 1),
        "no_start": sum(1 for p in r.plays if p.latency_ms is None),
        "underruns_per_play": round(sum(p.underruns for p in r.plays) / max(1, len(r.plays)), 3),
        "plays_with_underrun": sum(1 for p in r.plays if p.underruns),
        "share_cache": round(100 * r.bytes_by_source.get("cache", 0) / total, 1),
        "share_peers": round(100 * r.bytes_by_source.get("peer", 0) / total, 1),
        "share_service": round(100 * r.bytes_by_source.get("service", 0) / total, 1),
        "bytes_total": total,
        "overhead_pct": round(100 * (r.wire_in - r.music_in) / max(1, r.music_in), 2),
        "found_by": r.found_by,
        "streamed_tracks": r.streamed_tracks,
        "uploaded": r.uploaded,
        "wall_s": round(r.wall_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--plays", type=int, default=6)
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"bench/p2p: {reason}", file=sys.stderr)
        return 2
    if not DRASCULA.exists():
        print("bench/p2p: needs Debian's drascula-music", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cadenza-p2p-") as tmp:
        base = Path(tmp)
        music = pick_music(args.tracks, base / "music")
        print(f"ingesting {args.tracks} drascula tracks ...", flush=True)
        data = P2PLab.ingest(base, music, args.speakers + 1)
        names, durations = P2PLab.catalogue(data)
        plan = workload(names, durations, args.speakers, args.plays, args.seed)
        results = {}
        for mode in ("peers", "no-peers"):
            print(f"run with {mode} ...", flush=True)
            results[mode] = summary(run(mode, args, data, music, plan))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    rows = [
        ("plays", "plays"),
        ("playback latency p50 (ms)", "latency_p50_ms"),
        ("playback latency p75 (ms)", "latency_p75_ms"),
        ("playback latency p90 (ms)", "latency_p90_ms"),
        ("plays that never started", "no_start"),
        ("underruns per play", "underruns_per_play"),
        ("plays with an underrun", "plays_with_underrun"),
        ("bytes from cache (%)", "share_cache"),
        ("bytes from peers (%)", "share_peers"),
        ("bytes from service (%)", "share_service"),
        ("music bytes in all", "bytes_total"),
        ("wire overhead (% of music)", "overhead_pct"),
        ("streamed tracks", "streamed_tracks"),
        ("bytes uploaded by speakers", "uploaded"),
        ("wall time (s)", "wall_s"),
    ]
    print(
        f"\n{args.speakers} speakers, {args.plays} plays each,"
        f" {args.tracks} tracks, seed {args.seed}"
    )
    print(f"{'':32} {'peers':>14} {'peers disabled':>16}")
    for label, key in rows:
        print(f"{label:32} {results['peers'][key]!s:>14} {results['no-peers'][key]!s:>16}")
    print("peers found by (streamed tracks):")
    keys = sorted(set(results["peers"]["found_by"]) | set(results["no-peers"]["found_by"]))
    for key in keys:
        print(
            f"  {key:30} {results['peers']['found_by'].get(key, 0):>14}"
            f" {results['no-peers']['found_by'].get(key, 0):>16}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
