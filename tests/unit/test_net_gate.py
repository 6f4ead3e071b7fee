"""The listener's gate: caps per source address and in total, strangers shed oldest first."""

from __future__ import annotations

import pytest

from cadenza.net._gate import Gate, GateLimits, Refused

LIMITS = GateLimits(
    total=10, per_address=4, unauthenticated=5, unauthenticated_per_address=2, burst=100, rate=1.0
)


def test_strangers_are_capped_per_address_and_admitted_ones_do_not_count() -> None:
    gate = Gate(LIMITS)
    assert gate.arrive("a1", "10.0.0.1", 0.0) is None
    assert gate.arrive("a2", "10.0.0.1", 0.0) is None
    with pytest.raises(Refused, match=r"unauthenticated connections from 10\.0\.0\.1"):
        gate.arrive("a3", "10.0.0.1", 0.0)
    gate.authenticated("a1")
    assert gate.arrive("a3", "10.0.0.1", 0.0) is None
    gate.authenticated("a2")
    gate.authenticated("a3")
    assert gate.arrive("a4", "10.0.0.1", 0.0) is None
    # Four from one address in all, however they stand.
    with pytest.raises(Refused, match=r"4 connections from 10\.0\.0\.1"):
        gate.arrive("a5", "10.0.0.1", 0.0)
    gate.left("a1")
    assert gate.arrive("a5", "10.0.0.1", 0.0) is None
    assert gate.refused == 2


def test_past_the_total_of_strangers_the_oldest_is_shed_for_the_newcomer() -> None:
    gate = Gate(LIMITS)
    for i in range(5):
        assert gate.arrive(f"s{i}", f"10.0.1.{i}", 0.0) is None
    assert gate.arrive("new", "10.0.2.1", 0.0) == "s0"
    assert gate.unauthenticated == 5
    # The shed one is no longer a stranger waiting; it is gone once the listener ends it.
    gate.left("s0")
    assert gate.connections == 5
    # Admitted connections are never shed.
    gate.authenticated("s1")
    assert gate.arrive("newer", "10.0.2.2", 0.0) is None
    assert gate.arrive("newest", "10.0.2.3", 0.0) == "s2"
    assert gate.shed == 2


def test_the_total_is_a_hard_cap() -> None:
    limits = GateLimits(
        total=3, per_address=3, unauthenticated=3, unauthenticated_per_address=3, burst=9, rate=1
    )
    gate = Gate(limits)
    for i in range(3):
        gate.arrive(i, f"10.0.0.{i}", 0.0)
        gate.authenticated(i)
    with pytest.raises(Refused, match="3 connections already"):
        gate.arrive("x", "10.0.0.9", 0.0)
    gate.left(0)
    gate.left(0)  # twice is harmless
    assert gate.arrive("x", "10.0.0.9", 0.0) is None


def test_an_address_connecting_too_fast_is_refused_until_its_bucket_refills() -> None:
    limits = GateLimits(
        total=100, per_address=100, unauthenticated=100, unauthenticated_per_address=100,
        burst=3, rate=2.0,
    )  # fmt: skip
    gate = Gate(limits)
    for i in range(3):
        gate.arrive(i, "10.0.0.1", 0.0)
        gate.left(i)
    with pytest.raises(Refused, match=r"more than 2 connections a second from 10\.0\.0\.1"):
        gate.arrive("x", "10.0.0.1", 0.1)
    assert gate.arrive("y", "10.0.0.2", 0.1) is None  # another address has its own
    assert gate.arrive("z", "10.0.0.1", 0.6) is None  # half a second: one more
