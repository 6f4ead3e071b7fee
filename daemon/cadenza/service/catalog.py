"""The catalog: artists, albums, tracks and their encoded files, with full-text search.

Every entity has a 22-character base62 id (:func:`cadenza.links.new_id`) and a
``cadenza:<kind>:<id>`` link. Artists are shared by name and albums by title plus album
artists, both compared case-insensitively, so ingesting a second track of an album adds to
the album rather than creating another. Ingest is idempotent: a track is keyed by the hash
of its source file, and adding the same source again returns the track already there.

Search uses SQLite FTS5 with bm25 ranking. User input never reaches FTS5's query syntax:
it is split into words, each word is quoted, and the last one becomes a prefix so that
results follow the user's typing. A title (or name) that equals the query word for word,
ignoring case, accents and punctuation, always ranks above partial matches.

The methods are synchronous and serialised through :class:`Database`. Async callers run
them in a worker thread: ``await blocking.run_sync(catalog.lookup, link)``.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from cadenza import links
from cadenza.service.db import Database, transaction

__all__ = [
    "MAX_SEARCH_LIMIT",
    "TOP_TRACKS",
    "Album",
    "AlbumRef",
    "Artist",
    "ArtistRef",
    "Catalog",
    "FileRef",
    "NotFound",
    "SearchKind",
    "Track",
    "UnsupportedLink",
]

SearchKind = Literal["track", "album", "artist"]

# One page of results is what a phone screen shows; deeper pages use offset.
MAX_SEARCH_LIMIT = 50
# Beyond this, extra words only narrow an already specific query but cost an FTS term each.
MAX_QUERY_WORDS = 16
# Bounds the work a single request can ask for; no title is typed longer than this.
MAX_QUERY_CHARS = 256
# An artist page shows this many tracks, as the seed's client did.
TOP_TRACKS = 10
# bm25 column weights: a hit in a track's title counts more than one in its artists,
# which counts more than one in its album's title.
TRACK_WEIGHTS = (10.0, 4.0, 2.0)  # title, artists, album
ALBUM_WEIGHTS = (10.0, 4.0)  # title, artists
# Keep IN (...) lists well below SQLite's limit on bound parameters.
_BATCH = 500

_FILE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# Letters and digits: what FTS5's unicode61 tokenizer keeps as token characters.
_WORD_RE = re.compile(r"[^\W_]+")

_FTS_OPTIONS = "tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS catalog_artists (
    seq INTEGER PRIMARY KEY,          -- stable rowid, shared with catalog_artist_search
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,    -- identity: case-folded, whitespace collapsed
    match_key TEXT NOT NULL           -- words only, for exact-match ranking
);
CREATE TABLE IF NOT EXISTS catalog_albums (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    year INTEGER,
    album_key TEXT NOT NULL UNIQUE,   -- identity: title key + album artist ids
    match_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_album_artists (
    album_id TEXT NOT NULL REFERENCES catalog_albums(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    artist_id TEXT NOT NULL REFERENCES catalog_artists(id),
    PRIMARY KEY (album_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS catalog_album_artists_artist
    ON catalog_album_artists(artist_id);
CREATE TABLE IF NOT EXISTS catalog_tracks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    match_key TEXT NOT NULL,
    album_id TEXT NOT NULL REFERENCES catalog_albums(id),
    disc INTEGER,
    number INTEGER,
    duration_ms INTEGER NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    loudness_lufs REAL,
    peak_dbfs REAL,
    source_hash TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL            -- unix seconds
);
CREATE INDEX IF NOT EXISTS catalog_tracks_album ON catalog_tracks(album_id);
CREATE TABLE IF NOT EXISTS catalog_track_artists (
    track_id TEXT NOT NULL REFERENCES catalog_tracks(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    artist_id TEXT NOT NULL REFERENCES catalog_artists(id),
    PRIMARY KEY (track_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS catalog_track_artists_artist
    ON catalog_track_artists(artist_id);
CREATE TABLE IF NOT EXISTS catalog_files (
    track_id TEXT NOT NULL REFERENCES catalog_tracks(id) ON DELETE CASCADE,
    bitrate INTEGER NOT NULL,         -- nominal kbps
    file_id TEXT NOT NULL,            -- hash-tree root, 64 hex digits
    size INTEGER NOT NULL,
    codec TEXT NOT NULL DEFAULT 'vorbis',
    PRIMARY KEY (track_id, bitrate)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS catalog_files_file ON catalog_files(file_id);

CREATE VIRTUAL TABLE IF NOT EXISTS catalog_track_search
    USING fts5(title, artists, album, {_FTS_OPTIONS});
CREATE VIRTUAL TABLE IF NOT EXISTS catalog_album_search
    USING fts5(title, artists, {_FTS_OPTIONS});
CREATE VIRTUAL TABLE IF NOT EXISTS catalog_artist_search
    USING fts5(name, {_FTS_OPTIONS});

-- add_track fills the search tables in its transaction; removing a row anywhere else
-- must not leave a search hit that points nowhere.
CREATE TRIGGER IF NOT EXISTS catalog_tracks_unindex AFTER DELETE ON catalog_tracks BEGIN
    DELETE FROM catalog_track_search WHERE rowid = old.seq;
END;
CREATE TRIGGER IF NOT EXISTS catalog_albums_unindex AFTER DELETE ON catalog_albums BEGIN
    DELETE FROM catalog_album_search WHERE rowid = old.seq;
END;
CREATE TRIGGER IF NOT EXISTS catalog_artists_unindex AFTER DELETE ON catalog_artists BEGIN
    DELETE FROM catalog_artist_search WHERE rowid = old.seq;
END;
"""


