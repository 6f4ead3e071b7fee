"""A simulated network for trio, on the virtual clock (bench/swarm).

Hosts hang off a "core" through an access link: upload and download bandwidth (bytes/s), a
one-way latency to the core, a segment loss probability, and optionally a NAT. Streams between
hosts are TCP-like: reliable, in order, flow-controlled. Everything runs on ``trio``'s clock, so
under ``trio.testing.MockClock(autojump_threshold=0)`` idle time costs nothing: only events do.

Model (an event-driven fluid model; no packets):

* **Units.** Data written with ``send_all`` is cut into units of at most ``unit`` bytes (16 KiB
  by default). A unit is delivered to the reader whole, when its last byte arrives; so data may
  reach the reader up to one unit's transmission time late (16 ms at 1 MB/s), while the end of a
  transfer is exact.
* **Bandwidth.** A stream direction with bytes to send is a *flow*. A host's upload bandwidth is
  shared equally among its flows (processor sharing); each host's download bandwidth is then
  water-filled among the flows into it, each asking for its upload share: a flow gets
  ``min(upload share, water level)``. Rates are recomputed only when a flow starts or stops, and
  only at the hosts concerned (the uploader's receivers and the receiver), so an event costs
  O(flows at those hosts), not O(all flows). Home links upload much slower than they download,
  so uploads are the usual bottleneck, and there the model is exact max-min fairness (as TCP
  approximates). Its error: upload share left unused by a flow capped at a slow receiver is not
  given to the uploader's other flows, so rates can be lower than max-min, never higher, and no
  link ever carries more than its capacity. A host with ``math.inf`` upload (a service that is
  never the bottleneck) costs nothing to re-share. There is no slow start nor congestion window:
  a flow runs at its share from its first byte.
* **Latency.** A byte transmitted at t arrives at t + the two hosts' latencies (one way); a
  connection takes one round trip to set up.
* **Loss.** Each host's link loses a segment (``MSS`` bytes) with its ``loss`` probability. A
  unit with a lost segment arrives one retransmission timeout late: ``max(200 ms, 2 RTT)``
  (Linux's minimum RTO; RTO is about SRTT + 4 RTTVAR), however many of its segments were lost
  (they are recovered together); later units wait for it (in-order delivery). Loss does not slow
  the sender (no congestion control), and connection set-up is never lost.
* **Flow control.** The sender may queue ``send_buffer`` unsent bytes (64 KiB, like the daemon's
  ``TCP_NOTSENT_LOWAT``); transmission stops while ``receive_window`` bytes are in flight or
  unread, so a reader that does not read blocks the sender after both fill. The reader's window
  updates reach the sender at once (not a one-way delay later): a window-limited flow runs at
  up to ``receive_window`` per one-way delay rather than per round trip.
* **NAT.** A host behind NAT cannot be dialled by a host unless it has itself dialled that host
  (any port) recently: while such a connection is open, and for ``nat_mapping_s`` after it ends
  or after a failed attempt (address-restricted cone NAT; a failed attempt from both sides is
  hole punching). Its SYNs are silently dropped, so ``connect`` fails after ``syn_timeout``
  (Linux's 127 s; callers put their own deadline on it), like connecting to an offline host.

Speed: the network's scheduler (:meth:`advance`) runs on a grid of ``tick`` (1 ms): it
processes flow pauses at their exact times and wakes the readers and writers whose data or
buffer space is due, so a reader may see data up to a tick late. On the simulator's
:class:`~cadenza.sim.clock.VirtualClock` the clock calls it when nothing else can run; on
another clock the task :meth:`run` sleeps until the next tick. Tasks are woken with
``trio.lowlevel.reschedule``, not cancel scopes: a unit costs a few tens of microseconds,
mostly trio's task switch.

Deterministic for a given ``rng`` and a given order of calls; trio itself shuffles the order of
tasks that are ready at the same instant, unless its deterministic scheduling is enabled.
"""

from __future__ import annotations

import errno
import heapq
import math
import operator
import random
from collections import deque
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from cadenza.sim._net_py import Unreachable, running
from cadenza.sim.clock import VirtualClock

