"""The access point: where speakers log in and through which they reach every role.

One persistent Noise connection per speaker. The first request must be ``Login``
(password, then a device credential); after it, requests are routed to the catalog,
storage and tracker, and the access point can push to the speaker. It issues and
renews membership certificates for the Noise key each speaker proved in the
handshake, takes reports of misbehaving peers, and bans.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadenza import blocking, links, net
from cadenza.errors import ApiErrorCode
from cadenza.protocol import api, budget
from cadenza.protocol.admission import hello_payload, read_hello
from cadenza.protocol.certificate import CERT_LIFETIME, CertificateIssuer
from cadenza.protocol.errors import ErrorCode
from cadenza.protocol.manifest import chunk_count
from cadenza.protocol.messages import BulkKind, ErrorReply, Message
from cadenza.protocol.noise import KeyPair

from .accounts import Accounts, Attempt, AuthFailed, LoginThrottle, Revoked
from .catalog import Album, Artist, Catalog, NotFound, Track, UnsupportedLink
from .db import Database
from .playlists import Playlist, Playlists
from .storage import FileNotFound, Storage
from .tracker import Entry, Tracker

log = logging.getLogger("cadenza.service.ap")

OVERLAY_ID = "cadenza"
# A peer reported this many times (by distinct sessions) within REPORT_WINDOW is banned.
BAN_AFTER_REPORTS = 1
REPORT_WINDOW = 3600.0
# How long a ban lasts (it applies to the device behind the pseudonym, not just the id).
BAN_DURATION = 24 * 3600.0
# How often bans written by other processes (`cadenza ban`) are picked up.
BAN_POLL_INTERVAL = 5.0
# Chunks read from disk per batch when streaming a GetChunks reply.
READ_BATCH = 16
# A connection must log in this long after it is accepted (handshake included), or it is
# dropped: a speaker logs in within a round trip or two of connecting; a stranger that does
# not should not hold a connection (OpenSSH's LoginGraceTime, for machines).
LOGIN_TIMEOUT = 20.0
# Password checks (scrypt: 16 MiB, tens of ms each) run at most this many at once, and at
# most this many wait; more are told the service is busy. Device credentials are not held.
MAX_PASSWORD_CHECKS = 2
MAX_PASSWORD_QUEUE = 16
# Password logins waiting their turn for one address or account; more are refused at once.
MAX_LOGINS_WAITING = 8
# Failed logins a connection may make before it is hung up on (one throttled is enough).
MAX_LOGIN_TRIES = 2
# What the peers of all connections together may make the access point hold (budget.py):
# far above what thousands of logged-in speakers hold (they consume their requests at once).
POOL_LIMIT = 64 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    peer_id BLOB,
    device_id TEXT,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_device ON bans(device_id);
CREATE TABLE IF NOT EXISTS reports (
    peer_id BLOB NOT NULL,
    reporter_device TEXT NOT NULL,
    reason TEXT NOT NULL,
    file_id TEXT,
    created REAL NOT NULL
);
"""


@dataclass(eq=False)
class Session:
    conn: net.PeerConnection
    user: str = ""
    device_id: str = ""
    peer_id: bytes = b""
    p2p_port: int = 0
    logged_in: bool = False
    started: float = field(default_factory=time.time)
    login_deadline: trio.CancelScope = field(default_factory=trio.CancelScope)
    logging_in: bool = False
    failed_logins: int = 0

    @property
    def observed(self) -> tuple[str, int]:
        addr = self.conn.remote_address
        if isinstance(addr, tuple) and len(addr) >= 2:
            return str(addr[0]), int(addr[1])
        return "", 0


