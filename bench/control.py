"""Benchmark of the control API: `GET /api/v1/state` under load from a second process while the
speaker plays; prints figures, asserts nothing.

    .venv/bin/python bench/control.py [--seconds 20] [--connections 8] [--json]

A fresh `cadenza serve` and `cadenzad` on loopback (generated tracks; ALSA ``null`` paced by
the clock, so playback is real time and underruns are real), the speaker playing a long
track. A second process (this script, re-run as a load generator) opens ``--connections``
keep-alive HTTP connections and sends `GET /api/v1/state` back to back for ``--seconds``;
it reports requests per second and latency percentiles. Underruns are read from the
speaker's state before and after. The same load with the speaker idle is shown for
comparison, and one event-stream subscriber stays connected throughout (it must keep
receiving position events).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def load(url: str, seconds: float, connections: int) -> dict[str, Any]:
    """The load generator (runs in its own process)."""
    import httpx
    import trio

    latencies: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await client.get(url + "/api/v1/state")
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            await client.get(url + "/api/v1/state")  # warm up
            start = time.monotonic()
            deadline = start + seconds
            async with trio.open_nursery() as nursery:
                for _ in range(connections):
                    nursery.start_soon(worker, client, deadline)
            return time.monotonic() - start

    elapsed = trio.run(main)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "errors": errors,
    }


def run_load(url: str, seconds: float, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--load", url, "--seconds", str(seconds),
         "--connections", str(connections)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def subscriber(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    import httpx

    try:
        with httpx.stream("GET", url + "/api/v1/events", timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    counts[line[7:]] = counts.get(line[7:], 0) + 1
                if stop.is_set():
                    return
    except httpx.HTTPError:
        if not stop.is_set():
            counts["stream_failed"] = 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load(args.load, args.seconds, args.connections)))
        return 0

    import httpx

    from rig import Rig

    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="cadenza-control-") as tmp,
        Rig(Path(tmp), long_tracks=True) as rig,
    ):
        url = rig.url
        results["idle"] = run_load(url, args.seconds, args.connections)
        httpx.put(url + "/api/v1/repeat", json={"repeat": "one"}, timeout=10)
        httpx.post(url + "/api/v1/play", json={"uri": rig.uris["Morning Light"]}, timeout=30)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/api/v1/state", timeout=10).json()["status"] != "playing":
            if time.monotonic() > deadline:
                raise SystemExit("the speaker never started playing")
            time.sleep(0.1)
        stop = threading.Event()
        counts: dict[str, int] = {}
        sub = threading.Thread(target=subscriber, args=(url, stop, counts), daemon=True)
        sub.start()
        before = httpx.get(url + "/api/v1/state", timeout=10).json()
        results["playing"] = run_load(url, args.seconds, args.connections)
        after = httpx.get(url + "/api/v1/state", timeout=10).json()
        stop.set()
        results["playing"]["underruns"] = after["underruns"] - before["underruns"]
        results["playing"]["status_after"] = after["status"]
        results["playing"]["position_events_seen_by_subscriber"] = counts.get("position", 0)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"GET /api/v1/state, {args.connections} keep-alive connections from a second process,"
        f" {args.seconds:.0f} s each"
    )
    print(f"{'':28} {'speaker idle':>14} {'speaker playing':>16}")
    for key, label in [
        ("requests", "requests"),
        ("rps", "requests per second"),
        ("p50_ms", "latency p50 (ms)"),
        ("p90_ms", "latency p90 (ms)"),
        ("p99_ms", "latency p99 (ms)"),
        ("max_ms", "latency max (ms)"),
        ("errors", "non-200 answers"),
    ]:
        print(f"{label:28} {results['idle'][key]!s:>14} {results['playing'][key]!s:>16}")
    p = results["playing"]
    print(f"underruns during the playing run: {p['underruns']} (status after: {p['status_after']})")
    seen = p["position_events_seen_by_subscriber"]
    print(f"position events an event-stream subscriber got meanwhile: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
