"""`cadenza serve`, `cadenza user ...`, `cadenza playlist ...` and `cadenza ban`: the service
side of the CLI."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from cadenza.cli import positive_int

if TYPE_CHECKING:
    from cadenza.service.db import Database

DATA_ENV = "CADENZA_DATA"
DEFAULT_DATA = "cadenza-data"


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get(DATA_ENV) or DEFAULT_DATA)


def _open_db(args: argparse.Namespace) -> Database:
    """The service's database in the data directory, which is made if missing."""
    from cadenza.service.db import Database

    data = data_dir(args)
    data.mkdir(parents=True, exist_ok=True)
    return Database(data / "service.db")


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        help=f"service data directory (default: ${DATA_ENV} or ./{DEFAULT_DATA})",
    )


def parse_hostport(text: str, what: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT``; argparse shows our message on error."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} {text!r}: port {port!r} is not a number"
        ) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: port must be 0..65535")
    host = host.strip("[]")
    return (host or None), number


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from cadenza.service.serve import DEFAULT_AP_PORT, DEFAULT_HTTP_PORT

    add_data_argument(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=lambda t: parse_hostport(t, "--listen"),
        default=(None, DEFAULT_AP_PORT),
        help=f"access point address (default: all addresses, port {DEFAULT_AP_PORT})",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=lambda t: parse_hostport(t, "--http"),
        default=(None, DEFAULT_HTTP_PORT),
        help=f"metadata HTTP API address (default: all addresses, port {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    parser.add_argument("--no-mdns", action="store_true", help="do not advertise on the LAN")
    parser.add_argument("--name", default="", help="name on the LAN (default: the host name)")


def serve_main(args: argparse.Namespace) -> int:
    from cadenza.service.serve import ServeConfig, run_service
    from cadenza.system.systemd import setup_logging

    setup_logging(logging.INFO, identifier="cadenza-serve")
    config = ServeConfig(
        data=data_dir(args),
        listen=args.listen,
        http=None if args.no_http else args.http,
        advertise=not args.no_mdns,
        name=args.name,
    )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                running = await nursery.start(run_service, config)
                host, port = running.ap_address
                print(f"cadenza serve: data in {config.data.resolve()}", flush=True)
                print(f"access point listening on {host}:{port}", flush=True)
                print(f"static key fingerprint {running.fingerprint}", flush=True)
                if running.http_address:
                    h, p = running.http_address
                    print(f"metadata HTTP API on http://{h}:{p}/", flush=True)
                if running.mdns_name:
                    print(f"advertised on the LAN as {running.mdns_name!r}", flush=True)
                async for signum in signals:
                    print(f"cadenza serve: {signal.Signals(signum).name}, stopping", flush=True)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except OSError as exc:
        print(f"cadenza serve: {exc}", file=sys.stderr)
        return 1
    return 0


# --- users ------------------------------------------------------------------------------------


def add_user_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may ban peers and manage users")
    passwd = sub.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    for p in (add, passwd):
        p.add_argument(
            "--password-file",
            metavar="FILE",
            help="read the password from FILE ('-': standard input) instead of a prompt",
        )
    delete = sub.add_parser("del", help="delete a user and their devices")
    delete.add_argument("name")
    sub.add_parser("list", help="list users")
    devices = sub.add_parser("devices", help="list a user's devices")
    devices.add_argument("name", nargs="?")
    revoke = sub.add_parser("revoke", help="revoke a device credential")
    revoke.add_argument("device_id")
    # `cadenza user add NAME --data DIR` reads as naturally as `cadenza user --data DIR add NAME`.
    for p in sub.choices.values():
        p.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help="data directory")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        if args.password_file == "-":
            text = sys.stdin.readline()
        else:
            text = Path(args.password_file).read_text(encoding="utf-8").splitlines()[0]
        return text.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SystemExit("cadenza user: no terminal to prompt on; use --password-file FILE or -")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("cadenza user: the passwords differ")
    return first


