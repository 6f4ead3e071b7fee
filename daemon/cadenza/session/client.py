"""The speaker's link to an access point.

:meth:`Session.run` starts at once (the daemon never waits for the internet) and then
keeps a logged-in connection up: find candidates (configured address, DNS, mDNS), dial
and log in, serve until the link drops, back off, fail over to the next candidate, and
retry forever. The first login uses the owner's password; the device credential it
returns is kept in the state directory and used from then on. The membership
certificate is renewed at two thirds of its lifetime.

Callers use :meth:`Session.request` / :meth:`Session.open_channel`, which wait (up to
their deadline) for the session to be online.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from cadenza import net
from cadenza.errors import ApiErrorCode
from cadenza.protocol import api, budget
from cadenza.protocol.admission import hello_payload
from cadenza.protocol.certificate import fingerprint
from cadenza.protocol.errors import RemoteProtocolError
from cadenza.protocol.messages import Message, Priority
from cadenza.protocol.noise import KeyPair
from cadenza.system.files import atomic_write

log = logging.getLogger("cadenza.session")

# Back-off between attempts: quick at first (a service restart), then patient.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# Renew the certificate when this share of its lifetime has passed.
RENEW_AT = 2 / 3
# Credential file name in the state directory.
CREDENTIAL_FILE = "device.credential"


class State(enum.Enum):
    STARTING = "starting"
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"  # retrying
    NEEDS_LOGIN = "needs-login"  # no credential and no (valid) password: the owner must act


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    source: str = "config"
    fingerprint: str | None = None


@dataclass(frozen=True)
class Status:
    state: State = State.STARTING
    access_point: str = ""
    error: str = ""
    retry_at: float | None = None  # trio clock
    user: str = ""
    peer_id: str = ""
    attempts: int = 0


class Backoff:
    """Exponential back-off with full jitter (pure apart from the injected RNG)."""

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        maximum: float = BACKOFF_MAX,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.failures)
        self.failures += 1
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.failures = 0


class NotOnline(net.NetError):
    """The session is not connected (and did not come up before the deadline)."""


Candidates = Callable[[], Awaitable[Sequence[Endpoint]]]
PushHandler = Callable[[Message], Awaitable[None]]


@dataclass
class Credentials:
    username: str = ""
    password: str = ""
    device_name: str = "speaker"


@dataclass
class _Live:
    conn: net.PeerConnection
    login: api.LoginOk
    endpoint: Endpoint
    cert_expires: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Session:
    def __init__(
        self,
        *,
        static: KeyPair,
        state_dir: Path,
        candidates: Candidates,
        credentials: Credentials,
        p2p_port: int = 0,
        pinned_fingerprint: str | None = None,
        on_push: PushHandler | None = None,
        agent: str = "cadenzad",
    ) -> None:
        self.static = static
        self.state_dir = state_dir
        self._candidates = candidates
        self._credentials = credentials
        self.p2p_port = p2p_port
        self.pinned = pinned_fingerprint
        self._on_push = on_push
        self._identity = net.Identity(static, hello_payload(agent))
        self._live: _Live | None = None
        self._online = trio.Event()
        self._changed = trio.Event()
        self.status = Status()
        self.backoff = Backoff()
        self._old_in = self._old_out = 0  # bytes on connections that have closed

    # --- public --------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._live is not None and not self._live.conn.closed

    @property
    def login(self) -> api.LoginOk | None:
        return self._live.login if self._live else None

    @property
    def bytes_received(self) -> int:
        """Bytes on the wire from the access point, over every connection so far."""
        live = self._live.conn.bytes_received if self._live is not None else 0
        return self._old_in + live

    @property
    def bytes_sent(self) -> int:
        live = self._live.conn.bytes_sent if self._live is not None else 0
        return self._old_out + live

    async def wait_online(self, timeout: float | None = None) -> net.PeerConnection:
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            while not self.online:
                await self._online.wait()
            assert self._live is not None
            return self._live.conn
        raise NotOnline(
            f"not connected to the service ({self.status.error or self.status.state.value})"
        )

    async def wait_changed(self) -> Status:
        await self._changed.wait()
        return self.status

    async def request(
        self, msg: Message, *, priority: int = Priority.CONTROL, timeout: float = 10.0
    ) -> Message:
        conn = await self.wait_online(timeout)
        return await conn.request(msg, priority=priority, timeout=timeout)

    @asynccontextmanager
    async def open_channel(
        self, priority: int = Priority.PLAYING, *, timeout: float = 10.0
    ) -> AsyncIterator[net.Channel]:
        conn = await self.wait_online(timeout)
        async with conn.open_channel(priority) as ch:
            yield ch

    def credential_path(self) -> Path:
        return self.state_dir / CREDENTIAL_FILE

    # --- the loop ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        while True:
            candidates: Sequence[Endpoint] = []
            self._set(state=State.CONNECTING, error=self.status.error)
            try:
                candidates = await self._candidates()
            except Exception as exc:  # discovery must never kill the session loop
                log.warning("finding the access point failed: %s", exc)
            if not candidates:
                await self._wait_retry("no access point found (configured, DNS or mDNS)")
                continue
            for endpoint in candidates:
                try:
                    await self._connect_and_serve(endpoint)
                except _NeedsLogin as exc:
                    self._set(state=State.NEEDS_LOGIN, error=str(exc), retry_at=None)
                    log.error("cannot log in: %s", exc)
                    await self._changed_credentials()
                    break
                except (net.NetError, OSError) as exc:
                    log.info("access point %s:%d: %s", endpoint.host, endpoint.port, exc)
                    self._set(error=f"{endpoint.host}:{endpoint.port}: {exc}")
                    continue
            await self._wait_retry(self.status.error or "connection lost")

    async def _wait_retry(self, why: str) -> None:
        delay = self.backoff.next_delay()
        retry_at = trio.current_time() + delay
        self._set(state=State.OFFLINE, error=why, retry_at=retry_at)
        log.info("offline: %s; retrying in %.1f s", why, delay)
        await trio.sleep_until(retry_at)

    async def _changed_credentials(self) -> None:
        # Wait until someone provides a password (set_credentials) before trying again.
        self._cred_event = trio.Event()
        await self._cred_event.wait()

    def set_credentials(self, credentials: Credentials) -> None:
        self._credentials = credentials
        event = getattr(self, "_cred_event", None)
        if event is not None:
            event.set()

    async def _connect_and_serve(self, endpoint: Endpoint) -> None:
        pin = self.pinned or endpoint.fingerprint

        def verify(remote_static: bytes, payload: bytes) -> None:
            if pin and fingerprint(remote_static) != pin:
                raise RemoteProtocolError(
                    f"access point key {fingerprint(remote_static)} is not the expected {pin}"
                )

        async with net.single_errors(), trio.open_nursery() as nursery:
            conn = await net.connect(
                nursery,
                endpoint.host,
                endpoint.port,
                identity=self._identity,
                verify=verify,
                handler=self._handle_push,
                # An access point only pushes short notices; one found by mDNS on the LAN
                # may be anybody's, so what it sends is bounded like a peer's.
                budget=budget.SERVICE_PUSHES,
            )
            try:
                login = await self._login(conn)
                self._live = _Live(conn, login, endpoint)
                self.backoff.reset()
                self._set(
                    state=State.ONLINE,
                    access_point=f"{endpoint.host}:{endpoint.port}",
                    error="",
                    retry_at=None,
                    user=login.user,
                    peer_id=login.peer_id.hex(),
                )
                log.info(
                    "online: %s at %s:%d (%s)",
                    login.user,
                    endpoint.host,
                    endpoint.port,
                    endpoint.source,
                )
                self._online.set()
                nursery.start_soon(self._renew_loop, self._live)
                await conn.wait_closed()
                raise net.ConnectionLost("connection to the access point lost")
            finally:
                self._live = None
                self._online = trio.Event()
                self._old_in += conn.bytes_received
                self._old_out += conn.bytes_sent
                conn.abort("session ended")
                nursery.cancel_scope.cancel()

    async def _login(self, conn: net.PeerConnection) -> api.LoginOk:
        cred_file = self.credential_path()
        credential = _read_credential(cred_file)
        c = self._credentials
        attempts: list[api.Login] = []
        if credential:
            attempts.append(
                api.Login(
                    device_credential=credential, device_name=c.device_name, p2p_port=self.p2p_port
                )
            )
        if c.username and c.password:
            attempts.append(
                api.Login(
                    username=c.username,
                    password=c.password,
                    device_name=c.device_name,
                    p2p_port=self.p2p_port,
                )
            )
        if not attempts:
            raise _NeedsLogin("no device credential yet and no user name/password configured")
        last = ""
        for attempt in attempts:
            try:
                reply = await conn.request(attempt, timeout=15)
            except net.RequestFailed as exc:
                last = f"{exc.code}: {exc.message}"
                if (
                    exc.code in (ApiErrorCode.REVOKED, ApiErrorCode.AUTH_FAILED)
                    and attempt.device_credential
                ):
                    log.warning("device credential refused (%s); forgetting it", exc.code)
                    cred_file.unlink(missing_ok=True)
                    continue
                if exc.code == ApiErrorCode.THROTTLED:
                    raise net.ConnectionLost(f"login throttled: {exc.message}") from None
                if exc.code == ApiErrorCode.BANNED:
                    # Not evaded with the password (a new device): wait for the ban to end.
                    raise net.ConnectionLost(f"login refused: {exc.message}") from None
                if exc.code == ApiErrorCode.AUTH_FAILED:
                    continue
                raise net.ConnectionLost(f"login failed: {last}") from None
            if not isinstance(reply, api.LoginOk):
                raise net.ConnectionLost(f"unexpected login reply {type(reply).__name__}")
            if reply.device_credential:
                _write_credential(cred_file, reply.device_credential)
            return reply
        raise _NeedsLogin(f"login refused ({last})")

    async def _renew_loop(self, live: _Live) -> None:
        expires = float(live.login.certificate_expires)
        issued = live.login.service_time
        while True:
            wait = max(5.0, (expires - issued) * RENEW_AT - (time.time() - issued))
            await trio.sleep(wait)
            try:
                reply = await live.conn.request(api.RenewCertificate(self.p2p_port))
            except net.NetError as exc:
                log.warning("certificate renewal failed: %s", exc)
                continue
            if isinstance(reply, api.CertificateReply):
                live.login = replace(
                    live.login, certificate=reply.certificate, certificate_expires=reply.expires_at
                )
                issued, expires = reply.service_time, float(reply.expires_at)
                log.info("membership certificate renewed until %s", time.ctime(expires))

    async def _handle_push(self, conn: net.PeerConnection, ch: net.Channel) -> None:
        msg = await ch.receive()
        if isinstance(msg, api.SessionEnded):
            log.warning("the access point ended the session: %s", msg.reason)
            self._set(error=f"session ended by the service: {msg.reason}")
        if isinstance(msg, Message) and self._on_push is not None:
            await self._on_push(msg)

    def _set(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        self._changed.set()
        self._changed = trio.Event()


class _NeedsLogin(Exception):
    pass


def _read_credential(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data if len(data) == 32 else b""


def _write_credential(path: Path, credential: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, credential, mode=0o600)


def static_endpoints(address: str, default_port: int = 4070) -> list[Endpoint]:
    """``host:port`` / ``[v6]:port`` / ``host`` from configuration."""
    if not address:
        return []
    host, sep, port = address.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        return [Endpoint(address.strip("[]"), default_port)]
    return [Endpoint(host.strip("[]"), int(port))]
