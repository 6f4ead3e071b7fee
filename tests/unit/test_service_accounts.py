"""Accounts on a real SQLite file, and the login throttle policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.service import accounts as acc
from cadenza.service.accounts import (
    AccountError,
    Accounts,
    Attempt,
    AuthFailed,
    LoginThrottle,
    Revoked,
)
from cadenza.service.db import Database


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    return Accounts(Database(tmp_path / "service.db"))


def test_passwords(accounts: Accounts) -> None:
    accounts.add_user("alice", "correct horse")
    accounts.check_password("alice", "correct horse")
    with pytest.raises(AuthFailed):
        accounts.check_password("alice", "wrong horse!")
    with pytest.raises(AuthFailed):
        accounts.check_password("nobody", "correct horse")
    accounts.set_password("alice", "battery staple")
    with pytest.raises(AuthFailed):
        accounts.check_password("alice", "correct horse")
    accounts.check_password("alice", "battery staple")
    # The hash is salted scrypt, not the password.
    row = accounts.db.call(lambda c: c.execute("SELECT * FROM users").fetchone())
    assert b"battery" not in bytes(row["hash"]) and row["n"] == acc.SCRYPT_N


def test_bad_input_says_what_is_wrong(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="too short"):
        accounts.add_user("bob", "short")
    with pytest.raises(AccountError, match="not valid"):
        accounts.add_user("Bob Smith", "long enough")
    accounts.add_user("bob", "long enough")
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_user("bob", "long enough")
    with pytest.raises(AccountError, match="no user"):
        accounts.set_password("carol", "long enough")


def test_device_credentials(accounts: Accounts) -> None:
    accounts.add_user("alice", "correct horse")
    device, credential = accounts.add_device("alice", "kitchen")
    assert len(credential) == acc.CREDENTIAL_BYTES
    assert accounts.check_device(credential).id == device.id
    with pytest.raises(AuthFailed):
        accounts.check_device(bytes(32))
    accounts.revoke_device(device.id)
    with pytest.raises(Revoked):
        accounts.check_device(credential)
    assert [d.revoked is not None for d in accounts.devices("alice")] == [True]
    # Stored hashed only.
    row = accounts.db.call(lambda c: c.execute("SELECT * FROM devices").fetchone())
    assert credential not in bytes(row["credential_hash"])


def test_deleting_a_user_removes_their_devices(accounts: Accounts) -> None:
    accounts.add_user("alice", "correct horse")
    _, credential = accounts.add_device("alice", "kitchen")
    accounts.delete_user("alice")
    with pytest.raises(AuthFailed):
        accounts.check_device(credential)
    assert accounts.users() == []


def _fail(t: LoginThrottle, attempt: Attempt, now: float) -> None:
    assert t.begin(attempt, now) is None
    t.end(attempt, now, ok=False)


def test_throttle_backs_off_exponentially_per_address_and_forgets() -> None:
    t = LoginThrottle()
    guess = Attempt("conn-1", "10.0.0.1", "alice")
    now = 1000.0
    for _ in range(acc.FREE_FAILURES):
        _fail(t, guess, now)
    refusal = t.begin(guess, now)
    assert refusal is not None and refusal.retry_after == 1.0  # 2**0 after the free ones
    _fail(t, guess, now + 1.0)
    refusal = t.begin(guess, now + 1.0)
    assert refusal is not None and refusal.retry_after == 2.0
    for i in range(20):
        _fail(t, guess, now + 1000 * (i + 1))
    last = now + 20_000
    refusal = t.begin(guess, last)
    assert refusal is not None and refusal.retry_after == acc.MAX_DELAY
    # The address is throttled for any account (the same stranger guessing another name).
    assert t.begin(Attempt("conn-2", "10.0.0.1", "bob"), last) is not None
    assert t.begin(guess, last + acc.MAX_DELAY) is None
    t.end(guess, last + acc.MAX_DELAY, ok=False)
    assert t.begin(guess, last + acc.MAX_DELAY + acc.FORGET_AFTER + 1) is None


def test_concurrent_logins_on_one_connection_get_one_check_at_a_time() -> None:
    t = LoginThrottle()
    now = 1000.0
    attempts = [Attempt("conn-1", "10.0.0.1", "alice") for _ in range(120)]
    begun = [a for a in attempts if t.begin(a, now) is None]
    assert len(begun) == 1
    # The failure is recorded before the next may begin: after five, none begin at all.
    t.end(begun[0], now, ok=False)
    checked = 1
    for a in attempts[1:]:
        if t.begin(a, now) is None:
            checked += 1
            t.end(a, now, ok=False)
    assert checked == acc.FREE_FAILURES
    # One password login at a time per address and per account, too.
    t2 = LoginThrottle()
    assert t2.begin(Attempt("c1", "10.0.0.1", "alice"), now) is None
    assert t2.begin(Attempt("c2", "10.0.0.1", "bob"), now) is not None
    assert t2.begin(Attempt("c3", "10.0.0.2", "alice"), now) is not None
    assert t2.begin(Attempt("c4", "10.0.0.2", "bob"), now) is None


def test_strangers_failures_never_hold_back_a_device_credential() -> None:
    t = LoginThrottle()
    now = 1000.0
    for i in range(50):
        attempt = Attempt(f"c{i}", "10.0.0.9", f"nobody{i}")
        if t.begin(attempt, now) is None:
            t.end(attempt, now, ok=False)
    assert t.begin(Attempt("c", "10.0.0.9", "alice"), now) is not None  # the address waits
    speaker = Attempt("speaker", "10.0.0.9", None)
    assert t.begin(speaker, now) is None
    t.end(speaker, now, ok=True, user="alice")


def test_known_addresses_are_not_locked_out_by_guessing_elsewhere() -> None:
    t = LoginThrottle()
    now = 1000.0
    home = Attempt("owner", "192.0.2.10", "alice")
    assert t.begin(home, now) is None
    t.end(home, now, ok=True)
    # A campaign from many addresses against alice: each address stays under its own free
    # failures, together they pass the account's.
    for i in range(4 * acc.FREE_ACCOUNT_FAILURES):
        stranger = Attempt(f"s{i}", f"203.0.113.{i % 60}", "alice")
        if t.begin(stranger, now) is None:
            t.end(stranger, now, ok=False)
    assert t.begin(Attempt("x", "203.0.113.200", "alice"), now) is not None
    # The owner's known address is not held back, and a new address of the owner's is held
    # back only briefly.
    assert t.begin(Attempt("owner-2", "192.0.2.10", "alice"), now) is None
    t.end(Attempt("owner-2", "192.0.2.10", "alice"), now, ok=True)
    refusal = t.begin(Attempt("owner-3", "198.51.100.7", "alice"), now)
    assert refusal is not None and refusal.retry_after <= acc.MAX_ACCOUNT_DELAY
    # A device credential's login makes its address known to its account too.
    device = Attempt("speaker", "198.51.100.7", None)
    assert t.begin(device, now) is None
    t.end(device, now, ok=True, user="alice")
    assert t.begin(Attempt("owner-4", "198.51.100.7", "alice"), now) is None


def test_the_owner_mistyping_at_home_still_backs_off() -> None:
    t = LoginThrottle()
    now = 1000.0
    home = Attempt("c", "192.0.2.10", "alice")
    assert t.begin(home, now) is None
    t.end(home, now, ok=True)
    for _ in range(acc.FREE_FAILURES):
        _fail(t, home, now)
    assert t.begin(home, now) is not None
