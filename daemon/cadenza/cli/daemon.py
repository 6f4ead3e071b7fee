"""``cadenzad``: the speaker daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

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
    if args.check_config:
        print(f"cadenzad: configuration OK ({args.config or cfg.DEFAULT_PATH})")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return trio.run(_run, config)


async def _run(config: object) -> int:
    from cadenza.daemon import run_speaker

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_speaker, config)
            print(f"cadenzad: playing to ALSA {running.audio_device!r}", flush=True)
            print(f"cadenzad: control API on {running.url}", flush=True)
            async for signum in signals:
                print(f"cadenzad: {signal.Signals(signum).name}, stopping", flush=True)
                nursery.cancel_scope.cancel()
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
