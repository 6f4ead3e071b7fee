"""mDNS / DNS-SD for trio: advertise a service, browse for services, find one.

python-zeroconf's sync API runs its own asyncio loop in a thread when no asyncio loop runs
in the calling thread (never the case under trio). Everything that may block (creating and
closing a ``Zeroconf``, registering, probing, sending goodbyes) runs in a worker thread via
``cadenza.blocking.run_sync`` (``waits=True``: probing and goodbyes wait on the network).
A browser's callbacks run on zeroconf's browser thread; they
resolve the service there and hand the result to trio with ``trio.from_thread.run_sync``.
All advertisements and browsers of a process share one ``Zeroconf`` (per choice of
interfaces), opened by the first and closed after the last.

Service types used by Cadenza::

    _cadenza-ap._tcp.local.     an access point of the central service
    _cadenza._tcp.local.        a speaker's control API
    _cadenza-peer._tcp.local.   a speaker's P2P endpoint, for LAN discovery
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import secrets
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import ifaddr
import trio
import zeroconf

from cadenza import blocking

log = logging.getLogger("cadenza.net.mdns")

_T = TypeVar("_T")

RESOLVE_TIMEOUT = 3.0
"""Seconds a browser waits for a new name's SRV/TXT/A answers; a miss retries on its next change."""

EVENT_BUFFER = 64
"""Events queued per ``Browser.events()`` consumer; past that it resyncs from ``services``."""

SERVICE_TTL = 120
"""Seconds for every record we publish: a speaker that loses power (no goodbye) drops out of
browsers within about two minutes, not after RFC 6762's 75-minute PTR/TXT default."""

GOODBYE_TIMEOUT = 5.0
"""Seconds to wait for zeroconf to send a withdrawn service's goodbyes (it takes ~0.3 s)."""

FALLBACK_ADDRESS = "127.0.0.1"
"""Advertised when the host has no other IPv4 address, so local clients still find us."""

AP_SERVICE_TYPE = "_cadenza-ap._tcp.local."
SPEAKER_SERVICE_TYPE = "_cadenza._tcp.local."
PEER_SERVICE_TYPE = "_cadenza-peer._tcp.local."


@dataclass(frozen=True)
class ServiceInfo:
    """One resolved service instance.

    ``name`` is the instance name alone ("Kitchen", not "Kitchen._cadenza._tcp.local.");
    ``host`` the target host name of its SRV record; ``properties`` its TXT record decoded
    as UTF-8, keys lower-cased (a key without a value maps to ""). Hashable: do not mutate
    ``properties``.
    """

    type: str
    name: str
    host: str | None
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str]

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.type}"

    def __hash__(self) -> int:
        properties = tuple(sorted(self.properties.items()))
        return hash((self.type, self.name, self.host, self.addresses, self.port, properties))


@dataclass(frozen=True)
class Added:
    """A service appeared (or is already there when ``Browser.events()`` starts)."""

    info: ServiceInfo


@dataclass(frozen=True)
class Updated:
    """A known service changed its address, port or TXT record."""

    info: ServiceInfo


@dataclass(frozen=True)
class Removed:
    """A known service said goodbye or its records expired."""

    name: str


BrowseEvent = Added | Updated | Removed


# --- advertising


class Advertisement:
    """A registered service, handed out by :func:`advertise` through ``task_status``."""

    def __init__(self, zc: zeroconf.Zeroconf, info: zeroconf.ServiceInfo) -> None:
        self._zc = zc
        self._info = info
        self._lock = trio.Lock()
        self._registered = False
        self._closed = False

    @property
    def name(self) -> str:
        """The instance name as registered; differs from the requested one after a conflict."""
        return self._info.get_name()

    @property
    def info(self) -> ServiceInfo:
        """What browsers see of this service."""
        return _from_zeroconf(self._info)

    async def update(
        self, *, properties: Mapping[str, str] | None = None, name: str | None = None
    ) -> None:
        """Re-announce the service with new TXT ``properties`` and/or a new instance ``name``.

        A new name is probed like a first registration (it may come back with a suffix:
        see :attr:`name`); browsers see the old name removed and the new one added.
        """
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("the advertisement has ended")
            old = self._info
            new = _zeroconf_info(
                old.type,
                old.get_name() if name is None else name,
                port=_port(old),
                properties=old.decoded_properties if properties is None else properties,
                addresses=old.parsed_addresses(),
                server=_server(old),
            )
            if new.name == old.name:
                await blocking.run_sync(self._zc.update_service, new, waits=True)
            else:
                await blocking.run_sync(_unregister, self._zc, old, waits=True)
                self._registered = False
                await blocking.run_sync(_register, self._zc, new, waits=True)
                self._registered = True
            self._info = new

    async def _register(self) -> None:
        async with self._lock:
            await blocking.run_sync(_register, self._zc, self._info, waits=True)
            self._registered = True

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                try:
                    if self._registered:
                        await blocking.run_sync(_unregister, self._zc, self._info, waits=True)
                finally:
                    await blocking.run_sync(_release, self._zc, waits=True)