Address = tuple[str, int]

# Data is modelled in units of this many bytes: large enough that a 4 MB track is 256 events,
# small enough that a unit is 16 ms at 1 MB/s (the delivery granularity).
UNIT = 16 * 1024
# Unsent bytes a sender may queue: the daemon sets TCP_NOTSENT_LOWAT to 64 KiB.
SEND_BUFFER = 64 * 1024
# Bytes in flight or unread: Linux autotunes its receive buffer up to 6 MiB; 4 MiB never limits
# a home link (80 MB/s at 50 ms one way) but bounds what a reader that stops reading holds.
RECEIVE_WINDOW = 4 * 1024 * 1024
# Where ``listen(host, 0)`` starts looking for a free port.
LISTEN_PORT = 40000
# Readers and writers are woken on a grid of this many seconds: far below the latencies that
# matter (tens of ms), and events in the same millisecond share one wake-up of the scheduler.
TICK_S = 0.001
# A TCP segment on an Ethernet path (1500 MTU, IPv4, timestamps).
MSS = 1448
# Linux's minimum retransmission timeout.
MIN_RTO_S = 0.2
# An unanswered connect gives up after the SYN and 6 retries (1+2+...+64 s, Linux's default).
SYN_TIMEOUT_S = 127.0
# A NAT keeps a mapping this long after its last connection (RFC 5382's transitory timeout).
NAT_MAPPING_S = 240.0
# The first ephemeral port (IANA's dynamic range).
EPHEMERAL_PORT = 49152
# Float slack for bytes and seconds: virtual times reach 1e5 s (a day), so ulp ~ 1.5e-11 s.
_TIME_EPS = 1e-9
_BYTE_EPS = 1e-6


@dataclass(eq=False)
class SimHost:
    """A host and its access link. Add with :meth:`SimNetwork.add_host`."""

    name: str
    upload: float  # bytes/s (math.inf: never a bottleneck)
    download: float  # bytes/s
    latency: float  # seconds, one way to the core
    loss: float  # probability that a segment is lost on this link
    nat: bool
    online: bool = True
    bytes_sent: int = 0  # transmitted by this host
    bytes_received: int = 0  # read by this host's streams
    _up: dict[_Pipe, None] = field(default_factory=dict, repr=False)  # active flows out
    _down: dict[_Pipe, None] = field(default_factory=dict, repr=False)  # active flows in
    _listeners: dict[int, SimListener] = field(default_factory=dict, repr=False)
    _conns: dict[_Conn, None] = field(default_factory=dict, repr=False)
    _next_port: int = field(default=EPHEMERAL_PORT, repr=False)


