"""Who may do what on the control API: tokens, pairing, and the Host/Origin checks.

* Loopback clients are trusted (whoever runs code on the speaker owns it anyway).
* A LAN client needs a bearer token, obtained by pairing: the client asks
  (``POST /api/v1/pairing``) and gets a request id and a short code; the owner confirms
  (the speaker's button through hw/, or an already-paired admin client, or loopback), and
  the client collects its token once. Tokens are scoped: ``read`` (look), ``playback``
  (look and drive the player), ``admin`` (everything, settings and pairing included), and
  revocable. Only a hash of each token is stored. Pending requests are limited per client
  address, so that a flood of them cannot push out another client's.
* The owner may switch the speaker to "open" mode: then every LAN client has ``playback``.
* Whatever the client, a request whose ``Host`` is not one of the speaker's own names or
  addresses is refused (DNS rebinding), and a state-changing request whose ``Origin`` is
  not one of the speaker's own origins (its names and addresses with the API's port) is
  refused (a web page elsewhere, or served by another program on the same host, driving
  the speaker: CSRF).

Pure apart from :class:`TokenStore`'s file (written atomically); time is passed in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cadenza.errors import BadRequest, Throttled
from cadenza.system.files import atomic_write

SCOPES = ("read", "playback", "admin")
# A pairing request waits this long for the owner before it is forgotten.
PAIRING_TTL_S = 300.0
# Pairing requests kept at once: a household pairing a few phones, with room to spare.
MAX_PENDING = 16
# Pending requests from one client address: a phone asks once (again if it lost the first);
# more is a flood, refused so that one client cannot push out everyone else's requests.
MAX_PENDING_PER_CLIENT = 3
# The port an Origin without one means.
DEFAULT_PORTS = {"http": 80, "https": 443}
# Tokens kept (a household has a handful of phones; a flood of approvals is the owner's doing).
MAX_TOKENS = 256


def scope_allows(granted: str, needed: str) -> bool:
    """``admin`` ⊇ ``playback`` ⊇ ``read``."""
    return SCOPES.index(granted) >= SCOPES.index(needed)


@dataclass
class TokenInfo:
    id: str
    name: str
    scope: str
    created: float
    hash: str
    last_used: float | None = None

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created": self.created,
            "last_used": self.last_used,
        }


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens by id, persisted (hashes only) in ``path``; thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenInfo] = {}
        if path is not None and path.exists():
            try:
                for item in json.loads(path.read_text()):
                    info = TokenInfo(**item)
                    if info.scope in SCOPES:
                        self._tokens[info.id] = info
            except (OSError, ValueError, TypeError):
                self._tokens = {}

    def issue(self, name: str, scope: str, now: float) -> tuple[TokenInfo, str]:
        if scope not in SCOPES:
            raise BadRequest(
                f"scope must be one of {', '.join(SCOPES)}, not {scope!r}", field="scope"
            )
        token = secrets.token_urlsafe(32)
        info = TokenInfo(secrets.token_hex(8), name[:64], scope, now, _hash(token))
        with self._lock:
            self._tokens[info.id] = info
            while len(self._tokens) > MAX_TOKENS:
                oldest = min(self._tokens.values(), key=lambda t: t.created)
                del self._tokens[oldest.id]
            self._save()
        return info, token

    def check(self, token: str, now: float) -> TokenInfo | None:
        digest = _hash(token)
        with self._lock:
            for info in self._tokens.values():
                if secrets.compare_digest(info.hash, digest):
                    info.last_used = now
                    return info
        return None

    def revoke(self, token_id: str) -> bool:
        with self._lock:
            found = self._tokens.pop(token_id, None) is not None
            if found:
                self._save()
            return found

    def list(self) -> list[TokenInfo]:
        with self._lock:
            return list(self._tokens.values())

    def _save(self) -> None:
        if self.path is None:
            return
        atomic_write(self.path, json.dumps([asdict(t) for t in self._tokens.values()]), mode=0o600)


class PairingRefused(Throttled):
    """No room for another pairing request; the message says why, ``retry_after`` (seconds)
    when one of the requests in the way expires."""

    retry_after: float

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


@dataclass
class PairingRequest:
    id: str
    code: str  # shown on the client, confirmed by the owner (so the right request is approved)
    name: str
    scope: str
    created: float
    client: str = ""  # the address that asked: the limits are per address
    state: str = "pending"  # pending | approved | denied | collected
    token: str | None = None  # held until the client collects it, once

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "code": self.code,
            "name": self.name,
            "scope": self.scope,
            "state": self.state,
        }


class Pairing:
    """Pending pairing requests: ask, approve or deny (owner), collect (client, once)."""

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens
        self._requests: OrderedDict[str, PairingRequest] = OrderedDict()

    def _expire(self, now: float) -> None:
        for rid, req in list(self._requests.items()):
            if now - req.created > PAIRING_TTL_S:
                del self._requests[rid]

    def ask(self, name: str, scope: str, client: str, now: float) -> PairingRequest:
        """A new pending request from the address ``client``.

        Raises :class:`PairingRefused` when ``client`` already has MAX_PENDING_PER_CLIENT
        pending, or when MAX_PENDING are held and none can go: to make room, a settled
        request (denied or collected) goes first, else the oldest pending request of the
        address holding the most, and only if that address then still holds at least as
        many as ``client`` will. So a flood, even from many addresses, never pushes out the
        request of an address that made just one.
        """
        if scope not in SCOPES:
            raise BadRequest(
                f"scope must be one of {', '.join(SCOPES)}, not {scope!r}", field="scope"
            )
        self._expire(now)
        mine = [r for r in self._requests.values() if r.state == "pending" and r.client == client]
        if len(mine) >= MAX_PENDING_PER_CLIENT:
            raise PairingRefused(
                f"at most {MAX_PENDING_PER_CLIENT} pending pairing requests per client: "
                "wait until the owner answers one, or it expires",
                self._left(mine[0], now),
            )
        if len(self._requests) >= MAX_PENDING:
            self._make_room(len(mine), now)
        req = PairingRequest(
            secrets.token_hex(12), f"{secrets.randbelow(10**6):06d}", name[:64], scope, now, client
        )
        self._requests[req.id] = req
        return req

    def _make_room(self, mine: int, now: float) -> None:
        """Forget one request for a client holding ``mine`` pending ones, or refuse."""
        for req in self._requests.values():
            if req.state in ("denied", "collected"):  # only a last poll wants these
                del self._requests[req.id]
                return
        pending = [r for r in self._requests.values() if r.state == "pending"]
        held = Counter(r.client for r in pending)
        # Ties go to the address whose oldest request is oldest (Counter keeps first-seen order).
        heaviest = max(held, key=held.__getitem__, default=None)
        if heaviest is None or held[heaviest] < mine + 2:
            oldest = min(self._requests.values(), key=lambda r: r.created)
            raise PairingRefused(
                f"the speaker already holds {MAX_PENDING} pairing requests: try again later",
                self._left(oldest, now),
            )
        victim = next(r for r in pending if r.client == heaviest)
        del self._requests[victim.id]

    @staticmethod
    def _left(req: PairingRequest, now: float) -> float:
        return max(0.0, PAIRING_TTL_S - (now - req.created))

    def get(self, rid: str, now: float) -> PairingRequest | None:
        self._expire(now)
        return self._requests.get(rid)

    def pending(self, now: float) -> list[PairingRequest]:
        self._expire(now)
        return [r for r in self._requests.values() if r.state == "pending"]

    def approve(self, rid: str, now: float) -> PairingRequest | None:
        req = self.get(rid, now)
        if req is None or req.state != "pending":
            return None
        _, token = self.tokens.issue(req.name, req.scope, now)
        req.state, req.token = "approved", token
        return req

    def approve_oldest(self, now: float) -> PairingRequest | None:
        """What a press of the speaker's button does: approve the oldest pending request."""
        pending = self.pending(now)
        return self.approve(pending[0].id, now) if pending else None

    def deny(self, rid: str, now: float) -> PairingRequest | None:
        req = self.get(rid, now)
        if req is None or req.state != "pending":
            return None
        req.state = "denied"
        return req

    def collect(self, rid: str, now: float) -> str | None:
        """The token of an approved request, handed out once."""
        req = self.get(rid, now)
        if req is None or req.state != "approved" or req.token is None:
            return None
        token, req.token, req.state = req.token, None, "collected"
        return token


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, own: Iterable[str]) -> bool:
    """``Host`` names one of our names or addresses (with any port); never another name."""
    if not host_header:
        return False
    name = _strip_port(host_header).lower().rstrip(".")
    if not name:
        return False
    allowed = {n.lower().rstrip(".") for n in own}
    return name in allowed or is_loopback(name)


def origin_allowed(origin: str | None, own: Iterable[str], port: int | None) -> bool:
    """No Origin (not a browser), or exactly one of our own origins: http(s), one of our
    names or addresses, and ``port``, the port the API listens on (None: unknown, so no
    Origin is ours). Another port on our own name is another program's page."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return False
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return False  # an Origin is scheme://host[:port], nothing else
    try:
        origin_port = parts.port if parts.port is not None else DEFAULT_PORTS[parts.scheme]
    except ValueError:  # not a port number
        return False
    return origin_port == port and host_allowed(parts.hostname, own)


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host
