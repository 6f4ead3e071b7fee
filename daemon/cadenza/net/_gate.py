"""Who gets a connection at a listener: caps per source address and in total (pure).

A stranger's connection costs memory and a handshake's CPU before it has proved anything,
so a listener counts what each source address holds:

* connections not yet authenticated (the handshake, then the login or admission) are capped
  per address and in total. Past the total, the oldest of them is shed to make room if it has
  had its chance (``PATIENCE``: a legitimate client finishes its handshake and login in a
  few round trips, a flood's connections sit there), and always for an address that has
  authenticated before (a speaker coming back gets in through a flood of strangers); a
  stranger arriving at a full house from an address never seen authenticated is refused,
  which costs nothing, where taking it in costs a handshake (OpenSSH's MaxStartups, with
  WireGuard's preference, under load, for peers that have proved themselves);
* all connections are capped per address (a household behind one NAT is a few speakers, a
  flood is thousands) and in total;
* new connections from one address arrive at a bounded rate (a token bucket per address): a
  handshake costs three X25519 operations, and a peer cut off for breaking its budget must
  not come straight back a hundred times a second;
* and new connections from addresses never seen authenticated, all together, at a bounded
  rate too (``strangers_burst``, ``strangers_rate``): a flood from a thousand addresses
  would otherwise spend the core on handshakes while the speakers that were here before
  wait behind it in the accept queue. Known addresses are never held back by it.

The listener calls :meth:`Gate.arrive` for each accepted socket and acts on the answer,
:meth:`Gate.authenticated` when the application has taken the peer in, :meth:`Gate.left`
when the connection ends. Time is not involved: deadlines (handshake, login) are the
connection's own.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class GateLimits:
    total: int
    per_address: int
    unauthenticated: int
    unauthenticated_per_address: int
    burst: int  # connections an address may open at once
    rate: float  # and then per second
    strangers_burst: int  # connections from unknown addresses, all together, at once
    strangers_rate: float  # and then per second


# An access point: thousands of speakers, a few per household address (many more behind a
# carrier-grade NAT), and few at a time between connecting and logging in.
# A household's speakers reconnect together after a power cut: a burst of 64 per address.
SERVICE_GATE: Final = GateLimits(
    total=20_000,
    per_address=512,
    unauthenticated=256,
    unauthenticated_per_address=16,
    burst=64,
    rate=8.0,
    # A handshake and a login cost a few ms of one core: 100 a second from strangers leave
    # most of it for known speakers, and new ones get in within a few tries.
    strangers_burst=200,
    strangers_rate=100.0,
)
# A speaker's peer port: its neighbour table holds up to 60, and a LAN has a few speakers;
# a peer dials a speaker once per link (and again after a failure, backing off).
PEER_GATE: Final = GateLimits(
    total=128,
    per_address=8,
    unauthenticated=32,
    unauthenticated_per_address=4,
    burst=16,
    rate=2.0,
    strangers_burst=32,
    strangers_rate=10.0,
)
# A stranger that has not authenticated this long after connecting has had its chance: it may
# be shed for a newcomer from anywhere (before that, only for an address known to the gate).
PATIENCE: Final = 2.0
# An address that authenticated is known to the gate for this long, and this many are kept.
VOUCHED_FOR: Final = 7 * 24 * 3600.0
_VOUCHED_KEPT: Final = 65_536
# Addresses whose arrival rate is remembered (least recently seen dropped): far more than
# connect in the time a bucket takes to refill, so forgetting one loses nothing.
_RATE_KEPT: Final = 65_536


class Refused(Exception):
    """The gate turns this connection away; the message says which cap it hit."""


class Gate:
    """Counts of connections per address; see the module docstring."""

    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        self._per_address: Counter[str] = Counter()
        self._unauth_per_address: Counter[str] = Counter()
        # Unauthenticated tickets in arrival order (dicts keep it): the oldest is shed first.
        self._unauth: dict[object, tuple[str, float]] = {}
        self._addresses: dict[object, str] = {}
        # address -> when a connection from it last authenticated
        self._vouched: OrderedDict[str, float] = OrderedDict()
        self._strangers = (float(limits.strangers_burst), 0.0)  # tokens, when counted
        # address -> (tokens, when last counted)
        self._arrivals: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0
        self.shed = 0

    @property
    def connections(self) -> int:
        return len(self._addresses)

    @property
    def unauthenticated(self) -> int:
        return len(self._unauth)

    def arrive(self, ticket: object, address: str, now: float) -> object | None:
        """Take ``ticket`` in from ``address`` at ``now`` (seconds, monotonic); returns a
        ticket to shed to make room, if any.

        Raises :class:`Refused` when a cap that shedding cannot help is reached.
        """
        limits = self.limits
        full = (float(limits.burst), now)
        ok, self._arrivals[address] = _take(self._arrivals.pop(address, full), limits, now)
        if len(self._arrivals) > _RATE_KEPT:
            self._arrivals.popitem(last=False)
        if not ok:
            self.refused += 1
            raise Refused(f"more than {limits.rate:g} connections a second from {address}")
        if not self.vouched(address, now):
            ok, self._strangers = _take(self._strangers, limits, now, strangers=True)
            if not ok:
                self.refused += 1
                raise Refused(
                    f"more than {limits.strangers_rate:g} connections a second from"
                    " addresses not known here"
                )
        if len(self._addresses) >= limits.total:
            self.refused += 1
            raise Refused(f"{limits.total} connections already")
        if self._per_address[address] >= limits.per_address:
            self.refused += 1
            raise Refused(f"{limits.per_address} connections from {address} already")
        if self._unauth_per_address[address] >= limits.unauthenticated_per_address:
            self.refused += 1
            raise Refused(
                f"{limits.unauthenticated_per_address} unauthenticated connections"
                f" from {address} already"
            )
        victim = None
        if len(self._unauth) >= limits.unauthenticated:
            victim, (_, since) = next(iter(self._unauth.items()))
            if now - since < PATIENCE and not self.vouched(address, now):
                self.refused += 1
                raise Refused(f"{limits.unauthenticated} connections waiting to authenticate")
            self.shed += 1
            self._forget_stranger(victim)  # no longer counted as waiting; left() ends it
        self._addresses[ticket] = address
        self._per_address[address] += 1
        self._unauth[ticket] = (address, now)
        self._unauth_per_address[address] += 1
        return victim

    def authenticated(self, ticket: object, now: float) -> None:
        """``ticket`` has logged in or been admitted: it no longer counts as a stranger,
        and its address is known to the gate from now on."""
        address = self._forget_stranger(ticket)
        if address is not None:
            self._vouched.pop(address, None)
            self._vouched[address] = now
            if len(self._vouched) > _VOUCHED_KEPT:
                self._vouched.popitem(last=False)

    def vouched(self, address: str, now: float) -> bool:
        """A connection from ``address`` authenticated recently."""
        since = self._vouched.get(address)
        return since is not None and now - since < VOUCHED_FOR

    def _forget_stranger(self, ticket: object) -> str | None:
        found = self._unauth.pop(ticket, None)
        if found is None:
            return None
        self._decrement(self._unauth_per_address, found[0])
        return found[0]

    def left(self, ticket: object) -> None:
        self._forget_stranger(ticket)
        address = self._addresses.pop(ticket, None)
        if address is not None:
            self._decrement(self._per_address, address)

    @staticmethod
    def _decrement(counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]


def _take(
    bucket: tuple[float, float], limits: GateLimits, now: float, *, strangers: bool = False
) -> tuple[bool, tuple[float, float]]:
    """A token bucket as ``(tokens, when counted)``: whether one token was there to take,
    and the bucket after."""
    burst, rate = (
        (limits.strangers_burst, limits.strangers_rate)
        if strangers
        else (limits.burst, limits.rate)
    )
    tokens, then = bucket
    tokens = min(float(burst), tokens + (now - then) * rate)
    if tokens < 1.0:
        return False, (tokens, now)
    return True, (tokens - 1.0, now)
