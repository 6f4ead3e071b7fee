"""The listener's gate: caps per source address and in total, strangers shed oldest first."""

from __future__ import annotations

import pytest

from cadenza.net._gate import PATIENCE, VOUCHED_FOR, Gate, GateLimits, Refused

LIMITS = GateLimits(
    total=10,
    per_address=4,
    unauthenticated=5,
    unauthenticated_per_address=2,
    burst=100,
    rate=1.0,
    strangers_burst=100,
    strangers_rate=1.0,
)


def test_strangers_are_capped_per_address_and_admitted_ones_do_not_count() -> None:
    gate = Gate(LIMITS)
    assert gate.arrive("a1", "10.0.0.1", 0.0) is None
    assert gate.arrive("a2", "10.0.0.1", 0.0) is None
    with pytest.raises(Refused, match=r"unauthenticated connections from 10\.0\.0\.1"):
        gate.arrive("a3", "10.0.0.1", 0.0)
    gate.authenticated("a1", 0.0)
    assert gate.arrive("a3", "10.0.0.1", 0.0) is None
    gate.authenticated("a2", 0.0)
    gate.authenticated("a3", 0.0)
    assert gate.arrive("a4", "10.0.0.1", 0.0) is None
    # Four from one address in all, however they stand.
    with pytest.raises(Refused, match=r"4 connections from 10\.0\.0\.1"):
        gate.arrive("a5", "10.0.0.1", 0.0)
    gate.left("a1")
    assert gate.arrive("a5", "10.0.0.1", 0.0) is None
    assert gate.refused == 2


def test_past_the_total_of_strangers_the_oldest_is_shed_once_it_has_had_its_chance() -> None:
    gate = Gate(LIMITS)
    for i in range(5):
        assert gate.arrive(f"s{i}", f"10.0.1.{i}", 0.0) is None
    # A full house: a stranger from a new address is refused while the oldest is young...
    with pytest.raises(Refused, match="5 connections waiting to authenticate"):
        gate.arrive("early", "10.0.2.1", PATIENCE / 2)
    # ... and sheds the oldest once it has had its chance.
    assert gate.arrive("new", "10.0.2.1", PATIENCE) == "s0"
    assert gate.unauthenticated == 5
    # The shed one is no longer a stranger waiting; it is gone once the listener ends it.
    gate.left("s0")
    assert gate.connections == 5
    # Admitted connections are never shed.
    gate.authenticated("s1", PATIENCE)
    assert gate.arrive("newer", "10.0.2.2", PATIENCE) is None
    assert gate.arrive("newest", "10.0.2.3", 2 * PATIENCE) == "s2"
    assert gate.shed == 2


def test_an_address_that_authenticated_before_gets_in_through_a_flood() -> None:
    gate = Gate(LIMITS)
    gate.arrive("speaker", "192.0.2.7", 0.0)
    gate.authenticated("speaker", 0.0)
    gate.left("speaker")
    for i in range(5):
        gate.arrive(f"flood{i}", f"10.0.3.{i}", 100.0)
    # The flood's connections are young: a stranger is refused, the speaker comes back in.
    with pytest.raises(Refused):
        gate.arrive("stranger", "10.0.4.1", 100.0)
    assert gate.arrive("speaker again", "192.0.2.7", 100.0) == "flood0"
    assert gate.vouched("192.0.2.7", 100.0) and not gate.vouched("10.0.4.1", 100.0)
    assert not gate.vouched("192.0.2.7", VOUCHED_FOR + 1)


def test_the_total_is_a_hard_cap() -> None:
    limits = GateLimits(
        total=3,
        per_address=3,
        unauthenticated=3,
        unauthenticated_per_address=3,
        burst=9,
        rate=1,
        strangers_burst=9,
        strangers_rate=1,
    )
    gate = Gate(limits)
    for i in range(3):
        gate.arrive(i, f"10.0.0.{i}", 0.0)
        gate.authenticated(i, 0.0)
    with pytest.raises(Refused, match="3 connections already"):
        gate.arrive("x", "10.0.0.9", 0.0)
    gate.left(0)
    gate.left(0)  # twice is harmless
    assert gate.arrive("x", "10.0.0.9", 0.0) is None


def test_an_address_connecting_too_fast_is_refused_until_its_bucket_refills() -> None:
    limits = GateLimits(
        total=100, per_address=100, unauthenticated=100, unauthenticated_per_address=100,
        burst=3, rate=2.0, strangers_burst=100, strangers_rate=100.0,
    )  # fmt: skip
    gate = Gate(limits)
    for i in range(3):
        gate.arrive(i, "10.0.0.1", 0.0)
        gate.left(i)
    with pytest.raises(Refused, match=r"more than 2 connections a second from 10\.0\.0\.1"):
        gate.arrive("x", "10.0.0.1", 0.1)
    assert gate.arrive("y", "10.0.0.2", 0.1) is None  # another address has its own
    assert gate.arrive("z", "10.0.0.1", 0.6) is None  # half a second: one more


def test_strangers_all_together_arrive_at_a_bounded_rate_and_known_addresses_do_not_wait() -> None:
    limits = GateLimits(
        total=100, per_address=100, unauthenticated=100, unauthenticated_per_address=100,
        burst=100, rate=100.0, strangers_burst=3, strangers_rate=1.0,
    )  # fmt: skip
    gate = Gate(limits)
    gate.arrive("home", "192.0.2.1", 0.0)
    gate.authenticated("home", 0.0)
    for i in range(2):
        gate.arrive(i, f"10.0.0.{i}", 0.0)
    with pytest.raises(Refused, match="addresses not known here"):
        gate.arrive("x", "10.0.0.9", 0.0)
    # A speaker that authenticated before is not held back by the strangers' flood.
    for i in range(5):
        assert gate.arrive(f"home{i}", "192.0.2.1", 0.0) is None
    assert gate.arrive("y", "10.0.0.9", 1.0) is None  # a second later: one more stranger
