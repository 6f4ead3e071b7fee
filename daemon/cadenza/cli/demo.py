"""`cadenza demo [MUSIC_DIR]`: a service and a speaker on this machine, playing music.

Starts a service on a fresh data directory, ingests MUSIC_DIR (or a small generated
library), starts a speaker on ALSA's ``default`` PCM (``null``, paced by the clock, only
when ``default`` cannot be opened), plays the library in order and prints the speaker's
API URL. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import trio

from cadenza import blocking

GENERATED_TRACKS = (
    # title, root frequency (Hz), sample rate, seconds
    ("Morning Arpeggio", 220.0, 44100, 24),
    ("Blue Fifths", 196.0, 48000, 20),
    ("Slow Tide", 174.6, 44100, 22),
    ("Evening Chimes", 261.6, 44100, 18),
)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "music", nargs="?", type=Path, help="a folder of music (default: generated)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    parser.add_argument("--device", default="default", help="ALSA PCM (default: default)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.music is not None and not args.music.exists():
        print(f"cadenza demo: {args.music} does not exist", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="cadenza-demo-"))
    try:
        return trio.run(_demo, args, base)
    finally:
        if args.keep:
            print(f"demo data kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def generate_library(folder: Path) -> list[Path]:
    """A few short, tagged pieces of synthesised music (arpeggiated chords)."""
    import mutagen
    import numpy as np
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (title, root, rate, seconds) in enumerate(GENERATED_TRACKS, 1):
        t = np.arange(int(rate * seconds)) / rate
        out = np.zeros((len(t), 2))
        note = 0.25  # seconds per note
        ratios = [1, 5 / 4, 3 / 2, 2, 3 / 2, 5 / 4]
        for k in range(int(seconds / note)):
            f = root * ratios[k % len(ratios)] * (1.5 if (k // 24) % 2 else 1)
            start = int(k * note * rate)
            n = min(int(note * 3 * rate), len(t) - start)
            tt = np.arange(n) / rate
            tone = np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt)
            env = np.exp(-3 * tt)
            pan = 0.5 + 0.4 * np.sin(k / 3)
            out[start : start + n, 0] += tone * env * (1 - pan)
            out[start : start + n, 1] += tone * env * pan
        out *= 0.25 / max(1e-9, np.abs(out).max()) * 2
        path = folder / f"{number:02d} {title}.flac"
        soundfile.write(path, out.astype("float32"), rate, subtype="PCM_16")
        tags = mutagen.File(path, easy=True)
        tags["title"] = title
        tags["artist"] = "The Cadenza Ensemble"
        tags["album"] = "Demo Sessions"
        tags["tracknumber"] = str(number)
        tags.save()
        paths.append(path)
    return paths


async def _demo(args: argparse.Namespace, base: Path) -> int:
    from cadenza.daemon import run_speaker
    from cadenza.service.ingest import ingest
    from cadenza.service.serve import Roles, ServeConfig, run_service
    from cadenza.system.config import (
        AudioConfig,
        Config,
        ControlConfig,
        HostPort,
        ServiceConfig,
        SpeakerConfig,
    )

    data = base / "service"
    password = secrets.token_urlsafe(12)
    roles = Roles(data)
    try:
        roles.accounts.add_user("demo", password)
        sources = [args.music] if args.music else generate_library(base / "library")
        print("ingesting", "your music" if args.music else "a generated library", "…", flush=True)
        report = await blocking.run_sync(
            lambda: ingest(sources, storage=roles.storage, catalog=roles.catalog)
        )
        print(report.summary(), flush=True)
        tracks = sorted(
            (a.track for a in report.added),
            key=lambda t: (t.album.title, t.disc or 0, t.number or 0, t.title),
        )
    finally:
        roles.close()
    if not tracks:
        print("cadenza demo: nothing to play", file=sys.stderr)
        return 1
    pwfile = base / "password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            svc = await nursery.start(
                run_service,
                ServeConfig(data, listen=("127.0.0.1", 0), http=("127.0.0.1", 0), advertise=False),
            )
            config = Config(
                speaker=SpeakerConfig(
                    name="Cadenza demo", state_dir=base / "state", cache_dir=base / "cache"
                ),
                service=ServiceConfig(
                    address=HostPort("127.0.0.1", svc.ap_address[1]),
                    mdns=False,
                    username="demo",
                    password_file=pwfile,
                ),
                audio=AudioConfig(device=args.device, fallback_device="null", volume=80),
                control=ControlConfig(listen=HostPort("127.0.0.1", 0), advertise=False),
            )
            speaker = await nursery.start(run_speaker, config)
            print(f"speaker playing to ALSA {speaker.audio_device!r}", flush=True)
            print(f"speaker API: {speaker.url}api/v1/state", flush=True)
            await speaker.speaker.session.wait_online(30)
            await speaker.speaker.play([t.uri for t in tracks])

            async def report_changes() -> None:
                last = None
                while True:
                    await speaker.speaker.wait_changed()
                    st = speaker.speaker.state()
                    now = (st["status"], st["track"]["title"] if st["track"] else None)
                    if now != last:
                        last = now
                        print(f"  {now[0]:9} {now[1] or ''}", flush=True)
                    if st["status"] == "stopped" and st["index"] == len(tracks) - 1:
                        print("end of the library", flush=True)
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(report_changes)
            async for _ in signals:
                print("stopping", flush=True)
                nursery.cancel_scope.cancel()
                break
    return 0
