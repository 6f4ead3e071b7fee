"""User playlists: named, ordered lists of catalog tracks, ``cadenza:user:<name>:playlist:<id>``.

A playlist belongs to one user and goes when the user does. Its tracks are kept in order
by position (0, 1, 2, ...); the same track may appear more than once. A track that leaves
the catalog leaves every playlist with it. Adding checks every link first: a track must be
in the catalog, an album adds its tracks in album order, and anything else is refused with
an error naming the link, so a bad link adds nothing.

Positions are indexes into the playlist as it is now (0 is the first track); each write
renumbers the playlist so they stay dense. Playlists are short enough (at most
:data:`MAX_TRACKS`) for that to cost nothing that matters.

The methods are synchronous and serialised through :class:`Database`, like the catalog's.
A playlist's tracks are the catalog's full track records (:class:`Track`), so a speaker
plays a playlist as it plays an album.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cadenza import links

from .accounts import SCHEMA as ACCOUNTS_SCHEMA
from .catalog import Catalog, NotFound, Track, UnsupportedLink, _load_albums, _load_tracks
from .db import Database, transaction

__all__ = ["MAX_NAME", "MAX_TRACKS", "Playlist", "Playlists"]

# Spotify's old limit; also bounds the rewrite each change makes.
MAX_TRACKS = 10_000
MAX_NAME = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS playlists (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created REAL NOT NULL,            -- unix seconds
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS playlists_owner ON playlists(owner);
CREATE TABLE IF NOT EXISTS playlist_tracks (
    playlist_id TEXT NOT NULL REFERENCES playlists(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    track_id TEXT NOT NULL REFERENCES catalog_tracks(id) ON DELETE CASCADE,
    PRIMARY KEY (playlist_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS playlist_tracks_track ON playlist_tracks(track_id);
"""


@dataclass(frozen=True, slots=True)
class Playlist:
    """A playlist; ``tracks`` is empty in :meth:`Playlists.list` results unless ``full``,
    ``length`` is always the number of tracks."""

    id: str
    uri: str
    name: str
    owner: str
    created: float
    updated: float
    length: int
    tracks: tuple[Track, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "tracks": [t.to_json() for t in self.tracks],
        }


PlaylistRef = str | links.Link


class Playlists:
    """Playlists in the service's database; see the module docstring.

    The tables refer to the accounts' ``users`` and the catalog's ``catalog_tracks``, so
    opening the playlists makes sure those exist too.
    """

    def __init__(self, db: Database, catalog: Catalog | None = None) -> None:
        self.db = db
        self.catalog = catalog if catalog is not None else Catalog(db)
        db.apply_schema(ACCOUNTS_SCHEMA)
        db.apply_schema(SCHEMA)

    # writing

    def create(self, owner: str, name: str, track_uris: Iterable[str] = ()) -> Playlist:
        """A new playlist of ``owner``'s holding ``track_uris`` (see :meth:`add`).

        ValueError if the user does not exist, the name is empty or too long, or a link
        is bad (LinkError, a ValueError, for a malformed one).
        """
        name = _name(name)
        uris = _uris(track_uris)
        playlist_id = links.new_id()
        self.db.call(_create, playlist_id, owner, name, uris, time.time())
        return self.lookup(links.Link("playlist", playlist_id, user=owner))

    def add(
        self, playlist: PlaylistRef, track_uris: Iterable[str], position: int | None = None
    ) -> Playlist:
        """Insert tracks before ``position`` (0-based; None: at the end); return the playlist.

        Each link is a ``cadenza:track:<id>`` the catalog has, or a ``cadenza:album:<id>``
        (its tracks, in album order). A bad link raises ValueError naming it and adds
        nothing. NotFound if there is no such playlist.
        """
        uris = _uris(track_uris)
        if position is not None:
            _position(position)
        ref = _ref(playlist)
        self.db.call(_add, ref, uris, position, time.time())
        return self.lookup(ref.link)

    def remove(self, playlist: PlaylistRef, position: int) -> Playlist:
        """Remove the track at ``position`` (0-based); return the playlist.

        ValueError if there is no such position, NotFound if there is no such playlist.
        """
        _position(position)
        ref = _ref(playlist)
        self.db.call(_remove, ref, position, time.time())
        return self.lookup(ref.link)

    def rename(self, playlist: PlaylistRef, name: str) -> Playlist:
        name = _name(name)
        ref = _ref(playlist)
        self.db.call(_rename, ref, name, time.time())
        return self.lookup(ref.link)

    def delete(self, playlist: PlaylistRef) -> None:
        """Delete the playlist; NotFound if there is none."""
        self.db.call(_delete, _ref(playlist))

    # reading

    def list(self, owner: str, *, full: bool = False) -> builtins.list[Playlist]:
        """The user's playlists, oldest first; with their tracks if ``full``.

        An unknown user has none.
        """
        return self.db.call(_list, owner, full)

    def lookup(self, link: PlaylistRef) -> Playlist:
        """The playlist a ``cadenza:user:<name>:playlist:<id>`` link names, with its tracks.

        NotFound if there is no such playlist or ``<name>`` is not its owner;
        :class:`links.LinkError` for a malformed link, :class:`UnsupportedLink` for a link
        to anything but a playlist. A ``#m:ss`` offset is ignored.
        """
        parsed = links.parse(link) if isinstance(link, str) else link
        if parsed.kind != "playlist":
            raise UnsupportedLink(f"{parsed}: not a playlist link")
        return self.db.call(_lookup, _Ref(parsed.id, parsed.user))


