"""Benchmark of the wire protocol: prints figures, asserts nothing about time.

    .venv/bin/python bench/protocol.py [--mb 512] [--requests 2000]

Two processes over loopback TCP (a server process and this one, the client):

1. bulk: the server streams 16 KiB chunks on one PLAYING channel as fast as the
   connection carries them; throughput in MB/s and CPU seconds per MB (both
   processes, user + system);
2. control latency: round-trip time of small control requests, idle and while
   an OFFLINE bulk transfer saturates the same connection (p50/p99);
3. sans-IO only (one process, no sockets): frames + Noise both ways, to show
   what the protocol layer costs without the kernel and trio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from functools import partial

import psutil
import trio

from cadenza import net
from cadenza.protocol import connection as sansio
from cadenza.protocol.messages import BulkKind, Echo, Priority
from cadenza.protocol.noise import KeyPair

CHUNK = 16 * 1024
MB = 1e6


# --- server process ---------------------------------------------------------------------------


async def _server_handler(conn: net.PeerConnection, ch: net.Channel) -> None:
    msg = await ch.receive()
    assert isinstance(msg, Echo)
    if msg.payload.startswith(b"bulk:"):
        count = int(msg.payload[5:])
        data = os.urandom(CHUNK)
        i = 0
        while i != count:  # count < 0: until the client resets the channel
            await ch.send_bulk(BulkKind.OPAQUE, i, data)
            i += 1
        return
    await ch.send(msg, end=True)


async def _serve() -> None:
    ident = net.Identity(KeyPair.generate())
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(net.serve_connections, _server_handler, identity=ident)
        )
        print(listeners[0].socket.getsockname()[1], flush=True)


# --- client -----------------------------------------------------------------------------------


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_of(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _bulk(conn: net.PeerConnection, server: psutil.Process, nbytes: int) -> dict:
    count = nbytes // CHUNK
    c0, s0, t0 = _cpu_self(), _cpu_of(server), time.perf_counter()
    wire0 = conn.bytes_received
    received = 0
    async with conn.open_channel(Priority.PLAYING) as ch:
        await ch.send(Echo(f"bulk:{count}".encode()))
        async for item in ch:
            assert isinstance(item, net.Bulk)
            received += len(item.data)
    dt = time.perf_counter() - t0
    cpu = (_cpu_self() - c0) + (_cpu_of(server) - s0)
    assert received == count * CHUNK
    return {
        "bytes": received,
        "seconds": round(dt, 3),
        "mb_per_s": round(received / dt / MB, 1),
        "cpu_s_per_mb": round(cpu / (received / MB), 5),
        "wire_overhead_pct": round(100 * ((conn.bytes_received - wire0) / received - 1), 2),
    }


async def _latency(conn: net.PeerConnection, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        reply = await conn.request(Echo(i.to_bytes(4, "big")))
        out.append(time.perf_counter() - t)
        assert reply == Echo(i.to_bytes(4, "big"))
    return out


async def _latency_under_load(conn: net.PeerConnection, n: int) -> tuple[list[float], float]:
    got = 0
    started = trio.Event()

    async def load() -> None:
        nonlocal got
        async with conn.open_channel(Priority.OFFLINE) as ch:
            await ch.send(Echo(b"bulk:-1"))
            async for item in ch:
                assert isinstance(item, net.Bulk)
                got += len(item.data)
                if got >= 32 * CHUNK:
                    started.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        await started.wait()
        before, t0 = got, time.perf_counter()
        lat = []
        for i in range(n):
            t = time.perf_counter()
            await conn.request(Echo(i.to_bytes(4, "big")))
            lat.append(time.perf_counter() - t)
            # Space requests out a little so the bulk transfer runs at full speed between them.
            await trio.sleep(0.001)
        rate = (got - before) / (time.perf_counter() - t0) / MB
        nursery.cancel_scope.cancel()
    return lat, rate


def _sansio_throughput(nbytes: int) -> dict:
    a_key, b_key = KeyPair.generate(), KeyPair.generate()
    a = sansio.Connection(sansio.Role.INITIATOR, a_key)
    b = sansio.Connection(sansio.Role.RESPONDER, b_key)
    for _ in range(4):
        for src, dst in ((a, b), (b, a)):
            wire = src.data_to_send()
            if wire:  # b"" would mean EOF
                dst.receive_data(wire)
            while dst.next_event() is not sansio.NEED_DATA:
                pass
    data = os.urandom(CHUNK)
    cid = b.open_channel()
    count = nbytes // CHUNK
    c0, t0 = _cpu_self(), time.perf_counter()
    sent = received = 0
    while received < count:
        while sent < count and b.queued_bytes(cid) < 256 * 1024:
            b.send_bulk(cid, BulkKind.OPAQUE, sent, data)
            sent += 1
        wire = b.data_to_send(1 << 20)
        a.receive_data(wire)
        while (ev := a.next_event()) is not sansio.NEED_DATA:
            if isinstance(ev, sansio.BulkReceived):
                received += 1
                a.consume(ev.channel, ev.size)
        back = a.data_to_send()
        if back:
            b.receive_data(back)
        while b.next_event() is not sansio.NEED_DATA:
            pass
    dt = time.perf_counter() - t0
    cpu = _cpu_self() - c0
    return {
        "mb_per_s": round(count * CHUNK / dt / MB, 1),
        "cpu_s_per_mb": round(cpu / (count * CHUNK / MB), 5),
    }


async def _client(args: argparse.Namespace) -> dict:
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(await trio.to_thread.run_sync(proc.stdout.readline))
        server = psutil.Process(proc.pid)
        ident = net.Identity(KeyPair.generate())
        results: dict = {}
        async with net.open_connection("127.0.0.1", port, identity=ident) as conn:
            await _bulk(conn, server, 32 * 1024 * 1024)  # warm-up
            runs = [await _bulk(conn, server, args.mb * 1024 * 1024) for _ in range(3)]
            best = max(runs, key=lambda r: r["mb_per_s"])
            results["bulk"] = best | {"runs_mb_per_s": [r["mb_per_s"] for r in runs]}
            idle = await _latency(conn, args.requests)
            loaded, rate = await _latency_under_load(conn, args.requests)
            results["control_idle_ms"] = {
                "p50": round(_pct(idle, 0.5) * 1e3, 3),
                "p99": round(_pct(idle, 0.99) * 1e3, 3),
            }
            results["control_under_load_ms"] = {
                "p50": round(_pct(loaded, 0.5) * 1e3, 3),
                "p99": round(_pct(loaded, 0.99) * 1e3, 3),
                "max": round(max(loaded) * 1e3, 3),
                "mean": round(statistics.fmean(loaded) * 1e3, 3),
                "bulk_mb_per_s_meanwhile": round(rate, 1),
            }
        results["sansio_only"] = _sansio_throughput(256 * 1024 * 1024)
        return results
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="MiB per bulk run (default 512)")
    parser.add_argument("--requests", type=int, default=2000, help="control requests per test")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve)
        return
    results = trio.run(_client, args)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    b = results["bulk"]
    u = results["control_under_load_ms"]
    i = results["control_idle_ms"]
    s = results["sansio_only"]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print("encrypted bulk over loopback TCP, 16 KiB chunks, two processes:")
    print(f"  throughput        {b['mb_per_s']:8.1f} MB/s  (runs: {b['runs_mb_per_s']})")
    print(f"  CPU               {b['cpu_s_per_mb'] * 1e3:8.2f} ms per MB (both ends, user+sys)")
    print(f"  wire overhead     {b['wire_overhead_pct']:8.2f} %  (headers, tags, length prefixes)")
    print("control request round trip (p50 / p99):")
    print(f"  idle              {i['p50']:8.3f} / {i['p99']:.3f} ms")
    print(
        f"  under bulk load   {u['p50']:8.3f} / {u['p99']:.3f} ms"
        f"  (max {u['max']:.3f} ms; bulk meanwhile {u['bulk_mb_per_s_meanwhile']} MB/s)"
    )
    print("sans-IO layer alone (frames + Noise both ways, one process, no sockets):")
    ms_per_mb = s["cpu_s_per_mb"] * 1e3
    print(f"  throughput        {s['mb_per_s']:8.1f} MB/s, {ms_per_mb:.2f} ms CPU per MB")


if __name__ == "__main__":
    main()
