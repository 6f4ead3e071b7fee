"""``cadenza``: the command-line tool."""

from __future__ import annotations

import argparse
import sys

from cadenza import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cadenza", description="Cadenza networked speaker tools")
    parser.add_argument("--version", action="version", version=f"cadenza {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the demo",
        description="Until the speaker exists, the demo shows the wire protocol: a service "
        "admits a speaker with a membership certificate over Noise and streams it a file.",
    )
    demo.add_argument("--mb", type=int, default=64, help="MiB to stream (default 64)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from cadenza.cli.demo import run

        return run(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