class NotFound(LookupError):
    """No such track, album or artist; the message names the link."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri} is not in the catalog")
        self.uri = uri


class UnsupportedLink(LookupError):
    """A well-formed link that the catalog does not resolve (playlists, searches)."""


# -- records ---------------------------------------------------------------------------


class _Record:
    """A record whose JSON form is its fields in order; a nested record or a tuple of
    them becomes its JSON form (a list for a tuple)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


def _json(value: object) -> object:
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ArtistRef(_Record):
    id: str
    name: str
    uri: str


@dataclass(frozen=True, slots=True)
class AlbumRef(_Record):
    id: str
    title: str
    uri: str


@dataclass(frozen=True, slots=True)
class FileRef(_Record):
    """One encoded file of a track: Ogg Vorbis at a nominal bitrate, named by content."""

    bitrate: int  # nominal kbps
    file_id: str  # root of the SHA-256 hash tree, 64 lowercase hex digits
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Track(_Record):
    id: str
    uri: str
    title: str
    artists: tuple[ArtistRef, ...]
    album: AlbumRef
    disc: int | None
    number: int | None
    duration_ms: int
    sample_rate: int
    channels: int
    loudness_lufs: float | None
    peak_dbfs: float | None
    files: tuple[FileRef, ...]  # by ascending bitrate


@dataclass(frozen=True, slots=True)
class Album(_Record):
    """An album; ``tracks`` (by disc, then number) is empty in search results."""

    id: str
    uri: str
    title: str
    artists: tuple[ArtistRef, ...]
    year: int | None
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class Artist(_Record):
    """An artist; ``albums`` and ``top_tracks`` are empty in search results."""

    id: str
    uri: str
    name: str
    albums: tuple[AlbumRef, ...]
    top_tracks: tuple[Track, ...]


