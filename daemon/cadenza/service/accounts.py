"""Accounts: users with scrypt-hashed passwords, and device credentials.

A speaker logs in with its owner's password once; the access point then hands it a
device credential (32 random bytes) that it keeps in its state directory and uses
from then on. Credentials are stored hashed (SHA-256 suffices: they are random, not
chosen by people) and can be revoked one by one. Failed logins are throttled by
:class:`LoginThrottle`, a pure policy keyed by user name and by source address.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from cadenza import links

from .db import Database, transaction

# scrypt cost: 16 MiB and ~50 ms per check on a small server; raises the price of guessing.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
CREDENTIAL_BYTES = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    n INTEGER NOT NULL, r INTEGER NOT NULL, p INTEGER NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    credential_hash BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_seen REAL,
    revoked REAL
);
CREATE INDEX IF NOT EXISTS devices_user ON devices(user);
"""


class AccountError(Exception):
    """Bad input to an account operation; the message names the problem."""


class AuthFailed(Exception):
    """Wrong user name, password or credential (deliberately not saying which)."""


class Revoked(AuthFailed):
    """The device credential was valid once and has been revoked."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    admin: bool
    created: float
    devices: int


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    user: str
    name: str
    created: float
    last_seen: float | None
    revoked: float | None


def check_user_name(name: str) -> str:
    if not USER_RE.match(name):
        raise AccountError(
            f"user name {name!r} is not valid: 1-64 of a-z 0-9 . _ -,"
            " starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password too long: at most {MAX_PASSWORD} characters")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def _credential_hash(credential: bytes) -> bytes:
    return hashlib.sha256(b"cadenza/device-credential\x00" + credential).digest()


# A constant-time dummy check so that unknown users cost as much as known ones.
_DUMMY_SALT = b"\x00" * SALT_BYTES


class Accounts:
    """Users and devices. Methods are blocking; async callers use ``db.run``-style threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.apply_schema(SCHEMA)

    # --- users -----------------------------------------------------------------------------

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        check_user_name(name)
        check_password(password)
        salt = secrets.token_bytes(SALT_BYTES)
        digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users (name, salt, hash, n, r, p, admin, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, salt, digest, SCRYPT_N, SCRYPT_R, SCRYPT_P, int(admin), time.time()),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"user {name!r} already exists") from None

        self.db.call(insert)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        salt = secrets.token_bytes(SALT_BYTES)
        digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE users SET salt = ?, hash = ?, n = ?, r = ?, p = ? WHERE name = ?",
                (salt, digest, SCRYPT_N, SCRYPT_R, SCRYPT_P, name),
            )
            if cur.rowcount == 0:
                raise AccountError(f"no user {name!r}")

        self.db.call(update)

    def delete_user(self, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"no user {name!r}")

        self.db.call(delete)

    def users(self) -> list[User]:
        def query(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute(
                "SELECT u.name, u.admin, u.created, COUNT(d.id) AS devices FROM users u"
                " LEFT JOIN devices d ON d.user = u.name AND d.revoked IS NULL"
                " GROUP BY u.name ORDER BY u.name"
            ).fetchall()
            return [User(r["name"], bool(r["admin"]), r["created"], r["devices"]) for r in rows]

        return self.db.call(query)

    def is_admin(self, name: str) -> bool:
        row = self.db.call(
            lambda c: c.execute("SELECT admin FROM users WHERE name = ?", (name,)).fetchone()
        )
        return bool(row and row["admin"])

    def check_password(self, name: str, password: str) -> None:
        """Raise AuthFailed unless ``password`` is ``name``'s. Costs one scrypt either way."""
        row = self.db.call(
            lambda c: c.execute(
                "SELECT salt, hash, n, r, p FROM users WHERE name = ?", (name,)
            ).fetchone()
        )
        if row is None or len(password) > MAX_PASSWORD:
            _scrypt(password[:MAX_PASSWORD], _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            raise AuthFailed("wrong user name or password")
        digest = _scrypt(password, row["salt"], row["n"], row["r"], row["p"])
        if not hmac.compare_digest(digest, row["hash"]):
            raise AuthFailed("wrong user name or password")

    # --- devices ---------------------------------------------------------------------------

    def add_device(self, user: str, name: str) -> tuple[Device, bytes]:
        """A new credential for ``user``'s device; returned once, stored only hashed."""
        credential = secrets.token_bytes(CREDENTIAL_BYTES)
        device = Device(links.new_id(), user, name[:128] or "speaker", time.time(), None, None)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO devices (id, user, name, credential_hash, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (device.id, user, device.name, _credential_hash(credential), device.created),
            )

        self.db.call(insert)
        return device, credential

    def check_device(self, credential: bytes) -> Device:
        """The device this credential belongs to; AuthFailed or Revoked otherwise."""
        if len(credential) != CREDENTIAL_BYTES:
            raise AuthFailed("malformed device credential")
        now = time.time()

        def query(conn: sqlite3.Connection) -> sqlite3.Row | None:
            with transaction(conn):
                row: sqlite3.Row | None = conn.execute(
                    "SELECT * FROM devices WHERE credential_hash = ?",
                    (_credential_hash(credential),),
                ).fetchone()
                if row is not None and row["revoked"] is None:
                    conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, row["id"]))
                return row

        row = self.db.call(query)
        if row is None:
            raise AuthFailed("unknown device credential")
        if row["revoked"] is not None:
            raise Revoked(f"device {row['name']!r} was revoked")
        return _device(row)

    def revoke_device(self, device_id: str) -> None:
        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE devices SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), device_id),
            )
            if cur.rowcount == 0:
                raise AccountError(f"no active device {device_id!r}")

        self.db.call(update)

    def device(self, device_id: str) -> Device:
        row = self.db.call(
            lambda c: c.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        )
        if row is None:
            raise AccountError(f"no device {device_id!r}")
        return _device(row)

    def devices(self, user: str | None = None) -> list[Device]:
        def query(conn: sqlite3.Connection) -> list[Device]:
            if user is None:
                rows = conn.execute("SELECT * FROM devices ORDER BY created").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM devices WHERE user = ? ORDER BY created", (user,)
                ).fetchall()
            return [_device(r) for r in rows]

        return self.db.call(query)


