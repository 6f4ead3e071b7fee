"""``cadenza``: the command-line tool."""

from __future__ import annotations

import argparse
import sys

from cadenza import __version__


def build_parser() -> argparse.ArgumentParser:
    from cadenza.cli import control, ingest, service
    from cadenza.cli import demo as demo_cli

    parser = argparse.ArgumentParser(prog="cadenza", description="Cadenza networked speaker tools")
    parser.add_argument("--version", action="version", version=f"cadenza {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="a service and a speaker on this machine, playing music",
        description=demo_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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

    swarm = bench_sub.add_parser(
        "swarm",
        help="thousands of speakers on a simulated network: the paper's table",
        description=swarm_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    swarm_cli.add_arguments(swarm)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from cadenza.cli.demo import run

        return run(args)
    if args.command == "serve":
        from cadenza.cli.service import serve_main

        return serve_main(args)
    if args.command == "ingest":
        from cadenza.cli.ingest import ingest_main

        return ingest_main(args)
    if args.command == "user":
        from cadenza.cli.service import user_main

        return user_main(args)
    if args.command == "playlist":
        from cadenza.cli.service import playlist_main

        return playlist_main(args)
    if args.command == "ban":
        from cadenza.cli.service import ban_main

        return ban_main(args)
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
