"""Finding the central service's access points.

In order (seed): the configured address; DNS SRV records ``_cadenza-ap._tcp.<domain>``
ordered by RFC 2782 (lowest priority first, weighted random within a priority), or when there
are none, the A/AAAA records of ``ap.<domain>`` on the default port; then an access point
advertised on the LAN as ``_cadenza-ap._tcp.local.``. :func:`find_access_points` returns every
candidate, in that order, each saying where it came from, and the session fails over between
them.

DNS goes through dnspython's async resolver on its trio backend; the names an SRV record
points at are resolved with the same resolver (IPv4 first: the session tries candidates one
after another, and a black-holed IPv6 route would cost a whole connect timeout). A target that
DNS cannot resolve is still returned by name, for the system resolver (``/etc/hosts``) to try.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.resolver
import trio

from cadenza import blocking
from cadenza.net import mdns
from cadenza.system.config import DEFAULT_AP_PORT, HostPort

log = logging.getLogger("cadenza.session.discovery")

SRV_SERVICE = "_cadenza-ap._tcp"
"""Prefixed to the configured domain for the SRV lookup."""

FALLBACK_HOST = "ap"
"""Without SRV records, ``ap.<domain>`` on :data:`DEFAULT_AP_PORT` (seed)."""

DNS_LIFETIME = 5.0
"""Seconds for one DNS lookup, retries included, when we make the resolver ourselves."""

MDNS_TIMEOUT = 3.0
"""Seconds to wait for an access point on the LAN: it answers within about a second if it
exists, and this bounds how long discovery takes when none does."""

Source = Literal["config", "srv", "a", "mdns"]


@dataclass(frozen=True)
class Endpoint:
    """One access point candidate.

    ``host`` is an IP address (or a host name DNS could not resolve) and ``port`` its port;
    ``source`` says where it came from; ``fingerprint`` is the key fingerprint it advertised
    (mDNS TXT ``fp``), None when unknown; ``name`` is the name it was found under (the SRV
    target, ``ap.<domain>``, the mDNS instance), for messages.
    """

    host: str
    port: int
    source: Source
    fingerprint: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        return str(HostPort(self.host, self.port))


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


async def find_access_points(
    address: HostPort | str | None = None,
    domain: str | None = None,
    *,
    use_mdns: bool = True,
    resolver: dns.asyncresolver.Resolver | None = None,
    rng: random.Random | None = None,
    mdns_timeout: float = MDNS_TIMEOUT,
    mdns_service_type: str = mdns.AP_SERVICE_TYPE,
    mdns_interfaces: Sequence[str] | None = None,
) -> list[Endpoint]:
    """Every access point candidate, best first, without duplicates (may be empty).

    ``address`` is the configured one (a ``HostPort``, or ``host:port`` text, the port
    defaulting to 4070); ``domain`` enables the DNS lookups; ``use_mdns`` the LAN browse.
    DNS and mDNS run at the same time, so this takes at most about ``mdns_timeout`` seconds
    (or the DNS lifetime). ``resolver`` defaults to one configured from ``/etc/resolv.conf``;
    ``rng`` orders SRV records of equal priority. Never raises for lookups that fail: they
    are logged, and what was found elsewhere is returned.
    """
    configured: list[Endpoint] = []
    if isinstance(address, str):
        address = HostPort.parse(address, default_port=DEFAULT_AP_PORT) if address else None
    if address is not None:
        configured.append(Endpoint(address.host, address.port, "config"))

    from_dns: list[Endpoint] = []
    from_mdns: list[Endpoint] = []
    # What each source did not find, for the message when nothing is found at all.
    dns_notes: list[str] = [] if domain else ["no domain configured"]
    mdns_notes: list[str] = [] if use_mdns else ["mDNS off"]

    async def look_up_dns(domain: str) -> None:
        from_dns.extend(await _from_dns(domain, resolver, rng or random.Random(), dns_notes))

    async def look_up_mdns() -> None:
        from_mdns.extend(
            await _from_mdns(mdns_service_type, mdns_timeout, mdns_interfaces, mdns_notes)
        )

    async with trio.open_nursery() as nursery:
        if domain:
            nursery.start_soon(look_up_dns, domain)
        if use_mdns:
            nursery.start_soon(look_up_mdns)

    found = _unique([*configured, *from_dns, *from_mdns])
    if found:
        log.info("access point candidates: %s", ", ".join(f"{e} ({e.source})" for e in found))
    else:
        notes = ([] if configured else ["no address configured"]) + dns_notes + mdns_notes
        log.warning("no access point found: %s", "; ".join(notes))
    return found


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within one, repeatedly pick at random with
    probability proportional to weight (weight-0 records first in the running sum, so they
    are rarely picked before the others).

    The result depends only on the set of records and ``rng``, not on the order they come in.
    """
    ordered: list[SrvRecord] = []
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    for priority in sorted(by_priority):
        remaining = sorted(
            by_priority[priority], key=lambda r: (r.weight > 0, r.target, r.port, r.weight)
        )
        while remaining:
            pick = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


