"""Telling systemd the truth: readiness, status, watchdog, reload and stop; logs to the journal.

Under systemd (``Type=notify``) :class:`Notifier` sends ``READY=1`` once the control API
listens and the audio device is open (never waiting for the internet), ``STATUS=`` lines
saying what the daemon does, ``RELOADING=1`` / ``READY=1`` around a SIGHUP reload,
``STOPPING=1`` on the way out, and ``WATCHDOG=1`` from :func:`watchdog_loop` only while both
the event loop (it runs the loop) and the audio thread (it must answer
:meth:`~cadenza.player.player.Player.alive`) are healthy. Elsewhere every call is a no-op.

:func:`setup_logging` sends records to the journal with structured fields (``TRACK_URI``,
``PEER_ID``, ``SOURCE``… given as ``extra=``) when stdout/stderr are connected to it
(``JOURNAL_STREAM``), plain text otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from cadenza import blocking

from . import logbudget

log = logging.getLogger("cadenza.system")

# The watchdog is pinged twice per WATCHDOG_USEC (systemd's own advice), so one late
# ping does not kill a healthy daemon.
PINGS_PER_PERIOD = 2
# How long the audio thread may take to answer: a period write blocks at most a period
# (~23 ms) and a decoder read polls; anything near a second is a wedged thread.
AUDIO_ANSWER_S = 1.0
# STATUS= is sent at most this often (state changes arrive several times a second).
STATUS_MIN_INTERVAL = 1.0


def _send_datagram(message: str) -> bool:
    """sd_notify without libsystemd (also an abstract socket, '@…')."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(address)
            s.sendall(message.encode())
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False
    return True


def _default_send() -> Callable[[str], Any]:
    try:
        import systemd.daemon  # systemd-python: sd_notify from libsystemd
    except ImportError:
        return _send_datagram
    notify: Callable[[str], Any] = systemd.daemon.notify
    return notify


class Notifier:
    def __init__(self, send: Callable[[str], Any] | None = None) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._send = send or _default_send()
        self._last_status = ""
        self._status_at = 0.0

    def notify(self, message: str) -> None:
        if self.enabled:
            self._send(message)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        if status:
            self._last_status = status

    def status(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if text == self._last_status or (not force and now - self._status_at < STATUS_MIN_INTERVAL):
            return
        self._last_status, self._status_at = text, now
        self.notify(f"STATUS={text}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration")

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), or None without a watchdog."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
            return None
        try:
            return max(0.01, int(usec) / 1e6 / PINGS_PER_PERIOD)
        except ValueError:
            return None


async def watchdog_loop(
    notifier: Notifier,
    audio_alive: Callable[[float], bool],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping the watchdog while the loop runs and the audio thread answers."""
    interval = notifier.watchdog_interval()
    task_status.started()
    if interval is None or not notifier.enabled:
        return
    wedged = False
    while True:
        alive = await blocking.run_sync(audio_alive, min(AUDIO_ANSWER_S, interval), waits=True)
        if alive:
            notifier.watchdog()
            if wedged:
                log.warning("the audio thread answers again: watchdog pings resume")
            wedged = False
        elif not wedged:
            wedged = True
            log.error("the audio thread does not answer: holding back the watchdog")
        await trio.sleep(interval)


class _PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")


def setup_logging(level: int = logging.INFO, *, identifier: str = "cadenzad") -> str:
    """Journal (structured) under systemd, plain text otherwise; returns which.

    Either way the handler carries a :class:`~cadenza.system.logbudget.LogBudget`: a
    stranger who makes us log (refused connections, bad requests) cannot flood the journal.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler | None = None
    kind = "plain"
    if _journal_connected():
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass
        else:
            handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
            kind = "journal"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter())
    logbudget.install(handler)
    root.addHandler(handler)
    return kind


def _journal_connected() -> bool:
    """JOURNAL_STREAM names the device:inode of the journal's stream: true if it is ours."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    for fd in (2, 1):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_dev == int(dev) and st.st_ino == int(ino):
            return True
    return False
