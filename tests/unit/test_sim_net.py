"""The swarm simulation's network, on trio's virtual clock: timing, sharing, flow control, NAT,
loss, churn, and trio's stream contract.

Every test runs twice, on each virtual clock (the ``autojump_clock`` fixture, overridden here):
pytest-trio's ``MockClock(autojump_threshold=0)``, on which the network's scheduler is a task
sleeping until its next event, and the simulator's ``VirtualClock``, which drives the scheduler
itself. On both, time jumps to the next deadline whenever all tasks are blocked, so simulated
seconds cost nothing.
"""

from __future__ import annotations

import collections
import functools
import random
import statistics
import time
from collections.abc import Awaitable

import pytest
import trio
import trio.testing

from cadenza.sim.clock import VirtualClock
from cadenza.sim.net import (
    MIN_RTO_S,
    SYN_TIMEOUT_S,
    TICK_S,
    SimListener,
    SimNetwork,
    SimStream,
    SimTransport,
    Unreachable,
)


@pytest.fixture(params=["MockClock", "VirtualClock"])
def autojump_clock(request: pytest.FixtureRequest) -> trio.abc.Clock:
    if request.param == "MockClock":
        return trio.testing.MockClock(autojump_threshold=0)
    return VirtualClock()


MB = 1_000_000
KiB = 1024
# Readers are woken on the network's tick grid: delivery times are exact to within a tick.
SLACK = 1.5 * TICK_S


def network(**kwargs: float) -> SimNetwork:
    return SimNetwork(random.Random(1), **kwargs)  # type: ignore[arg-type]


async def pair(net: SimNetwork, src: str, dst: str, port: int = 80) -> tuple[SimStream, SimStream]:
    """A connected (dialler's, listener's) stream pair."""
    listener = net.host(dst)._listeners.get(port) or net.listen(dst, port)
    client = await net.connect(src, dst, port)
    server = await listener.accept()
    return client, server


async def read_all(stream: SimStream) -> tuple[bytes, float]:
    """Everything until EOF, and the time the last byte arrived."""
    data = bytearray()
    last = trio.current_time()
    while chunk := await stream.receive_some(256 * KiB):
        data += chunk
        last = trio.current_time()
    return bytes(data), last


async def send(stream: SimStream, data: bytes) -> None:
    await stream.send_all(data)
    await stream.send_eof()


async def record(times: list[float], transfer: Awaitable[float]) -> None:
    times.append(await transfer)