# --- DNS


async def _from_dns(
    domain: str,
    resolver: dns.asyncresolver.Resolver | None,
    rng: random.Random,
    notes: list[str],
) -> list[Endpoint]:
    if resolver is None:
        try:
            resolver = await blocking.run_sync(dns.asyncresolver.Resolver)
        except dns.resolver.NoResolverConfiguration:
            log.warning("no DNS resolver configured (/etc/resolv.conf): not looking up %s", domain)
            notes.append("no DNS resolver configured")
            return []
        resolver.lifetime = DNS_LIFETIME

    srv_name = dns.name.from_text(f"{SRV_SERVICE}.{domain}")
    answer = await _resolve(resolver, srv_name, dns.rdatatype.SRV)
    records = [
        SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
        for r in answer
        if isinstance(r, dns.rdtypes.IN.SRV.SRV)
    ]
    if len(records) == 1 and records[0].target in ("", "."):
        # RFC 2782: a lone "." target says the service is decidedly not available here.
        log.info("%s says there is no access point in %s", srv_name, domain)
        notes.append(f"{srv_name} says there is none")
        return []
    if records:
        ordered = [r for r in order_srv(records, rng) if r.target not in ("", ".")]
        addresses = await _resolve_all(resolver, [r.target for r in ordered])
        endpoints: list[Endpoint] = []
        for record, found in zip(ordered, addresses, strict=True):
            for host in found or [record.target]:
                endpoints.append(Endpoint(host, record.port, "srv", name=record.target))
        return endpoints

    fallback = f"{FALLBACK_HOST}.{domain}"
    (found,) = await _resolve_all(resolver, [fallback])
    if not found:
        notes.append(f"no SRV record {srv_name} and no A/AAAA record for {fallback}")
    return [Endpoint(host, DEFAULT_AP_PORT, "a", name=fallback) for host in found]


async def _resolve_all(resolver: dns.asyncresolver.Resolver, names: list[str]) -> list[list[str]]:
    """The IPv4 then IPv6 addresses of each name, looked up concurrently."""
    results: list[list[list[str]]] = [[[], []] for _ in names]

    async def one(index: int, family: int, rdtype: dns.rdatatype.RdataType) -> None:
        answer = await _resolve(resolver, dns.name.from_text(names[index]), rdtype)
        results[index][family] = [
            r.address
            for r in answer
            if isinstance(r, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
        ]

    async with trio.open_nursery() as nursery:
        for index in range(len(names)):
            nursery.start_soon(one, index, 0, dns.rdatatype.A)
            nursery.start_soon(one, index, 1, dns.rdatatype.AAAA)
    return [v4 + v6 for v4, v6 in results]


async def _resolve(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> list[dns.rdata.Rdata]:
    try:
        answer = await resolver.resolve(
            name, rdtype, search=False, backend=dns.asyncbackend.get_backend("trio")
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        log.debug("no %s record for %s", rdtype.name, name)
        return []
    except dns.exception.DNSException as exc:
        log.warning("DNS lookup of %s %s failed: %s", name, rdtype.name, exc)
        return []
    return list(answer)


# --- mDNS


async def _from_mdns(
    service_type: str, wait: float, interfaces: Sequence[str] | None, notes: list[str]
) -> list[Endpoint]:
    try:
        info = await mdns.find_one(service_type, timeout=wait, interfaces=interfaces)
    except OSError as exc:  # no multicast-capable interface, port 5353 unusable, ...
        log.warning("cannot browse mDNS for %s: %s", service_type, exc)
        notes.append("mDNS unavailable")
        return []
    if info is None:
        notes.append(f"no {service_type} on the LAN within {wait:g} s")
        return []
    fp = info.properties.get("fp") or None
    return [Endpoint(a, info.port, "mdns", fingerprint=fp, name=info.name) for a in info.addresses]


def _unique(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    seen: set[tuple[str, int]] = set()
    unique: list[Endpoint] = []
    for endpoint in endpoints:
        key = (endpoint.host.lower(), endpoint.port)
        if key not in seen:
            seen.add(key)
            unique.append(endpoint)
    return unique
