"""``cadenzad``: the speaker daemon (the streaming engine and player arrive in later work)."""

from __future__ import annotations

import argparse
import sys

from cadenza import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cadenzad", description="Cadenza speaker daemon")
    parser.add_argument("--version", action="version", version=f"cadenzad {__version__}")
    parser.parse_args(argv)
    print("cadenzad: the speaker daemon is not built yet; see README.md", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
