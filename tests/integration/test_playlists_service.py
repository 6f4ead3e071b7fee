"""Playlists end to end: made with `cadenza playlist`, played from the service's access point
(real loopback TCP, logged in) and the metadata HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from cadenza import links, net
from cadenza.protocol import api
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.noise import KeyPair
from cadenza.service.catalog import FileRef
from cadenza.service.serve import Roles, ServeConfig, run_service

BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery"
TITLES = ["One", "Two", "Three", "Four"]


def populate(data: Path) -> dict[str, str]:
    """Users alice and bob, and an album of four tracks; returns title -> track link."""
    roles = Roles(data)
    try:
        roles.accounts.add_user("alice", PASSWORD)
        roles.accounts.add_user("bob", PASSWORD)
        uris = {}
        for n, title in enumerate(TITLES, 1):
            track = roles.catalog.add_track(
                title=title,
                artists=["The Testers"],
                album="Counting",
                year=2024,
                disc=1,
                number=n,
                duration_ms=120_000,
                sample_rate=44_100,
                channels=2,
                loudness_lufs=-14.0,
                peak_dbfs=-1.0,
                files=[FileRef(160, f"{n:064x}", 100_000)],
                source_hash=f"src-{n}",
            )
            uris[title] = track.uri
        return uris
    finally:
        roles.close()


def cadenza(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "cadenza", "playlist", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_playlist_made_with_the_cli_plays_from_the_access_point(tmp_path: Path) -> None:
    data = tmp_path / "data"
    uris = populate(data)
    made = cadenza(data, "create", "--user", "alice", "Countdown", uris["Three"], uris["One"])
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    parsed = links.parse(link)
    assert parsed.kind == "playlist" and parsed.user == "alice"
    added = cadenza(data, "add", link, uris["Four"], uris["One"])
    assert added.returncode == 0, added.stderr
    order = ["Three", "One", "Four", "One"]

    config = ServeConfig(data=data, listen=("127.0.0.1", 0), http=("127.0.0.1", 0), advertise=False)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config))
        identity = net.Identity(KeyPair.generate(), hello_payload("test-speaker"))
        async with net.open_connection(
            "127.0.0.1", running.ap_address[1], identity=identity
        ) as conn:
            login = await conn.request(api.Login(username="bob", password=PASSWORD))
            assert isinstance(login, api.LoginOk)

            reply = await conn.request(api.Lookup(link))
            assert isinstance(reply, api.LookupReply) and reply.kind == "playlist"
            record = reply.record
            assert set(record) == {"uri", "id", "name", "owner", "tracks"}
            assert record["uri"] == link and record["id"] == parsed.id
            assert record["name"] == "Countdown" and record["owner"] == "alice"
            assert [t["title"] for t in record["tracks"]] == order
            assert [t["uri"] for t in record["tracks"]] == [uris[t] for t in order]
            # Full track records: what a speaker needs to fetch and play each one.
            track = await conn.request(api.Lookup(uris["Three"]))
            assert isinstance(track, api.LookupReply)
            assert record["tracks"][0] == track.record

            # The link must name the owner.
            wrong = f"cadenza:user:bob:playlist:{parsed.id}"
            with pytest.raises(net.RequestFailed) as info:
                await conn.request(api.Lookup(wrong))
            assert info.value.code == "not-found" and wrong in info.value.message
            with pytest.raises(net.RequestFailed) as info:
                await conn.request(api.Lookup("cadenza:user:alice:playlist:nope"))
            assert info.value.code == "bad-request"

        host, port = running.http_address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
            r = await http.get("/lookup/1/", params={"uri": link})
            assert r.status_code == 200, r.text
            assert [t["title"] for t in r.json()["playlist"]["tracks"]] == order
            r = await http.get("/lookup/1/", params={"uri": wrong})
            assert r.status_code == 404 and wrong in r.json()["error"]["message"]
        nursery.cancel_scope.cancel()


def test_playlist_cli_commands_and_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    uris = populate(data)
    made = cadenza(data, "create", "--user", "alice", "Mix")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()

    # An album adds its tracks; --at N inserts as track N.
    out = cadenza(data, "add", link, uris["Two"], uris["Four"])
    assert out.returncode == 0 and "2 tracks added" in out.stdout, out
    album = json.loads(cadenza(data, "show", link, "--json").stdout)["tracks"][0]["album"]["uri"]
    out = cadenza(data, "add", "--at", "2", link, album)
    assert out.returncode == 0 and "now 6 tracks" in out.stdout, out
    shown = json.loads(cadenza(data, "show", "--json", link).stdout)
    assert [t["title"] for t in shown["tracks"]] == ["Two", "One", "Two", "Three", "Four", "Four"]

    out = cadenza(data, "remove", link, "1")
    assert out.returncode == 0, out
    out = cadenza(data, "rename", link, "Mixed")
    assert out.returncode == 0, out
    out = cadenza(data, "show", link)
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Mixed (alice, 5 tracks)")
    assert "The Testers - One (2:00)" in lines[1] and uris["One"] in lines[1]

    out = cadenza(data, "list", "--user", "alice")
    assert out.returncode == 0 and out.stdout == f"{link}\tMixed\t5 tracks\n"

    # Errors go to stderr and name the problem: 1 for a failure, 2 for a malformed argument.
    missing = f"cadenza:track:{links.new_id()}"
    out = cadenza(data, "add", link, missing)
    assert out.returncode == 1 and missing in out.stderr and not out.stdout
    out = cadenza(data, "add", link, "cadenza:track:nope")
    assert out.returncode == 2 and "cadenza:track:nope" in out.stderr
    out = cadenza(data, "create", "--user", "nobody", "X")
    assert out.returncode == 1 and "nobody" in out.stderr
    other = f"cadenza:user:bob:playlist:{links.parse(link).id}"
    out = cadenza(data, "show", other)
    assert out.returncode == 1 and other in out.stderr
    out = cadenza(data, "remove", link, "0")
    assert out.returncode == 2  # argparse: positions start at 1

    out = cadenza(data, "del", link)
    assert out.returncode == 0 and "Mixed" in out.stdout
    out = cadenza(data, "show", link)
    assert out.returncode == 1
    assert cadenza(data, "list", "--user", "alice").stdout == ""
