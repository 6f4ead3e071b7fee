"""Messages between a speaker and the access point (type ids 10-79).

Every request opens a channel and gets one reply (or ErrorReply) on it, except
GetChunks, whose reply is a stream of bulk CHUNK payloads followed by the end
of the channel. Pushes from the access point are one-way messages on channels
it opens.

Error codes in ErrorReply: ``unauthenticated``, ``auth-failed``, ``throttled``
(message says when to retry), ``revoked``, ``banned``, ``bad-request``,
``not-found``, ``unsupported``, ``forbidden``, ``unavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import Message, register

# A GetChunks request covers at most this many chunks (16 MiB): long enough for a whole
# track at 320 kbps, short enough that one request cannot pin the server for long.
MAX_CHUNKS_PER_REQUEST = 1024
# Items in one search reply.
MAX_SEARCH_LIMIT = 50
# File ids in one Announce/Withdraw.
MAX_ANNOUNCE = 1000


# --- session ---------------------------------------------------------------------------------


@register(10)
@dataclass(frozen=True, slots=True)
class Login(Message):
    """First request on a connection: a password (first login) or a device credential."""

    username: str = ""
    password: str = ""
    device_credential: bytes = b""
    device_name: str = ""
    p2p_port: int = 0  # where this speaker accepts peers (0: it does not)


@register(11)
@dataclass(frozen=True, slots=True)
class LoginOk(Message):
    user: str
    device_id: str
    peer_id: bytes  # this session's pseudonym in the overlay
    certificate: bytes  # membership certificate for the Noise key of this connection
    certificate_expires: int
    service_time: float  # unix seconds, so a speaker without an RTC can judge certificates
    observed_host: str  # the address the access point sees us at
    observed_port: int
    overlay_id: str
    signing_keys: tuple[bytes, ...]  # raw Ed25519 keys to trust for certificates and manifests
    device_credential: bytes | None = None  # new credential after a password login


@register(12)
@dataclass(frozen=True, slots=True)
class RenewCertificate(Message):
    p2p_port: int = 0


@register(13)
@dataclass(frozen=True, slots=True)
class CertificateReply(Message):
    certificate: bytes
    expires_at: int
    service_time: float


@register(14)
@dataclass(frozen=True, slots=True)
class Logout(Message):
    """Forget this device's credential (the speaker is being reset)."""


@register(15)
@dataclass(frozen=True, slots=True)
class Ack(Message):
    pass


# --- catalog ---------------------------------------------------------------------------------


@register(20)
@dataclass(frozen=True, slots=True)
class Lookup(Message):
    uri: str


@register(21)
@dataclass(frozen=True, slots=True)
class LookupReply(Message):
    kind: str  # track | album | artist | playlist
    record: dict[str, Any]  # the same JSON shape as the HTTP metadata API


@register(22)
@dataclass(frozen=True, slots=True)
class Search(Message):
    kind: str  # track | album | artist
    query: str
    limit: int = 20
    offset: int = 0


@register(23)
@dataclass(frozen=True, slots=True)
class SearchReply(Message):
    kind: str
    total: int
    items: tuple[dict[str, Any], ...]


# --- storage ---------------------------------------------------------------------------------


@register(30)
@dataclass(frozen=True, slots=True)
class GetManifest(Message):
    file_id: str


@register(31)
@dataclass(frozen=True, slots=True)
class ManifestReply(Message):
    manifest: bytes  # protocol.manifest envelope, signed by the service


@register(32)
@dataclass(frozen=True, slots=True)
class GetChunks(Message):
    """Reply: bulk CHUNK payloads ``first`` .. ``first + count - 1`` in order, then end."""

    file_id: str
    first: int
    count: int


# --- tracker ---------------------------------------------------------------------------------


@register(40)
@dataclass(frozen=True, slots=True)
class Announce(Message):
    """We hold these files whole and serve them."""

    file_ids: tuple[str, ...]


@register(41)
@dataclass(frozen=True, slots=True)
class Withdraw(Message):
    file_ids: tuple[str, ...]


@register(42)
@dataclass(frozen=True, slots=True)
class FindPeers(Message):
    file_id: str
    limit: int = 10


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: bytes
    host: str
    port: int
    noise_static: bytes  # lets the asker dial with IK and pin the key


@register(43)
@dataclass(frozen=True, slots=True)
class PeersReply(Message):
    peers: tuple[PeerInfo, ...]


@register(44)
@dataclass(frozen=True, slots=True)
class ReportPeer(Message):
    """A peer misbehaved (e.g. served a chunk that failed verification)."""

    peer_id: bytes
    reason: str
    file_id: str = ""


# --- pushes from the access point ---------------------------------------------------------------


@register(60)
@dataclass(frozen=True, slots=True)
class PeerBanned(Message):
    """Drop and refuse this peer id from now on."""

    peer_id: bytes
    reason: str = ""


@register(61)
@dataclass(frozen=True, slots=True)
class SessionEnded(Message):
    """The access point is ending this session (device revoked, banned, replaced, shutdown)."""

    reason: str
    code: str = ""
