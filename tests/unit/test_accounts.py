"""Accounts on a real SQLite file, and the login throttle policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.service import accounts as acc
from cadenza.service.accounts import AccountError, Accounts, AuthFailed, LoginThrottle, Revoked
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


def test_throttle_backs_off_exponentially_and_forgets() -> None:
    t = LoginThrottle()
    keys = ["user:alice", "addr:10.0.0.1"]
    now = 1000.0
    for _ in range(acc.FREE_FAILURES):
        assert t.retry_after(keys, now) == 0
        t.failed(keys, now)
    assert t.retry_after(keys, now) == 1.0  # 2**0 after the free ones
    t.failed(keys, now)
    assert t.retry_after(keys, now) == 2.0
    for _ in range(20):
        t.failed(keys, now)
    assert t.retry_after(keys, now) == acc.MAX_DELAY
    assert t.retry_after(keys, now + acc.MAX_DELAY) == 0
    # Another address for the same user is throttled by the user key too.
    assert t.retry_after(["user:alice", "addr:10.0.0.2"], now) == acc.MAX_DELAY
    t.succeeded(["user:alice"])
    assert t.retry_after(["user:alice", "addr:10.0.0.2"], now) == 0
    assert t.retry_after(["addr:10.0.0.1"], now + acc.FORGET_AFTER + 1) == 0
