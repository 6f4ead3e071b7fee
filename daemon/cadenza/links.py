"""Cadenza links: ``cadenza:track:<id>``, ``cadenza:album:<id>``, ``cadenza:artist:<id>``,
``cadenza:user:<name>:playlist:<id>`` and ``cadenza:search:<words+joined>``, with an optional
``#m:ss`` fragment (a start offset).

Ids are opaque 128-bit random numbers written in base62, always 22 characters.
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from cadenza.errors import ApiErrorCode, BadRequest

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 22  # ceil(128 / log2(62))
_ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_OFFSET_RE = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{2})$|^(\d+)$")

Kind = Literal["track", "album", "artist", "playlist", "search"]


class LinkError(BadRequest):
    """A string that is not a valid Cadenza link; the message says what is wrong.
    (A ValueError, as :class:`~cadenza.errors.BadRequest` is.)"""


class IdOutOfRange(LinkError):
    """22 base62 characters that spell a number of more than 128 bits: well-formed, but no
    id is ever that large, so it names nothing (an API answers "not found")."""

    http_status = 404
    code = ApiErrorCode.NOT_FOUND


def new_id() -> str:
    """A fresh random id: 128 bits in base62, zero-padded to 22 characters."""
    return encode_id(secrets.randbits(128))


def encode_id(n: int) -> str:
    if not 0 <= n < 1 << 128:
        raise ValueError("id must be a 128-bit unsigned integer")
    out = []
    for _ in range(ID_LENGTH):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))


def decode_id(text: str) -> int:
    if not _ID_RE.match(text):
        raise LinkError(f"{text!r} is not a 22-character base62 id")
    n = 0
    for c in text:
        n = n * 62 + BASE62.index(c)
    if n >= 1 << 128:
        raise IdOutOfRange(f"{text!r} is larger than 128 bits: no such id")
    return n


def is_id(text: str) -> bool:
    try:
        decode_id(text)
    except LinkError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Link:
    kind: Kind
    id: str = ""  # track/album/artist/playlist id; empty for search
    user: str = ""  # playlists only
    query: str = ""  # search only
    offset_ms: int | None = None  # the #m:ss fragment

    def __str__(self) -> str:
        if self.kind == "search":
            body = "cadenza:search:" + urllib.parse.quote_plus(self.query)
        elif self.kind == "playlist":
            body = f"cadenza:user:{self.user}:playlist:{self.id}"
        else:
            body = f"cadenza:{self.kind}:{self.id}"
        if self.offset_ms is not None:
            secs = self.offset_ms // 1000
            body += f"#{secs // 60}:{secs % 60:02d}"
        return body


def track(id: str) -> Link:
    return Link("track", id)


def parse(text: str) -> Link:
    """Parse a link; LinkError says exactly what is wrong."""
    if not isinstance(text, str):
        raise LinkError("a link must be a string")
    if len(text) > 1024:
        raise LinkError("link longer than 1024 characters")
    body, _, fragment = text.partition("#")
    offset = _parse_offset(fragment) if fragment else None
    parts = body.split(":")
    if len(parts) < 3 or parts[0] != "cadenza":
        raise LinkError(f"{text!r} is not a cadenza: link (expected cadenza:<kind>:<id>)")
    kind = parts[1]
    if kind in ("track", "album", "artist"):
        if len(parts) != 3:
            raise LinkError(f"{text!r}: expected cadenza:{kind}:<id>")
        decode_id(parts[2])
        return Link(kind, parts[2], offset_ms=offset)  # type: ignore[arg-type]
    if kind == "user":
        if len(parts) != 5 or parts[3] != "playlist":
            raise LinkError(f"{text!r}: expected cadenza:user:<name>:playlist:<id>")
        if not _USER_RE.match(parts[2]):
            raise LinkError(f"{parts[2]!r} is not a valid user name")
        decode_id(parts[4])
        return Link("playlist", parts[4], user=parts[2], offset_ms=offset)
    if kind == "search":
        query = urllib.parse.unquote_plus(":".join(parts[2:])).strip()
        if not query:
            raise LinkError("empty search")
        return Link("search", query=query, offset_ms=offset)
    raise LinkError(f"unknown link kind {kind!r} (track, album, artist, user, search)")


def _parse_offset(fragment: str) -> int:
    # "#1:23" (m:ss), "#1:02:03" (h:mm:ss) or "#83" (seconds).
    m = _OFFSET_RE.match(fragment)
    if m is None:
        raise LinkError(f"offset {fragment!r} is not m:ss")
    if m.group(4) is not None:
        return int(m.group(4)) * 1000
    hours = int(m.group(1) or 0)
    minutes, seconds = int(m.group(2)), int(m.group(3))
    if seconds >= 60:
        raise LinkError(f"offset {fragment!r}: seconds must be below 60")
    if m.group(1) is None:
        return (minutes * 60 + seconds) * 1000
    return ((hours * 60 + minutes) * 60 + seconds) * 1000