class Turns:
    """One holder at a time per key, the others waiting in arrival order; at most
    ``max_waiting`` wait per key, and more are turned away (``take`` yields False)."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._locks: dict[str, trio.Lock] = {}

    @contextlib.asynccontextmanager
    async def take(self, keys: tuple[str, ...]) -> AsyncIterator[bool]:
        keys = tuple(sorted(set(keys)))  # one order for everyone: no deadlock
        locks = [self._locks.setdefault(key, trio.Lock()) for key in keys]
        if any(lock.statistics().tasks_waiting >= self.max_waiting for lock in locks):
            self._forget(keys)
            yield False
            return
        held: list[trio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            yield True
        finally:
            for lock in reversed(held):
                lock.release()
            self._forget(keys)

    def _forget(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            lock = self._locks.get(key)
            if lock is not None and not lock.locked() and not lock.statistics().tasks_waiting:
                del self._locks[key]


class AccessPoint:
    """The service's front door: every speaker's connection, its login and the requests of
    its session.

    Why one class of this length: the login (throttle, turns, certificates) and the dispatch
    of the requests a logged-in speaker may make, one short handler each, share the table of
    sessions online and their bans; accounts, the catalogue, playlists, the tracker, storage
    and who may connect (:mod:`cadenza.net._gate`) are apart.
    """

    def __init__(
        self,
        *,
        static: KeyPair,
        signing_key: Ed25519PrivateKey,
        db: Database,
        accounts: Accounts,
        catalog: Catalog,
        storage: Storage,
        playlists: Playlists | None = None,
        overlay_id: str = OVERLAY_ID,
        cert_lifetime: int = CERT_LIFETIME,
        agent: str = "cadenza-serve",
    ) -> None:
        self.static = static
        self.db = db
        self.accounts = accounts
        self.catalog = catalog
        self.storage = storage
        self.playlists = playlists if playlists is not None else Playlists(db, catalog)
        self.overlay_id = overlay_id
        self.issuer = CertificateIssuer(signing_key, overlay_id, lifetime=cert_lifetime)
        self.signing_public = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.tracker: Tracker[Session] = Tracker()
        self.throttle = LoginThrottle()
        self._password_checks = trio.Semaphore(MAX_PASSWORD_CHECKS)
        self._turns = Turns(MAX_LOGINS_WAITING)
        self.pool = budget.MemoryPool(POOL_LIMIT)
        self.sessions: dict[net.PeerConnection, Session] = {}
        self._by_peer: dict[bytes, Session] = {}
        self._by_device: dict[str, Session] = {}
        self.identity = net.Identity(static, hello_payload(agent))
        db.apply_schema(SCHEMA)
        self._routes: dict[type[Message], Callable[[Session, Any], Awaitable[Message | None]]] = {
            api.Lookup: self._lookup,
            api.Search: self._search,
            api.GetManifest: self._get_manifest,
            api.RenewCertificate: self._renew,
            api.Announce: self._announce,
            api.Withdraw: self._withdraw,
            api.FindPeers: self._find_peers,
            api.ReportPeer: self._report,
            api.Logout: self._logout,
        }

    # --- serving ---------------------------------------------------------------------------

    async def serve(
        self,
        host: str | None,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(
                    net.serve_connections,
                    self._handle,
                    identity=self.identity,
                    host=host,
                    port=port,
                    verify=self._verify_client,
                    on_connection=self._session,
                    gate=net.SERVICE_GATE,
                    budget=budget.PRE_AUTH,
                    pool=self.pool,
                )
            )
            nursery.start_soon(self._poll_bans)
            task_status.started(listeners)

    @staticmethod
    def _verify_client(remote_static: bytes, payload: bytes) -> None:
        read_hello(payload)  # speakers log in after the handshake; they need no certificate

    def _session_for(self, conn: net.PeerConnection) -> Session:
        session = self.sessions.get(conn)
        if session is None:
            session = self.sessions[conn] = Session(conn)
        return session

    async def _session(
        self, conn: net.PeerConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        session = self._session_for(conn)
        task_status.started()  # requests are handled from now on
        try:
            # The login lifts the deadline (an unscheduled change: no wake-up for a login).
            with session.login_deadline:
                session.login_deadline.deadline = trio.current_time() + LOGIN_TIMEOUT
                await conn.wait_closed()
            if session.login_deadline.cancelled_caught:
                log.info("dropped connection from %s: no login in time", session.observed[0])
                conn.abort(f"no login within {LOGIN_TIMEOUT:.0f} s")
        finally:
            self._end(session)

    def _end(self, session: Session) -> None:
        self.sessions.pop(session.conn, None)
        if self._by_peer.get(session.peer_id) is session:
            del self._by_peer[session.peer_id]
        if self._by_device.get(session.device_id) is session:
            del self._by_device[session.device_id]
        self.tracker.session_ended(session)

    async def _handle(self, conn: net.PeerConnection, ch: net.Channel) -> None:
        if conn.closed:
            return
        session = self._session_for(conn)
        request = await ch.receive()
        if isinstance(request, net.Bulk):
            raise net.RequestError(ApiErrorCode.BAD_REQUEST, "expected a request message")
        if isinstance(request, api.Login):
            answer = await self._login(session, request)
            await ch.send(answer, end=True)
            if not session.logged_in and isinstance(answer, ErrorReply):
                session.failed_logins += 1
                # A stranger gets few tries per connection: each more costs it a handshake
                # (and the listener's gate bounds those per address). A speaker tries its
                # device credential, then the password.
                if (
                    answer.code == ApiErrorCode.THROTTLED
                    or session.failed_logins >= MAX_LOGIN_TRIES
                ):
                    await conn.refuse(ErrorCode.AUTHENTICATION_FAILED, answer.message)
            return
        if not session.logged_in:
            await ch.send(ErrorReply(ApiErrorCode.UNAUTHENTICATED, "log in first"), end=True)
            await conn.refuse(ErrorCode.AUTHENTICATION_FAILED, "log in first")
            return
        if isinstance(request, api.GetChunks):
            await self._get_chunks(ch, request)
            return
        route = self._routes.get(type(request))
        if route is None:
            raise net.RequestError(
                ApiErrorCode.UNSUPPORTED, f"{type(request).__name__} is not a request"
            )
        reply = await route(session, request)
        if reply is not None:
            await ch.send(reply, end=True)

    # --- login and certificates ----------------------------------------------------------------

    async def _login(self, session: Session, req: api.Login) -> Message:
        host, _ = session.observed
        password = bool(req.username and req.password)
        if not req.device_credential and not password:
            return ErrorReply(
                ApiErrorCode.BAD_REQUEST, "Login needs a password or a device credential"
            )
        if session.logged_in:
            return ErrorReply(ApiErrorCode.BAD_REQUEST, "already logged in on this connection")
        if session.logging_in:
            return ErrorReply(
                ApiErrorCode.THROTTLED, "a login is already in progress on this connection"
            )
        session.logging_in = True
        try:
            if req.device_credential:
                return await self._attempt(session, req, Attempt(session.conn, host, None))
            attempt = Attempt(session.conn, host, req.username)
            # Held back before it may wait its turn: a flood of refused guesses must not
            # fill the queues that the owner's login waits in.
            refusal = self.throttle.check(attempt, time.time())
            if refusal is not None:
                return ErrorReply(ApiErrorCode.THROTTLED, refusal.reason)
            # Password logins take turns per address and per account (the speakers of a
            # household set up at once wait a moment), so that each sees every failure
            # before it; an address the account knows skips the account's queue.
            keys = [f"addr:{host}"]
            if not self.throttle.known(req.username, host, time.time()):
                keys.append(f"user:{req.username}")
            async with self._turns.take(tuple(keys)) as granted:
                if not granted:
                    return ErrorReply(
                        ApiErrorCode.THROTTLED,
                        "too many logins waiting for this address or account",
                    )
                return await self._attempt(session, req, attempt)
        finally:
            session.logging_in = False

    async def _attempt(self, session: Session, req: api.Login, attempt: Attempt) -> Message:
        refusal = self.throttle.begin(attempt, time.time())
        if refusal is not None:
            return ErrorReply(ApiErrorCode.THROTTLED, refusal.reason)
        ok = False
        user: str | None = None
        try:
            reply = await self._check_login(session, req, attempt)
            ok = isinstance(reply, api.LoginOk)
            user = session.user or None
            return reply
        finally:
            # Recorded before the next attempt may begin: the throttle sees every failure.
            self.throttle.end(attempt, time.time(), ok=ok, user=user)

    async def _check_login(self, session: Session, req: api.Login, attempt: Attempt) -> Message:
        host = attempt.address
        now = time.time()
        new_credential: bytes | None = None
        try:
            if req.device_credential:
                device = await blocking.run_sync(self.accounts.check_device, req.device_credential)
            else:
                # scrypt takes 16 MiB and tens of milliseconds: a few at a time, whoever asks.
                if self._password_checks.statistics().tasks_waiting >= MAX_PASSWORD_QUEUE:
                    return ErrorReply(
                        ApiErrorCode.THROTTLED, "the service is busy: retry in a few seconds"
                    )
                async with self._password_checks:
                    await blocking.run_sync(
                        self.accounts.check_password, req.username, req.password
                    )
                # A banned speaker must not come back as a new device of the same account.
                user_ban = await self.db.run(_active_user_ban, req.username, now)
                if user_ban is not None:
                    return ErrorReply(
                        ApiErrorCode.BANNED,
                        f"a device of this account is banned until {time.ctime(user_ban)}",
                    )
                device, new_credential = await blocking.run_sync(
                    self.accounts.add_device, req.username, req.device_name
                )
        except Revoked as exc:
            return ErrorReply(ApiErrorCode.REVOKED, str(exc))
        except AuthFailed as exc:
            log.info("failed login from %s (%s): %s", host, req.username or "device", exc)
            return ErrorReply(ApiErrorCode.AUTH_FAILED, str(exc))
        ban = await self.db.run(_active_ban, device.id, now)
        if ban is not None:
            return ErrorReply(ApiErrorCode.BANNED, f"this device is banned until {time.ctime(ban)}")
        if session.conn.closed:
            return ErrorReply(ApiErrorCode.BAD_REQUEST, "connection closed during the login")
        previous = self._by_device.get(device.id)
        if previous is not None and previous is not session:
            # One connection per speaker: the new one wins (the old one is likely dead).
            await self._kick(previous, "replaced by a new connection from this device")
        session.user = device.user
        session.device_id = device.id
        session.peer_id = os.urandom(16)
        session.p2p_port = req.p2p_port if 0 < req.p2p_port < 65536 else 0
        session.logged_in = True
        # No longer a stranger: out of the listener's count of them, and a budget for a
        # speaker's requests (before the reply leaves, so its first requests find it).
        session.conn.admit(budget.LOGGED_IN)
        session.login_deadline.deadline = math.inf
        self._by_peer[session.peer_id] = session
        self._by_device[device.id] = session
        self._register_with_tracker(session)
        cert, expires = self._certificate(session, now)
        obs_host, obs_port = session.observed
        log.info("login: %s/%s from %s", device.user, device.name, obs_host)
        return api.LoginOk(
            user=device.user,
            device_id=device.id,
            peer_id=session.peer_id,
            certificate=cert,
            certificate_expires=expires,
            service_time=now,
            observed_host=obs_host,
            observed_port=obs_port,
            overlay_id=self.overlay_id,
            signing_keys=(self.signing_public,),
            device_credential=new_credential,
        )

    def _certificate(self, session: Session, now: float) -> tuple[bytes, int]:
        host, _ = session.observed
        endpoint = (host, session.p2p_port) if session.p2p_port and host else None
        cert = self.issuer.issue(
            peer_id=session.peer_id,
            noise_static=session.conn.remote_static,
            endpoint=endpoint,
            now=now,
        )
        return cert, int(now) + self.issuer.lifetime

    def _register_with_tracker(self, session: Session) -> None:
        host, _ = session.observed
        if session.p2p_port and host:
            self.tracker.session_started(
                session, Entry(session.peer_id, host, session.p2p_port, session.conn.remote_static)
            )

    async def _renew(self, session: Session, req: api.RenewCertificate) -> Message:
        now = time.time()
        ban = await self.db.run(_active_ban, session.device_id, now)
        if ban is not None:
            return ErrorReply(ApiErrorCode.BANNED, "this device is banned")
        if req.p2p_port and 0 < req.p2p_port < 65536 and req.p2p_port != session.p2p_port:
            session.p2p_port = req.p2p_port
            self._register_with_tracker(session)
        cert, expires = self._certificate(session, now)
        return api.CertificateReply(cert, expires, now)

    async def _logout(self, session: Session, req: api.Logout) -> Message:
        await blocking.run_sync(self.accounts.revoke_device, session.device_id)
        return api.Ack()

    # --- catalog and storage ------------------------------------------------------------------

    async def _lookup(self, session: Session, req: api.Lookup) -> Message:
        record: Track | Album | Artist | Playlist
        try:
            link = links.parse(req.uri)
            if link.kind == "playlist":
                record = await blocking.run_sync(self.playlists.lookup, link)
            else:
                record = await blocking.run_sync(self.catalog.lookup, link)
        except links.LinkError as exc:
            return ErrorReply(ApiErrorCode.BAD_REQUEST, f"{req.uri!r}: {exc}")
        except NotFound as exc:
            return ErrorReply(ApiErrorCode.NOT_FOUND, str(exc))
        except UnsupportedLink as exc:
            return ErrorReply(ApiErrorCode.UNSUPPORTED, str(exc))
        kind = type(record).__name__.lower()
        return api.LookupReply(kind, record.to_json())

    async def _search(self, session: Session, req: api.Search) -> Message:
        if req.kind not in ("track", "album", "artist"):
            return ErrorReply(
                ApiErrorCode.BAD_REQUEST, f"kind {req.kind!r}: expected track, album or artist"
            )
        if not 0 < req.limit <= api.MAX_SEARCH_LIMIT or req.offset < 0:
            return ErrorReply(
                ApiErrorCode.BAD_REQUEST, f"limit must be 1..{api.MAX_SEARCH_LIMIT}, offset ≥ 0"
            )
        items, total = await blocking.run_sync(
            partial(self.catalog.search, req.kind, req.query, limit=req.limit, offset=req.offset)  # type: ignore[arg-type]
        )
        return api.SearchReply(req.kind, total, tuple(item.to_json() for item in items))

    async def _get_manifest(self, session: Session, req: api.GetManifest) -> Message:
        try:
            data = await blocking.run_sync(self.storage.manifest_bytes, req.file_id)
        except (FileNotFound, ValueError):
            return ErrorReply(ApiErrorCode.NOT_FOUND, f"no file {req.file_id!r}")
        return api.ManifestReply(data)

    async def _get_chunks(self, ch: net.Channel, req: api.GetChunks) -> None:
        if not 0 < req.count <= api.MAX_CHUNKS_PER_REQUEST or req.first < 0:
            raise net.RequestError(
                ApiErrorCode.BAD_REQUEST,
                f"count must be 1..{api.MAX_CHUNKS_PER_REQUEST}, first ≥ 0",
            )
        try:
            # One stat, not a manifest parse: this runs for every request of every stream.
            size = await blocking.run_sync(self.storage.size, req.file_id)
        except (FileNotFound, ValueError):
            raise net.RequestError(ApiErrorCode.NOT_FOUND, f"no file {req.file_id!r}") from None
        total = chunk_count(size)
        end = min(req.first + req.count, total)
        if req.first >= end:
            raise net.RequestError(
                ApiErrorCode.BAD_REQUEST, f"chunk {req.first} is past the end ({total} chunks)"
            )
        index = req.first
        while index < end:
            n = min(READ_BATCH, end - index)
            batch = await blocking.run_sync(self.storage.read_chunks, req.file_id, index, n)
            for chunk in batch:
                await ch.send_bulk(BulkKind.CHUNK, index, chunk)
                index += 1

    # --- tracker --------------------------------------------------------------------------------

    async def _announce(self, session: Session, req: api.Announce) -> Message:
        if len(req.file_ids) > api.MAX_ANNOUNCE:
            return ErrorReply(
                ApiErrorCode.BAD_REQUEST, f"at most {api.MAX_ANNOUNCE} files per Announce"
            )
        if not session.p2p_port:
            return ErrorReply(ApiErrorCode.BAD_REQUEST, "announce needs a p2p_port at login")
        self.tracker.announce(session, req.file_ids)
        return api.Ack()

    async def _withdraw(self, session: Session, req: api.Withdraw) -> Message:
        self.tracker.withdraw(session, req.file_ids)
        return api.Ack()

    async def _find_peers(self, session: Session, req: api.FindPeers) -> Message:
        entries = self.tracker.query(req.file_id, session, req.limit)
        return api.PeersReply(
            tuple(api.PeerInfo(e.peer_id, e.host, e.port, e.noise_static) for e in entries)
        )

    # --- reports and bans -------------------------------------------------------------------------

    async def _report(self, session: Session, req: api.ReportPeer) -> Message:
        now = time.time()
        target = self._by_peer.get(req.peer_id)
        await self.db.run(
            _record_report, req.peer_id, session.device_id, req.reason[:200], req.file_id, now
        )
        reporters = await self.db.run(_distinct_reporters, req.peer_id, now - REPORT_WINDOW)
        log.warning(
            "peer %s reported by %s: %s", req.peer_id.hex(), session.device_id, req.reason[:200]
        )
        if reporters >= BAN_AFTER_REPORTS and target is not None:
            await self.ban(req.peer_id, f"reported: {req.reason[:100]}")
        return api.Ack()

    async def ban(self, peer_id: bytes, reason: str, duration: float = BAN_DURATION) -> None:
        """Ban the device behind ``peer_id``: its session ends, it gets no more certificates,
        and every other speaker is told to drop that peer id."""
        now = time.time()
        target = self._by_peer.get(peer_id)
        device_id = target.device_id if target else None
        await self.db.run(_insert_ban, peer_id, device_id, reason, now, now + duration)
        await self._apply_ban(peer_id, reason)

    async def _apply_ban(self, peer_id: bytes, reason: str) -> None:
        target = self._by_peer.get(peer_id)
        if target is not None:
            await self._kick(target, f"banned: {reason}", code=ApiErrorCode.BANNED)
        for other in list(self.sessions.values()):
            if other.logged_in:
                with trio.move_on_after(2), contextlib.suppress(net.NetError):
                    await other.conn.notify(api.PeerBanned(peer_id, reason))

    async def _kick(self, session: Session, reason: str, code: str = "") -> None:
        self._end(session)
        with trio.move_on_after(2), contextlib.suppress(net.NetError):
            await session.conn.notify(api.SessionEnded(reason, code))
            await session.conn.aclose(reason)  # lets the notice leave before the socket closes
        session.conn.abort(reason)

    async def _poll_bans(self) -> None:
        """Apply bans recorded by other processes (``cadenza ban``) to live sessions."""
        seen: set[bytes] = set()
        while True:
            await trio.sleep(BAN_POLL_INTERVAL)
            rows = await self.db.run(_recent_peer_bans, time.time())
            for peer_id, reason in rows:
                session = self._by_peer.get(peer_id)
                if peer_id not in seen and session is not None:
                    seen.add(peer_id)
                    # The ban was recorded by peer id alone: bind it to the device behind it.
                    await self.db.run(_bind_ban, peer_id, session.device_id)
                    await self._apply_ban(peer_id, reason)


# --- SQL ------------------------------------------------------------------------------------------


def _active_ban(conn: sqlite3.Connection, device_id: str, now: float) -> float | None:
    row = conn.execute(
        "SELECT MAX(until) AS until FROM bans WHERE device_id = ? AND until > ?", (device_id, now)
    ).fetchone()
    return None if row is None or row["until"] is None else float(row["until"])


def _active_user_ban(conn: sqlite3.Connection, user: str, now: float) -> float | None:
    row = conn.execute(
        "SELECT MAX(b.until) AS until FROM bans b JOIN devices d ON b.device_id = d.id"
        " WHERE d.user = ? AND b.until > ?",
        (user, now),
    ).fetchone()
    return None if row is None or row["until"] is None else float(row["until"])


def _insert_ban(
    conn: sqlite3.Connection,
    peer_id: bytes,
    device_id: str | None,
    reason: str,
    now: float,
    until: float,
) -> None:
    conn.execute(
        "INSERT INTO bans (peer_id, device_id, reason, created, until) VALUES (?, ?, ?, ?, ?)",
        (peer_id, device_id, reason, now, until),
    )


def _bind_ban(conn: sqlite3.Connection, peer_id: bytes, device_id: str) -> None:
    conn.execute(
        "UPDATE bans SET device_id = ? WHERE peer_id = ? AND device_id IS NULL",
        (device_id, peer_id),
    )


def _recent_peer_bans(conn: sqlite3.Connection, now: float) -> list[tuple[bytes, str]]:
    rows = conn.execute(
        "SELECT peer_id, reason FROM bans WHERE peer_id IS NOT NULL AND until > ?", (now,)
    ).fetchall()
    return [(bytes(r["peer_id"]), r["reason"]) for r in rows]


def _record_report(
    conn: sqlite3.Connection,
    peer_id: bytes,
    reporter: str,
    reason: str,
    file_id: str,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO reports (peer_id, reporter_device, reason, file_id, created)"
        " VALUES (?, ?, ?, ?, ?)",
        (peer_id, reporter, reason, file_id, now),
    )


def _distinct_reporters(conn: sqlite3.Connection, peer_id: bytes, since: float) -> int:
    row = conn.execute(
        "SELECT COUNT(DISTINCT reporter_device) AS n FROM reports"
        " WHERE peer_id = ? AND created > ?",
        (peer_id, since),
    ).fetchone()
    return int(row["n"])


def ban_offline(db: Database, peer_id: bytes, reason: str, duration: float = BAN_DURATION) -> None:
    """Record a ban from another process; a running service applies it within seconds."""
    db.apply_schema(SCHEMA)
    now = time.time()
    db.call(_insert_ban, peer_id, None, reason, now, now + duration)