async def advertise(
    service_type: str,
    name: str,
    port: int,
    properties: Mapping[str, str],
    *,
    addresses: Sequence[str] | None = None,
    interfaces: Sequence[str] | None = None,
    task_status: trio.TaskStatus[Advertisement] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Advertise ``name`` of ``service_type`` on ``port`` until cancelled.

    ``started`` with an :class:`Advertisement` once probing is over and the name is ours
    (renamed "name-2", "name-3", ... if another host, or this process, holds it).
    ``addresses`` default to every non-loopback IPv4 address of the host (127.0.0.1 if there
    is none); ``interfaces`` are the IPv4 addresses of the interfaces to answer on (default:
    all).
    On cancellation, goodbye packets withdraw the service before this returns.
    """
    if addresses is None:
        addresses = await blocking.run_sync(host_addresses)
    info = _zeroconf_info(
        service_type,
        name,
        port=port,
        properties=properties,
        addresses=addresses,
        server=_host_name(tuple(addresses)),
    )
    zc = await blocking.run_sync(_acquire, interfaces, waits=True)
    advertisement = Advertisement(zc, info)
    try:
        await advertisement._register()
        log.info("advertising %s on port %d at %s", info.name, port, ", ".join(addresses))
        task_status.started(advertisement)
        await trio.sleep_forever()
    finally:
        await advertisement._close()


def host_addresses() -> list[str]:
    """Every non-loopback IPv4 address of this host, or ``[FALLBACK_ADDRESS]`` if none."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if (
                isinstance(ip.ip, str)
                and ip.is_IPv4
                and not ipaddress.ip_address(ip.ip).is_loopback
            ):
                found.append(ip.ip)
    return list(dict.fromkeys(found)) or [FALLBACK_ADDRESS]


# --- browsing


@dataclass(eq=False)
class _Subscription:
    send: trio.MemorySendChannel[BrowseEvent]
    # True: events were dropped (or none sent yet); the consumer rebuilds from the current view.
    lagged: bool = True

    def offer(self, event: BrowseEvent) -> None:
        if self.lagged:
            return
        try:
            self.send.send_nowait(event)
        except trio.WouldBlock:
            self.lagged = True


@dataclass(eq=False)
class Browser:
    """The live view of one service type, kept by :func:`browse`.

    ``services`` maps instance names to what is known about them now; it is kept up to date
    whether or not anyone reads :meth:`events`.
    """

    service_type: str
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    _subscriptions: set[_Subscription] = field(default_factory=set)
    _closed: bool = False

    async def events(self) -> AsyncGenerator[BrowseEvent, None]:
        """Changes to :attr:`services`, starting with an ``Added`` for each service known now.

        Ends when the browser closes. Each call is an independent stream. A consumer that
        falls more than ``EVENT_BUFFER`` events behind misses the intermediate steps but not
        the outcome: it gets the difference between what it was told and the current view
        (an update and its revert may cancel out; a quick remove-and-add becomes an update).
        Close an abandoned stream early with ``contextlib.aclosing``.
        """
        if self._closed:
            return
        send, receive = trio.open_memory_channel[BrowseEvent](EVENT_BUFFER)
        subscription = _Subscription(send)
        self._subscriptions.add(subscription)
        told: dict[str, ServiceInfo] = {}
        try:
            while True:
                if subscription.lagged:
                    subscription.lagged = False
                    _drain(receive)
                    for event in _difference(told, self.services):
                        _apply(told, event)
                        yield event
                    continue
                try:
                    event = await receive.receive()
                except trio.EndOfChannel:
                    return
                _apply(told, event)
                yield event
        finally:
            self._subscriptions.discard(subscription)
            send.close()
            receive.close()

    def _resolved(self, info: ServiceInfo) -> None:
        if self._closed:
            return
        old = self.services.get(info.name)
        if old == info:
            return
        self.services[info.name] = info
        self._publish(Added(info) if old is None else Updated(info))

    def _removed(self, name: str) -> None:
        if self._closed or self.services.pop(name, None) is None:
            return
        self._publish(Removed(name))

    def _publish(self, event: BrowseEvent) -> None:
        for subscription in self._subscriptions:
            subscription.offer(event)

    def _close(self) -> None:
        self._closed = True
        for subscription in self._subscriptions:
            subscription.send.close()


