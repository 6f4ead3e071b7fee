"""The speaker's controller (Speaker.execute and the starts it opens) driving a real speaker:
session, streams and the simulator's sink player against the real access point over the
simulated network, on the simulator's virtual clock (as test_sim_speaker.py). What a newer
decision does to a start still waiting, what "next" does at the end of the queue, and that a
command the speaker cannot carry out is refused with a CadenzaError and changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from cadenza import blocking, links
from cadenza.errors import BadPosition, BadRequest, CadenzaError, Conflict, UnknownLink
from cadenza.net import _transport
from cadenza.player.start_threshold import StartPolicy
from cadenza.sim.clock import VirtualClock
from cadenza.sim.net import SimTransport
from cadenza.sim.swarm import AP_PORT, SERVICE_HOST, Listener, Swarm, SwarmConfig
from cadenza.speaker import Prepared, Speaker, Status
from cadenza.speaker import commands as cmd

# Virtual seconds a body may take before it counts as hung.
BODY_DEADLINE = 600


def run_with_one_speaker(
    tmp_path: Path, body: Callable[[Swarm, Listener, Speaker], Awaitable[None]]
) -> None:
    config = SwarmConfig(speakers=1, hours=1, tracks=40, peers=False, warm_days=0, loss=0.0)
    swarm = Swarm(config, tmp_path)
    swarm.build()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(swarm.net.run)
            with _transport.use(SimTransport(swarm.net, SERVICE_HOST)):
                await nursery.start(swarm.ap.serve, SERVICE_HOST, AP_PORT)
            listener = swarm.listeners[0]
            with _transport.use(SimTransport(swarm.net, listener.name)):
                await listener.power_on(nursery)
                assert listener.speaker is not None
                with trio.fail_after(BODY_DEADLINE):  # a hang fails, on the virtual clock
                    await body(swarm, listener, listener.speaker)
            nursery.cancel_scope.cancel()

    blocking.run_inline()
    try:
        trio.run(main, clock=VirtualClock())
    finally:
        blocking.run_inline(False)
        swarm.db.close()


def long_tracks(swarm: Swarm, n: int, seconds: float = 150) -> list[str]:
    """Links of ``n`` different tracks of at least ``seconds``."""
    found = [swarm.uris[t.id] for t in swarm.catalogue.tracks if t.duration_s >= seconds][:n]
    assert len(found) == n
    return found


def watch_prepared(sp: Speaker, new: trio.Event | None = None) -> list[Prepared]:
    """Every stream the speaker starts from now on (the listener's observer still called);
    ``new`` is set at the first."""
    seen: list[Prepared] = []
    before = sp.on_prepared

    def on_prepared(p: Prepared) -> None:
        seen.append(p)
        if new is not None:
            new.set()
        if before is not None:
            before(p)

    sp.on_prepared = on_prepared
    return seen


class NeverSure(StartPolicy):
    """A start policy that never finds the risk low enough: a start waits for the first
    piece (as long as it can)."""

    def should_start(self, model: object, **kw: object) -> bool:
        return False


# --- (a) a newer decision supersedes a start still waiting ------------------------------------


def test_a_play_superseded_while_its_start_waits_returns_and_only_the_newer_track_plays(
    tmp_path: Path,
) -> None:
    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        assert listener.player is not None
        sp.policy = NeverSure()
        streaming = trio.Event()
        prepared = watch_prepared(sp, streaming)
        first_uri, second_uri = long_tracks(swarm, 2)
        first_returned: list[bool] = []

        async def first() -> None:
            await sp.play([first_uri])
            first_returned.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            # Until the first start has its stream (and so waits for enough audio).
            await streaming.wait()
            assert sp.status == Status.LOADING
            waiting = sp.current
            assert waiting is not None and waiting is prepared[0]
            assert waiting.track["uri"] == first_uri
            assert not waiting.buffer.complete and not waiting.buffer.closed
            assert not first_returned

            await sp.play([second_uri])

            # The first play() came back (it does not hang) without an error...
            assert first_returned == [True]
            # ... and its stream was cancelled: scope cancelled, buffer closed.
            assert waiting.scope.cancel_called
            assert waiting.buffer.closed
            fetched = waiting.buffer.contiguous_bytes

            # Only the second track is current and playing.
            cur = sp.current
            assert cur is not None and cur is not waiting
            assert cur.track["uri"] == second_uri
            assert sp.status == Status.PLAYING
            assert [t["uri"] for t in sp.queue] == [second_uri]
            assert sp.index == 0 and cur.index == 0
            assert sp.next is None

        await trio.sleep(10)
        assert sp.current is cur and sp.status == Status.PLAYING
        assert listener.player.state == "playing"
        assert sp.player.position_ms() > 5000
        # The player only ever started the second track; the first was never handed to it.
        assert sp.stats.start_keys == [cur.key]
        assert all(rec.key != waiting.key for rec in listener.player.finished)
        # Two streams in all, one per play; the first fetched nothing more once cancelled.
        assert [p.track["uri"] for p in prepared] == [first_uri, second_uri]
        assert waiting.buffer.contiguous_bytes == fetched
        assert not cur.buffer.closed

    run_with_one_speaker(tmp_path, body)


def test_a_play_superseded_while_its_stream_is_being_prepared_returns(tmp_path: Path) -> None:
    """The newer decision comes before the first start has a stream at all (its manifest is
    on the way): the first start ends, any stream it got is cancelled."""

    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        sp.policy = NeverSure()
        first_uri, second_uri = long_tracks(swarm, 2)
        await sp.add_to_queue([second_uri])
        second = sp.queue[0]
        prepared = watch_prepared(sp)
        first_returned: list[bool] = []

        async def first() -> None:
            await sp.play([first_uri])
            first_returned.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            while sp.status != Status.LOADING:
                await sp.wait_changed()
            assert sp.current is None  # the first start is preparing its stream
            assert [t["uri"] for t in sp.queue] == [first_uri]

            start = sp.execute(cmd.Play([second], 0))
            assert start is not None and start.index == 0
            assert sp.status == Status.LOADING and sp.queue[0] is second
            await sp._carry_out(start, raise_errors=True)

            assert first_returned == [True]
            cur = sp.current
            assert cur is not None and cur.track is second
            assert sp.status == Status.PLAYING

        await trio.sleep(10)
        assert sp.current is cur and sp.status == Status.PLAYING
        assert sp.stats.start_keys == [cur.key]
        stale = [p for p in prepared if p.track["uri"] == first_uri]
        assert all(p.buffer.closed and p.scope.cancel_called for p in stale)
        assert [p for p in prepared if p.track["uri"] == second_uri] == [cur]

    run_with_one_speaker(tmp_path, body)


# --- (c) next at the end of the queue ---------------------------------------------------------


@pytest.mark.parametrize(
    ("start_index", "mode", "expected"),
    [
        (1, "off", None),  # the end: stop
        (1, "one", None),  # a skip leaves repeat "one"; at the end it stops too
        (1, "all", 0),  # the end wraps to the first track
        (0, "one", 1),  # a skip, not a repeat
        (0, "off", 1),
    ],
)
def test_next(tmp_path: Path, start_index: int, mode: str, expected: int | None) -> None:
    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        assert listener.player is not None
        uris = long_tracks(swarm, 2)
        await sp.play(uris, start_index=start_index)
        await trio.sleep(2)
        playing = sp.current
        assert playing is not None and sp.status == Status.PLAYING
        assert sp.index == start_index
        queue = list(sp.queue)
        assert sp.execute(cmd.SetRepeat(mode)) is None
        assert sp.playlist.repeat == mode

        start = sp.execute(cmd.Next())

        assert playing.scope.cancel_called and playing.buffer.closed
        assert len(sp.queue) == 2 and all(a is b for a, b in zip(sp.queue, queue, strict=True))
        if expected is None:
            assert start is None
            assert status(sp) == Status.STOPPED
            assert sp.current is None and sp.next is None
            assert sp.index == start_index  # where it stopped
            assert listener.player.state == "stopped"
            await trio.sleep(10)  # and it stays stopped
            assert status(sp) == Status.STOPPED and sp.current is None
            assert sp.player.position_ms() == 0
            assert len(sp.stats.start_keys) == 1
        else:
            assert start is not None
            assert start.index == expected and start.position_ms == 0
            assert sp.index == expected
            assert status(sp) == Status.LOADING
            await sp._carry_out(start, raise_errors=True)
            cur = sp.current
            assert cur is not None and cur is not playing
            assert cur.track is sp.queue[expected]
            assert cur.track["uri"] == uris[expected]
            assert cur.index == expected and sp.index == expected
            assert status(sp) == Status.PLAYING
            await trio.sleep(5)
            assert sp.current is cur and status(sp) == Status.PLAYING
            assert sp.stats.start_keys[-1] == cur.key

    run_with_one_speaker(tmp_path, body)


# --- (d) the playing entry cannot be removed ---------------------------------------------------


def test_removing_the_playing_entry_is_a_conflict_and_changes_nothing(tmp_path: Path) -> None:
    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        uris = long_tracks(swarm, 3)
        await sp.play(uris, start_index=1)
        await trio.sleep(2)
        cur = sp.current
        assert cur is not None and sp.status == Status.PLAYING and sp.index == 1
        queue = list(sp.queue)

        with pytest.raises(Conflict) as info:
            await sp.remove_from_queue(1)
        assert info.value.http_status == 409
        with pytest.raises(Conflict):
            sp.execute(cmd.Remove(1))

        assert len(sp.queue) == 3 and all(a is b for a, b in zip(sp.queue, queue, strict=True))
        assert sp.index == 1 and sp.current is cur and cur.index == 1
        assert sp.status == Status.PLAYING
        assert not cur.buffer.closed and not cur.scope.cancel_called
        position = sp.player.position_ms()
        await trio.sleep(5)
        assert sp.current is cur and sp.player.position_ms() > position

        # An entry before it can go: the playing one moves up, and is still the current one.
        await sp.remove_from_queue(0)
        assert [t["uri"] for t in sp.queue] == uris[1:]
        assert sp.index == 0 and cur.index == 0 and sp.queue[0] is cur.track
        assert sp.current is cur and sp.status == Status.PLAYING

    run_with_one_speaker(tmp_path, body)


# --- (e) a wrong value is a CadenzaError, and changes nothing ---------------------------------


def status(sp: Speaker) -> Status:
    """The status now (a call, so that a type checker does not keep an earlier reading)."""
    return sp.status


def snapshot(sp: Speaker) -> dict[str, Any]:
    return {
        "queue": [id(t) for t in sp.queue],
        "index": sp.index,
        "status": sp.status,
        "current": sp.current,
        "next": sp.next,
        "repeat": sp.playlist.repeat,
        "shuffle": sp.playlist.shuffle,
        "volume": (sp.volume, sp.max_volume),
        "error": sp.error,
    }


async def refusals(
    sp: Speaker, cases: list[tuple[str, Callable[[], Any], type[CadenzaError]]]
) -> list[str]:
    """Run each case (a coroutine or a plain call); what went wrong, if anything."""
    wrong: list[str] = []
    for name, call, expected in cases:
        before = snapshot(sp)
        try:
            result = call()
            if isinstance(result, Awaitable):
                await result
        except CadenzaError as exc:
            if not isinstance(exc, expected):
                wrong.append(f"{name}: {type(exc).__name__} ({exc}), not {expected.__name__}")
        except Exception as exc:
            wrong.append(f"{name}: a bare {type(exc).__name__} ({exc})")
        else:
            wrong.append(f"{name}: accepted")
        if snapshot(sp) != before:
            wrong.append(f"{name}: changed the state")
    return wrong


def test_wrong_values_while_playing_are_cadenza_errors(tmp_path: Path) -> None:
    wrong: list[str] = []

    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        uris = long_tracks(swarm, 3)
        await sp.play(uris, start_index=1)
        await sp.set_repeat("all")
        assert sp.status == Status.PLAYING
        records = list(sp.queue)
        unknown = f"cadenza:track:{links.encode_id(1)}"
        artist = f"cadenza:artist:{links.encode_id(2)}"
        cases: list[tuple[str, Callable[[], Any], type[CadenzaError]]] = [
            ("play nothing", lambda: sp.play([]), UnknownLink),
            ("play not a link", lambda: sp.play(["spotify:track:abc"]), BadRequest),
            ("play a bad id", lambda: sp.play(["cadenza:track:short"]), BadRequest),
            ("play an unknown track", lambda: sp.play([unknown]), UnknownLink),
            ("play an artist", lambda: sp.play([artist]), UnknownLink),
            ("play past the end", lambda: sp.play([uris[0]], start_index=1), UnknownLink),
            ("play a negative index", lambda: sp.play(uris, start_index=-1), UnknownLink),
            ("queue not a link", lambda: sp.add_to_queue(["nope"]), BadRequest),
            ("queue an unknown track", lambda: sp.add_to_queue([unknown]), UnknownLink),
            ("move from past the end", lambda: sp.move_in_queue(3, 0), BadPosition),
            ("move past the end", lambda: sp.move_in_queue(0, 3), BadPosition),
            ("move from -1", lambda: sp.move_in_queue(-1, 0), BadPosition),
            ("move to -1", lambda: sp.move_in_queue(0, -1), BadPosition),
            ("remove past the end", lambda: sp.remove_from_queue(3), BadPosition),
            ("remove -1", lambda: sp.remove_from_queue(-1), BadPosition),
            ("remove the playing entry", lambda: sp.remove_from_queue(1), Conflict),
            ("repeat sometimes", lambda: sp.set_repeat("sometimes"), BadRequest),
            ("repeat ALL", lambda: sp.set_repeat("ALL"), BadRequest),
            ("execute Play []", lambda: sp.execute(cmd.Play([])), UnknownLink),
            ("execute Play at 3", lambda: sp.execute(cmd.Play(records, 3)), UnknownLink),
            ("execute Move", lambda: sp.execute(cmd.Move(0, 9)), BadPosition),
            ("execute Remove", lambda: sp.execute(cmd.Remove(9)), BadPosition),
            ("execute SetRepeat", lambda: sp.execute(cmd.SetRepeat("")), BadRequest),
        ]
        wrong.extend(await refusals(sp, cases))
        try:
            await sp.set_repeat("loop")
        except BadRequest as exc:
            assert exc.field == "repeat"
        # Still playing what it played.
        assert sp.status == Status.PLAYING and sp.index == 1 and sp.queue[1] is records[1]

    run_with_one_speaker(tmp_path, body)
    assert wrong == []


def test_wrong_values_with_nothing_queued_are_cadenza_errors(tmp_path: Path) -> None:
    wrong: list[str] = []

    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        assert sp.status == Status.STOPPED and sp.queue == [] and sp.index == -1
        cases: list[tuple[str, Callable[[], Any], type[CadenzaError]]] = [
            ("seek", lambda: sp.seek(1000), Conflict),
            ("previous", lambda: sp.previous_track(), Conflict),
            ("move", lambda: sp.move_in_queue(0, 0), BadPosition),
            ("remove", lambda: sp.remove_from_queue(0), BadPosition),
            ("play nothing", lambda: sp.play([]), UnknownLink),
            ("repeat", lambda: sp.set_repeat("forever"), BadRequest),
            ("execute Seek", lambda: sp.execute(cmd.Seek(0)), Conflict),
            ("execute Previous", lambda: sp.execute(cmd.Previous()), Conflict),
        ]
        wrong.extend(await refusals(sp, cases))
        # What is no command at all is a bug of the caller's, not a user's error.
        with pytest.raises(TypeError):
            sp.execute(cmd.Command())
        # "next" with nothing queued has nothing to refuse: it stops (it is stopped).
        assert sp.execute(cmd.Next()) is None
        assert sp.status == Status.STOPPED and sp.queue == [] and sp.index == -1

    run_with_one_speaker(tmp_path, body)
    assert wrong == []


# --- commands while a start is loading ---------------------------------------------------------


def test_a_pause_while_loading_holds_when_the_track_is_ready_and_resume_plays_it(
    tmp_path: Path,
) -> None:
    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        player = listener.player
        assert player is not None
        streaming = trio.Event()
        watch_prepared(sp, streaming)
        (uri,) = long_tracks(swarm, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sp.play, [uri])
            await streaming.wait()
            assert sp.status == Status.LOADING
            await sp.pause()
            assert sp.status == Status.PAUSED
        # The start has finished: the player has the track, paused; nothing has played.
        assert sp.current is not None and sp.current.track["uri"] == uri
        assert sp.status == Status.PAUSED and player.state == "paused"
        await trio.sleep(5)
        assert player.position_ms() == 0
        await sp.resume()
        assert sp.status == Status.PLAYING
        await trio.sleep(5)
        assert player.position_ms() > 0

    run_with_one_speaker(tmp_path, body)


def test_queue_edits_while_loading_keep_the_entry_being_started(tmp_path: Path) -> None:
    async def body(swarm: Swarm, listener: Listener, sp: Speaker) -> None:
        sp.policy = NeverSure()
        first, second, third = long_tracks(swarm, 3)
        starts: list[Any] = []

        async def play() -> None:
            await sp.play([first, second])
            starts.append(sp.current)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(play)
            while sp.status != Status.LOADING:  # the links resolved, the decision made
                await sp.wait_changed()
            assert sp.index == 0 and sp.current is None  # its stream is not there yet
            # Removing the entry being started is refused, as for the one playing.
            with pytest.raises(Conflict):
                await sp.remove_from_queue(0)
            # An entry queued before it: the one being started is still the one asked for.
            await sp.add_to_queue([third], 0)
            assert sp.index == 1 and sp.queue[1]["uri"] == first
            await sp.move_in_queue(1, 2)
            assert sp.index == 2 and sp.queue[2]["uri"] == first
        assert starts and starts[0] is not None and starts[0].track["uri"] == first
        assert sp.index == 2 and sp.current is not None and sp.current.index == 2

    run_with_one_speaker(tmp_path, body)
