"""Finding access points: RFC 2782 ordering, configured addresses, a real DNS server on
127.0.0.1 answering SRV/A/AAAA queries, and mDNS on loopback."""

from __future__ import annotations

import itertools
import logging
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from cadenza.net import mdns
from cadenza.session.discovery import Endpoint, SrvRecord, find_access_points, order_srv
from cadenza.system.config import HostPort

DOMAIN = "cadenza.test"
SRV_NAME = f"_cadenza-ap._tcp.{DOMAIN}."

Zone = Mapping[tuple[str, str], Sequence[str]]


# --- RFC 2782 ordering (pure)


def srv(priority: int, weight: int, target: str, port: int = 4070) -> SrvRecord:
    return SrvRecord(priority, weight, port, target)


def test_lower_priority_always_comes_first() -> None:
    records = [srv(20, 100, "c"), srv(10, 0, "a"), srv(30, 5, "d"), srv(10, 0, "b")]
    for seed in range(50):
        ordered = order_srv(records, random.Random(seed))
        assert [r.priority for r in ordered] == [10, 10, 20, 30]
        assert {r.target for r in ordered[:2]} == {"a", "b"}


def test_weight_sets_the_chance_of_going_first() -> None:
    rng = random.Random(2782)
    records = [srv(10, 1, "light"), srv(10, 3, "heavy"), srv(10, 0, "zero")]
    trials = 20_000
    first = Counter(order_srv(records, rng)[0].target for _ in range(trials))
    # RFC 2782: pick uniformly in 0..4 over the running sums zero 0, light 1, heavy 4.
    assert first["heavy"] / trials == pytest.approx(3 / 5, abs=0.02)
    assert first["light"] / trials == pytest.approx(1 / 5, abs=0.02)
    assert first["zero"] / trials == pytest.approx(1 / 5, abs=0.02)


def test_zero_weight_is_rarely_first_among_heavy_records() -> None:
    rng = random.Random(1)
    records = [srv(1, 0, "zero"), srv(1, 99, "heavy")]
    first = Counter(order_srv(records, rng)[0].target for _ in range(10_000))
    assert first["zero"] / 10_000 == pytest.approx(1 / 100, abs=0.005)


def test_order_is_deterministic_given_the_seed() -> None:
    records = [srv(1, w, f"t{w}") for w in range(10)]
    assert order_srv(records, random.Random(7)) == order_srv(records, random.Random(7))


@given(
    st.lists(
        st.builds(
            SrvRecord,
            st.integers(0, 3),
            st.integers(0, 5),
            st.integers(1, 65535),
            st.text("abc", min_size=1, max_size=3),
        ),
        max_size=12,
    ),
    st.integers(),
)
def test_order_is_a_permutation_sorted_by_priority(records: list[SrvRecord], seed: int) -> None:
    ordered = order_srv(records, random.Random(seed))
    assert sorted(ordered, key=repr) == sorted(records, key=repr)
    assert [r.priority for r in ordered] == sorted(r.priority for r in records)


# --- configured addresses


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ap.example.org:4444", Endpoint("ap.example.org", 4444, "config")),
        ("ap.example.org", Endpoint("ap.example.org", 4070, "config")),
        ("[2001:db8::5]:4071", Endpoint("2001:db8::5", 4071, "config")),
        ("[::1]", Endpoint("::1", 4070, "config")),
        (HostPort("192.0.2.1", 1), Endpoint("192.0.2.1", 1, "config")),
    ],
)
async def test_configured_address(address: HostPort | str, expected: Endpoint) -> None:
    assert await find_access_points(address, use_mdns=False) == [expected]


def test_endpoint_prints_as_an_address() -> None:
    assert str(Endpoint("2001:db8::5", 4071, "srv")) == "[2001:db8::5]:4071"
    assert str(Endpoint("10.0.0.1", 4070, "a")) == "10.0.0.1:4070"


async def test_nothing_configured_finds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cadenza.session.discovery")
    assert await find_access_points(None, None, use_mdns=False) == []
    assert "no access point found: no address configured; no domain configured; mDNS off" in (
        caplog.text
    )


# --- a real DNS server on 127.0.0.1