def _device(row: sqlite3.Row) -> Device:
    return Device(
        row["id"], row["user"], row["name"], row["created"], row["last_seen"], row["revoked"]
    )


# --- throttling ------------------------------------------------------------------------------

# Failures allowed before any delay: people mistype.
FREE_FAILURES = 5
# Then each further failure doubles the wait, up to this.
MAX_DELAY = 300.0
# A key's record is forgotten this long after its last failure.
FORGET_AFTER = 3600.0
# Keys remembered at most (oldest dropped): bounds memory under a spray of names/addresses.
MAX_KEYS = 100_000


class LoginThrottle:
    """Exponential back-off on failed logins, per key (user name, source address).

    Pure: time is passed in. ``retry_after(keys, now)`` says how long a new attempt must
    wait (0: go ahead); ``failed``/``succeeded`` record outcomes.
    """

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}

    def retry_after(self, keys: list[str], now: float) -> float:
        wait = 0.0
        for key in keys:
            record = self._failures.get(key)
            if record is None:
                continue
            count, last = record
            if now - last > FORGET_AFTER:
                del self._failures[key]
                continue
            if count >= FREE_FAILURES:
                delay = min(MAX_DELAY, 2.0 ** (count - FREE_FAILURES))
                wait = max(wait, last + delay - now)
        return max(0.0, wait)

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            count, _ = self._failures.pop(key, (0, now))
            self._failures[key] = (count + 1, now)
        while len(self._failures) > MAX_KEYS:
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
