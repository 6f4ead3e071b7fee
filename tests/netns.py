"""Several hosts on one machine: a LAN of network namespaces for network tests.

    from netns import Lan, Netem, requires_netns

    @pytest.fixture
    def lan():  # a sync fixture, also for trio tests: set-up and clean-up block briefly
        with Lan(3) as made:  # or Lan(3, netem=Netem(delay="40ms", loss="0.5%"))
            yield made

    @pytest.mark.root
    @requires_netns  # skips, with the reason, when not root or no `ip`
    async def test_something(lan):
        a, b, c = lan.hosts
        server = a.popen([sys.executable, "-m", "http.server", "8000"])
        b.run([sys.executable, "-c", f"...connect to {a.address}:8000..."])
        process = await trio.lowlevel.open_process(c.argv([...]), stdout=subprocess.PIPE)

A :class:`Lan` is one namespace holding a bridge, and one namespace per host joined to it by a
veth pair. Each host has ``lo`` up, ``eth0`` with ``10.77.<lan>.<n + 1>/24`` and a multicast
route (``224.0.0.0/4 dev eth0``: mDNS needs it), and no route anywhere else, so nothing a test
runs in a host can reach beyond the namespaces made here. Everything is deleted on exit, also
when the test fails, and so is whatever a crashed earlier run left behind.

Processes from ``host.popen`` get SIGTERM, then SIGKILL, when the LAN closes; anything else
still running in its namespaces (``open_process(host.argv(...))``, daemons) is killed.
``pytestmark = NETNS_MARKS`` marks and guards a whole module. Skip through the marker or in a
sync fixture: a ``pytest.skip`` raised inside a trio test loses its reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

PREFIX = "cdz-"
"""Every namespace made here is named ``cdz-<pid>-<lan>-...``; the pid tells stale ones."""

SUBNET = "10.77"
"""Private range used inside the namespaces only: host n of LAN k is 10.77.k.(n + 1)."""

STOP_GRACE = 5.0
"""Seconds a process started with Host.popen gets to exit after SIGTERM before SIGKILL."""

LINK_UP_TIMEOUT = 10.0
"""Seconds to wait for every veth to report carrier before giving up on the LAN."""

_lan_numbers = itertools.count()

CLONE_NEWNET = 0x40000000


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns); CI runs as root"
    if shutil.which("ip") is None:
        return "needs the `ip` command (Debian package iproute2)"
    return None


requires_netns = pytest.mark.skipif(
    unavailable_reason() is not None, reason=unavailable_reason() or ""
)
"""Skip the test, with the reason, where namespaces cannot be made."""

NETNS_MARKS = [pytest.mark.root, requires_netns]
"""For ``pytestmark = NETNS_MARKS`` in a module of namespace tests."""


@dataclass(frozen=True)
class Netem:
    """Link shaping with ``tc qdisc ... netem`` on a host's ``eth0`` (its outgoing traffic).

    Values use tc's syntax: ``Netem(delay="40ms", rate="10mbit", loss="0.5%")``.
    """

    delay: str | None = None
    jitter: str | None = None
    rate: str | None = None
    loss: str | None = None

    def args(self) -> list[str]:
        args = ["netem"]
        if self.delay is not None:
            args += ["delay", self.delay]
            if self.jitter is not None:
                args.append(self.jitter)
        if self.rate is not None:
            args += ["rate", self.rate]
        if self.loss is not None:
            args += ["loss", self.loss]
        return args


@functools.cache
def netem_unavailable_reason() -> str | None:
    """Why ``tc netem`` cannot shape links here (no root, no tc, no sch_netem), or None."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    if shutil.which("tc") is None:
        return "needs the `tc` command (Debian package iproute2)"
    try:
        with Lan(1) as lan:
            lan.hosts[0].shape(Netem(delay="1ms"))
    except NetnsError as e:
        return f"tc netem is not available here ({e})"
    return None


