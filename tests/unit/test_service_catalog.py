"""The catalog on a real SQLite file: ingest, lookup, reuse, ordering and search."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza import links
from cadenza.service.catalog import (
    MAX_SEARCH_LIMIT,
    TOP_TRACKS,
    Album,
    Artist,
    Catalog,
    FileRef,
    NotFound,
    Track,
    UnsupportedLink,
    fts_query,
    match_key,
)
from cadenza.service.db import Database

_counter = iter(range(1_000_000))


def file_ref(bitrate: int = 160, seed: int | None = None) -> FileRef:
    n = next(_counter) if seed is None else seed
    return FileRef(bitrate, f"{n:064x}", 1000 + bitrate)


def track_args(title: str, artists: list[str], album: str, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "title": title,
        "artists": artists,
        "album": album,
        "year": 1970,
        "disc": 1,
        "number": 1,
        "duration_ms": 180_000,
        "sample_rate": 44_100,
        "channels": 2,
        "loudness_lufs": -14.0,
        "peak_dbfs": -0.5,
        "files": [file_ref(96), file_ref(160), file_ref(320)],
        "source_hash": f"source-{next(_counter)}",
    }
    args.update(kw)
    return args


def add(catalog: Catalog, title: str, artists: list[str], album: str, **kw: Any) -> Track:
    return catalog.add_track(**track_args(title, artists, album, **kw))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "service.db")
    yield database
    database.close()


@pytest.fixture
def catalog(db: Database) -> Catalog:
    return Catalog(db)


# -- adding and looking up ---------------------------------------------------------------


def test_add_and_lookup_track(catalog: Catalog) -> None:
    track = add(
        catalog,
        "Waterloo",
        ["ABBA"],
        "Waterloo",
        year=1974,
        disc=1,
        number=1,
        loudness_lufs=-11.5,
        peak_dbfs=-0.1,
        files=[file_ref(320), file_ref(96), file_ref(160)],
    )
    assert links.is_id(track.id)
    assert track.uri == f"cadenza:track:{track.id}"
    assert [a.name for a in track.artists] == ["ABBA"]
    assert track.artists[0].uri == f"cadenza:artist:{track.artists[0].id}"
    assert track.album.title == "Waterloo"
    assert track.album.uri == f"cadenza:album:{track.album.id}"
    assert [f.bitrate for f in track.files] == [96, 160, 320]
    assert (track.loudness_lufs, track.peak_dbfs) == (-11.5, -0.1)

    assert catalog.lookup(track.uri) == track
    assert catalog.lookup(links.parse(track.uri)) == track
    assert catalog.lookup(track.uri + "#1:30") == track
    assert catalog.track(track.id) == track


def test_records_are_json(catalog: Catalog) -> None:
    track = add(catalog, "Waterloo", ["ABBA"], "Waterloo")
    album = catalog.lookup(track.album.uri)
    artist = catalog.lookup(track.artists[0].uri)
    for record in (track, album, artist):
        data = record.to_json()
        assert json.loads(json.dumps(data, allow_nan=False)) == data
    data = track.to_json()
    assert data["uri"] == track.uri
    assert data["artists"] == [{"id": a.id, "name": a.name, "uri": a.uri} for a in track.artists]
    assert data["files"][0] == {
        "bitrate": 96,
        "file_id": track.files[0].file_id,
        "size": track.files[0].size,
    }
    assert album.to_json()["tracks"] == [data]


def test_records_are_frozen(catalog: Catalog) -> None:
    track = add(catalog, "Waterloo", ["ABBA"], "Waterloo")
    with pytest.raises(AttributeError):
        track.title = "Other"  # type: ignore[misc]


def test_source_hash_makes_ingest_idempotent(catalog: Catalog) -> None:
    first = add(catalog, "Waterloo", ["ABBA"], "Waterloo", source_hash="abc")
    before = catalog.stats()
    again = add(catalog, "Something Else", ["Someone"], "Other", source_hash="abc")
    assert again == first
    assert catalog.stats() == before
    assert catalog.track_for_source("abc") == first
    assert catalog.track_for_source("unknown") is None
    assert catalog.search("track", "something")[1] == 0


def test_schema_is_idempotent_and_persistent(tmp_path: Path) -> None:
    db = Database(tmp_path / "service.db")
    track = add(Catalog(db), "Waterloo", ["ABBA"], "Waterloo")
    Catalog(db)  # applying the schema again keeps the data
    db.close()
    reopened = Database(tmp_path / "service.db")
    try:
        catalog = Catalog(reopened)
        assert catalog.lookup(track.uri) == track
        assert catalog.search("track", "waterloo")[0] == [track]
    finally:
        reopened.close()


def test_artists_are_reused_case_insensitively(catalog: Catalog) -> None:
    a = add(catalog, "Waterloo", ["ABBA"], "Waterloo")
    b = add(catalog, "SOS", ["abba"], "ABBA")
    c = add(catalog, "Fernando", ["  Abba "], "Greatest Hits")
    assert a.artists == b.artists == c.artists
    assert a.artists[0].name == "ABBA"  # the first spelling wins
    assert catalog.stats()["artists"] == 1


def test_albums_are_reused_by_title_and_album_artist(catalog: Catalog) -> None:
    a = add(catalog, "Help!", ["The Beatles"], "Help!", number=1)
    b = add(catalog, "Yesterday", ["the beatles"], "HELP!", number=13)
    other = add(catalog, "Help!", ["Siouxsie and the Banshees"], "Help!")
    assert a.album == b.album
    assert other.album.id != a.album.id
    album = catalog.lookup(a.album.uri)
    assert isinstance(album, Album)
    assert [t.title for t in album.tracks] == ["Help!", "Yesterday"]
    assert [x.name for x in album.artists] == ["The Beatles"]


def test_compilation_groups_by_album_artist(catalog: Catalog) -> None:
    va = ["Various Artists"]
    one = add(catalog, "Song A", ["Artist A"], "Hits 1999", album_artists=va, number=1)
    two = add(catalog, "Song B", ["Artist B"], "Hits 1999", album_artists=va, number=2)
    assert one.album == two.album
    album = catalog.lookup(one.album.uri)
    assert isinstance(album, Album)
    assert [a.name for a in album.artists] == ["Various Artists"]
    # Artist A appears on the compilation although it is not the album artist.
    artist = catalog.lookup(one.artists[0].uri)
    assert isinstance(artist, Artist)
    assert [a.title for a in artist.albums] == ["Hits 1999"]


def test_album_year_filled_in_by_a_later_track(catalog: Catalog) -> None:
    first = add(catalog, "One", ["X"], "Album", year=None)
    add(catalog, "Two", ["X"], "Album", year=2001, number=2)
    add(catalog, "Three", ["X"], "Album", year=1999, number=3)
    album = catalog.lookup(first.album.uri)
    assert isinstance(album, Album)
    assert album.year == 2001


def test_album_tracks_ordered_by_disc_and_number(catalog: Catalog) -> None:
    order = [(2, 1), (1, 3), (None, None), (1, 1), (2, 2), (1, 2), (1, None)]
    for disc, number in order:
        add(catalog, f"d{disc} n{number}", ["X"], "Box Set", disc=disc, number=number)
    album_id = catalog.search("album", "box set")[0][0].id
    album = catalog.lookup(links.Link("album", album_id))
    assert isinstance(album, Album)
    assert [(t.disc, t.number) for t in album.tracks] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (1, None),
        (2, 1),
        (2, 2),
        (None, None),
    ]


def test_track_artists_keep_their_order(catalog: Catalog) -> None:
    track = add(catalog, "Under Pressure", ["Queen", "David Bowie", "queen"], "Hot Space")
    assert [a.name for a in track.artists] == ["Queen", "David Bowie"]
    reverse = add(catalog, "Other", ["David Bowie", "Queen"], "Hot Space")
    assert [a.name for a in reverse.artists] == ["David Bowie", "Queen"]


def test_artist_lookup_has_albums_and_top_tracks(catalog: Catalog) -> None:
    for year in (1990, 2000, 1980):
        for n in range(5):
            add(catalog, f"Song {year} {n}", ["Band"], f"Album {year}", year=year, number=n + 1)
    add(catalog, "Undated", ["Band"], "Bootleg", year=None)
    artist_id = catalog.search("artist", "band")[0][0].id
    artist = catalog.lookup(f"cadenza:artist:{artist_id}")
    assert isinstance(artist, Artist)
    assert artist.name == "Band"
    assert [a.title for a in artist.albums] == ["Album 1980", "Album 1990", "Album 2000", "Bootleg"]
    assert len(artist.top_tracks) == TOP_TRACKS
    assert [t.title for t in artist.top_tracks[:2]] == ["Song 2000 0", "Song 2000 1"]
    assert all(isinstance(t, Track) for t in artist.top_tracks)


def test_lookup_errors(catalog: Catalog) -> None:
    unknown = f"cadenza:track:{links.new_id()}"
    with pytest.raises(NotFound, match=unknown) as info:
        catalog.lookup(unknown)
    assert info.value.uri == unknown
    assert isinstance(info.value, LookupError)
    for kind in ("album", "artist"):
        uri = f"cadenza:{kind}:{links.new_id()}"
        with pytest.raises(NotFound, match=uri):
            catalog.lookup(uri)
    with pytest.raises(NotFound):
        catalog.track(links.new_id())
    with pytest.raises(links.LinkError, match="base62"):
        catalog.lookup("cadenza:track:nope")
    with pytest.raises(links.LinkError):
        catalog.lookup("spotify:track:6rqhFgbbKwnb9MLmUQDhG6")
    with pytest.raises(links.LinkError):
        catalog.track("not-an-id")
    with pytest.raises(UnsupportedLink, match="playlist"):
        catalog.lookup(f"cadenza:user:alice:playlist:{links.new_id()}")
    with pytest.raises(UnsupportedLink):
        catalog.lookup("cadenza:search:abba")


def test_tracks_for_file(catalog: Catalog) -> None:
    shared = file_ref(160, seed=42)
    a = add(catalog, "Song", ["A"], "Album A", files=[shared, file_ref(320)])
    b = add(catalog, "Song", ["A"], "Best Of", files=[shared])
    assert catalog.tracks_for_file(shared.file_id) == [a.id, b.id]
    assert catalog.tracks_for_file(a.files[1].file_id) == [a.id]
    assert catalog.tracks_for_file("0" * 64) == []


def test_stats(catalog: Catalog) -> None:
    assert catalog.stats() == {"tracks": 0, "albums": 0, "artists": 0, "files": 0, "bytes": 0}
    add(catalog, "One", ["A", "B"], "X", files=[FileRef(160, "1" * 64, 10)])
    add(catalog, "Two", ["A"], "X", files=[FileRef(160, "2" * 64, 20), FileRef(96, "3" * 64, 5)])
    assert catalog.stats() == {"tracks": 2, "albums": 2, "artists": 2, "files": 3, "bytes": 35}


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"artists": "ABBA"}, TypeError, "artists"),
        ({"artists": []}, ValueError, "artists"),
        ({"artists": ["ok", " "]}, ValueError, r"artists\[1\]"),
        ({"title": "  "}, ValueError, "title"),
        ({"album": None}, TypeError, "album"),
        ({"album_artists": []}, ValueError, "album_artists"),
        ({"duration_ms": -1}, ValueError, "duration_ms"),
        ({"channels": 0}, ValueError, "channels"),
        ({"disc": "1"}, TypeError, "disc"),
        ({"year": True}, TypeError, "year"),
        ({"files": [FileRef(160, "XYZ", 1)]}, ValueError, r"files\[0\].file_id"),
        ({"files": [FileRef(160, "A" * 64, 1)]}, ValueError, "file_id"),
        ({"files": [FileRef(0, "a" * 64, 1)]}, ValueError, "bitrate"),
        ({"files": [FileRef(160, "a" * 64, 1), FileRef(160, "b" * 64, 1)]}, ValueError, "160"),
        ({"files": ["a" * 64]}, TypeError, "FileRef"),
        ({"source_hash": ""}, ValueError, "source_hash"),
    ],
)
def test_bad_arguments_are_refused(
    catalog: Catalog, change: dict[str, Any], error: type[Exception], message: str
) -> None:
    args = track_args("Title", ["Artist"], "Album")
    args.update(change)
    with pytest.raises(error, match=message):
        catalog.add_track(**args)
    assert catalog.stats()["tracks"] == 0


def test_silence_has_no_loudness(catalog: Catalog) -> None:
    track = add(
        catalog, "4'33\"", ["John Cage"], "Silence", loudness_lufs=-math.inf, peak_dbfs=-math.inf
    )
    assert (track.loudness_lufs, track.peak_dbfs) == (None, None)
    json.dumps(track.to_json(), allow_nan=False)


def test_concurrent_ingest_of_one_source_adds_one_track(catalog: Catalog) -> None:
    results: list[Track] = []

    def ingest() -> None:
        results.append(add(catalog, "Waterloo", ["ABBA"], "Waterloo", source_hash="same"))

    threads = [threading.Thread(target=ingest) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({t.id for t in results}) == 1
    assert catalog.stats()["tracks"] == 1


# -- search ------------------------------------------------------------------------------


def titles(results: list[Track | Album | Artist]) -> list[str]:
    return [r.name if isinstance(r, Artist) else r.title for r in results]


def raw_bm25_order(db: Database, table: str, expression: str, weights: str) -> list[str]:
    """The order plain bm25 gives, to show the exact-match rule changes something."""

    def query(conn: Any) -> list[str]:
        rows = conn.execute(
            f"SELECT title FROM {table} WHERE {table} MATCH ? ORDER BY bm25({table}, {weights})",
            (expression,),
        )
        return [r[0] for r in rows]

    return db.call(query)


def test_exact_title_beats_partial_matches(db: Database, catalog: Catalog) -> None:
    # bm25 alone prefers these: the word twice, and in the artist and album columns too.
    add(catalog, "Help Help", ["Help"], "Help")
    add(catalog, "Help Me Help You", ["Help Yourself"], "Help Yourself")
    add(catalog, "Help", ["The Beatles"], "Help!")
    add(catalog, "Helpless", ["Neil Young"], "Deja Vu")
    expression = fts_query("help")
    assert expression is not None
    assert raw_bm25_order(db, "catalog_track_search", expression, "10, 4, 2")[0] != "Help"

    results, total = catalog.search("track", "help")
    assert total == 4
    assert titles(results)[0] == "Help"
    # Case, punctuation and accents do not make a title less exact.
    assert titles(catalog.search("track", "HELP!")[0])[0] == "Help"


def test_exact_album_and_artist_names_rank_first(db: Database, catalog: Catalog) -> None:
    add(catalog, "x", ["Queen Queen"], "Queen Queen Queen", album_artists=["Queen Queen"])
    add(catalog, "y", ["Queen"], "Queen")
    assert titles(catalog.search("album", "queen")[0]) == ["Queen", "Queen Queen Queen"]
    assert titles(catalog.search("artist", "Queen")[0]) == ["Queen", "Queen Queen"]


def test_prefix_matches_the_last_word_while_typing(catalog: Catalog) -> None:
    add(catalog, "Yesterday", ["The Beatles"], "Help!")
    add(catalog, "Let It Be", ["The Beatles"], "Let It Be")
    assert titles(catalog.search("track", "yest")[0]) == ["Yesterday"]
    assert titles(catalog.search("track", "let it b")[0]) == ["Let It Be"]
    # Only the last word is a prefix.
    assert catalog.search("track", "le it be")[1] == 0
    # A finished word (followed by a space or punctuation) is matched whole.
    assert catalog.search("track", "yest ")[1] == 0
    assert catalog.search("track", "yest!")[1] == 0
    assert titles(catalog.search("artist", "beat")[0]) == ["The Beatles"]


def test_search_covers_artist_and_album_words_for_tracks(catalog: Catalog) -> None:
    add(catalog, "Dancing Queen", ["ABBA"], "Arrival")
    add(catalog, "Waterloo", ["ABBA"], "Waterloo")
    add(catalog, "Money, Money, Money", ["ABBA"], "Arrival")
    assert titles(catalog.search("track", "abba dancing")[0]) == ["Dancing Queen"]
    assert sorted(titles(catalog.search("track", "arrival")[0])) == [
        "Dancing Queen",
        "Money, Money, Money",
    ]


def test_search_ignores_case_and_accents(catalog: Catalog) -> None:
    add(catalog, "Helpless", ["Crosby, Stills, Nash & Young"], "Déjà Vu")
    add(catalog, "Crazy in Love", ["Beyoncé"], "Dangerously in Love")
    assert titles(catalog.search("album", "deja vu")[0]) == ["Déjà Vu"]
    assert titles(catalog.search("album", "DÉJÀ")[0]) == ["Déjà Vu"]
    assert titles(catalog.search("artist", "beyonce")[0]) == ["Beyoncé"]
    # Decomposed input (e + combining accent) is the same text.
    assert titles(catalog.search("artist", "Beyonce\u0301")[0]) == ["Beyoncé"]


def test_search_results_of_albums_and_artists_are_brief(catalog: Catalog) -> None:
    add(catalog, "Waterloo", ["ABBA"], "Waterloo")
    (album,), _ = catalog.search("album", "waterloo")
    (artist,), _ = catalog.search("artist", "abba")
    assert isinstance(album, Album) and album.tracks == ()
    assert [a.name for a in album.artists] == ["ABBA"]
    assert isinstance(artist, Artist) and artist.albums == () and artist.top_tracks == ()


def test_paging(catalog: Catalog) -> None:
    for n in range(25):
        add(catalog, f"Love Song {n}", ["Various"], f"Album {n}")
    everything, total = catalog.search("track", "love", limit=MAX_SEARCH_LIMIT)
    assert total == 25 and len(everything) == 25
    pages = [catalog.search("track", "love", limit=10, offset=k) for k in (0, 10, 20)]
    assert [len(p) for p, _ in pages] == [10, 10, 5]
    assert all(n == 25 for _, n in pages)
    assert [t for p, _ in pages for t in p] == everything
    assert catalog.search("track", "love", limit=10, offset=25) == ([], 25)
    assert catalog.search("track", "love", limit=0) == ([], 25)
    assert catalog.search("track", "love", offset=10**30) == ([], 25)


def test_limit_is_capped(catalog: Catalog) -> None:
    for n in range(MAX_SEARCH_LIMIT + 5):
        add(catalog, f"Track {n}", ["Artist"], "Album", number=n)
    results, total = catalog.search("track", "track", limit=1000)
    assert (len(results), total) == (MAX_SEARCH_LIMIT, MAX_SEARCH_LIMIT + 5)


def test_bad_search_arguments(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="kind"):
        catalog.search("playlist", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        catalog.search("track", "x", limit=-1)
    with pytest.raises(ValueError, match="offset"):
        catalog.search("track", "x", offset=-1)


@pytest.mark.parametrize("query", ["", "   ", "!!!", "*", '"', "()", "-", "^", "\u200b"])
def test_queries_without_words_match_nothing(catalog: Catalog, query: str) -> None:
    add(catalog, "Anything", ["Anyone"], "Anywhere")
    for kind in ("track", "album", "artist"):
        assert catalog.search(kind, query) == ([], 0)


HOSTILE = [
    '"',
    '"unterminated',
    "AND",
    "OR",
    "NOT",
    "help AND",
    "AND help",
    "help OR NOT",
    "*",
    "help*",
    "*help",
    "(",
    ")",
    "(help",
    "NEAR(",
    "NEAR(help love, 2)",
    "title:help",
    "{title artists}: help",
    "-help",
    "+help",
    "^help",
    "help\x00love",
    "'; DROP TABLE catalog_tracks; --",
    "a" * 10_000,
    "help " * 1000,
    "\ud800",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_fts_syntax_in_user_input_never_errors(catalog: Catalog, query: str) -> None:
    add(catalog, "Help", ["AND"], "NEAR")
    for kind in ("track", "album", "artist"):
        results, total = catalog.search(kind, query)
        assert total >= len(results)
    assert catalog.stats()["tracks"] == 1


def test_fts_operators_are_plain_words(catalog: Catalog) -> None:
    add(catalog, "Help", ["AND"], "NEAR")
    add(catalog, "Other", ["Someone"], "Album")
    assert titles(catalog.search("artist", "AND")[0]) == ["AND"]
    assert titles(catalog.search("album", "NEAR(")[0]) == ["NEAR"]
    assert catalog.search("track", "title:help")[1] == 0  # "title" is a word, not a column


def test_fts_query_quotes_every_word() -> None:
    assert fts_query("let it b") == '"let" "it" "b"*'
    assert fts_query("let it ") == '"let" "it"'
    assert fts_query('NEAR("x" AND y*') == '"NEAR" "x" "AND" "y"'
    assert fts_query("***") is None
    assert match_key("Déjà  Vu!") == match_key("deja vu") == "deja vu"


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    db = Database(tmp_path_factory.mktemp("catalog") / "service.db")
    catalog = Catalog(db)
    words = ["love", "help", "AND", "NEAR", "Déjà", "vu", "queen", "x*", '"quoted"', "ß"]
    for n in range(30):
        add(
            catalog,
            " ".join(words[(n + k) % len(words)] for k in range(1 + n % 3)),
            [words[n % len(words)] + " band"],
            words[(n * 7) % len(words)] + " album",
        )
    yield catalog
    db.close()


fts_chars = st.sampled_from("\"*()^:+-{},. '\x00\t")
fts_words = st.sampled_from(["AND", "OR", "NOT", "NEAR", "NEAR(", "love", "hel", "qu", "é"])
hostile_text = st.one_of(
    st.text(),
    st.text(alphabet=st.one_of(fts_chars, st.characters()), max_size=40),
    st.lists(st.one_of(fts_chars, fts_words)).map(" ".join),
    st.lists(st.one_of(fts_chars, fts_words)).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(
    query=hostile_text,
    kind=st.sampled_from(["track", "album", "artist"]),
    limit=st.integers(0, 100),
    offset=st.integers(0, 40),
)
def test_any_query_string_is_safe(
    populated: Catalog, query: str, kind: Any, limit: int, offset: int
) -> None:
    results, total = populated.search(kind, query, limit=limit, offset=offset)
    assert 0 <= len(results) <= min(limit, MAX_SEARCH_LIMIT)
    assert len(results) <= max(total - offset, 0)
    assert total <= 30
