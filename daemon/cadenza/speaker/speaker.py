"""The speaker's face: the commands as awaitable methods, its state for the API, its run.

:class:`Speaker` is the :class:`~cadenza.speaker.controller.Controller` with what the rest
of the daemon talks to: ``play`` and ``add_to_queue`` resolve links over the session
(:mod:`cadenza.speaker.tracks`) and hand a command to ``execute``; a start is carried out in
the caller's task, so a request answers once the player has the track. ``state()`` is what
``GET /api/v1/state`` shows.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from cadenza import links
from cadenza.errors import UnknownLink
from cadenza.player.player import Event
from cadenza.speaker import commands as cmd
from cadenza.speaker.controller import Controller, Status
from cadenza.speaker.playback import Stats
from cadenza.speaker.queue import Track
from cadenza.speaker.tracks import resolve, track_summary
from cadenza.system.config import StreamingConfig

# Below this much audio buffered ahead of the playhead, uploads to peers pause.
LOW_BUFFER_S = 3.0


class Speaker(Controller):
    """Session, streams, queue and player: :meth:`run` in a nursery, then the commands.

    The awaitable methods (``play``, ``pause``, ...) are the commands' front door: each
    hands its command to :meth:`execute` and, for a start, waits until the player has it."""

    # What the streams own, reachable from here (the daemon's reload, the simulator).
    overlay = property(lambda s: s.streams.overlay, lambda s, v: setattr(s.streams, "overlay", v))
    bitrate = property(lambda s: s.streams.bitrate, lambda s, v: setattr(s.streams, "bitrate", v))
    policy = property(lambda s: s.streams.policy, lambda s, v: setattr(s.streams, "policy", v))
    clock = property(lambda s: s.streams.clock, lambda s, v: setattr(s.streams, "clock", v))
    normalisation = property(
        lambda s: s.streams.normalisation, lambda s, v: setattr(s.streams, "normalisation", v)
    )
    on_prepared = property(
        lambda s: s.streams.on_prepared, lambda s, v: setattr(s.streams, "on_prepared", v)
    )
    on_streamed = property(
        lambda s: s.streams.on_streamed, lambda s, v: setattr(s.streams, "on_streamed", v)
    )

    @property
    def queue(self) -> list[Track]:
        return self.playlist.tracks

    @property
    def index(self) -> int:
        return self.playlist.index

    @property
    def stats(self) -> Stats:
        return self.streams.stats

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.streams.history

    def configure(self, streaming: StreamingConfig, *, bitrate: bool) -> None:
        """New ``[streaming]`` settings, from the next stream on (``bitrate``: its bitrate
        too, else one set over the API stands)."""
        self.streams.streaming = streaming
        self.streams.policy.target = streaming.stutter_target
        if bitrate:
            self.streams.bitrate = streaming.bitrate

    # --- lifecycle -------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Speaker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.player.set_volume(self.volume)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._tick)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self.player.stop()

    # --- the front door ----------------------------------------------------------------------

    async def play(self, uris: list[str], position_ms: int = 0, start_index: int = 0) -> None:
        """Replace the queue with ``uris`` (tracks; albums expand) and play the one at
        ``start_index`` (an album context starting at its third track: 2)."""
        tracks: list[Track] = []
        first_offset = position_ms
        for n, uri in enumerate(uris):
            link = links.parse(uri)
            if n == 0 and link.offset_ms is not None and not position_ms:
                first_offset = link.offset_ms
            tracks.extend(await self._resolve(link))
        if not tracks:
            raise UnknownLink(f"nothing to play in {uris}")
        await self._ask(cmd.Play(tracks, start_index, first_offset))

    async def add_to_queue(self, uris: list[str], position: int | None = None) -> None:
        """Insert tracks (albums expand) at ``position`` (default: the end)."""
        tracks: list[Track] = []
        for uri in uris:
            tracks.extend(await self._resolve(links.parse(uri)))
        await self._ask(cmd.Insert(tracks, position))

    async def next_track(self) -> None:
        await self._ask(cmd.Next())

    async def previous_track(self) -> None:
        await self._ask(cmd.Previous())

    async def pause(self) -> None:
        await self._ask(cmd.Pause())

    async def resume(self) -> None:
        await self._ask(cmd.Resume())

    async def seek(self, position_ms: int) -> None:
        await self._ask(cmd.Seek(position_ms))

    async def set_volume(self, volume: int | None, *, max_volume: int | None = None) -> None:
        await self._ask(cmd.SetVolume(volume, max_volume))

    async def set_repeat(self, mode: str) -> None:
        await self._ask(cmd.SetRepeat(mode))

    async def set_shuffle(self, on: bool) -> None:
        await self._ask(cmd.SetShuffle(on))

    async def move_in_queue(self, source: int, target: int) -> None:
        await self._ask(cmd.Move(source, target))

    async def remove_from_queue(self, index: int) -> None:
        await self._ask(cmd.Remove(index))

    async def clear_queue(self) -> None:
        """Remove everything but the track playing now."""
        await self._ask(cmd.Clear())

    async def _resolve(self, link: links.Link) -> list[Track]:
        return await resolve(self.session, self.known, link, offline=self.cache is not None)

    def submit(self, command: cmd.Command) -> None:
        """Carry out ``command`` without waiting for a start it opens (from code that
        cannot wait: a configuration reload)."""
        start = self.execute(command)
        if start is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._carry_out, start)

    async def _ask(self, command: cmd.Command) -> None:
        start = self.execute(command)
        if start is not None:
            await self._carry_out(start, raise_errors=True)

    def player_event(self, event: Event) -> None:
        """The player's event callback (runs on the player's thread; never blocks it)."""
        if trio.lowlevel.in_trio_task():  # a player on trio's thread (the simulator's sink)
            self._on_event(event)
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_event, event)

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        cur = self.current
        p2p = self.overlay.figures() if self.overlay is not None else None
        return {
            "status": self.status,
            "track": track_summary(cur.track) if cur else None,
            "position_ms": self.player.position_ms() if cur else 0,
            "volume": self.volume,
            "max_volume": self.max_volume,
            "shuffle": self.playlist.shuffle,
            "repeat": self.playlist.repeat,
            "index": self.playlist.index,
            "queue": [track_summary(t) for t in self.playlist.tracks],
            "bytes_by_source": dict(self.stats.bytes_by_source),
            "underruns": self.player.underruns,
            "bad_chunks": self.stats.bad_chunks,
            "traffic": self.streams.traffic(p2p),
            "tracks_streamed": list(self.history),
            "p2p": p2p,
            "start_latency_ms": self.stats.start_latencies_ms[-10:],
            "session": {
                "state": self.session.status.state.value,
                "access_point": self.session.status.access_point,
                "error": self.session.status.error,
                "user": self.session.status.user,
            },
            "error": self.error,
        }

    def traffic(self) -> dict[str, int]:
        return self.streams.traffic()

    def playback_buffer_low(self) -> bool:
        """Our own playback is about to starve: peers must not take our bandwidth now."""
        cur = self.current
        if cur is None or self.status != Status.PLAYING or cur.buffer.complete:
            return False
        bps = cur.stream.bytes_per_second
        playhead = int(self.player.position_ms() / 1000 * bps)
        return cur.buffer.contiguous_from(playhead) < LOW_BUFFER_S * bps

    async def wait_changed(self) -> None:
        await self._changed.wait()