class DnsServer:
    def __init__(self, zone: Zone, *, answer: bool) -> None:
        self.zone = {
            (dns.name.from_text(name), dns.rdatatype.from_text(rdtype)): records
            for (name, rdtype), records in zone.items()
        }
        self.names = {name for name, _ in self.zone}
        self.answer = answer
        self.questions: list[tuple[str, str]] = []
        self.socket = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with self.socket:
            await self.socket.bind(("127.0.0.1", 0))
            task_status.started(self.socket.getsockname()[1])
            while True:
                data, peer = await self.socket.recvfrom(4096)
                query = dns.message.from_wire(data)
                question = query.question[0]
                self.questions.append((question.name.to_text(), question.rdtype.name))
                if not self.answer:
                    continue
                response = dns.message.make_response(query)
                response.flags |= dns.flags.AA
                records = self.zone.get((question.name, question.rdtype))
                if records:
                    response.answer.append(
                        dns.rrset.from_text_list(
                            question.name, 300, dns.rdataclass.IN, question.rdtype, records
                        )
                    )
                elif question.name not in self.names:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                await self.socket.sendto(response.to_wire(), peer)


@asynccontextmanager
async def dns_server(
    zone: Zone, *, answer: bool = True
) -> AsyncIterator[tuple[DnsServer, dns.asyncresolver.Resolver]]:
    """An authoritative server for ``zone`` on 127.0.0.1 and a resolver that asks only it."""
    server = DnsServer(zone, answer=answer)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        resolver.lifetime = 5.0
        yield server, resolver
        nursery.cancel_scope.cancel()


ZONE: Zone = {
    (SRV_NAME, "SRV"): [
        f"20 0 4072 backup.{DOMAIN}.",
        f"10 60 4070 ap1.{DOMAIN}.",
        f"10 40 4071 ap2.{DOMAIN}.",
        f"30 0 4070 nowhere.{DOMAIN}.",
    ],
    (f"ap1.{DOMAIN}.", "A"): ["192.0.2.1", "192.0.2.11"],
    (f"ap1.{DOMAIN}.", "AAAA"): ["2001:db8::1"],
    (f"ap2.{DOMAIN}.", "AAAA"): ["2001:db8::2"],
    (f"backup.{DOMAIN}.", "A"): ["192.0.2.3"],
    (f"ap.{DOMAIN}.", "A"): ["192.0.2.99"],  # not used while SRV records exist
}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_srv_records_in_rfc_2782_order_with_their_addresses(seed: int) -> None:
    async with dns_server(ZONE) as (server, resolver):
        found = await find_access_points(
            None, DOMAIN, use_mdns=False, resolver=resolver, rng=random.Random(seed)
        )

    first_two = [
        r.target for r in order_srv([srv(10, 60, "ap1"), srv(10, 40, "ap2")], random.Random(seed))
    ]
    # Per target: its IPv4 addresses, then its IPv6 ones, each family in the server's order.
    by_target = {
        "ap1": [
            ("ap1", False, 4070, {"192.0.2.1", "192.0.2.11"}),
            ("ap1", True, 4070, {"2001:db8::1"}),
        ],
        "ap2": [("ap2", True, 4071, {"2001:db8::2"})],
    }
    expected = [
        *by_target[first_two[0]],
        *by_target[first_two[1]],
        ("backup", False, 4072, {"192.0.2.3"}),
        # DNS cannot resolve it: left to the system resolver, by name.
        ("nowhere", False, 4070, {f"nowhere.{DOMAIN}"}),
    ]
    grouped = []
    for (name, v6), group in itertools.groupby(found, key=lambda e: (e.name, ":" in e.host)):
        endpoints = list(group)
        assert {e.source for e in endpoints} == {"srv"}
        (port,) = {e.port for e in endpoints}
        grouped.append(
            (str(name).removesuffix(f".{DOMAIN}"), v6, port, {e.host for e in endpoints})
        )
    assert grouped == expected
    assert (f"ap.{DOMAIN}.", "A") not in server.questions


async def test_both_orders_of_equal_priority_happen() -> None:
    seen = set()
    async with dns_server(ZONE) as (_, resolver):
        for seed in range(20):
            found = await find_access_points(
                None, DOMAIN, use_mdns=False, resolver=resolver, rng=random.Random(seed)
            )
            seen.add(found[0].name)
    assert seen == {f"ap1.{DOMAIN}", f"ap2.{DOMAIN}"}


