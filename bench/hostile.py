"""Benchmark of the defences against hostile clients (issue 17): real processes on loopback
under floods from many source addresses; prints figures, asserts nothing about time.

    .venv/bin/python bench/hostile.py [--quick] [--attackers 1000] [--seconds 30]
        [--after 10] [--calm 5] [--steps 2,50,200] [--phases 1,2,3] [--json]

The attackers are tests/hostile/wire.py (a Cadenza client written without cadenza's code)
in a process of their own, so that their CPU does not delay the legitimate clients, which
run in this one. Loopback has 2**24 addresses: every attacker connects from an address of
its own (127.1.x.y, 127.2.x.y, ...), as a flood from many hosts does, since the
listeners' gates count per source address. An attacker that is cut off connects again at
once. Each legitimate login is a new connection: TCP connect, XX handshake up to the
service's first PING, one Login; its latency is connect to LoginOk. One phase after the
other, each with fresh processes:

1. ``cadenza serve`` under a pre-login fragment flood, twice (two waves with a pause
   between, on the same process): N attackers do an XX handshake and send DATA fragments
   that never finish a message, a third of them in each shape: ``wide``, 64 channels of
   16,000 bytes (past the 8 KiB a stranger may make it hold); ``long``, one message grown
   1,000 bytes at a time (past the 4 KiB message limit); ``many``, 64 channels of 1,000
   bytes (2 are taken, the rest reset), then held open. A legitimate client logs in
   every 100 ms, first with alice's password, then with the device credential that
   returned, alone for ``--calm`` seconds and then during each wave; it uses two addresses
   in turn, since a listener lets one address connect 8 times a second.
2. ``cadenza serve`` under a login guessing flood: N attackers send wrong passwords for
   alice, four Logins at once on one connection (two channels are taken), round after
   round. Before the attack the owner logged in from home (so the service knows that
   address) and a speaker got its device credential behind what is attacker 0's address
   (a shared NAT). Then, alone and under attack: the owner logs in with the right
   password every 0.5 s (every fourth time from an address never used before), the
   speaker with its credential every 0.5 s from attacker 0's address. Every
   ``auth-failed`` an attacker gets is one password check (scrypt) the service did.
3. ``cadenzad`` under hostile peers: a speaker plays a generated tone to ALSA ``null``
   (paced by the clock: real-time playback, real underruns) from ``cadenza serve``, its
   p2p port fixed. The attacker logs in as a second user (mallory) once per connection
   it will open, each time with a new Noise static key: each LoginOk carries a membership
   certificate for that key. For each of ``--steps``, that many connections (4 per source
   address) dial the speaker's p2p port with XX and a Hello carrying a certificate, a
   third in each shape: ``wide``, 128 channels of 63 KiB unfinished messages (past the
   256 KiB an admitted peer may make a speaker hold); ``long``, one message past the
   64 KiB limit; ``many``, 128 channels of 1,000 bytes (64 taken, the rest reset), then
   held open. The speaker rests 5 s between steps.

Figures: the target's RSS (VmRSS every 100 ms: median of the 2 s before the attack, the
peak, the peak of each second, ``--after`` seconds after the attackers left), its CPU
(user + system of all its threads, /proc/PID/stat, over the attack, as % of one core),
the lines it wrote to stdout/stderr during the attack (and what its log budget says it
held back), how the attackers' connections ended (GOAWAY and its code, closed without
one, closed during the handshake: refused or shed by the gate), the RESETs and Login
replies they got, and their own process's CPU (on 2 cores, one attacker process is what
limits how hard the machine can attack itself).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import multiprocessing
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import trio

import cadenza

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "hostile"))
import wire  # noqa: E402  (the attacker's client: no cadenza code)

from alsa import AlsaSandbox  # noqa: E402  (the tests' private ALSA configuration)

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PASSWORD = "alice's correct horse"
MALLORY_PASSWORD = "mallory is a member too"
MB = 1024 * 1024

# The access point drops a connection that has not logged in this long after it was
# accepted (service/access_point.py): a connection closed then, without a GOAWAY, met it.
LOGIN_TIMEOUT = 20.0
# A legitimate login that takes longer than this counts as failed (a speaker gives up too).
LOGIN_WAIT = 10.0
# An attacker's handshake that takes longer than this is given up (and counted).
HANDSHAKE_WAIT = 15.0
# Attacker sends are written in batches of this size (the service reads 256 KiB at a time).
SEND_BATCH = 1 << 20
BASELINE_S = 2.0  # RSS before an attack: the median of this long
SAMPLE_S = 0.1  # RSS sampling period
SETTLE_S = 5.0  # the speaker's rest between steps
# Phase 1 floods the same service twice: memory the first wave left behind is either
# reused by the second (a bound) or added to (no bound).
WAVES = 2

LEGIT_ADDRESS = "127.0.0.2"  # the owner's home (phase 2)
# Phase 1's legitimate client logs in ten times a second, from two addresses in turn: a
# listener lets an address connect 8 times a second (net/_gate.py), and what is measured
# here is the attack's effect, not the client's own rate.
LEGIT_ADDRESSES = ("127.0.0.2", "127.0.0.3")


def address(net: int, i: int) -> str:
    """The i-th address of 127.<net>.x.y (250 per /24: .1 to .250)."""
    return f"127.{net}.{i // 250}.{i % 250 + 1}"


# --- processes -------------------------------------------------------------------------------


class Proc:
    """A subprocess whose output is read on a thread, each line's arrival time kept."""

    def __init__(self, name: str, cmd: list[Any], *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env if env is not None else child_env(),
        )
        self.times: list[float] = []
        self.lines: deque[tuple[float, str]] = deque(maxlen=2000)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            now = time.monotonic()
            with self._cond:
                self.times.append(now)
                self.lines.append((now, line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                lines = [line for _, line in self.lines]
                for line in lines[seen:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(lines[-30:])
                    raise RuntimeError(f"{self.name}: never printed {pattern!r}:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def output(self, t0: float, t1: float) -> dict[str, Any]:
        """What it wrote between two monotonic times: the number of lines, what the log
        budget says it held back (its "[N similar messages suppressed]"), a few lines."""
        with self._cond:
            n = sum(1 for t in self.times if t0 <= t < t1)
            lines = [line for t, line in self.lines if t0 <= t < t1]
        held = sum(int(m.group(1)) for line in lines for m in SUPPRESSED.finditer(line))
        kinds = Counter(_template(line) for line in lines)
        return {
            "lines": n,
            "suppressed_reported": held,
            "kinds": dict(kinds.most_common(8)),
            "first": lines[:12],
        }

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)


SUPPRESSED = re.compile(r"\[(\d+) similar messages? suppressed\]")


def _template(line: str) -> str:
    """A log line with its addresses and numbers blanked: what kind of line it is."""
    line = SUPPRESSED.sub("[N suppressed]", line)
    line = re.sub(r"\('?[\d.]+'?, \d+\)|\b\d+\.\d+\.\d+\.\d+\b", "ADDR", line)
    return re.sub(r"\b\d+(\.\d+)?\b", "N", line)[:140]


class Procs:
    """Every process started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.running: list[Proc | Attack] = []

    def start(self, name: str, cmd: list[Any], **kw: Any) -> Proc:
        proc = Proc(name, cmd, **kw)
        self.running.append(proc)
        return proc

    def attack(self, name: str, params: dict[str, Any]) -> Attack:
        attack = Attack(name, params)
        self.running.append(attack)
        return attack

    def stop(self, proc: Proc | Attack) -> None:
        proc.stop()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        while self.running:
            proc = self.running.pop()
            with contextlib.suppress(Exception):
                proc.stop()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Plain log lines on stderr, counted here (not the journal, not a NOTIFY_SOCKET).
    for key in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(key, None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def fixed_port() -> int:
    """A free port for a listener on every address, below the ephemeral range: the
    attackers' thousands of connections take ephemeral ports, any of which would keep a
    wildcard listener from binding."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in range(low - 1, 1024, -1):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE to the hard one (a thousand sockets); subprocesses inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def quiet(cmd: list[Any], **kw: Any) -> None:
    """Run a set-up command; its output only if it fails."""
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if out.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")


# --- measuring a process -------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of all of ``pid``'s threads (its children not counted)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int, key: str) -> int:
    """A figure of /proc/PID/status: sizes in bytes, counts as they are."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            value = line.split()
            return int(value[1]) * (1024 if value[-1] == "kB" else 1)
    raise RuntimeError(f"no {key} for {pid}")


class Watch:
    """VmRSS (and threads) of a process every 100 ms, on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []  # time, VmRSS, threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            try:
                rss, threads = proc_status(self.pid, "VmRSS"), proc_status(self.pid, "Threads")
            except (OSError, RuntimeError):
                return
            self.samples.append((time.monotonic(), rss, threads))
            tick += SAMPLE_S
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def between(self, t0: float, t1: float) -> list[tuple[float, int, int]]:
        return [s for s in list(self.samples) if t0 <= s[0] <= t1]

    def summary(self, t0: float, t1: float, t_after: float) -> dict[str, Any]:
        """Baseline (median of the BASELINE_S before t0), peak from t0 to ``t_after``, the
        last sample at ``t_after``; threads at most; and VmHWM now."""
        base = [rss for _, rss, _ in self.between(t0 - BASELINE_S, t0)]
        during = self.between(t0, t_after)
        after = self.between(t1, t_after)
        out: dict[str, Any] = {
            "baseline_mb": mb(statistics.median(base)) if base else None,
            "peak_mb": mb(max(rss for _, rss, _ in during)) if during else None,
            "after_mb": mb(after[-1][1]) if after else None,
            "after_s": round(t_after - t1, 1),
            "threads_max": max((n for _, _, n in during), default=None),
            # The peak of each second from the attack's start: growth, plateau, or release.
            "per_second_mb": [
                mb(max(rss for _, rss, _ in self.between(t, t + 1.0) or [(0, 0, 0)]))
                for t in _seconds(t0, t_after)
            ],
            "samples": len(during),
        }
        with contextlib.suppress(OSError, RuntimeError):
            out["vm_hwm_mb"] = mb(proc_status(self.pid, "VmHWM"))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _seconds(t0: float, t1: float) -> list[float]:
    return [t0 + i for i in range(int(t1 - t0))]


def mb(n: float) -> float:
    return round(n / MB, 1)


class CpuWindow:
    """CPU seconds of a process between start() and stop(), as % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.c0 = cpu_seconds(pid)

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pid) - self.c0
        return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "cpu_pct": pct(cpu, wall)}


def pct(cpu: float, wall: float) -> float:
    return round(100 * cpu / wall, 1) if wall > 0 else 0.0


def latency(values: list[float]) -> dict[str, Any]:
    """Milliseconds: n, p50, p99, max."""
    if not values:
        return {"n": 0}
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else 0
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p99_ms": round(p99 if len(values) > 1 else values[0], 1),
        "max_ms": round(max(values), 1),
    }


# --- the attacker's process --------------------------------------------------------------------


class Attack:
    """An attack function run in a process of its own; it says "started" when its
    attackers start, "stopped" when they have been told to stop, then its figures."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_attack_main, args=(name, params, child), daemon=True)
        self.proc.start()
        child.close()

    def wait(self, what: str, timeout: float | None = None) -> Any:
        """Block until the child says ``what`` (its payload); RuntimeError if it dies."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._conn.poll(0.5 if left is None else min(0.5, left)):
                if not self.proc.is_alive():
                    raise RuntimeError(f"the attack process died ({self.proc.exitcode})")
                if deadline is not None and time.monotonic() >= deadline:
                    raise RuntimeError(f"the attack process never said {what!r}")
                continue
            try:
                kind, payload = self._conn.recv()
            except EOFError:
                raise RuntimeError(f"the attack process died ({self.proc.exitcode})") from None
            if kind == "error":
                raise RuntimeError(f"the attack process failed:\n{payload}")
            if kind == what:
                return payload

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self._conn.close()


def _attack_main(name: str, params: dict[str, Any], conn: Connection) -> None:
    # Ctrl-C is for the bench, which stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_fd_limit()
    try:
        result = trio.run(ATTACKS[name], params, conn)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    conn.send(("done", result))


@dataclass
class Tally:
    """How the attackers' connections went, per shape of attack."""

    counts: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    resets: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0

    def outcome(self, shape: str, what: str) -> None:
        self.outcomes.setdefault(shape, Counter())[what] += 1

    def public(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "outcomes": {shape: dict(c.most_common()) for shape, c in self.outcomes.items()},
            "resets": dict(self.resets),
            "replies": dict(self.replies.most_common()),
            "mb_sent": mb(self.bytes_sent),
        }


async def run_attackers(
    conn: Connection, seconds: float, start: Callable[[trio.Nursery], None]
) -> dict[str, Any]:
    """Start the attackers, let them run ``seconds``, stop them; the process's CPU."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        conn.send(("started", None))
        start(nursery)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    conn.send(("stopped", None))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"cpu_pct": pct(cpu, time.monotonic() - t0), "cpu_s": round(cpu, 2)}


def fragments(channels: Iterable[int], per_channel: int, size: int) -> Iterator[bytes]:
    """Plaintexts of transport messages: DATA fragments without END_MESSAGE, ``per_channel``
    bytes on each of ``channels`` in pieces of ``size``, packed several to a message."""
    filler = os.urandom(size)
    current: list[bytes] = []
    room = wire.MAX_PLAINTEXT
    for cid in channels:
        left = per_channel
        while left > 0:
            n = min(size, left)
            left -= n
            f = wire.data_frame(cid, filler[:n], end_message=False)
            if len(f) > room:
                yield b"".join(current)
                current, room = [], wire.MAX_PLAINTEXT
            current.append(f)
            room -= len(f)
    if current:
        yield b"".join(current)


async def send_flood(peer: wire.RawPeer, plaintexts: Iterable[bytes]) -> int:
    """Seal and send (in batches); the bytes the socket took. A failed send is swallowed and
    not recorded on ``peer``: what the other side said before hanging up (a GOAWAY) is
    still in our receive buffer, for drain() to read."""
    sent = 0
    pending: list[bytes] = []
    size = 0
    try:
        for plain in plaintexts:
            sealed = peer.seal(plain)
            pending.append(sealed)
            size += len(sealed)
            if size >= SEND_BATCH:
                await peer.stream.send_all(b"".join(pending))
                sent += size
                pending, size = [], 0
        if pending:
            await peer.stream.send_all(b"".join(pending))
            sent += size
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    return sent


async def drain(peer: wire.RawPeer, tally: Tally) -> wire.Closed:
    """Read (answering nothing) until the other side closes; count its RESETs."""
    peer.answer_pings = False
    peer.grant_credit = False
    while True:
        try:
            f = await peer.receive_frame()
        except wire.PeerClosed as exc:
            return exc.closed
        except wire.WireError:
            return await peer.hold()
        if f.type == wire.RESET and f.payload:
            tally.resets[wire.code_name(f.payload[0])] += 1


HANDSHAKES = "handshakes done"


def ended(closed: wire.Closed, deadline: float | None) -> str:
    """How an admitted attacker connection ended."""
    if closed.goaway is not None and closed.goaway.code != 0:
        return f"GOAWAY {closed.goaway.code_name}"
    if deadline is not None and closed.elapsed >= deadline - 0.5:
        return f"closed at the {deadline:g} s login deadline (no GOAWAY)"
    return f"closed without GOAWAY ({closed.reason})"


async def flooding_connection(
    port: int,
    source: str,
    shape: str,
    flood: Callable[[wire.RawPeer], Iterable[bytes]],
    tally: Tally,
    *,
    hello: bytes,
    static: bytes | None = None,
    deadline: float | None = None,
) -> None:
    """One attacker connection: connect, handshake, flood, read until cut off."""
    tally.counts["connections tried"] += 1
    try:
        peer = await wire.RawPeer.connect(HOST, port, source=source)
    except OSError as exc:
        tally.outcome(shape, f"connect failed ({errno.errorcode.get(exc.errno or 0, exc)})")
        await trio.sleep(0.05)  # a refused connect is instant: do not spin
        return
    admitted = False
    try:
        try:
            with trio.fail_after(HANDSHAKE_WAIT):
                await peer.handshake_xx(hello, static=static)
                await peer.wait_admitted()
        except trio.TooSlowError:
            tally.outcome(shape, f"handshake not done in {HANDSHAKE_WAIT:g} s")
            return
        except wire.PeerClosed as exc:
            tally.outcome(shape, f"closed during the handshake ({exc.closed.reason})")
            return
        except wire.WireError:
            tally.outcome(shape, "handshake unreadable")
            return
        admitted = True
        tally.counts[HANDSHAKES] += 1
        tally.bytes_sent += await send_flood(peer, flood(peer))
        closed = await drain(peer, tally)
        admitted = False
        tally.outcome(shape, ended(closed, deadline))
    except trio.Cancelled:
        if admitted:
            tally.outcome(shape, "still open when the attack stopped")
        raise
    finally:
        peer.stream.socket.close()


# Phase 1: what a stranger sends before logging in (the pre-login budget: 2 channels,
# 4 KiB messages, 8 KiB held).
PRE_AUTH_SHAPES: dict[str, Callable[[wire.RawPeer], Iterable[bytes]]] = {
    "wide": lambda p: fragments([p.next_channel() for _ in range(64)], 16_000, 16_000),
    "long": lambda p: fragments([p.next_channel()], 64_000, 1_000),
    "many": lambda p: fragments([p.next_channel() for _ in range(64)], 1_000, 1_000),
}


async def pre_login_flood(p: dict[str, Any], conn: Connection) -> dict[str, Any]:
    tally = Tally()
    shapes = p.get("shapes", list(PRE_AUTH_SHAPES))

    async def attacker(i: int) -> None:
        shape = shapes[i % len(shapes)]
        while True:
            await flooding_connection(
                p["port"],
                address(1, i),
                shape,
                PRE_AUTH_SHAPES[shape],
                tally,
                hello=wire.hello("flood"),
                deadline=LOGIN_TIMEOUT,
            )

    def start(nursery: trio.Nursery) -> None:
        for i in range(p["attackers"]):
            nursery.start_soon(attacker, i)

    cpu = await run_attackers(conn, p["seconds"], start)
    return {"attacker_process": cpu, "seconds": p["seconds"], **tally.public()}


# Phase 2: wrong passwords for alice, four at once on each connection.
GUESSES_PER_ROUND = 4


def reply_kind(reply: wire.Message | wire.Reset) -> str:
    """An attacker's reply, named: the ErrorReply code (throttled ones by their reason)."""
    if isinstance(reply, wire.Reset):
        return f"channel reset {reply.code_name}"
    if reply.kind == "LoginOk":
        return "LoginOk (A GUESS SUCCEEDED)"
    if reply.kind != "ErrorReply":
        return str(reply.kind)
    code = str(reply.fields.get("code"))
    if code == "throttled":
        message = str(reply.fields.get("message", ""))
        for key, label in THROTTLE_REASONS:
            if key in message:
                return f"throttled: {label}"
        return f"throttled: {message}"
    return code


THROTTLE_REASONS = (
    ("on this connection", "a login in progress on this connection"),
    ("from this address", "a login in progress from this address"),
    ("for this account", "a login in progress for this account"),
    ("too many failed", "back-off after failures"),
    ("busy", "service busy (password check queue full)"),
)


async def guessing_flood(p: dict[str, Any], conn: Connection) -> dict[str, Any]:
    tally = Tally()

    async def attacker(i: int) -> None:
        guess = 0
        while True:
            tally.counts["connections tried"] += 1
            try:
                peer = await wire.RawPeer.connect(HOST, p["port"], source=address(2, i))
            except OSError as exc:
                tally.outcome("guess", f"connect failed ({errno.errorcode.get(exc.errno or 0)})")
                await trio.sleep(0.05)
                continue
            admitted = False
            try:
                with trio.fail_after(HANDSHAKE_WAIT):
                    await peer.handshake_xx(wire.hello("guesser"))
                    await peer.wait_admitted()
                admitted = True
                tally.counts[HANDSHAKES] += 1
                while True:
                    msgs = []
                    for _ in range(GUESSES_PER_ROUND):
                        guess += 1
                        msgs.append(wire.login_password("alice", f"wrong guess {i}-{guess}"))
                    for reply in await peer.request_many(msgs):
                        tally.replies[reply_kind(reply)] += 1
            except trio.TooSlowError:
                tally.outcome("guess", f"handshake not done in {HANDSHAKE_WAIT:g} s")
            except wire.PeerClosed as exc:
                if admitted:
                    tally.outcome("guess", ended(exc.closed, LOGIN_TIMEOUT))
                else:
                    tally.outcome("guess", f"closed during the handshake ({exc.closed.reason})")
            except wire.WireError:
                tally.outcome("guess", "unreadable")
            finally:
                peer.stream.socket.close()

    def start(nursery: trio.Nursery) -> None:
        for i in range(p["attackers"]):
            nursery.start_soon(attacker, i)

    cpu = await run_attackers(conn, p["seconds"], start)
    return {"attacker_process": cpu, "seconds": p["seconds"], **tally.public()}


# Phase 3: admitted peers (budget PEER: 64 channels, 64 KiB messages, 256 KiB held).
PEER_SHAPES: dict[str, Callable[[wire.RawPeer], Iterable[bytes]]] = {
    "wide": lambda p: fragments([p.next_channel() for _ in range(128)], 63 * 1024, 16_000),
    "long": lambda p: fragments([p.next_channel()], 96_000, 16_000),
    "many": lambda p: fragments([p.next_channel() for _ in range(128)], 1_000, 1_000),
}
PER_ADDRESS = 4  # PEER_GATE lets 4 strangers per address handshake at once (8 connections)


async def peer_flood(p: dict[str, Any], conn: Connection) -> dict[str, Any]:
    tally = Tally()
    shapes = p.get("shapes", list(PEER_SHAPES))
    identities: list[tuple[bytes, bytes]] = p["identities"]

    async def attacker(j: int) -> None:
        key, cert = identities[j]
        source = address(3, p["first_address"] + j // PER_ADDRESS)
        shape = shapes[j % len(shapes)]
        while True:
            await flooding_connection(
                p["port"],
                source,
                shape,
                PEER_SHAPES[shape],
                tally,
                hello=wire.hello("x", certificate=cert),
                static=key,
            )

    def start(nursery: trio.Nursery) -> None:
        for j in range(p["connections"]):
            nursery.start_soon(attacker, j)

    cpu = await run_attackers(conn, p["seconds"], start)
    return {"attacker_process": cpu, "seconds": p["seconds"], **tally.public()}


ATTACKS = {"pre_login": pre_login_flood, "guessing": guessing_flood, "peers": peer_flood}


# --- legitimate clients (this process) ---------------------------------------------------------


@dataclass(frozen=True)
class Try:
    """One legitimate login: connect to reply, and its parts (TCP connect, the handshake up
    to the service's first PING, the Login request)."""

    kind: str
    ok: bool
    ms: float
    parts: tuple[float, ...] = ()
    at: float = 0.0  # when it began (time.monotonic)
    why: str = ""
    fields: dict[str, Any] = field(default_factory=dict, compare=False)


PARTS = ("connect", "handshake", "login")


async def login_once(
    port: int, source: str, kind: str, msg: bytes, *, static: bytes | None = None
) -> Try:
    """A new connection from ``source``, the handshake, one Login."""
    at = time.monotonic()
    marks = [trio.current_time()]
    why = ""
    try:
        with trio.fail_after(LOGIN_WAIT):
            async with await wire.RawPeer.connect(HOST, port, source=source) as peer:
                marks.append(trio.current_time())
                await peer.handshake_xx(wire.hello("bench-speaker"), static=static)
                await peer.wait_admitted()
                marks.append(trio.current_time())
                name, fields = await peer.request(msg)
                marks.append(trio.current_time())
    except trio.TooSlowError:
        why = f"not done within {LOGIN_WAIT:g} s (stuck in the {PARTS[len(marks) - 1]})"
    except wire.ChannelRefused as exc:
        why = f"channel reset {exc.reset.code_name}"
    except wire.PeerClosed as exc:
        goaway = exc.closed.goaway
        why = f"closed ({exc.closed.reason})" + (f", GOAWAY {goaway.code_name}" if goaway else "")
        why += f" after the {PARTS[len(marks) - 1]} began"
    except wire.WireError as exc:
        why = f"unreadable: {exc}"
    except OSError as exc:
        why = f"connect failed: {exc.strerror}"
    ms = (trio.current_time() - marks[0]) * 1000
    parts = tuple((b - a) * 1000 for a, b in itertools.pairwise(marks))
    if why:
        return Try(kind, False, ms, parts, at, why)
    if name == "LoginOk":
        return Try(kind, True, ms, parts, at, "", fields)
    reason = reply_kind(wire.Message(0, name, fields, True))
    return Try(kind, False, ms, parts, at, reason)


async def login_series(
    port: int,
    interval: float,
    next_login: Callable[[int], tuple[str, str, bytes]],
    out: list[Try],
    on_ok: Callable[[Try], None] | None = None,
) -> None:
    """A login every ``interval`` seconds (the next one as soon as the last ended, if
    later); ``next_login(i)`` says which: (kind, source address, Login message)."""
    i = 0
    while True:
        t0 = trio.current_time()
        kind, source, msg = next_login(i)
        result = await login_once(port, source, kind, msg)
        out.append(result)
        if result.ok and on_ok is not None:
            on_ok(result)
        i += 1
        await trio.sleep_until(t0 + interval)


async def for_a_while(seconds: float, start: Callable[[trio.Nursery], None]) -> None:
    """Run ``start``'s tasks for ``seconds`` (the legitimate clients before an attack)."""
    async with trio.open_nursery() as nursery:
        start(nursery)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


def tries_summary(tries: list[Try]) -> dict[str, Any]:
    """Tries, successes, failures by reason, latency of the successes (and of their parts)."""
    ok = [t for t in tries if t.ok]
    return {
        "tries": len(tries),
        "ok": len(ok),
        "failed": dict(Counter(t.why for t in tries if not t.ok).most_common()),
        "latency_ok": latency([t.ms for t in ok]),
        "parts_ok": {part: latency([t.parts[i] for t in ok]) for i, part in enumerate(PARTS)},
        "latency_failed": latency([t.ms for t in tries if not t.ok]),
        # Each try: seconds from the first, whether it succeeded, ms, why not.
        "each": [[round(t.at - tries[0].at, 2), t.ok, round(t.ms, 1), t.why] for t in tries],
    }


# --- the service ---------------------------------------------------------------------------------


def start_service(procs: Procs, data: Path) -> tuple[Proc, int]:
    port = free_port()
    cmd = [BIN / "cadenza", "serve", "--data", data, "--listen", f"{HOST}:{port}"]
    service = procs.start("cadenza serve", [*cmd, "--no-http", "--no-mdns"])
    service.wait_for(r"listening on")
    return service, port


def add_user(data: Path, tmp: Path, name: str, password: str) -> None:
    pw = tmp / f"password-{name}"
    pw.write_text(password + "\n")
    quiet([BIN / "cadenza", "user", "add", name, "--data", data, "--password-file", pw])


@dataclass
class Window:
    """The times of an attack, by this process's monotonic clock."""

    start: float = 0.0
    stop: float = 0.0
    after: float = 0.0
    cpu: dict[str, Any] = field(default_factory=dict)


async def run_under_attack(
    attack: Attack, target_pid: int, after: float, beside: Callable[[trio.Nursery], None]
) -> tuple[Window, dict[str, Any]]:
    """Wait for the attackers to start; run ``beside`` (legitimate clients, probes) until
    they stop; then wait ``after`` seconds. The window (with the target's CPU over the
    attack) and the attack's figures."""
    w = Window()
    await trio.to_thread.run_sync(attack.wait, "started", 120, abandon_on_cancel=True)
    w.start = time.monotonic()
    cpu = CpuWindow(target_pid)
    async with trio.open_nursery() as nursery:
        beside(nursery)
        await trio.to_thread.run_sync(attack.wait, "stopped", abandon_on_cancel=True)
        nursery.cancel_scope.cancel()
    w.cpu = cpu.stop()
    w.stop = time.monotonic()
    figures = await trio.to_thread.run_sync(attack.wait, "done", 120, abandon_on_cancel=True)
    await trio.sleep(max(0.0, w.stop + after - time.monotonic()))
    w.after = time.monotonic()
    return w, figures


def service_figures(service: Proc, watch: Watch, w: Window) -> dict[str, Any]:
    return {
        "rss": watch.summary(w.start, w.stop, w.after),
        "cpu": w.cpu,
        "output_during_attack": service.output(w.start, w.stop),
        "output_after": service.output(w.stop, w.after),
    }


# --- phase 1: a pre-login fragment flood -------------------------------------------------------


def legitimate_client(
    sources: tuple[str, ...],
) -> tuple[Callable[[int], tuple[str, str, bytes]], Callable[[Try], None]]:
    """A speaker that logs in with alice's password, then again and again with the device
    credential that login returned; from ``sources`` in turn."""
    credential: list[bytes] = []

    def next_login(i: int) -> tuple[str, str, bytes]:
        source = sources[i % len(sources)]
        if credential:
            return "device credential", source, wire.login_device(credential[0])
        return "password", source, wire.login_password("alice", PASSWORD, "bench speaker")

    def keep(t: Try) -> None:
        if not credential and t.fields.get("device_credential"):
            credential.append(t.fields["device_credential"])

    return next_login, keep


def by_kind(tries: list[Try]) -> dict[str, Any]:
    kinds = dict.fromkeys(t.kind for t in tries)
    return {kind: tries_summary([t for t in tries if t.kind == kind]) for kind in kinds}


def phase_pre_login(args: argparse.Namespace, tmp: Path, procs: Procs) -> dict[str, Any]:
    data = tmp / "service-1"
    add_user(data, tmp, "alice", PASSWORD)
    service, port = start_service(procs, data)
    watch = Watch(service.pid)
    try:
        time.sleep(1.0)
        log(f"phase 1: the legitimate client alone, {args.calm:g} s")
        calm: list[Try] = []
        cpu = CpuWindow(service.pid)
        next_login, keep = legitimate_client(LEGIT_ADDRESSES)
        trio.run(
            for_a_while,
            args.calm,
            lambda n: n.start_soon(login_series, port, 0.1, next_login, calm, keep),
        )
        calm_cpu = cpu.stop()
        waves = []
        for wave in range(1, WAVES + 1):
            log(
                f"phase 1: {args.attackers} attackers, pre-login fragment flood, wave {wave},"
                f" {args.seconds:g} s"
            )
            tries: list[Try] = []
            next_login, keep = legitimate_client(LEGIT_ADDRESSES)
            params = {"port": port, "attackers": args.attackers, "seconds": args.seconds}
            attack = procs.attack("pre_login", params)
            w, figures = trio.run(
                run_under_attack,
                attack,
                service.pid,
                args.after,
                lambda n, tries=tries, next_login=next_login, keep=keep: n.start_soon(
                    login_series, port, 0.1, next_login, tries, keep
                ),
            )
            procs.stop(attack)
            waves.append(
                {
                    "legitimate": by_kind(tries),
                    "service": service_figures(service, watch, w),
                    "attack": figures,
                }
            )
        return {
            "attackers": args.attackers,
            "seconds": args.seconds,
            "legitimate_alone": by_kind(calm),
            "service_cpu_alone": calm_cpu,
            "waves": waves,
        }
    finally:
        watch.close()
        procs.stop(service)


# --- phase 2: a login guessing flood -----------------------------------------------------------


OWNER_HOME = "owner, password, from home (known to the service)"
OWNER_AWAY = "owner, password, from an address never used before"
NAT_SPEAKER = "speaker, device credential, behind attacker 0's NAT"


def phase_guessing(args: argparse.Namespace, tmp: Path, procs: Procs) -> dict[str, Any]:
    data = tmp / "service-2"
    add_user(data, tmp, "alice", PASSWORD)
    service, port = start_service(procs, data)
    watch = Watch(service.pid)
    nat_address = address(2, 0)
    try:
        # Before the attack: the owner logs in at home (from then on the service knows the
        # address), and a speaker behind what will be attacker 0's NAT gets its credential.
        async def provision() -> tuple[Try, Try]:
            right = wire.login_password("alice", PASSWORD, "phone")
            home = await login_once(port, LEGIT_ADDRESS, "home", right)
            right = wire.login_password("alice", PASSWORD, "kitchen")
            nat = await login_once(port, nat_address, "nat", right)
            return home, nat

        home, nat = trio.run(provision)
        if not (home.ok and nat.ok):
            raise RuntimeError(f"provisioning logins failed: {home}, {nat}")
        device = wire.login_device(nat.fields["device_credential"])
        right = wire.login_password("alice", PASSWORD, "phone")

        def owner_login(i: int) -> tuple[str, str, bytes]:
            # One person: one login at a time, every fourth from somewhere new.
            if i % 4 == 3:
                return OWNER_AWAY, address(5, i), right
            return OWNER_HOME, LEGIT_ADDRESS, right

        def speaker_login(i: int) -> tuple[str, str, bytes]:
            return NAT_SPEAKER, nat_address, device

        def clients(out: list[Try]) -> Callable[[trio.Nursery], None]:
            def start(nursery: trio.Nursery) -> None:
                nursery.start_soon(login_series, port, 0.5, owner_login, out)
                nursery.start_soon(login_series, port, 0.5, speaker_login, out)

            return start

        time.sleep(1.0)
        log(f"phase 2: the owner and its speaker alone, {args.calm:g} s")
        calm: list[Try] = []
        cpu = CpuWindow(service.pid)
        trio.run(for_a_while, args.calm, clients(calm))
        calm_cpu = cpu.stop()
        log(f"phase 2: {args.attackers} attackers guessing alice's password, {args.seconds:g} s")
        tries: list[Try] = []
        params = {"port": port, "attackers": args.attackers, "seconds": args.seconds}
        attack = procs.attack("guessing", params)
        w, figures = trio.run(run_under_attack, attack, service.pid, args.after, clients(tries))
        procs.stop(attack)
        replies = figures["replies"]
        return {
            "attackers": args.attackers,
            "seconds": args.seconds,
            "legitimate_alone": by_kind(calm),
            "legitimate": by_kind(tries),
            "password_checks": {
                "attackers_auth_failed": replies.get("auth-failed", 0),
                "owner_succeeded": sum(t.ok for t in tries if t.kind != NAT_SPEAKER),
                "attacker_logins_succeeded": replies.get("LoginOk (A GUESS SUCCEEDED)", 0),
            },
            "service": service_figures(service, watch, w) | {"cpu_alone": calm_cpu},
            "attack": figures,
        }
    finally:
        watch.close()
        procs.stop(service)


# --- phase 3: hostile peers at a playing speaker -----------------------------------------------


TONE_TITLE = "Long Tone"


def make_tone(folder: Path, seconds: float) -> None:
    """A tagged FLAC of a quiet 440 Hz tone (what `cadenza ingest` takes)."""
    import mutagen.flac
    import numpy as np
    import soundfile

    folder.mkdir(parents=True)
    rate = 44100
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    path = folder / "01 Long Tone.flac"
    soundfile.write(path, np.stack([wave, wave], 1), rate)
    tags = mutagen.flac.FLAC(path)
    tags["title"], tags["artist"], tags["album"] = TONE_TITLE, "Bench Band", "Bench Album"
    tags["tracknumber"] = "1"
    tags.save()


async def get_certificates(port: int, n: int) -> list[tuple[bytes, bytes]]:
    """Mallory logs in ``n`` times, each with a new static key, from addresses of its own:
    (private key, membership certificate for it) each. One at a time: the service checks
    one password per account at once."""
    out = []
    for i in range(n):
        key = os.urandom(32)
        msg = wire.login_password("mallory", MALLORY_PASSWORD, f"mallory-{i}")
        t = await login_once(port, address(4, i), "mallory", msg, static=key)
        if not t.ok:
            raise RuntimeError(f"mallory's login {i} failed: {t.why}")
        out.append((key, t.fields["certificate"]))
    return out


@dataclass(frozen=True)
class SpeakerSample:
    t: float
    status: str
    position_ms: int
    underruns: int
    neighbours: int


async def poll_speaker(http: httpx.Client, out: list[SpeakerSample]) -> None:
    while True:
        out.append(await trio.to_thread.run_sync(speaker_sample, http))
        await trio.sleep(1.0)


def speaker_sample(http: httpx.Client) -> SpeakerSample:
    t = time.monotonic()
    st = http.get("/api/v1/state").json()
    p2p = st.get("p2p") or {}
    return SpeakerSample(
        t, st["status"], st["position_ms"], st["underruns"], len(p2p.get("neighbours", []))
    )


@dataclass
class SpeakerRig:
    """``cadenza serve`` with a user and a tone, a ``cadenzad`` playing it to ALSA ``null``
    with its p2p port fixed, and mallory's identities (Noise key, certificate)."""

    service: Proc
    speaker: Proc
    http: httpx.Client
    p2p_port: int
    identities: list[tuple[bytes, bytes]]
    certificates_s: float


def start_speaker_rig(tmp: Path, procs: Procs, track_s: float, certificates: int) -> SpeakerRig:
    from cadenza.service.catalog import Track
    from cadenza.service.serve import Roles

    data = tmp / "service-3"
    log(f"phase 3: ingesting a {track_s:.0f} s tone ...")
    make_tone(tmp / "music", track_s)
    add_user(data, tmp, "owner", PASSWORD)
    add_user(data, tmp, "mallory", MALLORY_PASSWORD)
    quiet([BIN / "cadenza", "ingest", "--data", data, tmp / "music"])
    roles = Roles(data)
    try:
        found, _ = roles.catalog.search("track", TONE_TITLE)
        [track] = [t for t in found if isinstance(t, Track)]
        uri = track.uri
    finally:
        roles.close()
    service, port = start_service(procs, data)
    log(f"phase 3: mallory logs in {certificates} times for certificates ...")
    t0 = time.monotonic()
    identities = trio.run(get_certificates, port, certificates)
    certificates_s = time.monotonic() - t0

    alsa = AlsaSandbox(tmp / "alsa")
    p2p_port = fixed_port()
    config = tmp / "cadenzad.toml"
    config.write_text(
        f"""
[speaker]
name = "Bench"
state_dir = "{tmp / "speaker-state"}"
cache_dir = "{tmp / "speaker-cache"}"
[service]
address = "{HOST}:{port}"
mdns = false
username = "owner"
password_file = "{tmp / "password-owner"}"
[audio]
device = "null"
[control]
listen = "{HOST}:0"
advertise = false
[p2p]
lan_discovery = false
port = {p2p_port}
"""
    )
    speaker = procs.start("cadenzad", [BIN / "cadenzad", "--config", config], env=alsa.env())
    url = speaker.wait_for(r"control API on (http://\S+)").group(1).rstrip("/")
    listening = int(speaker.wait_for(r"accepting peers on port (\d+)").group(1))
    if listening != p2p_port:
        raise RuntimeError(f"cadenzad took p2p port {listening}, not {p2p_port}")
    http = httpx.Client(base_url=url, timeout=30)
    wait_until(lambda: http.get("/api/v1/state").json()["session"]["state"] == "online", 60)
    http.post("/api/v1/play", json={"uri": uri}).raise_for_status()
    wait_until(lambda: http.get("/api/v1/state").json()["position_ms"] > 0, 30)
    return SpeakerRig(service, speaker, http, p2p_port, identities, certificates_s)


def phase_peers(args: argparse.Namespace, tmp: Path, procs: Procs) -> dict[str, Any]:
    steps: list[int] = args.steps
    track_s = 10 + len(steps) * (args.seconds + SETTLE_S + 10) + 30
    rig = start_speaker_rig(tmp, procs, track_s, max(steps))
    speaker, http = rig.speaker, rig.http
    watch = Watch(speaker.pid)
    try:
        time.sleep(1.0)
        cpu = CpuWindow(speaker.pid)
        time.sleep(args.calm)
        calm_cpu = cpu.stop()
        results = []
        first_address = 0
        for n in steps:
            log(f"phase 3: {n} hostile peer connections, {args.seconds:g} s")
            samples: list[SpeakerSample] = [speaker_sample(http)]
            params = {
                "port": rig.p2p_port,
                "connections": n,
                "seconds": args.seconds,
                "identities": rig.identities[:n],
                "first_address": first_address,
            }
            first_address += -(-n // PER_ADDRESS)
            attack = procs.attack("peers", params)

            def beside(nursery: trio.Nursery, samples: list[SpeakerSample] = samples) -> None:
                nursery.start_soon(poll_speaker, http, samples)

            w, figures = trio.run(run_under_attack, attack, speaker.pid, SETTLE_S, beside)
            procs.stop(attack)
            end = speaker_sample(http)
            results.append(step_figures(n, w, figures, samples, end, watch, speaker))
        stats = http.get("/api/v1/stats").json()
        return {
            "steps": results,
            "cpu_playing_alone": calm_cpu,
            "track_s": track_s,
            "certificates": {"n": len(rig.identities), "seconds": round(rig.certificates_s, 1)},
            "bytes_by_source": stats["bytes_by_source"],
            "underruns_total": stats["underruns"],
        }
    finally:
        http.close()
        watch.close()
        procs.stop(speaker)
        procs.stop(rig.service)


def step_figures(
    n: int,
    w: Window,
    figures: dict[str, Any],
    samples: list[SpeakerSample],
    end: SpeakerSample,
    watch: Watch,
    speaker: Proc,
) -> dict[str, Any]:
    first, during = samples[0], [s for s in samples if w.start <= s.t <= w.stop]
    last = during[-1] if during else first
    wall = last.t - first.t
    return {
        "connections": n,
        "addresses": -(-n // PER_ADDRESS),
        "rss": watch.summary(w.start, w.stop, w.after),
        "cpu": w.cpu,
        "playback": {
            "statuses": sorted({s.status for s in [*samples, end]}),
            "position_advance_s": round((last.position_ms - first.position_ms) / 1000, 1),
            "wall_s": round(wall, 1),
            "underruns_during": last.underruns - first.underruns,
            "underruns_after_rest": end.underruns - first.underruns,
        },
        "neighbours_max": max((s.neighbours for s in during), default=0),
        "output_during_attack": speaker.output(w.start, w.stop),
        "attack": figures,
    }


def wait_until(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"condition not met within {timeout} s")
        time.sleep(0.1)


# --- the run -----------------------------------------------------------------------------------


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, done: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    fds = raise_fd_limit()
    result: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "cpu": _cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cadenza": cadenza.__version__,
            "commit": _commit(),
            "fd_limit": fds,
        },
        "args": {
            "attackers": args.attackers,
            "seconds": args.seconds,
            "after": args.after,
            "calm": args.calm,
            "steps": args.steps,
        },
    }
    procs = Procs()
    phases = {1: ("pre_login", phase_pre_login), 2: ("guessing", phase_guessing),
              3: ("peers", phase_peers)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-hostile-") as tmp_name:
        try:
            for n in args.phases:
                name, phase = phases[n]
                result[name] = phase(args, Path(tmp_name), procs)
                done(name, result)
        finally:
            procs.stop_all()
    return result


def _commit() -> str:
    """The checkout's commit, and whether its tracked files differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], capture_output=True).returncode
    return head.stdout.strip() + (" (modified)" if dirty else "") if head.returncode == 0 else "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


# --- report ------------------------------------------------------------------------------------


def _lat(lat: dict[str, Any]) -> str:
    if not lat.get("n"):
        return "-"
    return f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms"


def _tries(label: str, s: dict[str, Any]) -> None:
    print(
        f"      {label}: {s['ok']} of {s['tries']} ok; connect to LoginOk {_lat(s['latency_ok'])}"
    )
    if s["ok"]:
        parts = ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in s["parts_ok"].items())
        print(f"        parts, p50/p99 ms: {parts}")
    for why, k in s["failed"].items():
        print(f"        failed {k}x: {why}")


def _legitimate(what: str, tries: dict[str, Any]) -> None:
    print(f"  {what} (each login on a new connection):")
    for kind, s in tries.items():
        _tries(kind, s)


def _service(s: dict[str, Any]) -> None:
    rss, cpu = s["rss"], s["cpu"]
    print(
        f"  service RSS: {rss['baseline_mb']} MiB before, peak {rss['peak_mb']} MiB,"
        f" {rss['after_mb']} MiB {rss['after_s']:g} s after the attackers left (VmHWM"
        f" {rss['vm_hwm_mb']} MiB; threads at most {rss['threads_max']})"
    )
    print(f"    the peak of each second, MiB: {' '.join(map(str, rss['per_second_mb']))}")
    print(f"  service CPU: {cpu['cpu_pct']}% of one core over the attack ({cpu['wall_s']} s)")
    _output("service", s["output_during_attack"], "during the attack")
    _output("service", s["output_after"], f"in the {rss['after_s']:g} s after")


def _output(who: str, out: dict[str, Any], when: str) -> None:
    held = out["suppressed_reported"]
    print(
        f"  {who} output {when}: {out['lines']} lines"
        + (f" (and by its log budget's count, {held} similar ones held back)" if held else "")
    )
    for kind, k in out["kinds"].items():
        print(f"      {k:>5} x {kind}")


def _attack(a: dict[str, Any]) -> None:
    c = a["counts"]
    cpu = a["attacker_process"]
    tried = c.get("connections tried", 0)
    print(
        f"  attackers: {tried} connections tried ({tried / a['seconds']:.0f}/s),"
        f" {c.get(HANDSHAKES, 0)} handshakes done (the responder's first PING),"
        f" {a['mb_sent']} MiB sent; their process used {cpu['cpu_pct']}% of one core"
    )
    if a["outcomes"]:
        print("    how their connections ended:")
    for shape, outcomes in a["outcomes"].items():
        print(f"      {shape}:")
        for what, k in outcomes.items():
            print(f"        {k:>7} {what}")
    if a["resets"]:
        print(f"    RESETs received: {a['resets']}")
    if a["replies"]:
        print("    replies to their Logins:")
        for what, k in a["replies"].items():
            print(f"      {k:>7} {what}")


def report_machine(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']};")
    print(f"cadenza {m['cadenza']} at {m['commit']}; RLIMIT_NOFILE {m['fd_limit']}", flush=True)


def report_pre_login(p: dict[str, Any]) -> None:
    print()
    print(
        f"1. cadenza serve, pre-login fragment flood: {p['attackers']} attackers from as many"
        f" addresses, {p['seconds']:g} s, {len(p['waves'])} waves"
    )
    what = "legitimate client, a login every 100 ms from 127.0.0.2 and .3 in turn"
    _legitimate(what + ", alone", p["legitimate_alone"])
    print(f"  service CPU then: {p['service_cpu_alone']['cpu_pct']}% of one core")
    for i, wave in enumerate(p["waves"], 1):
        print(f" wave {i}:")
        _legitimate(what + ", under attack", wave["legitimate"])
        _service(wave["service"])
        _attack(wave["attack"])


def report_guessing(p: dict[str, Any]) -> None:
    print()
    print(
        f"2. cadenza serve, login guessing flood: {p['attackers']} attackers from as many"
        f" addresses, {GUESSES_PER_ROUND} wrong passwords for alice at once per round,"
        f" {p['seconds']:g} s"
    )
    what = "the owner and a speaker, a login every 0.5 s each"
    _legitimate(what + ", alone", p["legitimate_alone"])
    print(f"  service CPU then: {p['service']['cpu_alone']['cpu_pct']}% of one core")
    _legitimate(what + ", under attack", p["legitimate"])
    pc = p["password_checks"]
    print(
        f"  password checks performed during the attack: {pc['attackers_auth_failed']} for"
        f" attackers (auth-failed), {pc['owner_succeeded']} for the owner (ok); attacker"
        f" logins that succeeded: {pc['attacker_logins_succeeded']}"
    )
    _service(p["service"])
    _attack(p["attack"])


def report_peers(p: dict[str, Any]) -> None:
    certs = p["certificates"]
    print()
    print(
        f"3. cadenzad playing a {p['track_s']:g} s tone to ALSA null, under hostile peers"
        f" ({certs['n']} certificates from as many logins as mallory, {certs['seconds']} s)"
    )
    print(f"  speaker CPU playing, no attack: {p['cpu_playing_alone']['cpu_pct']}% of one core")
    for s in p["steps"]:
        pb, rss, cpu = s["playback"], s["rss"], s["cpu"]
        print(
            f"  {s['connections']} connections from {s['addresses']} addresses, {cpu['wall_s']} s:"
        )
        print(
            f"    speaker RSS: {rss['baseline_mb']} MiB before, peak {rss['peak_mb']} MiB,"
            f" {rss['after_mb']} MiB {rss['after_s']:g} s after; CPU {cpu['cpu_pct']}% of"
            " one core"
        )
        print(
            f"    playback: {', '.join(pb['statuses'])}; position advanced"
            f" {pb['position_advance_s']} s in {pb['wall_s']} s; underruns"
            f" {pb['underruns_during']} during, {pb['underruns_after_rest']} counting the rest"
        )
        print(f"      the peak of each second, MiB: {' '.join(map(str, rss['per_second_mb']))}")
        print(f"    hostile neighbours at once (most seen, 1 s polls): {s['neighbours_max']}")
        _output("speaker", s["output_during_attack"], "during the attack")
        _attack(s["attack"])
    print(f"  underruns in all: {p['underruns_total']}; bytes by source {p['bytes_by_source']}")


REPORTS = {"pre_login": report_pre_login, "guessing": report_guessing, "peers": report_peers}


def _interrupt(signum: int, frame: object) -> None:
    # As Ctrl-C: trio's handler (inside trio.run) or Python's raises KeyboardInterrupt at a
    # point where it is safe to unwind.
    signal.raise_signal(signal.SIGINT)


def parse_steps(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts and durations (a trial)")
    p.add_argument("--attackers", type=int, help="attacker connections, phases 1-2 (1000)")
    p.add_argument("--seconds", type=float, help="each attack's duration (30)")
    p.add_argument("--after", type=float, help="RSS sampled this long after an attack (10)")
    p.add_argument("--calm", type=float, help="legitimate clients alone before an attack (5)")
    p.add_argument("--steps", type=parse_steps, help="hostile peer connections (2,50,200)")
    p.add_argument("--phases", type=parse_steps, default=[1, 2, 3], help="which (1,2,3)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    defaults = (
        {"attackers": 150, "seconds": 8.0, "after": 4.0, "calm": 3.0, "steps": [2, 20, 60]}
        if args.quick
        else {"attackers": 1000, "seconds": 30.0, "after": 10.0, "calm": 5.0, "steps": [2, 50, 200]}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # SIGTERM unwinds like Ctrl-C: every process started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)

    def done(name: str, r: dict[str, Any]) -> None:
        if not args.json:
            if len(r) == 3:  # machine, args and the first phase
                report_machine(r)
            REPORTS[name](r[name])
            sys.stdout.flush()

    try:
        r = run(args, done)
    except* KeyboardInterrupt:  # trio's nurseries group it
        log("interrupted: the processes it started are stopped")
        sys.exit(130)
    if args.json:
        print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
