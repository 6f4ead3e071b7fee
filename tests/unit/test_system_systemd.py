"""The systemd glue's pure parts: notify messages, watchdog interval, journal detection."""

from __future__ import annotations

import logging
import os

import pytest

from cadenza.system import systemd
from cadenza.system.systemd import Notifier


def test_notifier_is_silent_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier(send=sent.append)
    n.ready("x")
    n.watchdog()
    assert sent == []


def test_messages_and_status_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/nowhere")
    n = Notifier(send=sent.append)
    n.ready("idle")
    n.status("idle")  # unchanged: not sent
    n.status("playing A", force=True)
    n.status("playing B")  # within a second of the last: held back
    n.reloading()
    n.stopping()
    assert sent[0] == "READY=1\nSTATUS=idle"
    assert sent[1] == "STATUS=playing A"
    assert sent[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert sent[3] == "STOPPING=1\nSTATUS=stopping"
    assert len(sent) == 4


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    assert Notifier.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert Notifier.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert Notifier.watchdog_interval() is None


def test_journal_only_when_stderr_is_the_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    try:
        assert systemd.setup_logging() == "journal"
        handler = logging.getLogger().handlers[0]
        assert type(handler).__name__ == "JournalHandler"
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")
        assert systemd.setup_logging() == "plain"
    finally:
        monkeypatch.delenv("JOURNAL_STREAM")
        systemd.setup_logging()
        logging.getLogger().handlers.clear()