@dataclass
class Host:
    """One host of a :class:`Lan`: a namespace with ``eth0`` on the LAN."""

    namespace: str
    index: int
    address: str
    prefixlen: int = 24
    ifname: str = "eth0"
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host (for ``trio.run_process``, ``open_process``, ...)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run(argv, ...)`` inside this host; raises on failure unless check=False."""
        return subprocess.run(self.argv(argv), check=check, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen(argv, ...)`` inside this host, stopped when the LAN closes."""
        process = subprocess.Popen(self.argv(argv), **kwargs)
        self._processes.append(process)
        return process

    def shape(self, netem: Netem | None) -> None:
        """Shape this host's outgoing traffic (None: back to unshaped)."""
        qdisc = ["tc", "-n", self.namespace, "qdisc"]
        if netem is None:
            _ip([*qdisc, "del", "dev", self.ifname, "root"], check=False)
        else:
            _ip([*qdisc, "replace", "dev", self.ifname, "root", *netem.args()])

    def limit_rate(self, rate: str | None, burst: str = "32kb", latency: str = "200ms") -> None:
        """Cap this host's outgoing bandwidth with ``tc ... tbf`` (netem-free; None: uncapped)."""
        qdisc = ["tc", "-n", self.namespace, "qdisc"]
        if rate is None:
            _ip([*qdisc, "del", "dev", self.ifname, "root"], check=False)
        else:
            _ip(
                [
                    *qdisc,
                    "replace",
                    "dev",
                    self.ifname,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    burst,
                    "latency",
                    latency,
                ]
            )

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on a thread inside this host's network namespace (sockets it opens
        are the host's: ``host.call(httpx.get, "http://10.77.0.2:4080/...")``)."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
                try:
                    if _libc().setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                outcome["value"] = fn(*args)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _stop_processes(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()


class Lan:
    """A bridge namespace and ``hosts`` host namespaces joined to it; a context manager."""

    def __init__(self, hosts: int = 2, *, netem: Netem | None = None) -> None:
        if not 1 <= hosts <= 250:
            raise ValueError("a LAN has 1 to 250 hosts")
        number = next(_lan_numbers)
        self.name = f"{PREFIX}{os.getpid()}-{number}"
        self.bridge_namespace = f"{self.name}-br"
        self.hosts = [
            Host(f"{self.name}-h{n}", n, f"{SUBNET}.{number % 256}.{n + 1}") for n in range(hosts)
        ]
        self._netem = netem
        self._made: list[str] = []

    def __enter__(self) -> Lan:
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        remove_stale_namespaces()
        try:
            self._create()
        except BaseException:
            self._destroy(failing=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._destroy(failing=exc_type is not None)

    def _create(self) -> None:
        br = self.bridge_namespace
        self._add_namespace(br)
        _ip(["ip", "-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        _ip(["ip", "-n", br, "link", "set", "br0", "up"])
        for host in self.hosts:
            ns, port = host.namespace, f"h{host.index}"
            self._add_namespace(ns)
            _ip(["ip", "-n", ns, "link", "add", host.ifname, "type", "veth",
                 "peer", "name", port, "netns", br])  # fmt: skip
            _ip(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            _ip(["ip", "-n", ns, "addr", "add", f"{host.address}/{host.prefixlen}",
                 "dev", host.ifname])  # fmt: skip
            _ip(["ip", "-n", ns, "link", "set", host.ifname, "up"])
            _ip(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", host.ifname])
            if self._netem is not None:
                host.shape(self._netem)
        for host in self.hosts:
            _wait_link_up(host.namespace, host.ifname)

    def limit_download(self, host: Host, rate: str, burst: str = "32kb") -> None:
        """Cap what ``host`` receives: tbf on the bridge's side of its veth (netem-free)."""
        _ip(["tc", "-n", self.bridge_namespace, "qdisc", "replace", "dev", f"h{host.index}",
             "root", "tbf", "rate", rate, "burst", burst, "latency", "200ms"])  # fmt: skip

    def _add_namespace(self, namespace: str) -> None:
        _ip(["ip", "netns", "add", namespace])
        self._made.append(namespace)
        _ip(["ip", "-n", namespace, "link", "set", "lo", "up"])

    def _destroy(self, *, failing: bool) -> None:
        errors: list[str] = []
        for host in self.hosts:
            host._stop_processes()
        for namespace in reversed(self._made):
            error = _delete_namespace(namespace)
            if error:
                errors.append(error)
        self._made.clear()
        if errors and not failing:  # never hide the test's own failure behind this one
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))


def remove_stale_namespaces() -> None:
    """Delete namespaces (and kill what runs in them) left by test runs that have died."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        match = re.match(rf"({re.escape(PREFIX)}(\d+)-\S+)", line)
        if match and not _pid_alive(int(match.group(2))):
            _delete_namespace(match.group(1))


def _delete_namespace(namespace: str) -> str | None:
    # Processes keep a deleted namespace (and its veths) alive: kill what is left in it, by
    # pid. These are only processes that tests started inside namespaces made here.
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    done = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True)
    if done.returncode != 0:
        return f"{namespace}: {done.stderr.strip()}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message has its stderr."""


def _ip(argv: list[str], *, check: bool = True) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _wait_link_up(namespace: str, ifname: str) -> None:
    deadline = time.monotonic() + LINK_UP_TIMEOUT
    while True:
        shown = subprocess.run(
            ["ip", "-n", namespace, "-o", "link", "show", ifname],
            capture_output=True,
            text=True,
            check=True,
        )
        if "state UP" in shown.stdout:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{namespace}/{ifname} has no carrier: {shown.stdout.strip()}")
        time.sleep(0.05)