async def timed_transfer(src: SimStream, dst: SimStream, data: bytes) -> float:
    """Send ``data`` and EOF; seconds from the first write to the last byte read."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, src, data)
        got, last = await read_all(dst)
    assert got == data
    return last - start


# --- timing and bandwidth sharing ---


async def test_transfer_takes_latency_plus_size_over_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("a", upload=1 * MB, download=10 * MB, latency_ms=20)
    net.add_host("b", upload=1 * MB, download=5 * MB, latency_ms=30)
    async with net.running():
        start = trio.current_time()
        client, server = await pair(net, "a", "b")
        assert trio.current_time() - start == pytest.approx(0.1)  # one round trip
        assert client.remote_address == ("b", 80) == server.local_address
        assert server.remote_address == client.local_address == client.socket.getsockname()
        assert server.socket.getpeername()[0] == "a"
        elapsed = await timed_transfer(client, server, random.Random(2).randbytes(MB))
        # 50 ms one way, then 1 MB at 1 MB/s (a's upload); the other way round: b's upload.
        assert elapsed == pytest.approx(0.05 + 1.0, rel=0.01)
        assert elapsed == pytest.approx(1.05, abs=SLACK)
        elapsed = await timed_transfer(server, client, bytes(MB // 2))
        assert elapsed == pytest.approx(0.05 + 0.5, abs=SLACK)
    assert net.host("a").bytes_sent == MB and net.host("b").bytes_received == MB


async def test_two_flows_share_the_uploaders_bandwidth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("a", upload=1 * MB, download=10 * MB, latency_ms=10)
    for name in ("b", "c"):
        net.add_host(name, upload=1 * MB, download=10 * MB, latency_ms=10)
    async with net.running():
        ab = await pair(net, "a", "b")
        alone = await timed_transfer(*ab, bytes(MB))
        ab, ac = await pair(net, "a", "b", 81), await pair(net, "a", "c")
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            for flow in (ab, ac):
                nursery.start_soon(record, times, timed_transfer(*flow, bytes(MB)))
    assert alone == pytest.approx(0.02 + 1.0, abs=SLACK)
    assert times == pytest.approx([0.02 + 2.0] * 2, abs=SLACK)  # each at half the rate


async def test_the_receivers_download_caps_a_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("server", upload=100 * MB, download=100 * MB, latency_ms=5)
    net.add_host("slow", upload=0.1 * MB, download=0.5 * MB, latency_ms=15)
    async with net.running():
        elapsed = await timed_transfer(*await pair(net, "server", "slow"), bytes(MB))
    assert elapsed == pytest.approx(0.02 + 2.0, abs=SLACK)


async def test_flows_reshare_when_one_ends(autojump_clock: trio.testing.MockClock) -> None:
    net = network()
    for name in ("a", "b", "c"):
        net.add_host(name, upload=1 * MB, download=10 * MB, latency_ms=10)
    async with net.running():
        ab, ac = await pair(net, "a", "b"), await pair(net, "a", "c")
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, times, timed_transfer(*ac, bytes(MB // 2)))
            nursery.start_soon(record, times, timed_transfer(*ab, bytes(3 * MB // 2)))
    # Both at 0.5 MB/s for a second; then b's flow has the whole 1 MB/s for its last 1 MB.
    assert times == pytest.approx([0.02 + 1.0, 0.02 + 2.0], abs=SLACK)


async def test_download_left_by_a_slow_uploader_goes_to_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("service", upload=float("inf"), download=100 * MB, latency_ms=5)
    net.add_host("peer", upload=1 * MB, download=10 * MB, latency_ms=5)
    net.add_host("me", upload=1 * MB, download=3 * MB, latency_ms=5)
    async with net.running():
        from_service, from_peer = await pair(net, "service", "me"), await pair(net, "peer", "me")
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, times, timed_transfer(*from_service, bytes(4 * MB)))
            nursery.start_soon(record, times, timed_transfer(*from_peer, bytes(2 * MB)))
    # The peer's flow is held to its 1 MB/s upload; the service's gets the other 2 MB/s.
    assert times == pytest.approx([0.01 + 2.0, 0.01 + 2.0], abs=SLACK)


# --- flow control ---


async def test_a_reader_that_does_not_read_blocks_the_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network(send_buffer=64 * KiB, receive_window=256 * KiB)
    net.add_host("a", upload=1 * MB, download=10 * MB, latency_ms=10)
    net.add_host("b", upload=1 * MB, download=10 * MB, latency_ms=10)
    async with net.running():
        client, server = await pair(net, "a", "b")
        sent = 0

        async def writer() -> None:
            nonlocal sent
            while True:
                await client.send_all(bytes(16 * KiB))
                sent += 16 * KiB

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.sleep(60)
            # The reader's window (in flight and unread) and the send buffer are full.
            assert sent == 256 * KiB + 64 * KiB
            got = 0
            while got < 64 * KiB:
                got += len(await server.receive_some(64 * KiB - got))
            await trio.sleep(60)
            assert sent == 256 * KiB + 64 * KiB + 64 * KiB
            nursery.cancel_scope.cancel()


# --- connections, NAT, churn ---


async def test_nobody_listening_is_refused_after_a_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("a", upload=MB, download=MB, latency_ms=10)
    net.add_host("b", upload=MB, download=MB, latency_ms=15)
    async with net.running():
        start = trio.current_time()
        with pytest.raises(ConnectionRefusedError) as info:
            await net.connect("a", "b", 80)
        assert not isinstance(info.value, Unreachable)
        assert trio.current_time() - start == pytest.approx(0.05)


async def test_nat_refuses_inbound_unless_it_dialled_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network(nat_mapping_s=240)
    net.add_host("public", upload=MB, download=MB, latency_ms=10)
    net.add_host("home", upload=MB, download=MB, latency_ms=10, nat=True)
    net.listen("public", 80)
    net.listen("home", 80)
    async with net.running():
        start = trio.current_time()
        with pytest.raises(ConnectionRefusedError):  # Unreachable is a ConnectionRefusedError
            await net.connect("public", "home", 80)
        assert trio.current_time() - start == pytest.approx(SYN_TIMEOUT_S)  # SYNs dropped
        # The NATed host dials out: that connection works both ways.
        out, inbound = await pair(net, "home", "public")
        await out.send_all(b"ping")
        assert await inbound.receive_some() == b"ping"
        await inbound.send_all(b"pong")
        assert await out.receive_some() == b"pong"
        # While it is open (and for a while after), the NAT lets public in.
        back, _ = await pair(net, "public", "home")
        await back.aclose()
        await out.aclose()
        await inbound.aclose()
        await trio.sleep(200)
        await (await net.connect("public", "home", 80)).aclose()
        await trio.sleep(241)
        with pytest.raises(Unreachable):
            await net.connect("public", "home", 80)


async def test_two_nated_hosts_punch_a_hole(autojump_clock: trio.testing.MockClock) -> None:
    net = network(syn_timeout=3)
    net.add_host("alice", upload=MB, download=MB, latency_ms=10, nat=True)
    net.add_host("bob", upload=MB, download=MB, latency_ms=10, nat=True)
    net.listen("alice", 80)
    net.listen("bob", 80)
    async with net.running():
        with pytest.raises(Unreachable):
            await net.connect("alice", "bob", 80)  # opens alice's mapping towards bob
        stream, _ = await pair(net, "bob", "alice")
        await stream.send_all(b"hello")


async def test_a_host_going_offline_resets_its_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network(syn_timeout=10)
    net.add_host("a", upload=MB, download=MB, latency_ms=10)
    net.add_host("b", upload=MB, download=MB, latency_ms=10)
    async with net.running():
        client, server = await pair(net, "a", "b")
        await client.send_all(bytes(100 * KiB))

        async def reader() -> None:
            with pytest.raises(trio.BrokenResourceError):
                while True:
                    await server.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.05)
            net.set_online("b", False)
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
        start = trio.current_time()
        with pytest.raises(Unreachable):
            await net.connect("a", "b", 80)
        assert trio.current_time() - start == pytest.approx(10)
        with pytest.raises(OSError):
            await net.connect("b", "a", 80)
        net.set_online("b", True)
        await pair(net, "a", "b")


async def test_closing_one_end(autojump_clock: trio.testing.MockClock) -> None:
    net = network()
    net.add_host("a", upload=MB, download=MB, latency_ms=10)
    net.add_host("b", upload=MB, download=MB, latency_ms=10)
    async with net.running():
        client, server = await pair(net, "a", "b")
        await client.send_all(b"last words")
        await client.aclose()  # queued data still goes, then the FIN
        data, _ = await read_all(server)
        assert data == b"last words"
        assert await server.receive_some() == b""
        with pytest.raises(trio.BrokenResourceError):  # nobody reads at the other end
            await server.send_all(b"anyone?")
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()


# --- loss ---


async def test_a_lost_segment_costs_a_retransmission_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("lossy", upload=MB, download=MB, latency_ms=25, loss=0.1)
    net.add_host("b", upload=MB, download=MB, latency_ms=25)
    rto = max(MIN_RTO_S, 2 * 0.1)  # the round trip is 100 ms
    async with net.running():
        client, server = await pair(net, "lossy", "b")
        delays = []
        for _ in range(2000):  # one segment each, one at a time
            start = trio.current_time()
            await client.send_all(bytes(1000))
            assert len(await server.receive_some()) == 1000
            delays.append(trio.current_time() - start - 0.05 - 1000 / MB)
    late = [d for d in delays if d > rto / 2]
    print(f"{len(late) / len(delays):.3f} of segments lost, {statistics.fmean(delays):.4f} s")
    assert len(late) / len(delays) == pytest.approx(0.1, abs=0.02)
    assert all(d == pytest.approx(rto, abs=SLACK) for d in late)
    assert all(d == pytest.approx(0, abs=SLACK) for d in delays if d <= rto / 2)
    assert statistics.fmean(delays) == pytest.approx(0.1 * rto, rel=0.2)


async def test_a_bulk_transfer_with_loss_arrives_whole_and_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = network()
    net.add_host("lossy", upload=MB, download=MB, latency_ms=25, loss=0.01)
    net.add_host("b", upload=MB, download=MB, latency_ms=25)
    data = random.Random(5).randbytes(MB)
    async with net.running():
        elapsed = await timed_transfer(*await pair(net, "lossy", "b"), data)
    # Late units hold back later ones, but the sender never slows: at most one RTO late.
    assert 1.05 < elapsed <= 1.05 + MIN_RTO_S + SLACK


# --- trio's contract, and scale ---


async def test_streams_pass_trios_half_closeable_stream_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:

        async def make(**kwargs: float) -> tuple[SimStream, SimStream]:
            net = network(**kwargs)
            net.add_host("a", upload=MB, download=10 * MB, latency_ms=20)
            net.add_host("b", upload=MB, download=5 * MB, latency_ms=30)
            await nursery.start(net.run)
            return await pair(net, "a", "b")

        async def clogged() -> tuple[SimStream, SimStream]:
            # One-byte buffers, filled: send_all blocks until the other side reads.
            a, b = await make(unit=1, send_buffer=1, receive_window=1)
            await a.send_all(b"xx")
            await b.send_all(b"xx")
            return a, b

        await trio.testing.check_half_closeable_stream(make, clogged)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_thousand_hosts_ten_transfers_each(autojump_clock: trio.testing.MockClock) -> None:
    hosts, transfers, size = 1000, 10, 128 * KiB
    rng = random.Random(7)
    net = network()
    names = [f"h{i}" for i in range(hosts)]
    for name in names:
        net.add_host(
            name,
            upload=rng.uniform(0.5, 5) * MB,
            download=rng.uniform(5, 50) * MB,
            latency_ms=rng.uniform(5, 50),
        )
    received = 0
    done = 0
    wall = time.perf_counter()
    async with net.running(), trio.open_nursery() as servers:

        async def handle(stream: SimStream) -> None:
            nonlocal received
            data, _ = await read_all(stream)
            received += len(data)
            await stream.aclose()

        async def serve(listener: SimListener) -> None:
            async with trio.open_nursery() as nursery:
                while True:
                    nursery.start_soon(handle, await listener.accept())

        async def client(i: int) -> None:
            nonlocal done
            pick = random.Random(i)
            for _ in range(transfers):
                stream = await net.connect(names[i], names[pick.randrange(hosts)], 1)
                await send(stream, bytes(size))
                assert await stream.receive_some() == b""  # the server read it all
                await stream.aclose()
                done += 1

        for name in names:
            servers.start_soon(serve, net.listen(name, 1))
        async with trio.open_nursery() as clients:
            for i in range(hosts):
                clients.start_soon(client, i)
        servers.cancel_scope.cancel()
    wall = time.perf_counter() - wall
    print(
        f"{hosts} hosts x {transfers} transfers of {size // KiB} KiB: "
        f"{trio.current_time():.2f} s simulated in {wall:.2f} s of wall time"
    )
    assert done == hosts * transfers
    assert received == hosts * transfers * size
    assert sum(net.host(n).bytes_sent for n in names) == received


def test_host_parameters_are_checked() -> None:
    net = network()
    net.add_host("a", upload=MB, download=MB, latency_ms=1)
    with pytest.raises(ValueError, match="exists"):
        net.add_host("a", upload=MB, download=MB, latency_ms=1)
    with pytest.raises(ValueError, match="upload"):
        net.add_host("b", upload=0, download=MB, latency_ms=1)
    with pytest.raises(ValueError, match="download"):
        net.add_host("b", upload=MB, download=-1, latency_ms=1)
    with pytest.raises(ValueError, match="latency_ms"):
        net.add_host("b", upload=MB, download=MB, latency_ms=-1)
    with pytest.raises(ValueError, match="loss"):
        net.add_host("b", upload=MB, download=MB, latency_ms=1, loss=1)
    with pytest.raises(ValueError, match="no host"):
        net.host("nobody")
    with pytest.raises(ValueError, match="receive_window"):
        network(unit=64 * KiB, receive_window=16 * KiB)


async def test_connect_needs_the_scheduler(autojump_clock: trio.testing.MockClock) -> None:
    net = network()
    net.add_host("a", upload=MB, download=MB, latency_ms=1)
    with pytest.raises(RuntimeError, match="run"):
        await net.connect("a", "a", 1)


async def test_running_raises_the_blocks_own_error(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(KeyError):
        async with network().running():
            raise KeyError("mine")


@pytest.mark.timeout(60)
async def test_real_connections_idle_for_an_hour_of_virtual_time_keep_pinging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two real PeerConnections over the simulated network stay up through long silences.

    The keepalive loop once compared ``now - last_rx >= interval`` at the deadline
    ``last_rx + interval``; rounding can make that false at the very deadline, and on a
    virtual clock (which does not move by itself) the loop then spun forever: this test hung.
    """
    from cadenza import net as cnet
    from cadenza.net import _transport
    from cadenza.protocol.noise import KeyPair

    server_id = cnet.Identity(KeyPair.generate(), b"s")
    client_id = cnet.Identity(KeyPair.generate(), b"c")
    simnet = SimNetwork(random.Random(7))
    simnet.add_host("a", upload=1e6, download=1e6, latency_ms=7.3)
    simnet.add_host("b", upload=1e6, download=1e6, latency_ms=11.9)

    async def nothing(conn: cnet.PeerConnection, ch: cnet.Channel) -> None:
        await ch.receive()

    async with simnet.running(), trio.open_nursery() as nursery:
        with _transport.use(SimTransport(simnet, "b")):
            listeners = await nursery.start(
                functools.partial(
                    cnet.serve_connections,
                    nothing,
                    identity=server_id,
                    host="b",
                    port=0,
                    keepalive=20.0,
                    idle_timeout=60.0,
                )
            )
        port = listeners[0].socket.getsockname()[1]
        with _transport.use(SimTransport(simnet, "a")):
            conn = await cnet.connect(
                nursery, "b", port, identity=client_id, keepalive=20.0, idle_timeout=60.0
            )
        wakes: collections.Counter[trio.lowlevel.Task] = collections.Counter()

        class KeepaliveWakes(trio.abc.Instrument):
            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                if task.name.endswith("_keepalive_loop"):
                    wakes[task] += 1

        trio.lowlevel.add_instrument(KeepaliveWakes())
        start = trio.current_time()
        await trio.sleep(3600)
        assert trio.current_time() - start == pytest.approx(3600)
        assert not conn.closed
        # The dialler's keepalive wakes once a ping (it woke twice: at the interval after the
        # ping, then again a round trip later, when the interval after the pong was up).
        pinger, watcher = sorted(wakes.values(), reverse=True)
        assert 3600 / 20 - 2 <= pinger <= 3600 / 20 + 2, wakes
        assert watcher <= 3600 / 40, wakes
        assert conn.rtt is not None and 0.03 < conn.rtt < 0.06  # 2 x (7.3 + 11.9) ms
        # About one ping a keepalive interval went each way: bytes flowed all along.
        assert conn.bytes_received > 3600 / 20 * 20
        nursery.cancel_scope.cancel()