class _Listener(zeroconf.ServiceListener):
    """Runs on zeroconf's browser thread: resolves there, then hands results to trio."""

    def __init__(self, browser: Browser, token: trio.lowlevel.TrioToken) -> None:
        self._browser = browser
        self._token = token
        self.closing = False

    def add_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        self._resolve(zc, type_, name)

    def update_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        self._resolve(zc, type_, name)

    def remove_service(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        self._to_trio(self._browser._removed, _instance_name(name, type_))

    def _resolve(self, zc: zeroconf.Zeroconf, type_: str, name: str) -> None:
        if self.closing:
            return
        try:
            # Answers from the cache at once; asks the network only for what is missing.
            info = zc.get_service_info(type_, name, timeout=int(RESOLVE_TIMEOUT * 1000))
        except Exception:
            # An exception here would end zeroconf's browser thread, and every later event.
            log.warning("resolving %s failed", name, exc_info=True)
            return
        if info is None or info.port is None:
            log.debug("could not resolve %s within %.1f s", name, RESOLVE_TIMEOUT)
            return
        self._to_trio(self._browser._resolved, _from_zeroconf(info))

    def _to_trio(self, fn: Callable[[_T], None], arg: _T) -> None:
        if self.closing:
            return
        try:
            trio.from_thread.run_sync(fn, arg, trio_token=self._token)
        except trio.RunFinishedError:
            self.closing = True


@asynccontextmanager
async def browse(
    service_type: str, *, interfaces: Sequence[str] | None = None
) -> AsyncIterator[Browser]:
    """Watch ``service_type`` on the LAN for as long as the context is open.

    ``interfaces`` are the IPv4 addresses of the interfaces to listen on (default: all).
    """
    browser = Browser(service_type)
    listener = _Listener(browser, trio.lowlevel.current_trio_token())

    def start() -> tuple[zeroconf.Zeroconf, zeroconf.ServiceBrowser]:
        zc = _acquire(interfaces)
        try:
            return zc, zeroconf.ServiceBrowser(zc, service_type, listener=listener)
        except BaseException:
            _release(zc)
            raise

    zc, service_browser = await blocking.run_sync(start, waits=True)
    try:
        yield browser
    finally:
        listener.closing = True
        browser._close()
        with trio.CancelScope(shield=True):
            await blocking.run_sync(_stop_browsing, zc, service_browser, waits=True)


async def find_one(
    service_type: str,
    *,
    timeout: float,
    interfaces: Sequence[str] | None = None,
) -> ServiceInfo | None:
    """The first service of ``service_type`` resolved within ``timeout`` seconds, or None."""
    async with browse(service_type, interfaces=interfaces) as browser:
        with trio.move_on_after(timeout):
            async with aclosing(browser.events()) as events:
                async for event in events:
                    if isinstance(event, Added):
                        return event.info
    return None


# --- helpers


@dataclass(eq=False)
class _Shared:
    zc: zeroconf.Zeroconf
    users: int


_shared: dict[tuple[str, ...] | None, _Shared] = {}
_shared_lock = threading.Lock()  # taken in worker threads, never in trio


def _acquire(interfaces: Sequence[str] | None) -> zeroconf.Zeroconf:
    # One Zeroconf per process (per interface choice), as python-zeroconf recommends: every
    # instance binds port 5353 with SO_REUSEPORT, and the kernel hands each unicast reply
    # (probe defences, QU answers) to just one of them, which may not be the one that asked.
    key = None if interfaces is None else tuple(interfaces)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None:
            choice: zeroconf.InterfaceChoice | list[str] = (
                zeroconf.InterfaceChoice.All if interfaces is None else list(interfaces)
            )
            # use_asyncio=False: zeroconf's own loop thread, never a loop a caller runs.
            zc = zeroconf.Zeroconf(interfaces=choice, use_asyncio=False)
            shared = _shared[key] = _Shared(zc, 0)
        shared.users += 1
        return shared.zc


def _release(zc: zeroconf.Zeroconf) -> None:
    with _shared_lock:
        for key, shared in _shared.items():
            if shared.zc is zc:
                shared.users -= 1
                if shared.users:
                    return
                del _shared[key]
                break
    zc.close()


def _register(zc: zeroconf.Zeroconf, info: zeroconf.ServiceInfo) -> None:
    instance = info.get_name()
    for number in range(2, 100):
        try:
            zc.register_service(info, allow_name_change=True)  # renames on conflicts it sees
            return
        except zeroconf.ServiceNameAlreadyRegistered:
            # Taken by this process's own, not yet announced, registration: probing would
            # not see it.
            info.name = f"{instance}-{number}.{info.type}"
    raise zeroconf.NonUniqueNameException(instance)


def _unregister(zc: zeroconf.Zeroconf, info: zeroconf.ServiceInfo) -> None:
    # zc.unregister_service() returns before the goodbyes go out; wait for them.
    async def goodbye() -> None:
        await (await zc.async_unregister_service(info))

    assert zc.loop is not None
    try:
        asyncio.run_coroutine_threadsafe(goodbye(), zc.loop).result(GOODBYE_TIMEOUT)
    except Exception:
        log.warning("mDNS goodbye for %s failed", info.name, exc_info=True)


def _stop_browsing(zc: zeroconf.Zeroconf, service_browser: zeroconf.ServiceBrowser) -> None:
    try:
        service_browser.cancel()  # joins the callback thread (after any resolve in progress)
    finally:
        _release(zc)


def _zeroconf_info(
    service_type: str,
    name: str,
    *,
    port: int,
    properties: Mapping[str, str | None],
    addresses: Sequence[str],
    server: str,
) -> zeroconf.ServiceInfo:
    return zeroconf.ServiceInfo(
        service_type,
        f"{name}.{service_type}",
        port=port,
        properties={key: value for key, value in properties.items()},
        server=server,
        host_ttl=SERVICE_TTL,
        other_ttl=SERVICE_TTL,
        parsed_addresses=list(addresses),
    )


def _from_zeroconf(info: zeroconf.ServiceInfo) -> ServiceInfo:
    properties: dict[str, str] = {}
    for key, value in info.decoded_properties.items():
        properties.setdefault(key.lower(), value or "")  # RFC 6763 6.4: the first one counts
    return ServiceInfo(
        type=info.type,
        name=_instance_name(info.name, info.type),
        host=info.server,
        addresses=_sorted_addresses(info.parsed_addresses()),
        port=_port(info),
        properties=properties,
    )


def _sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    # zeroconf lists the most recently seen address first; a stable order keeps a service that
    # merely re-announced from looking changed.
    parsed = {ipaddress.ip_address(a) for a in addresses}
    return tuple(str(a) for a in sorted(parsed, key=lambda a: (a.version, int(a))))


def _instance_name(full_name: str, service_type: str) -> str:
    suffix = "." + service_type
    if full_name.lower().endswith(suffix.lower()):
        return full_name[: -len(suffix)]
    return full_name


def _port(info: zeroconf.ServiceInfo) -> int:
    if info.port is None:
        raise ValueError(f"{info.name} has no port")
    return info.port


def _server(info: zeroconf.ServiceInfo) -> str:
    if info.server is None:
        raise ValueError(f"{info.name} has no host name")
    return info.server


@functools.cache
def _host_name(addresses: tuple[str, ...]) -> str:
    # One per process and address set, never the system host name alone: hosts that share a
    # name (network namespaces, cloned SD cards) must not answer for each other's A records.
    label = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:40]
    return f"{label or 'cadenza'}-{secrets.token_hex(3)}.local."


def _drain(receive: trio.MemoryReceiveChannel[BrowseEvent]) -> None:
    while True:
        try:
            receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


def _difference(
    told: Mapping[str, ServiceInfo], now: Mapping[str, ServiceInfo]
) -> list[BrowseEvent]:
    events: list[BrowseEvent] = [Removed(name) for name in told if name not in now]
    for name, info in now.items():
        if name not in told:
            events.append(Added(info))
        elif told[name] != info:
            events.append(Updated(info))
    return events


def _apply(view: dict[str, ServiceInfo], event: BrowseEvent) -> None:
    if isinstance(event, Removed):
        view.pop(event.name, None)
    else:
        view[event.info.name] = event.info
