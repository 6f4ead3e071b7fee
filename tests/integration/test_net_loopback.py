"""cadenza.net over real TCP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from cadenza import net
from cadenza.protocol import connection as sansio
from cadenza.protocol.errors import ErrorCode, RemoteProtocolError
from cadenza.protocol.messages import BulkKind, Echo, ErrorReply, Message, Priority
from cadenza.protocol.noise import KeyPair
from cadenza.protocol.scheduler import STARVATION_BUDGET

SERVER = net.Identity(KeyPair.generate(), b"server-hello")
CLIENT = net.Identity(KeyPair.generate(), b"client-hello")
CHUNK = 16 * 1024


async def echo_handler(conn: net.PeerConnection, ch: net.Channel) -> None:
    """Echo back; b"stream:N" sends N chunks; b"hang" never answers; b"fail" errors."""
    msg = await ch.receive()
    assert isinstance(msg, Echo)
    if msg.payload.startswith(b"stream:"):
        count = int(msg.payload.split(b":")[1])
        for i in range(count):
            await ch.send_bulk(BulkKind.OPAQUE, i, bytes([i % 256]) * CHUNK)
        return
    if msg.payload == b"hang":
        await trio.sleep_forever()
    if msg.payload == b"fail":
        raise net.RequestError("not-found", "no such thing")
    await ch.send(Echo(msg.payload), end=True)


@asynccontextmanager
async def server(handler: net.Handler = echo_handler, **kw: object) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(net.serve_connections, handler, identity=SERVER, **kw)  # type: ignore[arg-type]
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_request_reply_xx_and_ik() -> None:
    async with server() as port:
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            assert conn.remote_static == SERVER.static.public
            assert conn.remote_payload == b"server-hello"
            assert await conn.request(Echo(b"xx")) == Echo(b"xx")
        async with net.open_connection(
            "127.0.0.1", port, identity=CLIENT, remote_static=SERVER.static.public
        ) as conn:
            assert await conn.request(Echo(b"ik")) == Echo(b"ik")


async def test_error_reply_becomes_request_failed() -> None:
    async with server() as port, net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
        with pytest.raises(net.RequestFailed) as info:
            await conn.request(Echo(b"fail"))
        assert (info.value.code, info.value.message) == ("not-found", "no such thing")


async def test_many_channels_at_once() -> None:
    results: dict[int, Message] = {}
    streamed: dict[int, int] = {}

    async with server() as port, net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:

        async def one(i: int) -> None:
            results[i] = await conn.request(Echo(i.to_bytes(4, "big") * (i + 1)))

        async def stream(i: int) -> None:
            async with conn.open_channel(Priority.PREFETCH) as ch:
                await ch.send(Echo(b"stream:20"))
                n = 0
                async for item in ch:
                    assert isinstance(item, net.Bulk) and item.index == n
                    assert bytes(item.data) == bytes([n % 256]) * CHUNK
                    n += 1
                streamed[i] = n

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
            for i in range(8):
                nursery.start_soon(stream, i)
    assert results == {i: Echo(i.to_bytes(4, "big") * (i + 1)) for i in range(200)}
    assert streamed == dict.fromkeys(range(8), 20)


async def test_control_cuts_through_a_bulk_transfer() -> None:
    progress = {"bulk": 0}
    under_way = trio.Event()

    async with server() as port, net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
        async with trio.open_nursery() as nursery:

            async def bulk() -> None:
                async with conn.open_channel(Priority.OFFLINE) as ch:
                    await ch.send(Echo(b"stream:600"))
                    async for _ in ch:
                        progress["bulk"] += 1
                        if progress["bulk"] == 10:
                            under_way.set()

            nursery.start_soon(bulk)
            await under_way.wait()
            assert await conn.request(Echo(b"control")) == Echo(b"control")
            at_control = progress["bulk"]
    assert progress["bulk"] == 600
    assert at_control < 600  # the control reply did not wait for the bulk transfer


async def test_priorities_honoured_on_a_backlogged_link() -> None:
    """The server has a backlog on two channels: PLAYING goes before OFFLINE opened earlier.

    A hand-driven client stops reading so the server's queues fill (as on a slow link),
    then drains the socket and records in which order the chunks arrive.
    """
    async with server() as port:
        sock = trio.socket.socket()
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 32 * 1024)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        client = sansio.Connection(sansio.Role.INITIATOR, CLIENT.static)
        await stream.send_all(client.data_to_send())
        while client.state is not sansio.State.OPEN:
            client.receive_data(await stream.receive_some(65536))
            while client.next_event() is not sansio.NEED_DATA:
                pass
            await stream.send_all(client.data_to_send())
        offline = client.open_channel()
        client.send_message(offline, Echo(b"stream:300"), priority=Priority.OFFLINE)
        await stream.send_all(client.data_to_send())
        await trio.sleep(0.3)  # not reading: the server's socket and queues fill up
        playing = client.open_channel()
        client.send_message(playing, Echo(b"stream:100"), priority=Priority.PLAYING)
        await stream.send_all(client.data_to_send())
        await trio.sleep(0.3)
        finished: list[int] = []
        counts = {offline: 0, playing: 0}
        seq: list[int] = []
        while len(finished) < 2:
            client.receive_data(await stream.receive_some(65536))
            while (ev := client.next_event()) is not sansio.NEED_DATA:
                if isinstance(ev, sansio.BulkReceived):
                    seq.append(ev.channel)
                    counts[ev.channel] += 1
                    client.consume(ev.channel, ev.size)
                    if counts[ev.channel] == (300 if ev.channel == offline else 100):
                        finished.append(ev.channel)
            await stream.send_all(client.data_to_send())
        await stream.aclose()
    assert finished == [playing, offline]
    # While PLAYING had data, OFFLINE got no more than the starvation guard's share, and not
    # nothing either.
    first, last = seq.index(playing), len(seq) - 1 - seq[::-1].index(playing)
    during = seq[first:last].count(offline)
    guard_share = 100 * (CHUNK + 64) // STARVATION_BUDGET
    assert 1 <= during <= guard_share + 3, "".join("o" if c == offline else "P" for c in seq)


async def test_cancelling_a_request_cancels_the_handler() -> None:
    handler_cancelled = trio.Event()
    handler_started = trio.Event()

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        if msg == Echo(b"hang"):
            handler_started.set()
            try:
                await trio.sleep_forever()
            finally:
                handler_cancelled.set()
        await ch.send(msg, end=True)  # type: ignore[arg-type]

    async with (
        server(handler) as port,
        net.open_connection("127.0.0.1", port, identity=CLIENT) as conn,
    ):
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                await conn.request(Echo(b"hang"))

            nursery.start_soon(ask)
            await handler_started.wait()
            nursery.cancel_scope.cancel()
        await handler_cancelled.wait()  # the RESET reached the server and cancelled it
        # The connection is still good.
        assert await conn.request(Echo(b"after")) == Echo(b"after")


async def test_request_deadline() -> None:
    async with server() as port, net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
        with pytest.raises(trio.TooSlowError):
            await conn.request(Echo(b"hang"), timeout=0.2)
        assert await conn.request(Echo(b"ok")) == Echo(b"ok")


async def test_server_push() -> None:
    got: list[Message] = []
    received = trio.Event()

    async def on_connection(
        conn: net.PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        task_status.started()
        await conn.notify(Echo(b"pushed"))
        await trio.sleep_forever()

    async def client_handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        item = await ch.receive()
        assert isinstance(item, Message)
        got.append(item)
        received.set()

    async with (
        server(on_connection=on_connection) as port,
        net.open_connection("127.0.0.1", port, identity=CLIENT, handler=client_handler),
    ):
        await received.wait()
    assert got == [Echo(b"pushed")]


async def test_no_request_is_handled_before_on_connection_took_the_connection_in() -> None:
    """A request sent the moment the handshake ends waits for on_connection (which may take its
    time) to say it has taken the connection in; one that refuses it leaves it unhandled."""
    known: set[net.PeerConnection] = set()
    handled: list[bool] = []

    async def on_connection(
        conn: net.PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        await trio.sleep(0.3)  # a slow admission
        if conn.remote_payload == b"refuse me":
            conn.abort("refused")
            return
        known.add(conn)
        task_status.started()
        await trio.sleep_forever()

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        item = await ch.receive()
        handled.append(conn in known)
        assert isinstance(item, Message)
        await ch.send(item, end=True)

    async with server(handler, on_connection=on_connection) as port:
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            assert await conn.request(Echo(b"at once")) == Echo(b"at once")
        assert handled == [True]
        refused = net.Identity(CLIENT.static, b"refuse me")
        async with net.open_connection("127.0.0.1", port, identity=refused) as conn:
            with pytest.raises(net.NetError):
                await conn.request(Echo(b"in vain"), timeout=5)
        assert handled == [True]


async def test_handshake_with_wrong_key_is_refused() -> None:
    reached = []

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        reached.append(ch)

    async with server(handler) as port:
        # IK towards a key the server does not hold: it cannot decrypt our first message.
        with pytest.raises(net.HandshakeFailed):
            async with net.open_connection(
                "127.0.0.1", port, identity=CLIENT, remote_static=KeyPair.generate().public
            ):
                pass
        # XX, but the server is not who we expected.
        expected = KeyPair.generate().public

        def pin(remote_static: bytes, payload: bytes) -> None:
            if remote_static != expected:
                raise RemoteProtocolError("server key does not match the pinned key")

        with pytest.raises(net.HandshakeFailed, match="pinned"):
            async with net.open_connection("127.0.0.1", port, identity=CLIENT, verify=pin):
                pass
    assert reached == []


async def test_server_refuses_a_client_it_does_not_admit() -> None:
    def admit(remote_static: bytes, payload: bytes) -> str:
        if payload != b"valid-certificate":
            raise RemoteProtocolError("no valid membership certificate")
        return "admitted"

    async with server(verify=admit) as port:
        with pytest.raises(net.HandshakeFailed, match="no valid membership certificate"):
            async with net.open_connection("127.0.0.1", port, identity=CLIENT):
                pass
        good = net.Identity(KeyPair.generate(), b"valid-certificate")
        async with net.open_connection("127.0.0.1", port, identity=good) as conn:
            assert await conn.request(Echo(b"in")) == Echo(b"in")


async def test_unreachable_peer() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(net.HandshakeFailed, match="cannot reach"):
        async with net.open_connection("127.0.0.1", port, identity=CLIENT):
            pass


async def _raw_responder(stream: trio.SocketStream, then: str) -> None:
    """A hand-driven peer: completes the handshake, then misbehaves as told."""
    conn = sansio.Connection(sansio.Role.RESPONDER, SERVER.static, payload=b"raw")
    while conn.state is not sansio.State.OPEN:
        conn.receive_data(await stream.receive_some(65536))
        while conn.next_event() is not sansio.NEED_DATA:
            pass
        await stream.send_all(conn.data_to_send())
    conn.send_ping(b"accepted")
    await stream.send_all(conn.data_to_send())
    if then == "silent":
        await trio.sleep_forever()
    # Wait for a request, answer with half a message, then vanish.
    while True:
        conn.receive_data(await stream.receive_some(65536))
        ev = conn.next_event()
        while ev is not sansio.NEED_DATA:
            if isinstance(ev, sansio.MessageReceived):
                conn.send_message(ev.channel, Echo(bytes(200_000)))
                data = conn.data_to_send(1 << 20)
                await stream.send_all(data[: len(data) // 2])
                await stream.aclose()
                return
            ev = conn.next_event()


async def test_peer_vanishing_mid_message() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_raw_responder, then="vanish"), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            with pytest.raises(net.ConnectionLost):
                await conn.request(Echo(b"big please"))
            assert conn.closed
            with pytest.raises(net.ConnectionLost):
                await conn.request(Echo(b"again"))
        nursery.cancel_scope.cancel()


async def test_idle_peer_is_dropped_by_keepalive() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_raw_responder, then="silent"), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with net.open_connection(
            "127.0.0.1", port, identity=CLIENT, keepalive=0.1, idle_timeout=0.5
        ) as conn:
            await conn.wait_closed()
            with pytest.raises(net.ConnectionLost, match="silent"):
                await conn.request(Echo(b"anyone?"))
        nursery.cancel_scope.cancel()


async def test_keepalive_keeps_a_quiet_but_live_link() -> None:
    async with (
        server(keepalive=0.05, idle_timeout=0.3) as port,
        net.open_connection(
            "127.0.0.1", port, identity=CLIENT, keepalive=0.05, idle_timeout=0.3
        ) as conn,
    ):
        await trio.sleep(1.0)  # several idle timeouts: pings keep it alive
        assert not conn.closed
        assert conn.rtt is not None
        assert await conn.request(Echo(b"still")) == Echo(b"still")


async def test_the_accepting_side_never_pings_and_drops_a_silent_dialler() -> None:
    """Only the side that dialled pings; the side that accepted watches for silence."""
    async with server(keepalive=0.05, idle_timeout=0.5) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = sansio.Connection(sansio.Role.INITIATOR, CLIENT.static, payload=b"raw")
        await stream.send_all(conn.data_to_send())
        pings = 0
        open_at = None
        with trio.fail_after(30):  # a guard: the server drops us after 0.5 s of silence
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break  # the server closed the connection
                conn.receive_data(data)
                while (ev := conn.next_event()) is not sansio.NEED_DATA:
                    if isinstance(ev, sansio.PingReceived):
                        pings += 1
                if conn.state is sansio.State.OPEN and open_at is None:
                    open_at = trio.current_time()
                    await stream.send_all(conn.data_to_send())  # our handshake's end; then silence
        assert open_at is not None
        # The "accepted" PING that ends the handshake, and no keepalive after it, though the
        # server's keepalive interval (0.05 s) passed many times before it gave up.
        assert pings == 1
        assert trio.current_time() - open_at >= 0.5


async def test_graceful_close_lets_open_requests_finish() -> None:
    release = trio.Event()

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        await release.wait()
        await ch.send(msg, end=True)  # type: ignore[arg-type]

    async with server(handler) as port:
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            result: list[Message] = []

            async def ask() -> None:
                result.append(await conn.request(Echo(b"slow")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.sleep(0.05)
                nursery.start_soon(conn.aclose)
                await trio.sleep(0.05)
                release.set()
            assert result == [Echo(b"slow")]
            assert conn.closed


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from functools import partial
    from cadenza import net
    from cadenza.protocol.messages import BulkKind, Echo
    from cadenza.protocol.noise import KeyPair

    async def handler(conn, ch):
        await ch.receive()
        i = 0
        while True:
            await ch.send_bulk(BulkKind.OPAQUE, i, bytes(16384))
            i += 1

    async def main():
        ident = net.Identity(KeyPair.generate())
        async with trio.open_nursery() as n:
            ls = await n.start(partial(net.serve_connections, handler, identity=ident))
            print(ls[0].socket.getsockname()[1], flush=True)

    trio.run(main)
    """
)


