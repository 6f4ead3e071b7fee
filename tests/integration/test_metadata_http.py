"""The metadata HTTP API served by real hypercorn on loopback, queried with httpx."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from cadenza import links
from cadenza.service.catalog import MAX_SEARCH_LIMIT, Catalog, FileRef, Track
from cadenza.service.db import Database
from cadenza.service.metadata_http import metadata_app, serve_metadata_http

_counter = iter(range(1_000_000))


def add(catalog: Catalog, title: str, artists: list[str], album: str, **kw: Any) -> Track:
    n = next(_counter)
    args: dict[str, Any] = {
        "title": title,
        "artists": artists,
        "album": album,
        "year": 1965,
        "disc": 1,
        "number": 1,
        "duration_ms": 125_000,
        "sample_rate": 44_100,
        "channels": 2,
        "loudness_lufs": -12.0,
        "peak_dbfs": -0.3,
        "files": [FileRef(160, f"{n:064x}", 2_500_000)],
        "source_hash": f"source-{n}",
    }
    args.update(kw)
    return catalog.add_track(**args)


@dataclass
class Server:
    catalog: Catalog
    client: httpx.AsyncClient
    host: str
    port: int
    help: Track  # exact title "Help"
    yesterday: Track


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    db = Database(tmp_path / "service.db")
    catalog = Catalog(db)
    # Plain bm25 would rank these above the exact title "Help".
    add(catalog, "Help Help", ["Help"], "Help")
    add(catalog, "Help Me Help You", ["Help Yourself"], "Help Yourself")
    help = add(catalog, "Help", ["The Beatles"], "Help!", number=1)
    yesterday = add(catalog, "Yesterday", ["The Beatles"], "Help!", number=13)
    add(catalog, "Helpless", ["Neil Young"], "Déjà Vu")
    try:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                serve_metadata_http, metadata_app(catalog), "127.0.0.1", 0
            )
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
                yield Server(catalog, client, host, port, help, yesterday)
            nursery.cancel_scope.cancel()
    finally:
        db.close()


def assert_error(response: httpx.Response, status: int, *culprits: str) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    message: str = body["error"]["message"]
    for culprit in culprits:
        assert culprit in message
    return message


async def test_binds_a_free_port(server: Server) -> None:
    assert server.host == "127.0.0.1"
    assert 0 < server.port < 65536


async def test_lookup_track(server: Server) -> None:
    response = await server.client.get("/lookup/1/", params={"uri": server.help.uri})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"track": server.help.to_json()}
    track = response.json()["track"]
    assert track["title"] == "Help"
    assert track["artists"][0]["name"] == "The Beatles"
    assert track["files"][0]["bitrate"] == 160


async def test_lookup_track_with_offset_fragment(server: Server) -> None:
    response = await server.client.get("/lookup/1/", params={"uri": server.help.uri + "#0:30"})
    assert response.json()["track"]["id"] == server.help.id


async def test_lookup_album(server: Server) -> None:
    uri = server.help.album.uri
    response = await server.client.get("/lookup/1/", params={"uri": uri})
    assert response.status_code == 200
    album = response.json()["album"]
    assert album["uri"] == uri
    assert album["title"] == "Help!"
    assert [a["name"] for a in album["artists"]] == ["The Beatles"]
    assert album["year"] == 1965
    assert [t["title"] for t in album["tracks"]] == ["Help", "Yesterday"]


async def test_lookup_artist(server: Server) -> None:
    uri = server.help.artists[0].uri
    response = await server.client.get("/lookup/1/.json", params={"uri": uri})
    assert response.status_code == 200
    artist = response.json()["artist"]
    assert artist["name"] == "The Beatles"
    assert [a["title"] for a in artist["albums"]] == ["Help!"]
    assert [t["title"] for t in artist["top_tracks"]] == ["Help", "Yesterday"]


async def test_search_ranks_the_exact_title_first(server: Server) -> None:
    response = await server.client.get("/search/1/track", params={"q": "help"})
    assert response.status_code == 200
    body = response.json()
    assert body["info"] == {
        "num_results": 5,  # Yesterday too: it is on the album "Help!"
        "limit": 20,
        "offset": 0,
        "query": "help",
        "type": "track",
    }
    titles = [t["title"] for t in body["tracks"]]
    assert titles[0] == "Help"
    assert sorted(titles) == ["Help", "Help Help", "Help Me Help You", "Helpless", "Yesterday"]
    assert body["tracks"][0] == server.help.to_json()


async def test_search_albums_and_artists(server: Server) -> None:
    albums = (await server.client.get("/search/1/album", params={"q": "help"})).json()
    assert albums["info"]["type"] == "album"
    titles = [a["title"] for a in albums["albums"]]
    # "Help" and "Help!" are both exact: punctuation does not count.
    assert sorted(titles[:2]) == ["Help", "Help!"]
    assert titles[2:] == ["Help Yourself"]
    artists = (await server.client.get("/search/1/artist.json", params={"q": "beat"})).json()
    assert artists["info"]["num_results"] == 1
    assert [a["name"] for a in artists["artists"]] == ["The Beatles"]


async def test_search_with_fts_syntax_is_plain_text(server: Server) -> None:
    for q in ['"', "NEAR(", "help AND", "*", "(", "title:help", "'; --"]:
        response = await server.client.get("/search/1/track", params={"q": q})
        assert response.status_code == 200, q
        assert response.json()["info"]["num_results"] >= 0


async def test_empty_query_finds_nothing(server: Server) -> None:
    response = await server.client.get("/search/1/track", params={"q": ""})
    assert response.status_code == 200
    assert response.json()["info"]["num_results"] == 0
    assert response.json()["tracks"] == []


async def test_paging(server: Server) -> None:
    for n in range(7):
        add(server.catalog, f"Love {n}", ["Someone"], f"Album {n}")
    full = (await server.client.get("/search/1/track", params={"q": "love", "limit": 50})).json()
    assert full["info"]["num_results"] == 7
    seen = []
    for offset in range(0, 8, 3):
        params: dict[str, Any] = {"q": "love", "limit": 3, "offset": offset}
        page = (await server.client.get("/search/1/track", params=params)).json()
        assert page["info"]["num_results"] == 7
        assert (page["info"]["limit"], page["info"]["offset"]) == (3, offset)
        seen += page["tracks"]
    assert seen == full["tracks"]
    params = {"q": "love", "offset": 100}
    beyond = (await server.client.get("/search/1/track", params=params)).json()
    assert beyond["tracks"] == [] and beyond["info"]["num_results"] == 7


async def test_malformed_uri_is_400_naming_it(server: Server) -> None:
    response = await server.client.get("/lookup/1/", params={"uri": "cadenza:track:short"})
    assert_error(response, 400, "cadenza:track:short", "22-character base62")
    response = await server.client.get("/lookup/1/", params={"uri": "spotify:track:x"})
    assert_error(response, 400, "spotify:track:x", "not a cadenza: link")
    response = await server.client.get("/lookup/1/")
    assert_error(response, 400, "'uri'")


async def test_playlist_uri_is_400(server: Server) -> None:
    uri = f"cadenza:user:alice:playlist:{links.new_id()}"
    assert_error(await server.client.get("/lookup/1/", params={"uri": uri}), 400, uri, "playlist")


async def test_unknown_uri_is_404_naming_it(server: Server) -> None:
    for kind in ("track", "album", "artist"):
        uri = f"cadenza:{kind}:{links.new_id()}"
        response = await server.client.get("/lookup/1/", params={"uri": uri})
        assert_error(response, 404, uri)


@pytest.mark.parametrize(
    ("params", "culprit"),
    [
        ({"q": "help", "limit": "ten"}, "'limit'"),
        ({"q": "help", "limit": "-1"}, "'limit'"),
        ({"q": "help", "limit": str(MAX_SEARCH_LIMIT + 1)}, "'limit'"),
        ({"q": "help", "limit": "1e3"}, "'limit'"),
        ({"q": "help", "offset": "-5"}, "'offset'"),
        ({"q": "help", "offset": "9" * 40}, "'offset'"),
        ({"q": "help", "offset": ""}, "'offset'"),
        ({"limit": "5"}, "'q'"),
    ],
)
async def test_bad_search_parameters_are_400_naming_them(
    server: Server, params: dict[str, str], culprit: str
) -> None:
    response = await server.client.get("/search/1/track", params=params)
    assert_error(response, 400, culprit)


async def test_unknown_paths_are_json_404(server: Server) -> None:
    assert_error(await server.client.get("/nope"), 404, "/nope")
    assert_error(await server.client.get("/search/1/song", params={"q": "x"}), 404, "song")
    assert_error(await server.client.post("/lookup/1/"), 405, "POST")


async def test_catalog_failure_is_json_500(server: Server) -> None:
    server.catalog.db.close()
    response = await server.client.get("/lookup/1/", params={"uri": server.help.uri})
    assert_error(response, 500)


async def test_cancellation_stops_the_server(tmp_path: Path) -> None:
    db = Database(tmp_path / "service.db")
    try:
        app = metadata_app(Catalog(db))
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_metadata_http, app, "127.0.0.1", 0)
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://{host}:{port}/search/1/track?q=x")
                assert response.status_code == 200
            nursery.cancel_scope.cancel()
        with socket.socket() as probe:
            assert probe.connect_ex((host, port)) == errno.ECONNREFUSED
    finally:
        db.close()
