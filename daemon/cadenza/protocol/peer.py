"""Messages between speakers in the overlay (type ids 80-99).

Transfers reuse the access point's storage messages: a speaker serves ``api.GetManifest``
(the service-signed manifest it keeps beside a cached file) and ``api.GetChunks`` (a stream
of bulk CHUNK payloads, then the end of the channel) for files it holds whole, and answers
``ErrorReply`` ``not-found`` for anything else, ``busy`` when it will not upload now.

Search is flooded at most 2 hops: the origin sends a :class:`SearchQuery` on a new channel
to each of a few neighbours; each answers on that channel with a :class:`SearchHit` if it
holds the file, forwards the query to a few of its own neighbours (TTL 1) and relays their
hits back on the same channel, then ends it. A hit carries the holder's membership
certificate: the only endpoint the origin will dial is the one the service signed in it,
never an address a peer merely claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import Message, register


@register(80)
@dataclass(frozen=True, slots=True)
class SearchQuery(Message):
    query_id: bytes  # 16 random bytes; duplicates arriving by another path are dropped
    file_id: str
    ttl: int  # 2 from the origin, 1 when forwarded


@register(81)
@dataclass(frozen=True, slots=True)
class SearchHit(Message):
    query_id: bytes
    file_id: str
    certificate: bytes  # the holder's membership certificate (peer id, key, endpoint)