# -- validation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    """A playlist id, and the user the link named (empty for a bare id: not checked)."""

    id: str
    user: str

    @property
    def link(self) -> links.Link:
        return links.Link("playlist", self.id, user=self.user)

    def uri(self) -> str:
        return str(self.link) if self.user else self.id


def _ref(playlist: PlaylistRef) -> _Ref:
    if isinstance(playlist, links.Link):
        link = playlist
    elif not isinstance(playlist, str):
        raise TypeError(f"a playlist is a link or an id, not {type(playlist).__name__}")
    elif playlist.startswith("cadenza:"):
        link = links.parse(playlist)
    else:
        links.decode_id(playlist)
        return _Ref(playlist, "")
    if link.kind != "playlist":
        raise UnsupportedLink(f"{link}: not a playlist link")
    return _Ref(link.id, link.user)


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a playlist name must be a string, not {type(value).__name__}")
    name = " ".join(value.split())
    if not name:
        raise ValueError("the playlist name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"the playlist name is longer than {MAX_NAME} characters")
    return name


def _uris(values: object) -> list[str]:
    # A bare string is iterable too; one link must not become a list of characters.
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"track links must be a list of links, not {type(values).__name__}")
    uris = list(values)
    for uri in uris:
        if not isinstance(uri, str):
            raise TypeError(f"a track link must be a string, not {type(uri).__name__}")
    return uris


def _position(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a position must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"position {value} is negative")
    return value


# -- SQL -------------------------------------------------------------------------------


def _resolve(conn: sqlite3.Connection, uris: Sequence[str]) -> list[str]:
    """The track ids the links stand for, in order; ValueError naming the first bad one."""
    ids: list[str] = []
    for uri in uris:
        try:
            link = links.parse(uri)
        except links.IdOutOfRange:
            raise ValueError(f"{uri} is not in the catalog") from None
        except links.LinkError as exc:
            if uri in str(exc):
                raise
            raise links.LinkError(f"{uri!r}: {exc}") from None
        if link.kind == "track":
            row = conn.execute("SELECT 1 FROM catalog_tracks WHERE id = ?", (link.id,)).fetchone()
            if row is None:
                raise ValueError(f"{uri} is not in the catalog")
            ids.append(link.id)
        elif link.kind == "album":
            albums = _load_albums(conn, [link.id], full=True)
            if not albums:
                raise ValueError(f"{uri} is not in the catalog")
            ids.extend(t.id for t in albums[0].tracks)
        else:
            raise ValueError(f"{uri}: a playlist holds tracks (or an album's), not {link.kind}s")
    return ids


def _owned(conn: sqlite3.Connection, ref: _Ref) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, owner, name, created, updated FROM playlists WHERE id = ?", (ref.id,)
    ).fetchone()
    # A link naming another user names nothing: it must not reveal that the id exists.
    if row is None or (ref.user and row["owner"] != ref.user):
        raise NotFound(ref.uri())
    return row


def _track_ids(conn: sqlite3.Connection, playlist_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT track_id FROM playlist_tracks WHERE playlist_id = ? ORDER BY position",
        (playlist_id,),
    )
    return [row[0] for row in rows]


