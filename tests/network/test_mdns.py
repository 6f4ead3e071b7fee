"""cadenza.net.mdns against real python-zeroconf: on loopback, and across network namespaces.

mDNS timing varies (random probe delays, announcement intervals), so every test waits for the
event it needs with a generous deadline and never asserts how long anything took. Deadlines
stay well below SERVICE_TTL, so a removal seen in time can only come from a goodbye packet.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio

from cadenza.net import mdns
from netns import Lan, Netem, netem_unavailable_reason, requires_netns

WAIT = 30.0
"""Deadline for any one mDNS event; typical is well under 3 s, and far below SERVICE_TTL."""

assert WAIT * 2 < mdns.SERVICE_TTL

LOOPBACK = ["127.0.0.1"]


def unique_type() -> str:
    # Loopback is shared with every other test run on this machine: a type of our own keeps
    # their services out of our browsers.
    return f"_cdz-{secrets.token_hex(3)}._tcp.local."


async def next_event(
    events: AsyncIterator[mdns.BrowseEvent], wanted: Callable[[mdns.BrowseEvent], bool]
) -> mdns.BrowseEvent:
    with trio.fail_after(WAIT):
        async for event in events:
            if wanted(event):
                return event
    raise AssertionError("the browser closed")


def added(name: str) -> Callable[[mdns.BrowseEvent], bool]:
    return lambda e: isinstance(e, mdns.Added) and e.info.name == name


def removed(name: str) -> Callable[[mdns.BrowseEvent], bool]:
    return lambda e: isinstance(e, mdns.Removed) and e.name == name


@asynccontextmanager
async def advertising(
    nursery: trio.Nursery, service_type: str, name: str, port: int, properties: dict[str, str]
) -> AsyncIterator[tuple[mdns.Advertisement, trio.CancelScope]]:
    """Advertise on loopback in a task of its own; the scope ends it (goodbye)."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[mdns.Advertisement]) -> None:
        with scope:
            await mdns.advertise(
                service_type,
                name,
                port,
                properties,
                addresses=LOOPBACK,
                interfaces=LOOPBACK,
                task_status=task_status,
            )

    advertisement = await nursery.start(run)
    try:
        yield advertisement, scope
    finally:
        scope.cancel()


# --- in one process, on loopback


async def test_browser_sees_service_with_port_address_and_txt() -> None:
    service_type = unique_type()
    async with trio.open_nursery() as nursery:
        async with mdns.browse(service_type, interfaces=LOOPBACK) as browser:
            async with aclosing(browser.events()) as events:
                async with advertising(
                    nursery, service_type, "Kitchen", 4711, {"ID": "k1", "model": "pi4", "v": ""}
                ) as (ad, _):
                    assert ad.name == "Kitchen"
                    event = await next_event(events, added("Kitchen"))

    assert isinstance(event, mdns.Added)
    info = event.info
    assert info.type == service_type
    assert info.full_name == f"Kitchen.{service_type}"
    assert info.port == 4711
    assert info.addresses == ("127.0.0.1",)
    assert info.properties == {"id": "k1", "model": "pi4", "v": ""}
    assert info.host is not None and info.host.endswith(".local.")
    assert info == ad.info


async def test_txt_update_is_seen_and_cancel_says_goodbye() -> None:
    service_type = unique_type()
    async with trio.open_nursery() as nursery:
        async with mdns.browse(service_type, interfaces=LOOPBACK) as browser:
            async with aclosing(browser.events()) as events:
                async with advertising(nursery, service_type, "Lounge", 80, {"volume": "10"}) as (
                    ad,
                    scope,
                ):
                    await next_event(events, added("Lounge"))

                    await ad.update(properties={"volume": "55", "playing": "1"})
                    event = await next_event(
                        events, lambda e: isinstance(e, mdns.Updated) and e.info.name == "Lounge"
                    )
                    assert isinstance(event, mdns.Updated)
                    assert event.info.properties == {"volume": "55", "playing": "1"}
                    assert event.info.port == 80
                    assert browser.services["Lounge"] == event.info

                    scope.cancel()
                    await next_event(events, removed("Lounge"))
                    assert "Lounge" not in browser.services


async def test_rename_is_seen_as_remove_and_add() -> None:
    service_type = unique_type()
    async with trio.open_nursery() as nursery:
        async with mdns.browse(service_type, interfaces=LOOPBACK) as browser:
            async with aclosing(browser.events()) as events:
                async with advertising(nursery, service_type, "Den", 80, {"a": "1"}) as (ad, _):
                    await next_event(events, added("Den"))
                    await ad.update(name="Study")
                    assert ad.name == "Study"
                    seen = {
                        await next_event(events, lambda e: added("Study")(e) or removed("Den")(e))
                        for _ in range(2)
                    }
                    assert {type(e) for e in seen} == {mdns.Added, mdns.Removed}
                    assert set(browser.services) == {"Study"}
                    assert browser.services["Study"].properties == {"a": "1"}


