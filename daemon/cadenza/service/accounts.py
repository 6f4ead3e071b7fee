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
from typing import Any

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
# Failures for one account from every address together, before the account's own back-off:
# many more than a person makes, so that only a guessing campaign from many addresses meets
# it; and it never holds the owner's known addresses back.
FREE_ACCOUNT_FAILURES = 20
# The account's back-off is short: it slows a distributed guesser, and a stranger must never
# keep the owner out for long even from an address the owner has not used before.
MAX_ACCOUNT_DELAY = 30.0
# A key's record is forgotten this long after its last failure.
FORGET_AFTER = 3600.0
# An address the account logged in from is "known" to it for this long.
KNOWN_FOR = 30 * 24 * 3600.0
# Keys and known addresses remembered at most (oldest dropped): bounds memory under a spray
# of names and addresses.
MAX_KEYS = 100_000
# A refusal because another login is in flight says to come back after this.
IN_FLIGHT_RETRY = 1.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login: on which connection, from where, and for which account (``None``: a
    device credential, whose account is known only once it is checked)."""

    connection: object
    address: str
    user: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    retry_after: float


class LoginThrottle:
    """Who may try a login now, atomically under concurrency (pure: time is passed in).

    ``begin(attempt, now)`` says no (a :class:`Refusal`) or marks the attempt in flight;
    ``end(attempt, now, ok=...)`` records its outcome *before* releasing it, so the next
    check sees every failure: 120 logins sent at once on one connection get one password
    check, not 120.

    * One login at a time per connection; password logins also one at a time per address
      and per account.
    * A device credential is never held back: it is 32 random bytes (nothing to guess), and
      a speaker must not be kept off by strangers failing from its address.
    * Password failures back off exponentially per address (``addr:A``), per account and
      address (``pair:U|A``) and, more gently, per account from everywhere (``user:U``).
      An address the account logged in from recently is known: only the pair's back-off
      applies there, so strangers elsewhere cannot lock the owner out.
    """

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._known: dict[tuple[str, str], float] = {}
        self._in_flight: set[object] = set()
        self._marked: dict[Attempt, tuple[object, ...]] = {}

    def begin(self, attempt: Attempt, now: float) -> Refusal | None:
        conn_key = ("conn", attempt.connection)
        if conn_key in self._in_flight:
            return Refusal("a login is already in progress on this connection", IN_FLIGHT_RETRY)
        user = attempt.user
        if user is None:
            self._mark(attempt, (conn_key,))
            return None
        known = self.known(user, attempt.address, now)
        addr_key, user_key = f"addr:{attempt.address}", f"user:{user}"
        if addr_key in self._in_flight:
            return Refusal("another login from this address is in progress", IN_FLIGHT_RETRY)
        if user_key in self._in_flight and not known:
            return Refusal("another login for this account is in progress", IN_FLIGHT_RETRY)
        refusal = self.check(attempt, now)
        if refusal is not None:
            return refusal
        self._mark(attempt, (conn_key, addr_key) if known else (conn_key, addr_key, user_key))
        return None

    def _mark(self, attempt: Attempt, keys: tuple[object, ...]) -> None:
        self._in_flight.update(keys)
        self._marked[attempt] = keys

    def check(self, attempt: Attempt, now: float) -> Refusal | None:
        """The back-off alone (nothing is marked in flight): a refusal, or None."""
        user = attempt.user
        if user is None:
            return None
        wait = self._wait(f"pair:{user}|{attempt.address}", now, FREE_FAILURES, MAX_DELAY)
        if not self.known(user, attempt.address, now):
            wait = max(
                wait,
                self._wait(f"addr:{attempt.address}", now, FREE_FAILURES, MAX_DELAY),
                self._wait(f"user:{user}", now, FREE_ACCOUNT_FAILURES, MAX_ACCOUNT_DELAY),
            )
        if wait > 0:
            return Refusal(f"too many failed logins: retry in {wait:.0f} s", wait)
        return None

    def end(self, attempt: Attempt, now: float, *, ok: bool, user: str | None = None) -> None:
        """The attempt's outcome; ``user`` is the account a device credential belonged to."""
        name = attempt.user or user
        if attempt.user is not None:
            pair = f"pair:{attempt.user}|{attempt.address}"
            if ok:
                self._failures.pop(pair, None)
            else:
                for key in (f"addr:{attempt.address}", f"user:{attempt.user}", pair):
                    count, _ = self._failures.pop(key, (0, now))
                    self._failures[key] = (count + 1, now)
                self._trim(self._failures)
        if ok and name is not None:
            self._known.pop((name, attempt.address), None)
            self._known[(name, attempt.address)] = now
            self._trim(self._known)
        self._in_flight.difference_update(self._marked.pop(attempt, ()))

    def known(self, user: str, address: str, now: float) -> bool:
        """``user`` logged in from ``address`` recently."""
        seen = self._known.get((user, address))
        return seen is not None and now - seen < KNOWN_FOR

    def _wait(self, key: str, now: float, free: int, longest: float) -> float:
        record = self._failures.get(key)
        if record is None:
            return 0.0
        count, last = record
        if now - last > FORGET_AFTER:
            del self._failures[key]
            return 0.0
        if count < free:
            return 0.0
        return max(0.0, last + min(longest, 2.0 ** (count - free)) - now)

    @staticmethod
    def _trim(table: dict[Any, Any]) -> None:
        while len(table) > MAX_KEYS:
            table.pop(next(iter(table)))
