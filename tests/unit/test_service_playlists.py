"""Playlists on a real SQLite file: create, add, remove, rename, list, lookup, validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza import links
from cadenza.service.accounts import Accounts
from cadenza.service.catalog import Catalog, FileRef, NotFound, Track, UnsupportedLink
from cadenza.service.db import Database
from cadenza.service.playlists import MAX_NAME, Playlists

_counter = iter(range(1_000_000))


def add_track(catalog: Catalog, title: str, album: str = "Album", number: int = 1) -> Track:
    n = next(_counter)
    return catalog.add_track(
        title=title,
        artists=["The Testers"],
        album=album,
        year=2020,
        disc=1,
        number=number,
        duration_ms=180_000,
        sample_rate=44_100,
        channels=2,
        loudness_lufs=-14.0,
        peak_dbfs=-1.0,
        files=[FileRef(160, f"{n:064x}", 1000)],
        source_hash=f"source-{n}",
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "service.db")
    yield database
    database.close()


@pytest.fixture
def accounts(db: Database) -> Accounts:
    accounts = Accounts(db)
    accounts.add_user("alice", "password-alice")
    accounts.add_user("bob", "password-bob")
    return accounts


@pytest.fixture
def catalog(db: Database) -> Catalog:
    return Catalog(db)


@pytest.fixture
def playlists(db: Database, accounts: Accounts, catalog: Catalog) -> Playlists:
    return Playlists(db, catalog)


@pytest.fixture
def tracks(catalog: Catalog) -> list[Track]:
    return [add_track(catalog, f"Song {i}", number=i) for i in range(1, 5)]


def titles(record: dict[str, Any]) -> list[str]:
    return [t["title"] for t in record["tracks"]]


# -- create and lookup -----------------------------------------------------------------


def test_create_and_lookup(playlists: Playlists, catalog: Catalog, tracks: list[Track]) -> None:
    created = playlists.create("alice", "  Road   trip ", [tracks[2].uri, tracks[0].uri])
    assert created.name == "Road trip" and created.owner == "alice"
    assert links.is_id(created.id)
    assert created.uri == f"cadenza:user:alice:playlist:{created.id}"
    assert links.parse(created.uri) == links.Link("playlist", created.id, user="alice")

    found = playlists.lookup(created.uri)
    assert found.length == 2
    assert [t.id for t in found.tracks] == [tracks[2].id, tracks[0].id]
    assert found.to_json() == {
        "uri": created.uri,
        "id": created.id,
        "name": "Road trip",
        "owner": "alice",
        # Full track records, the same JSON as a catalog lookup.
        "tracks": [
            catalog.lookup(tracks[2].uri).to_json(),
            catalog.lookup(tracks[0].uri).to_json(),
        ],
    }
    # A Link works as well as its text, and an offset is ignored.
    assert playlists.lookup(links.parse(created.uri + "#1:00")) == found


def test_create_empty(playlists: Playlists) -> None:
    playlist = playlists.create("alice", "Empty")
    assert playlist.tracks == () and playlist.length == 0
    assert playlists.lookup(playlist.uri).to_json()["tracks"] == []


def test_lookup_missing_or_other_user_is_not_found(
    playlists: Playlists, tracks: list[Track]
) -> None:
    playlist = playlists.create("alice", "Mine", [tracks[0].uri])
    with pytest.raises(NotFound) as info:
        playlists.lookup(f"cadenza:user:bob:playlist:{playlist.id}")
    assert f"cadenza:user:bob:playlist:{playlist.id}" in str(info.value)
    with pytest.raises(NotFound):
        playlists.lookup(f"cadenza:user:nobody:playlist:{playlist.id}")
    with pytest.raises(NotFound):
        playlists.lookup(f"cadenza:user:alice:playlist:{links.new_id()}")
    # Nor can another user's link be used to change it.
    with pytest.raises(NotFound):
        playlists.add(f"cadenza:user:bob:playlist:{playlist.id}", [tracks[1].uri])
    with pytest.raises(NotFound):
        playlists.delete(f"cadenza:user:bob:playlist:{playlist.id}")
    assert playlists.lookup(playlist.uri).length == 1


def test_lookup_needs_a_playlist_link(playlists: Playlists, tracks: list[Track]) -> None:
    with pytest.raises(UnsupportedLink):
        playlists.lookup(tracks[0].uri)
    with pytest.raises(links.LinkError):
        playlists.lookup("cadenza:user:alice:playlist:nope")


# -- changing ----------------------------------------------------------------------------


def test_add_at_end_and_at_position(playlists: Playlists, tracks: list[Track]) -> None:
    playlist = playlists.create("alice", "List", [tracks[0].uri])
    after = playlists.add(playlist.uri, [tracks[1].uri, tracks[2].uri])
    assert [t.title for t in after.tracks] == ["Song 1", "Song 2", "Song 3"]
    # Insert before position 1; a bare id names the playlist too.
    after = playlists.add(playlist.id, [tracks[3].uri, tracks[3].uri], position=1)
    assert [t.title for t in after.tracks] == [
        "Song 1",
        "Song 4",
        "Song 4",
        "Song 2",
        "Song 3",
    ]
    after = playlists.add(playlist.uri, [tracks[0].uri], position=5)  # == length: the end
    assert after.tracks[-1].title == "Song 1" and after.length == 6
    with pytest.raises(ValueError, match="past the end"):
        playlists.add(playlist.uri, [tracks[0].uri], position=7)
    with pytest.raises(ValueError, match="negative"):
        playlists.add(playlist.uri, [tracks[0].uri], position=-1)
    assert playlists.lookup(playlist.uri).length == 6


def test_add_album_expands_to_its_tracks(playlists: Playlists, catalog: Catalog) -> None:
    second = add_track(catalog, "B side", album="Single", number=2)
    first = add_track(catalog, "A side", album="Single", number=1)
    playlist = playlists.create("alice", "Singles", [first.album.uri])
    assert [t.id for t in playlist.tracks] == [first.id, second.id]


def test_remove(playlists: Playlists, tracks: list[Track]) -> None:
    playlist = playlists.create("alice", "List", [t.uri for t in tracks])
    after = playlists.remove(playlist.uri, 1)
    assert [t.title for t in after.tracks] == ["Song 1", "Song 3", "Song 4"]
    after = playlists.remove(playlist.uri, 2)
    assert [t.title for t in after.tracks] == ["Song 1", "Song 3"]
    with pytest.raises(ValueError, match="no track at position 2"):
        playlists.remove(playlist.uri, 2)
    # Positions stay dense: inserting at 1 goes between the two left.
    after = playlists.add(playlist.uri, [tracks[1].uri], position=1)
    assert [t.title for t in after.tracks] == ["Song 1", "Song 2", "Song 3"]


def test_rename(playlists: Playlists) -> None:
    playlist = playlists.create("alice", "Old")
    renamed = playlists.rename(playlist.uri, "New name")
    assert renamed.name == "New name" and renamed.updated >= playlist.updated
    assert playlists.lookup(playlist.uri).name == "New name"
    with pytest.raises(ValueError, match="empty"):
        playlists.rename(playlist.uri, "   ")
    with pytest.raises(ValueError, match=str(MAX_NAME)):
        playlists.rename(playlist.uri, "x" * (MAX_NAME + 1))


def test_delete(playlists: Playlists, tracks: list[Track]) -> None:
    playlist = playlists.create("alice", "Gone soon", [tracks[0].uri])
    playlists.delete(playlist.uri)
    with pytest.raises(NotFound):
        playlists.lookup(playlist.uri)
    with pytest.raises(NotFound):
        playlists.delete(playlist.uri)
    with pytest.raises(NotFound):
        playlists.add(playlist.uri, [tracks[0].uri])


def test_list(playlists: Playlists, tracks: list[Track]) -> None:
    a = playlists.create("alice", "First", [tracks[0].uri, tracks[1].uri])
    b = playlists.create("alice", "Second")
    playlists.create("bob", "Bob's")
    mine = playlists.list("alice")
    assert [(p.uri, p.name, p.length) for p in mine] == [(a.uri, "First", 2), (b.uri, "Second", 0)]
    assert all(p.tracks == () for p in mine)
    full = playlists.list("alice", full=True)
    assert [t.id for t in full[0].tracks] == [tracks[0].id, tracks[1].id]
    assert [p.name for p in playlists.list("bob")] == ["Bob's"]
    assert playlists.list("nobody") == []


# -- validation --------------------------------------------------------------------------


def test_bad_track_links_name_the_link_and_add_nothing(
    playlists: Playlists, catalog: Catalog, tracks: list[Track]
) -> None:
    playlist = playlists.create("alice", "List", [tracks[0].uri])
    missing = f"cadenza:track:{links.new_id()}"
    with pytest.raises(ValueError) as info:
        playlists.add(playlist.uri, [tracks[1].uri, missing])
    assert missing in str(info.value) and "not in the catalog" in str(info.value)
    with pytest.raises(links.LinkError) as link_info:
        playlists.add(playlist.uri, ["cadenza:track:nope"])
    assert "cadenza:track:nope" in str(link_info.value)
    with pytest.raises(links.LinkError) as link_info:
        playlists.add(playlist.uri, ["spotify:track:abc"])
    assert "spotify:track:abc" in str(link_info.value)
    too_big = "cadenza:track:" + "z" * 22  # well-formed but above 128 bits: names nothing
    with pytest.raises(ValueError, match=too_big):
        playlists.add(playlist.uri, [too_big])
    artist = tracks[0].artists[0].uri
    with pytest.raises(ValueError, match=artist):
        playlists.add(playlist.uri, [artist])
    album = f"cadenza:album:{links.new_id()}"
    with pytest.raises(ValueError, match=album):
        playlists.add(playlist.uri, [album])
    with pytest.raises(ValueError, match=missing):
        playlists.create("alice", "Never made", [missing])
    assert [p.name for p in playlists.list("alice")] == ["List"]
    assert [t.id for t in playlists.lookup(playlist.uri).tracks] == [tracks[0].id]


def test_bad_arguments(playlists: Playlists, tracks: list[Track]) -> None:
    with pytest.raises(TypeError):
        playlists.create("alice", "One string", tracks[0].uri)  # a bare string, not a list
    with pytest.raises(ValueError, match="empty"):
        playlists.create("alice", " ")
    with pytest.raises(ValueError, match="nobody"):
        playlists.create("nobody", "No owner")
    with pytest.raises(UnsupportedLink):
        playlists.add(tracks[0].uri, [tracks[1].uri])
    with pytest.raises(links.LinkError):
        playlists.add("not-an-id", [tracks[1].uri])


# -- lifetimes ---------------------------------------------------------------------------


def test_deleting_a_user_deletes_their_playlists(
    db: Database, playlists: Playlists, accounts: Accounts, tracks: list[Track]
) -> None:
    gone = playlists.create("alice", "Alice's", [tracks[0].uri, tracks[1].uri])
    kept = playlists.create("bob", "Bob's", [tracks[0].uri])
    accounts.delete_user("alice")
    assert playlists.list("alice") == []
    with pytest.raises(NotFound):
        playlists.lookup(gone.uri)
    left = db.call(
        lambda c: c.execute(
            "SELECT count(*) FROM playlist_tracks WHERE playlist_id = ?", (gone.id,)
        ).fetchone()[0]
    )
    assert left == 0
    assert playlists.lookup(kept.uri).length == 1


def test_a_track_leaving_the_catalog_leaves_the_playlist(
    db: Database, playlists: Playlists, tracks: list[Track]
) -> None:
    playlist = playlists.create("alice", "List", [t.uri for t in tracks[:3]])
    db.call(lambda c: c.execute("DELETE FROM catalog_tracks WHERE id = ?", (tracks[1].id,)))
    after = playlists.lookup(playlist.uri)
    assert [t.title for t in after.tracks] == ["Song 1", "Song 3"] and after.length == 2
    # Positions count what is there: position 1 is now Song 3.
    after = playlists.remove(playlist.uri, 1)
    assert [t.title for t in after.tracks] == ["Song 1"]


def test_playlists_survive_reopening(tmp_path: Path) -> None:
    db = Database(tmp_path / "service.db")
    Accounts(db).add_user("alice", "password-alice")
    track = add_track(Catalog(db), "Kept")
    uri = Playlists(db).create("alice", "Kept", [track.uri]).uri
    db.close()
    db = Database(tmp_path / "service.db")
    try:
        assert [t.title for t in Playlists(db).lookup(uri).tracks] == ["Kept"]
    finally:
        db.close()