async def test_name_conflict_gets_a_new_name() -> None:
    service_type = unique_type()
    async with trio.open_nursery() as nursery:
        async with mdns.browse(service_type, interfaces=LOOPBACK) as browser:
            async with aclosing(browser.events()) as events:
                async with advertising(nursery, service_type, "Hall", 1, {}) as (first, _):
                    async with advertising(nursery, service_type, "Hall", 2, {}) as (second, _):
                        assert first.name == "Hall"
                        assert second.name != "Hall"
                        assert second.name.startswith("Hall")
                        names = {first.name, second.name}
                        while set(browser.services) != names:
                            await next_event(events, lambda e: isinstance(e, mdns.Added))
                        assert browser.services[first.name].port == 1
                        assert browser.services[second.name].port == 2


async def test_late_browser_starts_with_what_exists_and_find_one() -> None:
    service_type = unique_type()
    async with trio.open_nursery() as nursery:
        async with advertising(nursery, service_type, "Attic", 9, {"k": "v"}):
            found = await mdns.find_one(service_type, timeout=WAIT, interfaces=LOOPBACK)
            assert found is not None
            assert (found.name, found.port, found.properties) == ("Attic", 9, {"k": "v"})

            async with mdns.browse(service_type, interfaces=LOOPBACK) as browser:
                async with aclosing(browser.events()) as events:
                    await next_event(events, added("Attic"))
                # A second stream begins with the current view.
                async with aclosing(browser.events()) as again:
                    first = await next_event(again, lambda e: True)
                    assert first == mdns.Added(browser.services["Attic"])


async def test_find_one_gives_none_when_nothing_answers() -> None:
    assert await mdns.find_one(unique_type(), timeout=1.0, interfaces=LOOPBACK) is None


def test_host_addresses_are_not_loopback_unless_nothing_else() -> None:
    addresses = mdns.host_addresses()
    assert addresses
    if addresses != [mdns.FALLBACK_ADDRESS]:
        assert not any(a.startswith("127.") for a in addresses)


# --- the event stream without the network


def fake_info(name: str, port: int = 1) -> mdns.ServiceInfo:
    return mdns.ServiceInfo("_t._tcp.local.", name, "h.local.", ("10.0.0.1",), port, {})


async def test_slow_consumer_resyncs_to_the_current_view() -> None:
    browser = mdns.Browser("_t._tcp.local.")
    browser._resolved(fake_info("gone"))
    async with aclosing(browser.events()) as events:
        assert await events.__anext__() == mdns.Added(fake_info("gone"))
        # Far more changes than the stream buffers, while nobody reads it.
        for n in range(mdns.EVENT_BUFFER * 3):
            browser._resolved(fake_info(f"s{n}"))
            browser._resolved(fake_info(f"s{n}", port=2))
        browser._removed("gone")
        browser._resolved(fake_info("s0", port=3))
        browser._removed("s1")

        view = {"gone": fake_info("gone")}
        while view != browser.services:
            with trio.fail_after(1):
                event = await events.__anext__()
            if isinstance(event, mdns.Removed):
                del view[event.name]
            else:
                assert isinstance(event, mdns.Added) == (event.info.name not in view)
                view[event.info.name] = event.info
        assert view["s0"].port == 3
        assert "s1" not in view

        browser._close()
        with pytest.raises(StopAsyncIteration):
            with trio.fail_after(1):
                await events.__anext__()


async def test_repeated_identical_answers_are_not_updates() -> None:
    browser = mdns.Browser("_t._tcp.local.")
    browser._resolved(fake_info("a"))
    async with aclosing(browser.events()) as events:
        assert await events.__anext__() == mdns.Added(fake_info("a"))
        browser._resolved(fake_info("a"))
        browser._resolved(fake_info("a", port=2))
        browser._resolved(fake_info("a", port=2))
        browser._removed("never-seen")
        browser._removed("a")
        browser._close()
        rest = [event async for event in events]
    assert rest == [mdns.Updated(fake_info("a", port=2)), mdns.Removed("a")]


# --- across network namespaces, one process per host

ADVERTISER = textwrap.dedent(
    """
    import json, signal, sys
    from functools import partial
    import trio
    from cadenza.net import mdns

    async def main(service_type, name, port, properties):
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                ad = await nursery.start(
                    partial(mdns.advertise, service_type, name, port, properties)
                )
                print(json.dumps({"name": ad.name, "addresses": ad.info.addresses}), flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
        print(json.dumps({"stopped": True}), flush=True)

    trio.run(main, *json.loads(sys.argv[1]))
    """
)