async def test_peer_process_killed_mid_transfer() -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220 - we read its port from a thread below
        [sys.executable, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(await trio.to_thread.run_sync(proc.stdout.readline))
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            received = 0
            with pytest.raises(net.ConnectionLost):
                async with conn.open_channel(Priority.PLAYING) as ch:
                    await ch.send(Echo(b"go"))
                    async for _ in ch:
                        received += 1
                        if received == 50:
                            os.kill(proc.pid, signal.SIGKILL)
            assert received >= 50
    finally:
        proc.kill()
        proc.wait()


async def test_channel_reset_by_peer_is_reported() -> None:
    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        await ch.receive()
        ch.reset(ErrorCode.REFUSED, "not today")

    async with (
        server(handler) as port,
        net.open_connection("127.0.0.1", port, identity=CLIENT) as conn,
    ):
        with pytest.raises(net.ChannelReset) as info:
            await conn.request(Echo(b"x"))
        assert info.value.code is ErrorCode.REFUSED and info.value.reason == "not today"


async def test_error_reply_type_is_passed_through_for_streams() -> None:
    async with server() as port, net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
        async with conn.open_channel() as ch:
            await ch.send(Echo(b"fail"), end=True)
            reply = await ch.receive()
            assert isinstance(reply, ErrorReply) and reply.code == "not-found"


async def test_handshake_timeout_against_a_silent_listener() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(net.HandshakeFailed, match="timed out"):
            async with net.open_connection(
                "127.0.0.1", port, identity=CLIENT, handshake_timeout=0.3
            ):
                pass
        nursery.cancel_scope.cancel()


async def test_abrupt_close_fails_pending_requests_on_both_sides() -> None:
    handler_saw: list[str] = []
    handler_started = trio.Event()
    handler_done = trio.Event()

    async def handler(conn: net.PeerConnection, ch: net.Channel) -> None:
        await ch.receive()
        handler_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            handler_saw.append("cancelled")
            handler_done.set()
            raise

    async with server(handler) as port:
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            failure: list[BaseException] = []

            async def ask() -> None:
                try:
                    await conn.request(Echo(b"wait"))
                except net.ConnectionLost as exc:
                    failure.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await handler_started.wait()
                conn.abort("pulling the plug")
            assert len(failure) == 1 and "pulling the plug" in str(failure[0])
        with trio.fail_after(5):
            await handler_done.wait()
    assert handler_saw == ["cancelled"]


async def test_connections_lost_on_real_sockets_leave_nothing_for_the_cyclic_collector() -> None:
    """What the swarm test shows on the simulated network, on real sockets: connections lost
    mid-request (the server pulls the plug), their requests failing and both ends torn down,
    are freed by reference counting alone. A cycle would keep a connection, its buffers and
    its tasks' frames until a full collection came by."""
    import gc

    async def plug_puller(conn: net.PeerConnection, ch: net.Channel) -> None:
        await ch.receive()
        conn.abort("pulling the plug")
        await trio.sleep_forever()

    async def lose_one(port: int) -> None:
        async with net.open_connection("127.0.0.1", port, identity=CLIENT) as conn:
            with pytest.raises(net.ConnectionLost):
                await conn.request(Echo(b"x"), timeout=5)

    async with server(plug_puller) as port:
        await lose_one(port)  # once first: what is made once (imports, caches) is made
        await trio.sleep(0.2)
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                await lose_one(port)
            await trio.sleep(0.2)  # the server's ends are gone too
            found = gc.collect()
        finally:
            gc.enable()
    assert found == 0
