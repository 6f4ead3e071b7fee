"""Benchmark of `cadenza serve`: prints figures, asserts nothing about time.

    .venv/bin/python bench/service.py [--sessions 1000] [--streams 50] [--seconds 20]

The service runs as its own process (`cadenza serve` on loopback) on a data directory
prepared here: one user, a device credential per simulated speaker (created offline, so
the figures are not dominated by scrypt), and a few 8 MiB files (a 320 kbps track is
about that size). This process plays the speakers:

1. idle sessions: N connections, each logged in with its own device credential, then
   left idle; the service's RSS and CPU before, after logging in, and over a quiet spell;
2. chunk serving: M sessions stream whole files with GetChunks at once; aggregate MB/s
   delivered and the service's CPU seconds per MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import trio

from cadenza import net
from cadenza.protocol import api
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.noise import KeyPair
from cadenza.service.catalog import FileRef
from cadenza.service.serve import Roles

FILE_SIZE = 8 * 1024 * 1024
FILES = 4
MB = 1e6


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def prepare(data: Path, devices: int) -> tuple[list[bytes], list[str]]:
    roles = Roles(data)
    try:
        roles.accounts.add_user("bench", "bench password")
        creds = [roles.accounts.add_device("bench", f"speaker-{i}")[1] for i in range(devices)]
        file_ids = []
        for i in range(FILES):
            m = roles.storage.put(os.urandom(FILE_SIZE))
            file_ids.append(m.file_id)
            roles.catalog.add_track(
                title=f"Bench {i}",
                artists=["Bench"],
                album="Bench",
                year=None,
                disc=None,
                number=i + 1,
                duration_ms=200_000,
                sample_rate=44100,
                channels=2,
                loudness_lufs=None,
                peak_dbfs=None,
                files=[FileRef(320, m.file_id, m.size)],
                source_hash=f"bench-{i}",
            )
        return creds, file_ids
    finally:
        roles.close()


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


async def session(port: int, credential: bytes, nursery: trio.Nursery) -> net.PeerConnection:
    identity = net.Identity(KeyPair.generate(), hello_payload("bench-speaker"))
    conn = await net.connect(nursery, "127.0.0.1", port, identity=identity)
    reply = await conn.request(api.Login(device_credential=credential))
    assert isinstance(reply, api.LoginOk), reply
    return conn


async def idle_sessions(port: int, creds: list[bytes], proc: psutil.Process, quiet: float) -> dict:
    rss0, cpu0 = proc.memory_info().rss, cpu(proc)
    t0 = time.perf_counter()
    conns: list[net.PeerConnection] = []
    limiter = trio.CapacityLimiter(64)  # logins in flight at once, like a fleet reconnecting
    async with trio.open_nursery() as nursery:

        async def one(cred: bytes) -> None:
            async with limiter:
                conns.append(await session(port, cred, nursery))

        async with trio.open_nursery() as logins:
            for cred in creds:
                logins.start_soon(one, cred)
        login_s = time.perf_counter() - t0
        cpu1 = cpu(proc)
        await trio.sleep(quiet)
        cpu2, rss2 = cpu(proc), proc.memory_info().rss
        for c in conns:
            c.abort("bench done")
        nursery.cancel_scope.cancel()
    n = len(creds)
    return {
        "sessions": n,
        "login_wall_s": round(login_s, 2),
        "logins_per_s": round(n / login_s, 1),
        "service_cpu_s_for_logins": round(cpu1 - cpu0, 2),
        "service_rss_mb_before": round(rss0 / MB, 1),
        "service_rss_mb_with_sessions": round(rss2 / MB, 1),
        "service_kb_per_session": round((rss2 - rss0) / n / 1e3, 1),
        "idle_seconds": quiet,
        "service_cpu_pct_while_idle": round(100 * (cpu2 - cpu1) / quiet, 2),
    }


async def streams(
    port: int, creds: list[bytes], file_ids: list[str], proc: psutil.Process, seconds: float
) -> dict:
    total = 0
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        conns = []
        for cred in creds:
            conns.append(await session(port, cred, nursery))

        async def stream(i: int, conn: net.PeerConnection) -> None:
            nonlocal total
            k = i
            while not done.is_set():
                file_id = file_ids[k % len(file_ids)]
                k += 1
                async with conn.open_channel() as ch:
                    await ch.send(api.GetChunks(file_id, 0, FILE_SIZE // 16384), end=True)
                    async for item in ch:
                        assert isinstance(item, net.Bulk)
                        total += len(item.data)
                        if done.is_set():
                            break

        c0, t0 = cpu(proc), time.perf_counter()
        async with trio.open_nursery() as inner:
            for i, conn in enumerate(conns):
                inner.start_soon(stream, i, conn)
            await trio.sleep(seconds)
            done.set()
            got, dt, c1 = total, time.perf_counter() - t0, cpu(proc)
            inner.cancel_scope.cancel()
        for c in conns:
            c.abort("bench done")
        nursery.cancel_scope.cancel()
    return {
        "streams": len(creds),
        "seconds": round(dt, 1),
        "mb_per_s": round(got / dt / MB, 1),
        "per_stream_mb_per_s": round(got / dt / MB / len(creds), 2),
        "service_cpu_s_per_mb": round((c1 - c0) / (got / MB), 5),
        "service_cpu_pct": round(100 * (c1 - c0) / dt, 1),
    }


async def run(args: argparse.Namespace) -> dict:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        data = Path(tmp)
        creds, file_ids = prepare(data, args.sessions + args.streams)
        cmd = [
            str(Path(sys.executable).parent / "cadenza"),
            "serve",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--no-http",
            "--no-mdns",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # noqa: ASYNC220
        try:
            assert proc.stdout is not None
            port = 0
            while not port:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                if not line:
                    raise RuntimeError("cadenza serve exited")
                m = re.search(r"listening on .*:(\d+)$", line.strip())
                port = int(m.group(1)) if m else 0
            ps = psutil.Process(proc.pid)
            result = {"idle": await idle_sessions(port, creds[: args.sessions], ps, args.quiet)}
            await trio.sleep(1)
            result["streams"] = await streams(
                port, creds[args.sessions :], file_ids, ps, args.seconds
            )
            return result
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the streaming run")
    p.add_argument("--quiet", type=float, default=30.0, help="idle spell to measure CPU over")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = trio.run(run, args)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    i, s = r["idle"], r["streams"]
    rss = (i["service_rss_mb_before"], i["service_rss_mb_with_sessions"])
    print(f"machine: {os.cpu_count()} cores; service and clients on the same machine")
    print(f"{i['sessions']} logged-in idle sessions:")
    print(f"  logins            {i['logins_per_s']} /s")
    print(f"  service CPU       {i['service_cpu_s_for_logins']} s for all logins")
    print(f"  service RSS       {rss[0]} MB before, {rss[1]} MB with sessions")
    print(f"                    ({i['service_kb_per_session']} KB per session)")
    print(f"  service CPU idle  {i['service_cpu_pct_while_idle']} % over {i['idle_seconds']} s")
    print(f"{s['streams']} concurrent chunk streams (GetChunks, whole 8 MiB files):")
    print(f"  throughput        {s['mb_per_s']} MB/s ({s['per_stream_mb_per_s']} MB/s per stream)")
    ms = s["service_cpu_s_per_mb"] * 1e3
    print(f"  service CPU       {s['service_cpu_pct']} %, {ms:.2f} ms per MB")


if __name__ == "__main__":
    main()
