"""The access point's turns for password logins: one at a time per key, in order, bounded."""

from __future__ import annotations

import trio
import trio.testing

from cadenza.service.access_point import Turns


async def test_logins_sharing_a_key_take_turns_and_others_go_at_once() -> None:
    turns = Turns(max_waiting=8)
    order: list[str] = []

    async def login(name: str, keys: tuple[str, ...]) -> None:
        async with turns.take(keys) as granted:
            assert granted
            order.append(f"{name} in")
            await trio.sleep(0.1)
            order.append(f"{name} out")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(login, "a", ("addr:1", "user:alice"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(login, "b", ("addr:2", "user:alice"))  # same account: waits
        nursery.start_soon(login, "c", ("addr:3", "user:bob"))  # nothing shared: goes
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a in", "c in"]
    assert order.index("b in") > order.index("a out")
    assert turns._locks == {}  # nothing kept once everyone is done


async def test_past_the_waiting_bound_a_login_is_turned_away_at_once() -> None:
    turns = Turns(max_waiting=2)
    answers: list[bool] = []

    async def login() -> None:
        async with turns.take(("addr:1", "user:alice")) as granted:
            answers.append(granted)
            if granted:
                await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(login)
            await trio.testing.wait_all_tasks_blocked()
    # The first holds the turn, two wait, the fourth and fifth are turned away at once; the
    # two that waited get their turns after.
    assert answers == [True, False, False, True, True]