def user_main(args: argparse.Namespace) -> int:
    from cadenza.service.accounts import AccountError, Accounts

    db = _open_db(args)
    accounts = Accounts(db)
    try:
        cmd = args.user_command
        if cmd == "add":
            accounts.add_user(args.name, _read_password(args), admin=args.admin)
            print(f"user {args.name} added")
        elif cmd == "passwd":
            accounts.set_password(args.name, _read_password(args))
            print(f"password of {args.name} changed")
        elif cmd == "del":
            accounts.delete_user(args.name)
            print(f"user {args.name} deleted")
        elif cmd == "list":
            for u in accounts.users():
                flag = " (admin)" if u.admin else ""
                print(f"{u.name}{flag}\t{u.devices} device(s)\tsince {time.ctime(u.created)}")
        elif cmd == "devices":
            for d in accounts.devices(args.name):
                state = "revoked" if d.revoked else "active"
                print(f"{d.id}\t{d.user}\t{d.name}\t{state}")
        elif cmd == "revoke":
            accounts.revoke_device(args.device_id)
            print(f"device {args.device_id} revoked")
    except (AccountError, OSError, IndexError) as exc:
        print(f"cadenza user: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


# --- playlists --------------------------------------------------------------------------------


def _positive(text: str) -> int:
    return positive_int(text, word="number", too_small="{value}: positions start at 1")


def add_playlist_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    sub = parser.add_subparsers(dest="playlist_command", metavar="ACTION", required=True)
    tracks_help = "cadenza:track:<id> links (a cadenza:album:<id> adds the album's tracks)"
    create = sub.add_parser("create", help="create a playlist and print its link")
    create.add_argument("--user", required=True, help="the owner")
    create.add_argument("name", help="the playlist's name")
    create.add_argument("uris", nargs="*", metavar="URI", help=tracks_help)
    add = sub.add_parser("add", help="add tracks to a playlist")
    add.add_argument("link", help="cadenza:user:<name>:playlist:<id>")
    add.add_argument("uris", nargs="+", metavar="URI", help=tracks_help)
    add.add_argument(
        "--at", type=_positive, metavar="N", help="insert as track N (default: at the end)"
    )
    remove = sub.add_parser("remove", help="remove the track at a position (as show numbers it)")
    remove.add_argument("link")
    remove.add_argument("position", type=_positive, metavar="N")
    rename = sub.add_parser("rename", help="rename a playlist")
    rename.add_argument("link")
    rename.add_argument("name")
    listing = sub.add_parser("list", help="list a user's playlists")
    listing.add_argument("--user", required=True)
    show = sub.add_parser("show", help="show a playlist's tracks")
    show.add_argument("link")
    show.add_argument("--json", action="store_true", help="print the playlist as JSON")
    delete = sub.add_parser("del", help="delete a playlist")
    delete.add_argument("link")
    for p in sub.choices.values():
        p.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help="data directory")


def _tracks(n: int) -> str:
    return f"{n} track" if n == 1 else f"{n} tracks"


def playlist_main(args: argparse.Namespace) -> int:
    from cadenza import links
    from cadenza.service.catalog import NotFound, UnsupportedLink
    from cadenza.service.playlists import Playlists

    db = _open_db(args)
    playlists = Playlists(db)
    try:
        cmd = args.playlist_command
        if cmd == "create":
            playlist = playlists.create(args.user, args.name, args.uris)
            print(playlist.uri)
        elif cmd == "add":
            at = None if args.at is None else args.at - 1
            before = playlists.lookup(args.link).length
            playlist = playlists.add(args.link, args.uris, at)
            added = playlist.length - before
            print(f"{_tracks(added)} added to {playlist.name!r} (now {_tracks(playlist.length)})")
        elif cmd == "remove":
            playlist = playlists.remove(args.link, args.position - 1)
            print(f"track {args.position} removed from {playlist.name!r}")
        elif cmd == "rename":
            playlist = playlists.rename(args.link, args.name)
            print(f"playlist renamed to {playlist.name!r}")
        elif cmd == "list":
            for p in playlists.list(args.user):
                print(f"{p.uri}\t{p.name}\t{_tracks(p.length)}")
        elif cmd == "show":
            playlist = playlists.lookup(args.link)
            if args.json:
                print(json.dumps(playlist.to_json(), indent=2, ensure_ascii=False))
            else:
                print(f"{playlist.name} ({playlist.owner}, {_tracks(playlist.length)})")
                for n, t in enumerate(playlist.tracks, 1):
                    artists = ", ".join(a.name for a in t.artists)
                    secs = t.duration_ms // 1000
                    print(f"{n:>4}. {artists} - {t.title} ({secs // 60}:{secs % 60:02d})  {t.uri}")
        elif cmd == "del":
            playlist = playlists.lookup(args.link)
            playlists.delete(args.link)
            print(f"playlist {playlist.name!r} deleted")
    except (links.LinkError, UnsupportedLink) as exc:
        print(f"cadenza playlist: {exc}", file=sys.stderr)
        return 2
    except (NotFound, ValueError, OSError) as exc:
        print(f"cadenza playlist: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


def add_ban_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("peer_id", help="the peer id (hex) as logged by the service or speakers")
    parser.add_argument("--reason", default="banned by the administrator")
    parser.add_argument("--hours", type=float, default=24.0, help="how long (default 24)")


def ban_main(args: argparse.Namespace) -> int:
    from cadenza.service.access_point import ban_offline
    from cadenza.service.db import Database

    try:
        peer_id = bytes.fromhex(args.peer_id)
    except ValueError:
        print(f"cadenza ban: {args.peer_id!r} is not a hex peer id", file=sys.stderr)
        return 2
    if len(peer_id) != 16:
        print("cadenza ban: a peer id is 16 bytes (32 hex digits)", file=sys.stderr)
        return 2
    db = Database(data_dir(args) / "service.db")
    try:
        ban_offline(db, peer_id, args.reason, args.hours * 3600)
    finally:
        db.close()
    print(f"peer {args.peer_id} banned for {args.hours:g} h")
    print("a running service applies the ban within seconds")
    return 0
