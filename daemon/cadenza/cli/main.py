"""``cadenza``: the command-line tool."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from cadenza import __version__


def _add_documented(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    doc: str | None,
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``doc`` (its module's docstring) as written."""
    return sub.add_parser(
        name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    from cadenza.cli import control, ingest, service
    from cadenza.cli import demo as demo_cli

    parser = argparse.ArgumentParser(prog="cadenza", description="Cadenza networked speaker tools")
    parser.add_argument("--version", action="version", version=f"cadenza {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = _add_documented(
        sub, "demo", "a service and a speaker on this machine, playing music", demo_cli.__doc__
    )
    demo_cli.add_demo_arguments(demo)

    serve = sub.add_parser("serve", help="run the service (access point, catalog, storage, ...)")
    service.add_serve_arguments(serve)
    ingest_p = sub.add_parser("ingest", help="add music files to the service's catalog")
    ingest.add_ingest_arguments(ingest_p)
    user = sub.add_parser("user", help="manage accounts: add, passwd, del, list, devices, revoke")
    service.add_user_arguments(user)
    playlist = sub.add_parser(
        "playlist", help="manage playlists: create, add, remove, rename, list, show, del"
    )
    service.add_playlist_arguments(playlist)
    ban = sub.add_parser("ban", help="ban a peer (the device behind it) from the overlay")
    service.add_ban_arguments(ban)
    control.add_control_commands(sub)
    bench = sub.add_parser("bench", help="benchmarks: swarm (the swarm simulator)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH")
    from cadenza.sim import cli as swarm_cli

    swarm = _add_documented(
        bench_sub,
        "swarm",
        "thousands of speakers on a simulated network: the paper's table",
        swarm_cli.__doc__,
    )
    swarm_cli.add_arguments(swarm)
    return parser


# command -> (module, function taking the parsed arguments)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cadenza.cli.demo", "run"),
    "serve": ("cadenza.cli.service", "serve_main"),
    "ingest": ("cadenza.cli.ingest", "ingest_main"),
    "user": ("cadenza.cli.service", "user_main"),
    "playlist": ("cadenza.cli.service", "playlist_main"),
    "ban": ("cadenza.cli.service", "ban_main"),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in _SUBCOMMANDS:
        # Imported on use: each command's dependencies load only when it runs.
        module, function = _SUBCOMMANDS[args.command]
        run: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), function
        )
        return run(args)
    if args.command == "bench" and args.bench == "swarm":
        from cadenza.sim import cli as swarm_cli

        return swarm_cli.run(args)
    from cadenza.cli.control import COMMANDS, control_main

    if args.command in COMMANDS:
        return control_main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