class _Pipe:
    """One direction of a connection: sender's queue, the flow, units in flight, reader side."""

    __slots__ = (
        "active",
        "dead",
        "dst",
        "fin",
        "flight",
        "head_done",
        "last_arrival",
        "lat",
        "loss",
        "net",
        "planned",
        "queue",
        "queued",
        "rate",
        "reset",
        "rto",
        "rx_waiter",
        "src",
        "t0",
        "tx_waiter",
        "tx_want",
        "unread",
        "version",
    )

    def __init__(self, net: SimNetwork, src: SimHost, dst: SimHost) -> None:
        self.net = net
        self.src = src
        self.dst = dst
        self.lat = src.latency + dst.latency
        self.rto = max(MIN_RTO_S, 2 * (2 * self.lat))
        self.loss = 1 - (1 - src.loss) * (1 - dst.loss)
        self.queue: deque[bytes] = deque()  # untransmitted units; b"" is the FIN
        self.queued = 0  # bytes in queue
        self.head_done = 0.0  # bytes of queue[0] already transmitted
        self.flight: deque[tuple[float, bytes]] = deque()  # (arrival time, unit), unread
        self.unread = 0  # bytes transmitted and not yet read (in flight or arrived)
        self.last_arrival = -math.inf
        self.active = False
        self.rate = 0.0
        self.t0 = 0.0
        self.version = 0  # of the planned pause; older heap entries are stale
        self.planned = math.nan  # time of the planned pause
        self.fin = False  # the sender sent EOF: no more data
        self.dead = False  # the reader is gone: data is dropped, the sender gets broken pipes
        self.reset = False  # the connection was reset: the reader gets errors too
        self.rx_waiter: _Waiter | None = None  # the reader, blocked
        self.tx_waiter: _Waiter | None = None  # the sender, blocked
        self.tx_want = 0

    def window_left(self) -> float:
        return self.net.receive_window - self.unread - self.head_done

    def transmittable(self) -> float:
        """Bytes the flow can send before it drains or fills the reader's window."""
        return min(self.queued - self.head_done, self.window_left())

    def wants_to_send(self) -> bool:
        return not self.dead and self.src.online and self.transmittable() > _BYTE_EPS

    def settle(self, now: float) -> None:
        """Account for the transmission since ``t0`` at the current rate; ``t0`` becomes now."""
        if self.active and self.rate > 0:
            if self.rate == math.inf:
                self._transmit(math.inf)
            elif now > self.t0:
                self._transmit(self.rate * (now - self.t0))
        self.t0 = max(self.t0, now)

    def _transmit(self, budget: float) -> None:
        budget = min(budget, self.window_left())
        tol = _BYTE_EPS + (0.0 if self.rate == math.inf else self.rate * _TIME_EPS)
        q = self.queue
        spent = 0.0
        while q:
            unit = q[0]
            need = len(unit) - self.head_done
            if need > budget - spent + tol:
                break
            spent += need
            done = self.t0 if self.rate == math.inf else self.t0 + spent / self.rate
            q.popleft()
            self.head_done = 0.0
            arrival = done + self.lat
            if unit:
                n = len(unit)
                self.queued -= n
                self.unread += n
                self.src.bytes_sent += n
                if self.loss and self.net.rng.random() < 1 - (1 - self.loss) ** -(-n // MSS):
                    arrival += self.rto
            arrival = max(arrival, self.last_arrival)
            self.last_arrival = arrival
            self.flight.append((arrival, unit))
        if q and budget - spent > 0:
            self.head_done = min(self.head_done + budget - spent, float(len(q[0])))

    def next_done(self) -> float:
        """When the transmission in progress pauses (drains or fills the window)."""
        if self.rate == math.inf:
            return self.t0
        return self.t0 + max(self.transmittable(), 0.0) / self.rate

    def rx_deadline(self) -> float:
        """When the reader may find something new: the first unit's arrival (or a guess)."""
        if self.reset:
            return -math.inf
        if self.flight:
            return self.flight[0][0]
        if self.active and self.queue:
            need = len(self.queue[0]) - self.head_done
            done = self.t0 if self.rate == math.inf else self.t0 + need / self.rate
            return done + self.lat
        return math.inf

    def tx_deadline(self) -> float:
        """When ``tx_want`` bytes of the send buffer will be free."""
        if self.dead:
            return -math.inf
        want = self.tx_want - (self.net.send_buffer - self.queued)
        if want <= 0:
            return -math.inf
        if not self.active:
            return math.inf
        cumulative = -self.head_done
        for unit in self.queue:
            cumulative += len(unit)
            want -= len(unit)
            if want <= 0:
                break
        if cumulative > self.transmittable() + _BYTE_EPS:
            return math.inf  # the window fills first; the reader's reads will wake us
        return self.t0 if self.rate == math.inf else self.t0 + cumulative / self.rate

    def wake(self) -> None:
        """Bring the waiting reader's and sender's wake-up times up to date."""
        if self.rx_waiter is not None:
            self.net._arm(self.rx_waiter, self.rx_deadline())
        if self.tx_waiter is not None:
            self.net._arm(self.tx_waiter, self.tx_deadline())


class _Waiter:
    """A reader or writer blocked until ``deadline`` (or an explicit wake)."""

    __slots__ = ("deadline", "done", "task", "version")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.deadline = math.inf
        self.version = 0  # of the deadline; older heap entries are stale
        self.done = False


class _Conn:
    """A connection: two pipes, and the NAT mapping it keeps open."""

    __slots__ = ("a", "b", "closed", "mapping", "net", "pipes", "streams")

    def __init__(self, net: SimNetwork, a: SimHost, b: SimHost, mapping: tuple[str, str] | None):
        self.net = net
        self.a = a
        self.b = b
        self.mapping = mapping  # (NATed dialler, remote) whose mapping this connection keeps
        self.closed = False
        self.pipes = (_Pipe(net, a, b), _Pipe(net, b, a))
        self.streams: list[SimStream] = []

    def end(self, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self.streams = []  # (they pointed back at us)
        self.a._conns.pop(self, None)
        self.b._conns.pop(self, None)
        if self.mapping is not None:
            entry = self.net._mappings[self.mapping]
            entry[0] -= 1
            entry[1] = now


class SimStream(trio.abc.HalfCloseableStream):
    """One end of a simulated TCP connection."""

    def __init__(
        self,
        net: SimNetwork,
        conn: _Conn,
        tx: _Pipe,
        rx: _Pipe,
        local_address: Address,
        remote_address: Address,
    ) -> None:
        self.net = net
        self._conn = conn
        self._tx = tx
        self._rx = rx
        self.local_address = local_address
        self.remote_address = remote_address
        self._closed = False
        self._sending = False
        self._receiving = False
        conn.streams.append(self)

    @property
    def socket(self) -> _SimSocket:
        return _SimSocket(self)  # made on use: a stream and its socket kept no cycle

    @property
    def host(self) -> SimHost:
        return self._tx.src

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            net = self.net
            pipe = self._tx
            view = memoryview(data).cast("B")
            pos = 0
            waited = False
            while True:
                self._check_send()
                now = trio.current_time()
                pipe.settle(now)
                space = net.send_buffer - pipe.queued
                if space > 0 and pos < len(view):
                    end = pos + min(space, len(view) - pos)
                    if pos == 0 and end == len(view) <= net.unit and type(data) is bytes:
                        pipe.queue.append(data)  # one unit, immutable already: no copy
                        pipe.queued += end
                    else:
                        for i in range(pos, end, net.unit):
                            unit = bytes(view[i : min(i + net.unit, end)])
                            pipe.queue.append(unit)
                            pipe.queued += len(unit)
                    pos = end
                    net._refresh(pipe, now)
                if pos >= len(view):
                    break
                # Wake once half the buffer is free (Linux wakes writers at a third).
                pipe.tx_want = min(len(view) - pos, max(net.send_buffer // 2, 1))
                await net._park(pipe, rx=False)
                waited = True
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            pipe = self._tx
            while True:
                self._check_send()
                pipe.settle(trio.current_time())
                if pipe.queued < self.net.send_buffer:
                    await trio.lowlevel.checkpoint()
                    return
                pipe.tx_want = 1
                await self.net._park(pipe, rx=False)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        self._send_fin()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            pipe = self._rx
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream is closed")
                if pipe.reset:
                    raise trio.BrokenResourceError("connection reset")
                now = trio.current_time()
                if pipe.active:
                    pipe.settle(now)
                data = self.net._take(pipe, now, max_bytes)
                if data is not None:
                    if not waited:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                await self.net._park(pipe, rx=True)
                waited = True
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close at once (like ``socket.close()``): queued data still goes, then the FIN; data
        sent to us from now on is refused (the peer's sends fail)."""
        if self._closed:
            return
        self._closed = True
        now = trio.current_time()
        if not self._tx.fin and not self._tx.dead:
            self._send_fin()
        rx = self._rx
        rx.settle(now)
        rx.dead = True
        rx.flight.clear()
        rx.unread = 0
        rx.queue.clear()
        rx.queued = 0
        rx.head_done = 0.0
        self.net._refresh(rx, now)
        rx.wake()
        for waiter in (self._tx.tx_waiter, rx.rx_waiter):
            if waiter is not None:
                self.net._fire(waiter)
        if all(s._closed for s in self._conn.streams) or self._tx.dead:
            self._conn.end(now)

    def setsockopt(self, *args: Any) -> None:
        """Socket options mean nothing here (the daemon sets TCP_NOTSENT_LOWAT)."""

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._tx.fin:
            raise trio.ClosedResourceError("EOF was sent on this stream")
        if self._tx.dead:
            raise trio.BrokenResourceError("connection reset by peer")

    def _send_fin(self) -> None:
        pipe = self._tx
        if pipe.fin:
            return
        pipe.fin = True
        now = trio.current_time()
        pipe.settle(now)
        if pipe.queue:
            pipe.queue.append(b"")
        else:
            pipe.last_arrival = max(now + pipe.lat, pipe.last_arrival)
            pipe.flight.append((pipe.last_arrival, b""))
            pipe.wake()


class _SimSocket:
    """The bits of ``trio.socket.SocketType`` a connection layer uses (``stream.socket``)."""

    def __init__(self, stream: SimStream) -> None:
        self._stream = stream

    def getpeername(self) -> Address:
        return self._stream.remote_address

    def getsockname(self) -> Address:
        return self._stream.local_address

    def close(self) -> None:
        self._stream.close()


class SimListener(trio.abc.Listener[SimStream]):
    """Accepts connections to one host's port. Create with :meth:`SimNetwork.listen`."""

    def __init__(self, net: SimNetwork, host: SimHost, port: int) -> None:
        self.net = net
        self.host = host
        self.port = port
        self.address: Address = (host.name, port)
        self._send, self._receive = trio.open_memory_channel[SimStream](math.inf)
        self._closed = False
        self.socket = _ListenerSocket(self.address)

    async def accept(self) -> SimStream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("listener is closed") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self.host._listeners.get(self.port) is self:
                del self.host._listeners[self.port]
            self._send.close()
            while True:  # connections nobody accepted are reset
                try:
                    self.net._reset(self._receive.receive_nowait()._conn)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self._receive.close()
        await trio.lowlevel.checkpoint()


class _ListenerSocket:
    """``listener.socket.getsockname()``, as on a trio ``SocketListener``."""

    def __init__(self, address: Address) -> None:
        self._address = address

    def getsockname(self) -> Address:
        return self._address


class SimTransport:
    """One host's view of the network, in the shape :mod:`cadenza.net` dials and listens
    through (``with cadenza.net._transport.use(SimTransport(net, "s1")):``)."""

    def __init__(self, net: SimNetwork, host: str) -> None:
        self.net = net
        self.host = host

    async def open_tcp_stream(self, host: str, port: int) -> SimStream:
        return await self.net.connect(self.host, host, port)

    async def open_tcp_listeners(self, port: int, host: str | None) -> list[SimListener]:
        await trio.lowlevel.checkpoint()
        return [self.net.listen(self.host, port)]


class SimNetwork:
    """Hosts, listeners and connections on one simulated network. Start :meth:`run` (or use
    :meth:`running`) before connecting: it wakes the network when a flow drains or stalls.

    Why one class of this length: hosts, listeners, flows and the event queue that paces
    them share one virtual clock and one table of flows in progress; the simulator is the one
    place where bandwidth is shared, and the sharing is this class.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        unit: int = UNIT,
        send_buffer: int = SEND_BUFFER,
        receive_window: int = RECEIVE_WINDOW,
        syn_timeout: float = SYN_TIMEOUT_S,
        nat_mapping_s: float = NAT_MAPPING_S,
        tick: float = TICK_S,
    ) -> None:
        if unit < 1:
            raise ValueError(f"unit must be >= 1, got {unit}")
        if send_buffer < 1:
            raise ValueError(f"send_buffer must be >= 1, got {send_buffer}")
        if receive_window < unit:
            raise ValueError(f"receive_window must be >= unit ({unit}), got {receive_window}")
        if not 0 <= syn_timeout < math.inf:
            raise ValueError(f"syn_timeout must be >= 0 and finite, got {syn_timeout}")
        if not nat_mapping_s >= 0:
            raise ValueError(f"nat_mapping_s must be >= 0, got {nat_mapping_s}")
        if not 0 < tick < math.inf:
            raise ValueError(f"tick must be > 0 and finite, got {tick}")
        self.rng = rng
        self.tick = tick
        self.unit = unit
        self.send_buffer = send_buffer
        self.receive_window = receive_window
        self.syn_timeout = syn_timeout
        self.nat_mapping_s = nat_mapping_s
        self.hosts: dict[str, SimHost] = {}
        # (NATed host, remote host) -> [open connections it dialled, time of the last activity]
        self._mappings: dict[tuple[str, str], list[float]] = {}
        # (time, seq, version, pipe or waiter): flow pauses and wake-ups; stale if the version
        # is not the object's current one.
        self._heap: list[tuple[float, int, int, _Pipe | _Waiter]] = []
        self._seq = 0
        self._sleep: trio.CancelScope | None = None
        self._running = False

    # --- hosts ---

    def add_host(
        self,
        name: str,
        *,
        upload: float,
        download: float,
        latency_ms: float,
        loss: float = 0.0,
        nat: bool = False,
    ) -> SimHost:
        """A host with an access link: bandwidth in bytes/s, one-way latency to the core in ms,
        segment loss probability in [0, 1)."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        for what, value in (("upload", upload), ("download", download)):
            if not value > 0:
                raise ValueError(f"{what} must be > 0 bytes/s, got {value}")
        if not 0 <= latency_ms < math.inf:
            raise ValueError(f"latency_ms must be >= 0 and finite, got {latency_ms}")
        if not 0 <= loss < 1:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        host = SimHost(name, float(upload), float(download), latency_ms / 1000, loss, nat)
        self.hosts[name] = host
        return host

    def host(self, name: str) -> SimHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise ValueError(f"no host {name!r}") from None

    def set_online(self, name: str, online: bool) -> None:
        """Take a host off the network (its connections are reset, connecting to it times out,
        it cannot connect) or bring it back. Its listeners stay."""
        host = self.host(name)
        if host.online == online:
            return
        host.online = online
        if not online:
            for conn in list(host._conns):
                self._reset(conn)

    # --- the scheduler ---

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Wake flows when they drain or stall; run in a nursery for as long as the network
        (``await nursery.start(net.run)``).

        On a :class:`~cadenza.sim.clock.VirtualClock` the clock itself calls :meth:`advance`
        whenever no task can run and the network's next event comes first: no task of ours
        wakes up for it (a third of the simulator's task switches). On any other clock this
        task sleeps until the next tick and does the same."""
        if self._running:
            raise RuntimeError("this network is already running")
        self._running = True
        clock = trio.lowlevel.current_clock()
        try:
            if isinstance(clock, VirtualClock):
                clock.attach(self)
                try:
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    clock.detach(self)
            task_status.started()
            while True:
                self.advance(trio.current_time())
                with trio.CancelScope(deadline=self.due()) as scope:
                    self._sleep = scope
                    await trio.sleep_forever()
                self._sleep = None
        finally:
            self._sleep = None
            self._running = False

    def due(self) -> float:
        """The tick of the network's next event (``math.inf``: none)."""
        heap = self._heap
        while heap and heap[0][2] != heap[0][3].version:
            heapq.heappop(heap)  # stale: the pipe re-planned, the waiter was moved or woken
        return self._tick(heap[0][0]) if heap else math.inf

    def advance(self, now: float) -> None:
        """Process the flow pauses and wake-ups due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now + _TIME_EPS:
            when, _, version, item = heapq.heappop(heap)
            if version != item.version:
                continue
            if isinstance(item, _Pipe):
                # Exact: no task ran between the previous tick and this one.
                item.planned = math.nan
                self._on_pause(item, min(when, now))
            else:
                self._fire(item)

    def running(self) -> AbstractAsyncContextManager[SimNetwork]:
        """``async with net.running():`` runs :meth:`run` for the duration of the block."""
        return running(self)

    # --- connections ---

    def listen(self, host: str, port: int) -> SimListener:
        h = self.host(host)
        if port == 0:  # any free port, as the kernel would choose
            port = LISTEN_PORT
            while port in h._listeners:
                port += 1
        if port in h._listeners:
            raise OSError(errno.EADDRINUSE, f"{host}:{port} is in use")
        listener = SimListener(self, h, port)
        h._listeners[port] = listener
        return listener

    async def connect(self, src: str, dst: str, port: int) -> SimStream:
        """Connect ``src`` to ``dst:port``; returns after one round trip. Raises
        ``ConnectionRefusedError`` if nothing listens there, :class:`Unreachable` (after
        ``syn_timeout``) if ``dst`` is offline or behind a NAT without a mapping for ``src``."""
        if not self._running:
            raise RuntimeError("start SimNetwork.run() first")
        s, d = self.host(src), self.host(dst)
        if not s.online:
            raise OSError(errno.ENETUNREACH, f"{src} is offline")
        now = trio.current_time()
        mapping = (s.name, d.name) if s.nat else None
        if mapping is not None:  # our SYN opens a mapping in our NAT (hole punching)
            self._mappings.setdefault(mapping, [0, now])[1] = now
        if not d.online or (d.nat and not self._mapped(d.name, s.name, now)):
            await trio.sleep(self.syn_timeout)
            raise Unreachable(errno.ETIMEDOUT, f"{dst}:{port} does not answer")
        if mapping is not None:
            self._mappings[mapping][0] += 1  # held during the handshake
        try:
            await trio.sleep(2 * (s.latency + d.latency))
            listener = d._listeners.get(port)
            if not s.online or not d.online or listener is None:
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"{dst}:{port} refused")
        except BaseException:
            if mapping is not None:
                self._mappings[mapping][0] -= 1
                self._mappings[mapping][1] = trio.current_time()
            raise
        local = (s.name, s._next_port)
        s._next_port = s._next_port + 1 if s._next_port < 65535 else EPHEMERAL_PORT
        conn = _Conn(self, s, d, mapping)
        out, back = conn.pipes
        client = SimStream(self, conn, out, back, local, (d.name, port))
        server = SimStream(self, conn, back, out, (d.name, port), local)
        s._conns[conn] = None
        d._conns[conn] = None
        listener._send.send_nowait(server)
        return client

    def _mapped(self, nat_host: str, remote: str, now: float) -> bool:
        entry = self._mappings.get((nat_host, remote))
        return entry is not None and (entry[0] > 0 or now - entry[1] <= self.nat_mapping_s)

    def _reset(self, conn: _Conn) -> None:
        now = trio.current_time()
        for pipe in conn.pipes:
            pipe.settle(now)
            pipe.dead = pipe.reset = True
            pipe.queue.clear()
            pipe.queued = 0
            pipe.head_done = 0.0
            pipe.flight.clear()
            pipe.unread = 0
            self._refresh(pipe, now)
            for waiter in (pipe.rx_waiter, pipe.tx_waiter):
                if waiter is not None:
                    self._fire(waiter)
        conn.end(now)

    # --- flows ---

    def _take(self, pipe: _Pipe, now: float, max_bytes: int | None) -> bytes | None:
        """Arrived data for the reader (b"" at EOF), or None if nothing has arrived."""
        flight = pipe.flight
        if not flight or flight[0][0] > now + _TIME_EPS:
            return None
        if not flight[0][1]:
            return b""  # the FIN stays, so EOF repeats
        chunks = []
        n = 0
        limit = math.inf if max_bytes is None else max_bytes
        while flight and n < limit:
            arrival, unit = flight[0]
            if arrival > now + _TIME_EPS or not unit:
                break
            take = len(unit) if len(unit) <= limit - n else int(limit - n)
            if take == len(unit):
                flight.popleft()
                chunks.append(unit)
            else:
                chunks.append(unit[:take])
                flight[0] = (arrival, unit[take:])
            n += take
        # The window opens: a stalled flow resumes, a flow that would stall pauses later.
        window_bound = pipe.queued - pipe.head_done > pipe.window_left() + _BYTE_EPS
        pipe.unread -= n
        pipe.dst.bytes_received += n
        if window_bound or not pipe.active:
            self._refresh(pipe, now)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _refresh(self, pipe: _Pipe, now: float) -> None:
        """Start or stop the pipe's flow if it should; otherwise re-plan its next pause."""
        should = pipe.wants_to_send()
        if should == pipe.active:
            if should:
                self._schedule(pipe)
            pipe.wake()
            return
        pipe.settle(now)
        src, dst = pipe.src, pipe.dst
        if should:
            pipe.active = True
            pipe.t0 = now
            src._up[pipe] = None
            dst._down[pipe] = None
        else:
            pipe.active = False
            pipe.rate = 0.0
            pipe.version += 1
            pipe.planned = math.nan
            del src._up[pipe]
            del dst._down[pipe]
        # The uploader's share changed for all its flows: their receivers re-share.
        dirty: dict[SimHost, None] = {dst: None}
        if src.upload != math.inf:
            for flow in src._up:
                dirty[flow.dst] = None
        for host in dirty:
            self._waterfill(host, now)
        pipe.wake()

    def _waterfill(self, host: SimHost, now: float) -> None:
        flows = host._down
        if not flows:
            return
        demands = sorted(
            (flow.src.upload / len(flow.src._up), i, flow) for i, flow in enumerate(flows)
        )
        remaining = host.download
        for i, (demand, _, flow) in enumerate(demands):
            share = remaining / (len(demands) - i)
            rate = demand if demand <= share else share
            remaining -= rate
            if rate != flow.rate:
                flow.settle(now)
                flow.rate = rate
                self._schedule(flow)
                flow.wake()

    def _schedule(self, pipe: _Pipe) -> None:
        when = pipe.next_done()
        if when == pipe.planned:
            return
        pipe.planned = when
        pipe.version += 1
        self._push(when, pipe.version, pipe)

    def _push(self, when: float, version: int, item: _Pipe | _Waiter) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, version, item))
        if self._sleep is not None:
            tick = self._tick(when)
            if tick < self._sleep.deadline:
                self._sleep.deadline = tick

    def _tick(self, when: float) -> float:
        """The first tick at or after ``when``."""
        if not math.isfinite(when):
            return when
        return math.ceil(when / self.tick - 1e-9) * self.tick

    async def _park(self, pipe: _Pipe, *, rx: bool) -> None:
        """Block the current task as the pipe's reader (or writer) until it is woken."""
        waiter = _Waiter(trio.lowlevel.current_task())
        if rx:
            pipe.rx_waiter = waiter
            waiter.deadline = pipe.rx_deadline()
        else:
            pipe.tx_waiter = waiter
            waiter.deadline = pipe.tx_deadline()
        now = trio.current_time()
        if waiter.deadline <= now:
            # Due already, yet the caller found nothing: float slack; look again next tick.
            waiter.deadline = now + self.tick
        if waiter.deadline < math.inf:
            self._push(waiter.deadline, waiter.version, waiter)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiter.done = True
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            waiter.done = True
            if pipe.rx_waiter is waiter:
                pipe.rx_waiter = None
            if pipe.tx_waiter is waiter:
                pipe.tx_waiter = None

    def _arm(self, waiter: _Waiter, deadline: float) -> None:
        """Move a blocked task's wake-up to ``deadline`` (called from other tasks)."""
        if waiter.done or deadline == waiter.deadline:
            return
        waiter.deadline = deadline
        waiter.version += 1
        if deadline <= trio.current_time():
            self._fire(waiter)
        elif deadline < math.inf:
            self._push(deadline, waiter.version, waiter)

    def _fire(self, waiter: _Waiter) -> None:
        if not waiter.done:
            waiter.done = True
            trio.lowlevel.reschedule(waiter.task)

    def _on_pause(self, pipe: _Pipe, now: float) -> None:
        """The flow's planned pause: it drained its queue or filled the reader's window."""
        pipe.settle(now)
        left = pipe.transmittable()
        if 0 < left <= _BYTE_EPS + pipe.rate * _TIME_EPS:  # float slack: finish the unit
            pipe._transmit(left + _BYTE_EPS)
        self._refresh(pipe, now)


__all__ = [
    "MIN_RTO_S",
    "MSS",
    "NAT_MAPPING_S",
    "RECEIVE_WINDOW",
    "SEND_BUFFER",
    "SYN_TIMEOUT_S",
    "TICK_S",
    "UNIT",
    "Address",
    "SimHost",
    "SimListener",
    "SimNetwork",
    "SimStream",
    "Unreachable",
]