BROWSER = textwrap.dedent(
    """
    import json, sys
    import trio
    from cadenza.net import mdns

    async def main(service_type):
        async with mdns.browse(service_type) as browser:
            print(json.dumps({"event": "browsing"}), flush=True)
            async for event in browser.events():
                if isinstance(event, mdns.Removed):
                    out = {"event": "removed", "name": event.name}
                else:
                    out = {"event": type(event).__name__.lower(), **vars(event.info)}
                print(json.dumps(out), flush=True)

    trio.run(main, sys.argv[1])
    """
)


class JsonLines:
    """Reads one JSON object per line from a child's stdout."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self._buffer = bytearray()

    async def next(self, wanted: Callable[[dict[str, Any]], bool] = lambda _: True) -> Any:
        with trio.fail_after(WAIT):
            while True:
                line, newline, rest = self._buffer.partition(b"\n")
                if newline:
                    self._buffer = bytearray(rest)
                    message = json.loads(line)
                    if wanted(message):
                        return message
                    continue
                data = await self._stream.receive_some()
                if not data:
                    raise EOFError("the child exited")
                self._buffer += data


@asynccontextmanager
async def child(argv: list[str]) -> AsyncIterator[tuple[trio.Process, JsonLines]]:
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        yield process, JsonLines(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(2) as made:
        yield made


@pytest.fixture
def lan3() -> Iterator[Lan]:
    with Lan(3) as made:
        yield made


@pytest.fixture
def shaped_lan() -> Iterator[Lan]:
    reason = netem_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with Lan(2, netem=Netem(delay="40ms", rate="10mbit", loss="0.5%")) as made:
        yield made


async def see_service_cross_namespaces(lan: Lan) -> None:
    a, b = lan.hosts
    service_type = mdns.SPEAKER_SERVICE_TYPE
    properties = {"id": "3tXY", "name": "Kitchen", "model": "pi4", "api": "1", "path": "/api/v1"}
    args = json.dumps([service_type, "Kitchen", 4711, properties])

    async with child(b.argv([sys.executable, "-c", BROWSER, service_type])) as (_, browsing):
        await browsing.next(lambda m: m["event"] == "browsing")
        async with child(a.argv([sys.executable, "-c", ADVERTISER, args])) as (advertiser, out):
            started = await out.next()
            assert started == {"name": "Kitchen", "addresses": [a.address]}

            seen = await browsing.next(lambda m: m["event"] == "added")
            assert seen["name"] == "Kitchen"
            assert seen["type"] == service_type
            assert seen["port"] == 4711
            assert seen["addresses"] == [a.address]
            assert seen["properties"] == properties

            advertiser.send_signal(signal.SIGTERM)
            assert await out.next() == {"stopped": True}
            with trio.fail_after(WAIT):
                assert await advertiser.wait() == 0

            gone = await browsing.next(lambda m: m["event"] == "removed")
            assert gone["name"] == "Kitchen"


@pytest.mark.root
@pytest.mark.slow
@requires_netns
async def test_service_in_one_namespace_is_seen_and_removed_in_another(lan: Lan) -> None:
    await see_service_cross_namespaces(lan)


@pytest.mark.root
@pytest.mark.slow
@requires_netns
async def test_across_a_shaped_link(shaped_lan: Lan) -> None:
    await see_service_cross_namespaces(shaped_lan)


@pytest.mark.root
@pytest.mark.slow
@requires_netns
async def test_second_host_with_the_same_name_is_renamed(lan3: Lan) -> None:
    a, b, c = lan3.hosts
    service_type = mdns.PEER_SERVICE_TYPE
    args = json.dumps([service_type, "Kitchen", 4000, {}])
    async with child(c.argv([sys.executable, "-c", BROWSER, service_type])) as (_, browsing):
        await browsing.next(lambda m: m["event"] == "browsing")
        async with child(a.argv([sys.executable, "-c", ADVERTISER, args])) as (_, out_a):
            assert (await out_a.next())["name"] == "Kitchen"
            async with child(b.argv([sys.executable, "-c", ADVERTISER, args])) as (_, out_b):
                renamed = (await out_b.next())["name"]
                assert renamed != "Kitchen"
                assert renamed.startswith("Kitchen")

                where = {}
                while len(where) < 2:
                    seen = await browsing.next(lambda m: m["event"] == "added")
                    where[seen["name"]] = seen["addresses"]
                assert where == {"Kitchen": [a.address], renamed: [b.address]}