# -- text keys -------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Whitespace collapsed, NFC: the form names are stored and shown in."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def identity_key(name: str) -> str:
    """What makes two artist names (or album titles) the same: case and spacing ignored."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def match_key(text: str) -> str:
    """The words of ``text`` with case, accents and punctuation dropped.

    A title whose key equals the query's key is an exact match for ranking.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD_RE.findall(bare.casefold()))


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression for user input, or None if it has no words.

    Every word is a quoted string (so ``AND``, ``NEAR(``, ``*``, ``"`` and column filters
    are just text), all words must match, and the last word is a prefix while the user
    is still typing it (the input ends inside it).
    """
    text = unicodedata.normalize("NFC", text[:MAX_QUERY_CHARS])
    matches = list(_WORD_RE.finditer(text))[:MAX_QUERY_WORDS]
    if not matches:
        return None
    terms = ['"' + m.group().replace('"', '""') + '"' for m in matches]
    if matches[-1].end() == len(text):
        terms[-1] += "*"
    return " ".join(terms)


# -- validation ------------------------------------------------------------------------


def _name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    cleaned = _clean(value)
    if not cleaned:
        raise ValueError(f"{what} is empty")
    return cleaned


def _names(values: object, what: str) -> list[str]:
    # A bare string is a Sequence[str] too; "ABBA" must not become four artists.
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of names, not {type(values).__name__}")
    names: list[str] = []
    seen: set[str] = set()
    for i, value in enumerate(values):
        name = _name(value, f"{what}[{i}]")
        if identity_key(name) not in seen:
            seen.add(identity_key(name))
            names.append(name)
    if not names:
        raise ValueError(f"{what} is empty")
    return names


def _int(value: object, what: str, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def _optional_int(value: object, what: str, *, minimum: int) -> int | None:
    return None if value is None else _int(value, what, minimum=minimum)


def _level(value: object, what: str) -> float | None:
    # Digital silence measures -inf; JSON has no infinities, so it is stored as unknown.
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{what} must be a number or None, not {type(value).__name__}")
    return float(value) if math.isfinite(value) else None


def _files(files: object) -> list[FileRef]:
    if not isinstance(files, Sequence):
        raise TypeError("files must be a sequence of FileRef")
    bitrates: set[int] = set()
    out: list[FileRef] = []
    for i, f in enumerate(files):
        if not isinstance(f, FileRef):
            raise TypeError(f"files[{i}] must be a FileRef, not {type(f).__name__}")
        _int(f.bitrate, f"files[{i}].bitrate", minimum=1)
        _int(f.size, f"files[{i}].size", minimum=0)
        if not isinstance(f.file_id, str) or not _FILE_ID_RE.match(f.file_id):
            raise ValueError(f"files[{i}].file_id {f.file_id!r} is not 64 lowercase hex digits")
        if f.bitrate in bitrates:
            raise ValueError(f"files: two files at {f.bitrate} kbps")
        bitrates.add(f.bitrate)
        out.append(f)
    return sorted(out, key=lambda f: f.bitrate)


def _uri(kind: Literal["track", "album", "artist"], id: str) -> str:
    return str(links.Link(kind, id))


def _batches(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _BATCH):
        yield ids[i : i + _BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _rows(conn: sqlite3.Connection, sql: str, ids: Sequence[str]) -> Iterator[sqlite3.Row]:
    """The rows of ``sql`` for all of ``ids``, a batch at a time; ``{marks}`` in ``sql``
    stands for a batch's placeholders."""
    for batch in _batches(ids):
        yield from conn.execute(sql.format(marks=_marks(len(batch))), batch)


STATS_KEYS = ("tracks", "albums", "artists", "files", "bytes")


# -- the catalog -----------------------------------------------------------------------


class Catalog:
    """Tracks, albums and artists in the service's database; see the module docstring."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.apply_schema(SCHEMA)

    # writing

    def add_track(
        self,
        *,
        title: str,
        artists: Sequence[str],
        album: str,
        album_artists: Sequence[str] | None = None,
        year: int | None,
        disc: int | None,
        number: int | None,
        duration_ms: int,
        sample_rate: int,
        channels: int,
        loudness_lufs: float | None,
        peak_dbfs: float | None,
        files: Sequence[FileRef],
        source_hash: str,
    ) -> Track:
        """Add a track in one transaction and return it.

        Artists are reused by name and the album by title plus album artists (the track's
        artists when ``album_artists`` is None), case-insensitively. If a track from the
        same ``source_hash`` exists, it is returned unchanged and nothing is written.
        A non-finite loudness or peak (silence) is stored as None. Bad arguments raise
        TypeError or ValueError naming the argument.
        """
        new = _NewTrack(
            title=_name(title, "title"),
            artists=_names(artists, "artists"),
            album=_name(album, "album"),
            album_artists=_names(album_artists, "album_artists")
            if album_artists is not None
            else None,
            year=_optional_int(year, "year", minimum=0),
            disc=_optional_int(disc, "disc", minimum=0),
            number=_optional_int(number, "number", minimum=0),
            duration_ms=_int(duration_ms, "duration_ms", minimum=0),
            sample_rate=_int(sample_rate, "sample_rate", minimum=1),
            channels=_int(channels, "channels", minimum=1),
            loudness_lufs=_level(loudness_lufs, "loudness_lufs"),
            peak_dbfs=_level(peak_dbfs, "peak_dbfs"),
            files=_files(files),
            source_hash=_name(source_hash, "source_hash"),
        )
        return self.db.call(_add_track, new)

    # reading

    def track_for_source(self, source_hash: str) -> Track | None:
        """The track ingested from this source file, if any."""

        def query(conn: sqlite3.Connection) -> Track | None:
            row = conn.execute(
                "SELECT id FROM catalog_tracks WHERE source_hash = ?", (source_hash,)
            ).fetchone()
            return _load_tracks(conn, [row["id"]])[0] if row else None

        return self.db.call(query)

    def track(self, id: str) -> Track:
        """The track with this id; NotFound if there is none, LinkError if malformed."""
        links.decode_id(id)
        found = self._lookup(links.Link("track", id))
        assert isinstance(found, Track)
        return found

    def lookup(self, uri_or_link: str | links.Link) -> Track | Album | Artist:
        """Resolve a track, album or artist link to its full record.

        Albums come with their tracks; artists with their albums and up to
        :data:`TOP_TRACKS` tracks. Raises :class:`links.LinkError` for a malformed
        link, :class:`UnsupportedLink` for playlists and searches, :class:`NotFound`
        for an id the catalog does not have. A ``#m:ss`` offset is ignored.
        """
        link = links.parse(uri_or_link) if isinstance(uri_or_link, str) else uri_or_link
        return self._lookup(link)

    def _lookup(self, link: links.Link) -> Track | Album | Artist:
        if link.kind not in ("track", "album", "artist"):
            raise UnsupportedLink(
                f"{link}: the catalog resolves tracks, albums and artists, not {link.kind}s"
            )
        kind = link.kind
        uri = _uri(kind, link.id)

        def query(conn: sqlite3.Connection) -> Track | Album | Artist:
            found = _load(conn, kind, [link.id], full=True)
            if not found:
                raise NotFound(uri)
            return found[0]

        return self.db.call(query)

    def tracks_for_file(self, file_id: str) -> list[str]:
        """Ids of the tracks that have this encoded file (usually one), oldest first."""

        def query(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT f.track_id FROM catalog_files f"
                " JOIN catalog_tracks t ON t.id = f.track_id"
                " WHERE f.file_id = ? ORDER BY t.seq",
                (file_id,),
            )
            return [row[0] for row in rows]

        return self.db.call(query)

    def search(
        self, kind: SearchKind, query: str, *, limit: int = 20, offset: int = 0
    ) -> tuple[list[Track | Album | Artist], int]:
        """One page of results for ``query`` and the total number of matches.

        Ranked by bm25, except that a title (or artist name) equal to the whole query,
        ignoring case, accents and punctuation, always comes first. The last word
        matches as a prefix while it is being typed. Any string is a valid query; one
        without letters or digits matches nothing. ``limit`` is capped at
        :data:`MAX_SEARCH_LIMIT`; albums and artists come without their tracks.
        """
        if kind not in _SEARCH:
            raise ValueError(f"search kind must be track, album or artist, not {kind!r}")
        if not isinstance(query, str):
            raise TypeError("query must be a string")
        limit = _int(limit, "limit", minimum=0)
        offset = _int(offset, "offset", minimum=0)
        expression = fts_query(query)
        if expression is None:
            return [], 0
        return self.db.call(
            _search,
            _SEARCH[kind],
            expression,
            match_key(query),
            min(limit, MAX_SEARCH_LIMIT),
            offset,
        )

    def stats(self) -> dict[str, int]:
        """Counts of tracks, albums, artists and files, and the bytes the files hold."""

        def query(conn: sqlite3.Connection) -> dict[str, int]:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM catalog_tracks) AS tracks,"
                " (SELECT count(*) FROM catalog_albums) AS albums,"
                " (SELECT count(*) FROM catalog_artists) AS artists,"
                " (SELECT count(*) FROM catalog_files) AS files,"
                " (SELECT coalesce(sum(size), 0) FROM catalog_files) AS bytes"
            ).fetchone()
            return {key: int(row[key]) for key in STATS_KEYS}

        return self.db.call(query)


# -- writing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NewTrack:
    title: str
    artists: list[str]
    album: str
    album_artists: list[str] | None
    year: int | None
    disc: int | None
    number: int | None
    duration_ms: int
    sample_rate: int
    channels: int
    loudness_lufs: float | None
    peak_dbfs: float | None
    files: list[FileRef]
    source_hash: str


def _add_track(conn: sqlite3.Connection, new: _NewTrack) -> Track:
    with transaction(conn):
        row = conn.execute(
            "SELECT id FROM catalog_tracks WHERE source_hash = ?", (new.source_hash,)
        ).fetchone()
        if row is not None:
            return _load_tracks(conn, [row["id"]])[0]

        artist_ids = [_artist_id(conn, name) for name in new.artists]
        album_names = new.album_artists if new.album_artists is not None else new.artists
        album_artist_ids = [_artist_id(conn, name) for name in album_names]
        album_id = _album_id(conn, new.album, album_artist_ids, new.year)

        track_id = links.new_id()
        cursor = conn.execute(
            "INSERT INTO catalog_tracks (id, title, match_key, album_id, disc, number,"
            " duration_ms, sample_rate, channels, loudness_lufs, peak_dbfs, source_hash,"
            " added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                track_id,
                new.title,
                match_key(new.title),
                album_id,
                new.disc,
                new.number,
                new.duration_ms,
                new.sample_rate,
                new.channels,
                new.loudness_lufs,
                new.peak_dbfs,
                new.source_hash,
                time.time(),
            ),
        )
        conn.executemany(
            "INSERT INTO catalog_track_artists (track_id, position, artist_id) VALUES (?, ?, ?)",
            [(track_id, i, artist_id) for i, artist_id in enumerate(artist_ids)],
        )
        conn.executemany(
            "INSERT INTO catalog_files (track_id, bitrate, file_id, size, codec)"
            " VALUES (?, ?, ?, ?, 'vorbis')",
            [(track_id, f.bitrate, f.file_id, f.size) for f in new.files],
        )
        conn.execute(
            "INSERT INTO catalog_track_search (rowid, title, artists, album) VALUES (?, ?, ?, ?)",
            (cursor.lastrowid, new.title, " ".join(new.artists), new.album),
        )
        return _load_tracks(conn, [track_id])[0]


def _artist_id(conn: sqlite3.Connection, name: str) -> str:
    key = identity_key(name)
    row = conn.execute("SELECT id FROM catalog_artists WHERE name_key = ?", (key,)).fetchone()
    if row is not None:
        return str(row["id"])
    artist_id = links.new_id()
    cursor = conn.execute(
        "INSERT INTO catalog_artists (id, name, name_key, match_key) VALUES (?, ?, ?, ?)",
        (artist_id, name, key, match_key(name)),
    )
    conn.execute(
        "INSERT INTO catalog_artist_search (rowid, name) VALUES (?, ?)", (cursor.lastrowid, name)
    )
    return artist_id


def _album_id(conn: sqlite3.Connection, title: str, artist_ids: list[str], year: int | None) -> str:
    key = identity_key(title) + "\x1f" + ",".join(artist_ids)
    row = conn.execute("SELECT id FROM catalog_albums WHERE album_key = ?", (key,)).fetchone()
    if row is not None:
        # The first track may have come without a year; a later one fills it in.
        conn.execute(
            "UPDATE catalog_albums SET year = coalesce(year, ?) WHERE id = ?", (year, row["id"])
        )
        return str(row["id"])
    album_id = links.new_id()
    cursor = conn.execute(
        "INSERT INTO catalog_albums (id, title, year, album_key, match_key) VALUES (?, ?, ?, ?, ?)",
        (album_id, title, year, key, match_key(title)),
    )
    conn.executemany(
        "INSERT INTO catalog_album_artists (album_id, position, artist_id) VALUES (?, ?, ?)",
        [(album_id, i, artist_id) for i, artist_id in enumerate(artist_ids)],
    )
    names = conn.execute(
        f"SELECT name FROM catalog_artists WHERE id IN ({_marks(len(artist_ids))})", artist_ids
    )
    conn.execute(
        "INSERT INTO catalog_album_search (rowid, title, artists) VALUES (?, ?, ?)",
        (cursor.lastrowid, title, " ".join(row["name"] for row in names)),
    )
    return album_id


# -- reading ---------------------------------------------------------------------------


def _load_tracks(conn: sqlite3.Connection, ids: Sequence[str]) -> list[Track]:
    """Tracks in the order of ``ids``; unknown ids are left out."""
    tracks: dict[str, Track] = {}
    for batch in _batches(ids):
        marks = _marks(len(batch))
        artists: dict[str, list[ArtistRef]] = {}
        for row in conn.execute(
            "SELECT ta.track_id, a.id, a.name FROM catalog_track_artists ta"
            " JOIN catalog_artists a ON a.id = ta.artist_id"
            f" WHERE ta.track_id IN ({marks}) ORDER BY ta.track_id, ta.position",
            batch,
        ):
            artists.setdefault(row[0], []).append(
                ArtistRef(row["id"], row["name"], _uri("artist", row["id"]))
            )
        files: dict[str, list[FileRef]] = {}
        for row in conn.execute(
            "SELECT track_id, bitrate, file_id, size FROM catalog_files"
            f" WHERE track_id IN ({marks}) ORDER BY track_id, bitrate",
            batch,
        ):
            files.setdefault(row["track_id"], []).append(
                FileRef(row["bitrate"], row["file_id"], row["size"])
            )
        for row in conn.execute(
            "SELECT t.*, al.title AS album_title FROM catalog_tracks t"
            f" JOIN catalog_albums al ON al.id = t.album_id WHERE t.id IN ({marks})",
            batch,
        ):
            tracks[row["id"]] = Track(
                id=row["id"],
                uri=_uri("track", row["id"]),
                title=row["title"],
                artists=tuple(artists.get(row["id"], ())),
                album=AlbumRef(row["album_id"], row["album_title"], _uri("album", row["album_id"])),
                disc=row["disc"],
                number=row["number"],
                duration_ms=row["duration_ms"],
                sample_rate=row["sample_rate"],
                channels=row["channels"],
                loudness_lufs=row["loudness_lufs"],
                peak_dbfs=row["peak_dbfs"],
                files=tuple(files.get(row["id"], ())),
            )
    return [tracks[id] for id in ids if id in tracks]


def _album_artists(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, list[ArtistRef]]:
    out: dict[str, list[ArtistRef]] = {}
    for row in _rows(
        conn,
        "SELECT aa.album_id, a.id, a.name FROM catalog_album_artists aa"
        " JOIN catalog_artists a ON a.id = aa.artist_id"
        " WHERE aa.album_id IN ({marks}) ORDER BY aa.album_id, aa.position",
        ids,
    ):
        out.setdefault(row[0], []).append(
            ArtistRef(row["id"], row["name"], _uri("artist", row["id"]))
        )
    return out


# Unnumbered tracks and discs after numbered ones; the title settles ties.
_TRACK_ORDER = "t.disc IS NULL, t.disc, t.number IS NULL, t.number, t.title, t.seq"
# Oldest release first, undated at the end.
_ALBUM_ORDER = "al.year IS NULL, al.year, al.title, al.seq"


def _load_albums(conn: sqlite3.Connection, ids: Sequence[str], *, full: bool) -> list[Album]:
    """Albums in the order of ``ids``; with their tracks if ``full``."""
    artists = _album_artists(conn, ids)
    albums: dict[str, Album] = {}
    for row in _rows(conn, "SELECT id, title, year FROM catalog_albums WHERE id IN ({marks})", ids):
        tracks: tuple[Track, ...] = ()
        if full:
            track_ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT t.id FROM catalog_tracks t WHERE t.album_id = ?"
                    f" ORDER BY {_TRACK_ORDER}",
                    (row["id"],),
                )
            ]
            tracks = tuple(_load_tracks(conn, track_ids))
        albums[row["id"]] = Album(
            id=row["id"],
            uri=_uri("album", row["id"]),
            title=row["title"],
            artists=tuple(artists.get(row["id"], ())),
            year=row["year"],
            tracks=tracks,
        )
    return [albums[id] for id in ids if id in albums]


def _load_artists(conn: sqlite3.Connection, ids: Sequence[str], *, full: bool) -> list[Artist]:
    """Artists in the order of ``ids``; with albums and top tracks if ``full``."""
    artists: dict[str, Artist] = {}
    for row in _rows(conn, "SELECT id, name FROM catalog_artists WHERE id IN ({marks})", ids):
        albums: tuple[AlbumRef, ...] = ()
        top: tuple[Track, ...] = ()
        if full:
            albums = _artist_albums(conn, row["id"])
            top = tuple(_load_tracks(conn, _top_track_ids(conn, row["id"])))
        artists[row["id"]] = Artist(
            id=row["id"],
            uri=_uri("artist", row["id"]),
            name=row["name"],
            albums=albums,
            top_tracks=top,
        )
    return [artists[id] for id in ids if id in artists]


def _load(
    conn: sqlite3.Connection, kind: SearchKind, ids: Sequence[str], *, full: bool
) -> list[Track | Album | Artist]:
    """Records of ``kind`` in the order of ``ids``; albums and artists whole if ``full``."""
    if kind == "track":
        return list(_load_tracks(conn, ids))
    if kind == "album":
        return list(_load_albums(conn, ids, full=full))
    return list(_load_artists(conn, ids, full=full))


def _artist_albums(conn: sqlite3.Connection, artist_id: str) -> tuple[AlbumRef, ...]:
    # Albums the artist made, and albums the artist appears on (a featured track).
    rows = conn.execute(
        "SELECT al.id, al.title FROM catalog_albums al WHERE al.id IN ("
        " SELECT album_id FROM catalog_album_artists WHERE artist_id = :a"
        " UNION SELECT t.album_id FROM catalog_tracks t"
        " JOIN catalog_track_artists ta ON ta.track_id = t.id WHERE ta.artist_id = :a)"
        f" ORDER BY {_ALBUM_ORDER}",
        {"a": artist_id},
    )
    return tuple(AlbumRef(r["id"], r["title"], _uri("album", r["id"])) for r in rows)


def _top_track_ids(conn: sqlite3.Connection, artist_id: str) -> list[str]:
    # Without play counts, "top" means the newest releases first; popularity replaces
    # this order once the service counts plays.
    rows = conn.execute(
        "SELECT t.id FROM catalog_track_artists ta"
        " JOIN catalog_tracks t ON t.id = ta.track_id"
        " JOIN catalog_albums al ON al.id = t.album_id"
        " WHERE ta.artist_id = ?"
        f" ORDER BY al.year IS NULL, al.year DESC, al.title, al.seq, {_TRACK_ORDER} LIMIT ?",
        (artist_id, TOP_TRACKS),
    )
    return [r[0] for r in rows]


# -- search ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SearchTable:
    fts: str
    base: str
    key: str  # the base table's column compared with the query's match key
    weights: tuple[float, ...]
    kind: SearchKind


_SEARCH: dict[str, _SearchTable] = {
    "track": _SearchTable(
        "catalog_track_search", "catalog_tracks", "match_key", TRACK_WEIGHTS, "track"
    ),
    "album": _SearchTable(
        "catalog_album_search", "catalog_albums", "match_key", ALBUM_WEIGHTS, "album"
    ),
    "artist": _SearchTable(
        "catalog_artist_search", "catalog_artists", "match_key", (1.0,), "artist"
    ),
}


def _search(
    conn: sqlite3.Connection,
    table: _SearchTable,
    expression: str,
    key: str,
    limit: int,
    offset: int,
) -> tuple[list[Track | Album | Artist], int]:
    (total,) = conn.execute(
        f"SELECT count(*) FROM {table.fts} WHERE {table.fts} MATCH ?", (expression,)
    ).fetchone()
    if limit == 0 or offset >= total:
        return [], total
    weights = ", ".join(str(w) for w in table.weights)
    # The exact match goes first whatever bm25 says: bm25 rewards repeated words, hits in
    # several columns and rare prefix completions, so "Help" could otherwise lose to
    # "Help, Help Me" or to a track by an artist called Help.
    rows = conn.execute(
        f"SELECT b.id FROM {table.fts} s JOIN {table.base} b ON b.seq = s.rowid"
        f" WHERE {table.fts} MATCH ?"
        f" ORDER BY b.{table.key} = ? DESC, bm25({table.fts}, {weights}), b.seq"
        " LIMIT ? OFFSET ?",
        (expression, key, limit, offset),
    )
    return _load(conn, table.kind, [row[0] for row in rows], full=False), total
