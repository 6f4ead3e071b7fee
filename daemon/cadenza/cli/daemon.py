"""``cadenzad``: the speaker daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from cadenza import __version__


def main(argv: list[str] | None = None) -> int:
    from cadenza.system import config as cfg

    parser = argparse.ArgumentParser(prog="cadenzad", description="Cadenza speaker daemon")
    parser.add_argument("--version", action="version", version=f"cadenzad {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        help=f"configuration file (default {cfg.DEFAULT_PATH})",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    args = parser.parse_args(argv)
    try:
        config = cfg.load(args.config) if args.config else cfg.load()
    except cfg.ConfigError as exc:
        print(f"cadenzad: {exc}", file=sys.stderr)
        return 2
    from cadenza.hw.profiles import ProfileError, load_profiles

    if config.hardware.board not in ("auto", "none"):
        try:
            known = load_profiles()
        except ProfileError as exc:
            print(f"cadenzad: board profiles: {exc}", file=sys.stderr)
            return 2
        if config.hardware.board not in known:
            print(
                f"cadenzad: hardware.board: no profile {config.hardware.board!r}"
                f" (known: {', '.join(sorted(known)) or 'none'})",
                file=sys.stderr,
            )
            return 2
    if args.check_config:
        print(f"cadenzad: configuration OK ({args.config or cfg.DEFAULT_PATH})")
        return 0
    from cadenza.system.systemd import setup_logging

    setup_logging(logging.INFO)
    return trio.run(_run, config, args.config)


async def _run(config: Any, path: Path | None) -> int:
    from cadenza.daemon import run_speaker
    from cadenza.system import config as cfg
    from cadenza.system.systemd import Notifier, watchdog_loop

    notifier = Notifier()
    log = logging.getLogger("cadenza.daemon")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_speaker, config)
            print(f"cadenzad: playing to ALSA {running.audio_device!r}", flush=True)
            print(f"cadenzad: control API on {running.url}", flush=True)
            # The control API listens and the audio device is open: ready (whether or not
            # the service is reachable; the session keeps trying and STATUS says so).
            notifier.ready(status_line(running))
            await nursery.start(watchdog_loop, notifier, running.speaker.player.alive)
            nursery.start_soon(_status_loop, notifier, running)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    notifier.reloading()
                    try:
                        new = cfg.load(path) if path else cfg.load()
                    except cfg.ConfigError as exc:
                        log.error("reload refused, keeping the running configuration:\n%s", exc)
                    else:
                        restart = running.reload(new)
                        log.info("configuration reloaded")
                        if restart:
                            log.warning(
                                "these changes take effect at the next restart: %s",
                                ", ".join(restart),
                            )
                    notifier.ready(status_line(running))
                    continue
                print(f"cadenzad: {signal.Signals(signum).name}, stopping", flush=True)
                notifier.stopping()
                nursery.cancel_scope.cancel()
                break
    return 0


async def _status_loop(notifier: Any, running: Any) -> None:
    """STATUS= follows what the daemon does."""
    speaker = running.speaker
    while True:
        notifier.status(status_line(running))
        with trio.move_on_after(2.0):
            async with trio.open_nursery() as nursery:

                async def wake(wait: Any) -> None:
                    await wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wake, speaker.wait_changed)
                nursery.start_soon(wake, speaker.session.wait_changed)
        await trio.sleep(0.2)


def status_line(running: Any) -> str:
    """What `systemctl status` shows: "playing <title> — 62% from peers", "offline: …"."""
    speaker = running.speaker
    session = speaker.session.status
    state = speaker.state()
    parts = []
    track = state.get("track") or {}
    if state["status"] in ("playing", "buffering", "paused", "loading") and track:
        title = track.get("title") or "a track"
        word = {"buffering": "buffering", "paused": "paused:", "loading": "loading"}.get(
            state["status"], "playing"
        )
        line = f"{word} {title}"
        cur = speaker.current
        by = dict(cur.stream.stats.bytes_by_source) if cur is not None else {}
        total = sum(by.values())
        if total:
            if by.get("cache", 0) == total:
                line += " — from the cache"
            else:
                line += f" — {100 * by.get('peer', 0) // total}% from peers"
        parts.append(line)
    else:
        parts.append("idle")
    if session.state.value != "online":
        if session.retry_at is not None:
            wait = max(0, round(session.retry_at - trio.current_time()))
            parts.append(f"offline: retrying access point in {wait} s")
        else:
            parts.append(f"{session.state.value}: {session.error or 'no access point yet'}")
    return "; ".join(parts)
