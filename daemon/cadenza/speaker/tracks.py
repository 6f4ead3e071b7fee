"""Track records: resolving a link to them over the session, keeping those seen on disk so
that a cached track plays with no network at all (also after a restart), and the summary of
a record the API shows."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cadenza import links
from cadenza.errors import ApiErrorCode, Unavailable, UnknownLink
from cadenza.protocol import api
from cadenza.session.client import Session
from cadenza.speaker.queue import Track
from cadenza.system.files import atomic_write

log = logging.getLogger("cadenza.speaker")

# Track records kept for offline play; the oldest are dropped past this many.
MAX_KNOWN_TRACKS = 5000
# Give up resolving a link after this long (the service may be down).
RESOLVE_TIMEOUT = 10.0


class KnownTracks:
    """Track records by id, saved to ``path`` (None: in memory only) when one is new."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._tracks: dict[str, Track] = _load(path)

    def get(self, track_id: str) -> Track | None:
        return self._tracks.get(track_id)

    def remember(self, record: Track) -> None:
        if self._tracks.get(record["id"]) == record:
            return
        self._tracks[record["id"]] = record
        if self.path is not None:
            while len(self._tracks) > MAX_KNOWN_TRACKS:
                self._tracks.pop(next(iter(self._tracks)))
            try:
                # Not durable: the records come back with the next lookup, and an fsync here
                # would hold the event loop (and the start of the track) for milliseconds.
                atomic_write(self.path, json.dumps(self._tracks), durable=False)
            except OSError as exc:
                log.warning("cannot save %s: %s", self.path, exc)


def _load(path: Path | None) -> dict[str, Track]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def track_summary(t: Track) -> dict[str, Any]:
    return {
        "uri": t.get("uri"),
        "id": t.get("id"),
        "title": t.get("title"),
        "artists": [a.get("name") for a in t.get("artists", [])],
        "album": (t.get("album") or {}).get("title"),
        "duration_ms": t.get("duration_ms"),
    }


async def resolve(
    session: Session, known: KnownTracks, link: links.Link, *, offline: bool
) -> list[Track]:
    """The tracks ``link`` stands for (an album: its tracks), from the service; with
    ``offline`` (a cache to play from), a track the service cannot be asked about now comes
    from ``known``."""
    if link.kind not in ("track", "album", "playlist"):
        raise UnknownLink(f"cannot play {link} (tracks, albums and playlists)")
    bare = links.Link(link.kind, link.id, user=link.user)  # without the #m:ss offset
    try:
        reply = await session.request(api.Lookup(str(bare)), timeout=RESOLVE_TIMEOUT)
    except Exception as exc:
        code = getattr(exc, "code", "")
        if code == ApiErrorCode.NOT_FOUND:
            raise UnknownLink(f"unknown {link.kind}: {bare}") from None
        if code in (ApiErrorCode.UNSUPPORTED, ApiErrorCode.BAD_REQUEST):
            raise UnknownLink(f"the service cannot resolve {bare}: {exc}") from None
        if offline and link.kind == "track":
            cached = known.get(link.id)
            if cached is not None:
                return [cached]
        raise Unavailable(f"the service is not reachable: {exc}") from None
    assert isinstance(reply, api.LookupReply)
    records = [reply.record] if reply.kind == "track" else list(reply.record.get("tracks", []))
    for r in records:
        known.remember(r)
    return records