def _write_tracks(
    conn: sqlite3.Connection, playlist_id: str, track_ids: Sequence[str], now: float
) -> None:
    if len(track_ids) > MAX_TRACKS:
        raise ValueError(f"a playlist holds at most {MAX_TRACKS} tracks, not {len(track_ids)}")
    conn.execute("DELETE FROM playlist_tracks WHERE playlist_id = ?", (playlist_id,))
    conn.executemany(
        "INSERT INTO playlist_tracks (playlist_id, position, track_id) VALUES (?, ?, ?)",
        [(playlist_id, i, track_id) for i, track_id in enumerate(track_ids)],
    )
    conn.execute("UPDATE playlists SET updated = ? WHERE id = ?", (now, playlist_id))


def _create(
    conn: sqlite3.Connection,
    playlist_id: str,
    owner: str,
    name: str,
    uris: Sequence[str],
    now: float,
) -> None:
    with transaction(conn):
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (owner,)).fetchone() is None:
            raise ValueError(f"no user {owner!r}")
        track_ids = _resolve(conn, uris)
        conn.execute(
            "INSERT INTO playlists (id, owner, name, created, updated) VALUES (?, ?, ?, ?, ?)",
            (playlist_id, owner, name, now, now),
        )
        _write_tracks(conn, playlist_id, track_ids, now)


def _add(
    conn: sqlite3.Connection, ref: _Ref, uris: Sequence[str], position: int | None, now: float
) -> None:
    with transaction(conn):
        _owned(conn, ref)
        new = _resolve(conn, uris)
        track_ids = _track_ids(conn, ref.id)
        if position is None:
            position = len(track_ids)
        elif position > len(track_ids):
            raise ValueError(
                f"position {position} is past the end of the playlist ({len(track_ids)} tracks)"
            )
        track_ids[position:position] = new
        _write_tracks(conn, ref.id, track_ids, now)


def _remove(conn: sqlite3.Connection, ref: _Ref, position: int, now: float) -> None:
    with transaction(conn):
        _owned(conn, ref)
        track_ids = _track_ids(conn, ref.id)
        if position >= len(track_ids):
            raise ValueError(
                f"no track at position {position} (the playlist has {len(track_ids)} tracks)"
            )
        del track_ids[position]
        _write_tracks(conn, ref.id, track_ids, now)


def _rename(conn: sqlite3.Connection, ref: _Ref, name: str, now: float) -> None:
    with transaction(conn):
        _owned(conn, ref)
        conn.execute("UPDATE playlists SET name = ?, updated = ? WHERE id = ?", (name, now, ref.id))


def _delete(conn: sqlite3.Connection, ref: _Ref) -> None:
    with transaction(conn):
        _owned(conn, ref)
        conn.execute("DELETE FROM playlists WHERE id = ?", (ref.id,))


def _playlist(conn: sqlite3.Connection, row: sqlite3.Row, length: int, full: bool) -> Playlist:
    tracks = tuple(_load_tracks(conn, _track_ids(conn, row["id"]))) if full else ()
    return Playlist(
        id=row["id"],
        uri=str(links.Link("playlist", row["id"], user=row["owner"])),
        name=row["name"],
        owner=row["owner"],
        created=row["created"],
        updated=row["updated"],
        length=len(tracks) if full else length,
        tracks=tracks,
    )


def _lookup(conn: sqlite3.Connection, ref: _Ref) -> Playlist:
    # One read transaction: the row and its tracks come from the same snapshot.
    conn.execute("BEGIN")
    try:
        return _playlist(conn, _owned(conn, ref), 0, True)
    finally:
        conn.execute("COMMIT")


def _list(conn: sqlite3.Connection, owner: str, full: bool) -> list[Playlist]:
    conn.execute("BEGIN")
    try:
        rows = conn.execute(
            "SELECT p.id, p.owner, p.name, p.created, p.updated,"
            " (SELECT count(*) FROM playlist_tracks t WHERE t.playlist_id = p.id) AS length"
            " FROM playlists p WHERE p.owner = ? ORDER BY p.created, p.rowid",
            (owner,),
        ).fetchall()
        return [_playlist(conn, row, row["length"], full) for row in rows]
    finally:
        conn.execute("COMMIT")