async def test_without_srv_the_a_and_aaaa_records_of_ap_on_the_default_port() -> None:
    zone: Zone = {
        (f"ap.{DOMAIN}.", "A"): ["192.0.2.50"],
        (f"ap.{DOMAIN}.", "AAAA"): ["2001:db8::50"],
    }
    async with dns_server(zone) as (server, resolver):
        found = await find_access_points(None, DOMAIN, use_mdns=False, resolver=resolver)
    assert found == [
        Endpoint("192.0.2.50", 4070, "a", name=f"ap.{DOMAIN}"),
        Endpoint("2001:db8::50", 4070, "a", name=f"ap.{DOMAIN}"),
    ]
    assert server.questions[0] == (SRV_NAME, "SRV")


async def test_configured_address_comes_first_and_duplicates_go() -> None:
    async with dns_server(ZONE) as (_, resolver):
        found = await find_access_points(
            "192.0.2.3:4072", DOMAIN, use_mdns=False, resolver=resolver, rng=random.Random(1)
        )
    assert found[0] == Endpoint("192.0.2.3", 4072, "config")
    assert [e.host for e in found].count("192.0.2.3") == 1
    assert [e.source for e in found] == ["config"] + ["srv"] * (len(found) - 1)


async def test_nothing_in_dns_gives_an_empty_list_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cadenza.session.discovery")
    async with dns_server({}) as (server, resolver):
        found = await find_access_points(None, DOMAIN, use_mdns=False, resolver=resolver)
    assert found == []
    assert {q for q in server.questions} == {
        (SRV_NAME, "SRV"),
        (f"ap.{DOMAIN}.", "A"),
        (f"ap.{DOMAIN}.", "AAAA"),
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no access point found: no address configured; no SRV record"
        f" {SRV_NAME} and no A/AAAA record for ap.{DOMAIN}; mDNS off"
    ]


async def test_a_dot_target_means_no_service_here() -> None:
    zone: Zone = {(SRV_NAME, "SRV"): ["0 0 0 ."], (f"ap.{DOMAIN}.", "A"): ["192.0.2.50"]}
    async with dns_server(zone) as (server, resolver):
        found = await find_access_points(None, DOMAIN, use_mdns=False, resolver=resolver)
    assert found == []
    assert server.questions == [(SRV_NAME, "SRV")]


async def test_a_silent_dns_server_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cadenza.session.discovery")
    async with dns_server({}, answer=False) as (_, resolver):
        resolver.lifetime = 0.3
        found = await find_access_points("192.0.2.7", DOMAIN, use_mdns=False, resolver=resolver)
    assert found == [Endpoint("192.0.2.7", 4070, "config")]
    assert f"DNS lookup of {SRV_NAME} SRV failed" in caplog.text


# --- mDNS on loopback (real python-zeroconf)

LOOPBACK = ["127.0.0.1"]
WAIT = 30.0


async def test_mdns_access_point_with_its_fingerprint_comes_last() -> None:
    # A service type of our own: other tests on this machine's loopback stay out of it.
    service_type = f"_cdz-{secrets.token_hex(3)}._tcp.local."
    fp = "3f2a:91c0:0000:1111:2222:3333:4444:5555"
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: mdns.advertise(
                service_type,
                "Central",
                4075,
                {"fp": fp, "proto": "1"},
                addresses=LOOPBACK,
                interfaces=LOOPBACK,
                task_status=task_status,
            )
        )
        found = await find_access_points(
            "192.0.2.7:4070",
            use_mdns=True,
            mdns_timeout=WAIT,
            mdns_service_type=service_type,
            mdns_interfaces=LOOPBACK,
        )
        nursery.cancel_scope.cancel()
    assert found == [
        Endpoint("192.0.2.7", 4070, "config"),
        Endpoint("127.0.0.1", 4075, "mdns", fingerprint=fp, name="Central"),
    ]


async def test_mdns_finds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cadenza.session.discovery")
    service_type = f"_cdz-{secrets.token_hex(3)}._tcp.local."
    found = await find_access_points(
        mdns_timeout=0.5, mdns_service_type=service_type, mdns_interfaces=LOOPBACK
    )
    assert found == []
    assert f"no {service_type} on the LAN within 0.5 s" in caplog.text
