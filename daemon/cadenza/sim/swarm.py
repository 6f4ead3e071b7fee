"""The swarm: a service and a population of speakers in one process, on trio's virtual clock.

Every speaker is the daemon's own code: :class:`~cadenza.session.client.Session`,
:class:`~cadenza.speaker.Speaker` (queue, start policy, prefetch),
:class:`~cadenza.stream.engine.FileStream` (scheduler, peer ranking, verification),
:class:`~cadenza.p2p.overlay.Overlay` (neighbours, tracker, 2-hop search, uploads), and the
service is the real :class:`~cadenza.service.access_point.AccessPoint` with its tracker,
accounts and catalogue (SQLite). What is replaced: sockets (:mod:`cadenza.sim.net`, through
:mod:`cadenza.net._transport`), the audio device (:mod:`cadenza.sim.sink`) and the disks
(:mod:`cadenza.sim.disk`: contents implicit, the cache policy real); blocking calls run inline
(:mod:`cadenza.blocking`) so that the virtual clock never jumps while a thread works.

A listener (:class:`Listener`, one per speaker) follows the speaker's plays from
:mod:`cadenza.sim.workload` through the speaker's own commands: a session starts with
``play`` of the track and what follows it in its album (so the speaker prefetches it, as it
would for a real album or playlist); a play that follows the sequence after a full listen
needs no command (the speaker goes on by itself, gaplessly if the prefetch made it); a skip is
``next``, a new choice is ``play``, the end of a session is ``pause``. Speakers switched off
between sessions (``standby_off_share``) leave the network and start afresh (new session,
new peer id, their cache kept).

Deterministic for a seed: the workload, the network, every key and id (the process's entropy
is seeded: :func:`seed_everything`), and trio's scheduler.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cadenza import blocking
from cadenza.net import _transport
from cadenza.p2p.overlay import Overlay, OverlayConfig
from cadenza.player.start_threshold import StartPolicy
from cadenza.protocol.manifest import ManifestSigner
from cadenza.protocol.noise import KeyPair
from cadenza.service.access_point import AccessPoint
from cadenza.service.accounts import Accounts
from cadenza.service.catalog import Catalog, FileRef
from cadenza.service.db import Database
from cadenza.service.playlists import Playlists
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.sim import workload as wl
from cadenza.sim.clock import VirtualClock, poll_io_seldom
from cadenza.sim.disk import Library, SimCache, SimStorage
from cadenza.sim.net import SimNetwork, SimTransport
from cadenza.sim.sink import SinkPlayer
from cadenza.speaker import Prepared, Speaker
from cadenza.system.config import DEFAULT_STUTTER_TARGET

log = logging.getLogger("cadenza.sim")

SERVICE_HOST = "service"
AP_PORT = 4070
P2P_PORT = 4080
MBIT = 1_000_000 / 8  # bytes/s
# The cyclic collector goes over the whole heap this often (simulated hours); hourly over
# what is new.
FULL_COLLECTION_H = 6


@dataclass(frozen=True)
class SwarmConfig:
    """A scenario. Bandwidths in Mbit/s as (value, weight) choices; latency one way, ms."""

    speakers: int = 1000
    hours: float = 24.0
    seed: int = 1
    tracks: int = 10_000
    peers: bool = True
    cache_mb: float = 2000.0
    warm_days: float = 7.0  # caches start with what each speaker played in as many days before
    mean_gap_h: float = 6.0  # idle time between a speaker's sessions
    diurnal_amplitude: float = 0.6
    standby_off_share: float = 0.25  # speakers switched off between sessions
    upload_mbit: tuple[tuple[float, float], ...] = ((1, 2), (5, 3), (10, 3), (20, 1), (40, 1))
    download_mbit: tuple[tuple[float, float], ...] = ((16, 2), (50, 4), (100, 3), (250, 1))
    latency_ms: tuple[float, float] = (5.0, 40.0)  # uniform
    loss: float = 0.001
    nat_share: float = 0.3  # cannot be dialled (no port mapping)
    service_latency_ms: float = 10.0
    max_neighbours: int = 20
    hard_max_neighbours: int = 30
    max_uploads: int = 4
    sample_s: float = 900.0  # the time series' step
    boot_spread_s: float = 300.0  # always-on speakers start within this at the beginning
    net_unit_kib: int = 64  # the simulated network's delivery unit (one Noise message)

    def workload_config(self) -> wl.WorkloadConfig:
        return wl.WorkloadConfig(
            speakers=self.speakers,
            tracks=self.tracks,
            duration_s=self.hours * 3600,
            mean_gap_s=self.mean_gap_h * 3600,
            diurnal_amplitude=self.diurnal_amplitude,
        )


# The simulated day's wall clock starts here (2027-01-15 08:00 UTC): ``time.time()`` is this
# plus trio's virtual clock, so certificates, bans and renewals follow simulated time.
EPOCH = 1_800_000_000.0


def seed_everything(seed: int) -> None:
    """Make this process's randomness and wall clock functions of ``seed`` and the virtual
    clock: ``os.urandom`` and the ``secrets`` module (ids, peer ids, pings), ``time.time``,
    trio's scheduler. Only for the simulator."""
    rng = random.Random(f"entropy/{seed}")

    def virtual_time() -> float:
        try:
            return EPOCH + trio.current_time()
        except RuntimeError:  # outside the run: building the swarm
            return EPOCH

    time.time = virtual_time

    def urandom(n: int) -> bytes:
        return rng.randbytes(n)

    os.urandom = urandom
    random._urandom = urandom  # type: ignore[attr-defined]  # secrets, SystemRandom
    import trio._core._run as run

    # Tasks woken together run in an order drawn from this generator; sorted first by their
    # creation (trio's own deterministic mode, as under Hypothesis), not by memory address.
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    run._r.seed(seed)


# --- what the run measures ----------------------------------------------------------------


@dataclass
class Figures:
    """Everything counted during a run (summed over speakers and their restarts)."""

    latencies_ms: list[float] = field(default_factory=list)  # plays started by a request
    latencies_streamed_ms: list[float] = field(default_factory=list)  # ... not from the cache
    plays: int = 0  # plays that began
    stuttered: int = 0  # plays with at least one underrun
    stalled_s: float = 0.0
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    played_network_bytes: int = 0  # of the bytes streamed (not cached), those played
    duplicate_bytes: int = 0
    wire_in: int = 0  # every byte received by speakers (service and peers)
    overlay_wire_in: int = 0  # ... on peer connections only
    wire_out: int = 0
    search_bytes: int = 0
    found_by: dict[str, int] = field(default_factory=dict)  # per streamed track
    streams: int = 0
    evictions: int = 0
    series: list[dict[str, float]] = field(default_factory=list)


class Listener:
    """One speaker and the person listening to it."""

    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        self.index = index
        self.name = f"s{index:04d}"
        self.cache = SimCache(swarm.library, int(swarm.config.cache_mb * 1e6))
        self.state_dir = swarm.tmp / self.name
        self.state_dir.mkdir()
        rng = random.Random(f"speaker/{swarm.config.seed}/{index}")
        self.static = KeyPair.from_private(rng.randbytes(32))
        self.np_seed = rng.randrange(2**32)
        self.off_in_standby = rng.random() < swarm.config.standby_off_share
        self.speaker: Speaker | None = None
        self.player: SinkPlayer | None = None
        self.overlay: Overlay | None = None
        # Wire in, wire out, search bytes, wire in from peers, of this speaker, counted so far.
        self._seen = (0, 0, 0, 0)
        self.scope: trio.CancelScope | None = None
        self.from_cache: dict[str, bool] = {}
        self.cached_at_start: dict[str, bool] = {}
        self.lab = False  # bench/p2p.py's listener: every play a `play` of that one track

    # --- the speaker's life ---

    async def power_on(self, nursery: trio.Nursery) -> None:
        sw = self.swarm
        sw.net.set_online(self.name, True)
        scope = trio.CancelScope()
        self.scope = scope
        with _transport.use(SimTransport(sw.net, self.name)):
            self.speaker = await nursery.start(self._run, scope)

    async def _run(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Speaker]) -> None:
        sw = self.swarm

        async def candidates() -> list[Endpoint]:
            return [Endpoint(SERVICE_HOST, AP_PORT, "config", None)]

        overlay: Overlay | None = None

        async def on_push(msg: Any) -> None:
            if overlay is not None:
                await overlay.on_push(msg)

        session = Session(
            static=self.static,
            state_dir=self.state_dir,
            candidates=candidates,
            credentials=Credentials("", "", self.name),
            on_push=on_push,
        )
        player = SinkPlayer(sw.workload.config.bitrate_bps / 8)
        speaker = Speaker(session=session, cache=self.cache, player=player)  # type: ignore[arg-type]
        speaker.clock = trio.current_time
        speaker.position_tick = None  # nobody watches the position: no wake-ups for it
        speaker.policy = StartPolicy(
            target=DEFAULT_STUTTER_TARGET, rng=np.random.default_rng(self.np_seed)
        )
        speaker.on_prepared = self._on_prepared
        speaker.on_streamed = self._on_streamed
        player.on_event = speaker.player_event
        if sw.config.peers:
            c = sw.config
            overlay = Overlay(
                session=session,
                cache=self.cache,  # type: ignore[arg-type]
                static=self.static,
                config=OverlayConfig(
                    port=P2P_PORT,
                    soft_max=c.max_neighbours,
                    hard_max=c.hard_max_neighbours,
                    max_uploads=c.max_uploads,
                    lan=False,
                ),
                buffer_low=speaker.playback_buffer_low,
            )
            speaker.overlay = overlay
        self.player, self.overlay, self._seen = player, overlay, (0, 0, 0, 0)
        with scope:
            async with trio.open_nursery() as nursery:
                if overlay is not None:
                    await nursery.start(overlay.run)
                await nursery.start(session.run)
                await nursery.start(player.run)
                await nursery.start(speaker.run)
                task_status.started(speaker)
                await trio.sleep_forever()

    def power_off(self) -> None:
        """Switch off: count what it did, leave the network (connections reset)."""
        self.collect()
        if self.scope is not None:
            self.scope.cancel()
        self.swarm.net.set_online(self.name, False)
        self.speaker = None

    def collect(self) -> None:
        """Add this speaker's traffic and finished plays to the figures (once each)."""
        sp, player = self.speaker, self.player
        if sp is None or player is None:
            return
        fig = self.swarm.figures
        player.finish_playing_record()  # a play still going counts up to now
        for rec in player.finished:
            self._count_play(rec)
        player.finished.clear()
        for key, ms in zip(sp.stats.start_keys, sp.stats.start_latencies_ms, strict=True):
            fig.latencies_ms.append(ms)
            if not self.cached_at_start.pop(key, False):
                fig.latencies_streamed_ms.append(ms)
        sp.stats.start_latencies_ms.clear()
        sp.stats.start_keys.clear()
        traffic = sp.traffic()
        ov = self.overlay
        search = ov.traffic.search_in + ov.traffic.search_out if ov is not None else 0
        overlay_in = ov.figures()["wire_in"] if ov is not None else 0
        seen = (traffic["wire_in"], traffic["wire_out"], search, overlay_in)
        fig.wire_in += seen[0] - self._seen[0]
        fig.wire_out += seen[1] - self._seen[1]
        fig.search_bytes += seen[2] - self._seen[2]
        fig.overlay_wire_in += seen[3] - self._seen[3]
        self._seen = seen
        fig.evictions += self.cache.evictions
        self.cache.evictions = 0

    def _count_play(self, rec: Any) -> None:
        fig = self.swarm.figures
        bps = self.swarm.workload.config.bitrate_bps / 8
        if rec.started_at is None or rec.end_byte < wl.MIN_LISTEN_S * bps:
            return  # never heard, or cut at once (the next track, as the session ended)
        fig.plays += 1
        if rec.underruns:
            fig.stuttered += 1
        fig.stalled_s += rec.stalled_s
        if not self.from_cache.pop(rec.key, True):
            fig.played_network_bytes += rec.end_byte

    def _on_prepared(self, p: Prepared) -> None:
        self.from_cache[p.key] = self.cached_at_start[p.key] = p.stream.stats.from_cache

    def _on_streamed(self, entry: dict[str, Any]) -> None:
        fig = self.swarm.figures
        for src, n in entry["bytes_by_source"].items():
            fig.bytes_by_source[src] = fig.bytes_by_source.get(src, 0) + n
        fig.duplicate_bytes += entry["duplicate_bytes"]
        if entry["bytes_by_source"].get("cache"):
            return
        fig.streams += 1
        mechs = set(entry["peers_found_by"])
        kind = (
            "tracker and search"
            if {"tracker", "search"} <= mechs
            else "tracker only"
            if "tracker" in mechs
            else "search only"
            if "search" in mechs
            else "none"
        )
        fig.found_by[kind] = fig.found_by.get(kind, 0) + 1

    # --- the listener ---

    async def listen(self, nursery: trio.Nursery) -> None:
        sw = self.swarm
        plays = sw.workload.plays[self.index]
        sessions = sw.workload.sessions[self.index]
        if not self.off_in_standby:
            await trio.sleep(sw.boot_rng.uniform(0, sw.config.boot_spread_s))  # not all at once
            await self.power_on(nursery)
        for s in sessions:
            await _sleep_until(s.start - (15 if self.off_in_standby else 0))
            if self.speaker is None:
                await self.power_on(nursery)
                await _sleep_until(s.start)
            for k in range(s.first, s.first + s.count):
                if self.lab:
                    await self._play_lab(plays[k])
                else:
                    await self._play(plays, k, k == s.first)
            if self.speaker is not None:
                await self.speaker.pause()
                if self.off_in_standby:
                    await trio.sleep(5)
                    self.power_off()
        await trio.sleep_forever()

    async def _play(self, plays: tuple[wl.Play, ...], k: int, first: bool) -> None:
        sw, sp = self.swarm, self.speaker
        assert sp is not None
        play = plays[k]
        uri = sw.uris[play.track]
        cur = sp.current.track.get("uri") if sp.current is not None else None
        try:
            if first or not play.sequential or cur is None:
                await sp.play(self._context(play.track))
            elif cur != uri:
                # The previous play was cut short (a skip, or it has not ended yet): next.
                await sp.next_track()
                cur = sp.current.track.get("uri") if sp.current is not None else None
                if cur != uri:
                    await sp.play(self._context(play.track))
            await self._queue_following(sp, play.track)
        except Exception as exc:  # the service unreachable, say: the listener tries the next
            log.info("%s: play %s failed: %s", self.name, uri, exc)
            await trio.sleep(play.listen)
            return
        # Listen for play.listen seconds of audio: wake when that much should have played.
        target_ms = play.listen * 1000
        while True:
            p = sp.current
            if p is None or p.track.get("uri") != uri or sp.status == "stopped":
                return  # it ended and the speaker moved on (or stopped)
            left = (target_ms - sp.player.position_ms()) / 1000
            if left <= 0.05:
                if play.skipped or k + 1 >= len(plays) or not plays[k + 1].sequential:
                    return
                await trio.sleep(0.5)  # a full listen: it ends and the next follows
                continue
            await trio.sleep(max(left, 0.05))

    async def _play_lab(self, play: wl.Play) -> None:
        """As bench/p2p.py: play the track alone, wait (60 s at most) for it to start, then
        let it play ``listen`` seconds or until it stops."""
        sp = self.speaker
        assert sp is not None
        try:
            await sp.play([self.swarm.uris[play.track]])
        except Exception as exc:
            log.info("%s: play failed: %s", self.name, exc)
            return
        with trio.move_on_after(60):
            while sp.status != "playing":  # noqa: ASYNC110 - polled, as bench/p2p.py does
                await trio.sleep(0.05)
        end = trio.current_time() + play.listen
        while trio.current_time() < end:
            await trio.sleep(min(1.0, end - trio.current_time()))
            if sp.status == "stopped":
                break

    async def _queue_following(self, sp: Speaker, track: int) -> None:
        """Keep the track that follows this one queued after it (an album or playlist goes
        on), so the speaker prefetches it and a full listen continues into it."""
        nxt = self.swarm.uris[self.swarm.catalogue.next_track(track)]
        if sp.index + 1 >= len(sp.queue) or sp.queue[sp.index + 1].get("uri") != nxt:
            await sp.add_to_queue([nxt], sp.index + 1)

    def _context(self, track: int) -> list[str]:
        sw = self.swarm
        nxt = sw.catalogue.next_track(track)
        return [sw.uris[track], sw.uris[nxt]]


async def _sleep_until(t: float) -> None:
    await trio.sleep_until(max(t, trio.current_time()))


# --- the swarm ----------------------------------------------------------------------------


class Swarm:
    def __init__(self, config: SwarmConfig, tmp: Path, workload: wl.Workload | None = None) -> None:
        self.config = config
        self.tmp = tmp
        self.workload = workload or wl.generate(config.workload_config(), config.seed)
        self.catalogue = self.workload.catalogue
        self.rng = random.Random(f"swarm/{config.seed}")
        self.boot_rng = random.Random(f"boot/{config.seed}")
        signing = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.library = Library(ManifestSigner(signing))
        self.db = Database(tmp / "service.db")
        self.accounts = Accounts(self.db)
        self.catalog = Catalog(self.db)
        self.uris: list[str] = []
        self.file_ids: list[str] = []
        self.figures = Figures()
        self.listeners: list[Listener] = []
        self.net = SimNetwork(random.Random(f"net/{config.seed}"), unit=config.net_unit_kib * 1024)
        self.ap = AccessPoint(
            static=KeyPair.from_private(self.rng.randbytes(32)),
            signing_key=signing,
            db=self.db,
            accounts=self.accounts,
            catalog=self.catalog,
            storage=SimStorage(self.library),  # type: ignore[arg-type]
            playlists=Playlists(self.db, self.catalog),
        )

    def build(self) -> None:
        """The catalogue into the service, the hosts onto the network, devices registered."""
        c = self.config
        bitrate = self.workload.config.bitrate_bps // 1000
        for t in self.catalogue.tracks:
            f = self.library.make(f"track/{t.id}", t.size)
            track = self.catalog.add_track(
                title=f"Track {t.id}",
                artists=[f"Artist {t.album % 1009}"],
                album=f"Album {t.album}",
                year=2010,
                disc=1,
                number=t.position + 1,
                duration_ms=round(t.duration_s * 1000),
                sample_rate=44100,
                channels=2,
                loudness_lufs=None,
                peak_dbfs=None,
                files=[FileRef(bitrate, f.file_id, f.size)],
                source_hash=f"sim-{t.id}",
            )
            self.uris.append(track.to_json()["uri"])
            self.file_ids.append(f.file_id)
        self.net.add_host(
            SERVICE_HOST,
            upload=math.inf,
            download=math.inf,
            latency_ms=c.service_latency_ms,
        )
        rng = random.Random(f"links/{c.seed}")
        self.accounts.add_user("swarm", "not-used-by-the-speakers")
        for i in range(c.speakers):
            up = _choose(rng, c.upload_mbit) * MBIT
            down = _choose(rng, c.download_mbit) * MBIT
            lat = rng.uniform(*c.latency_ms)
            nat = rng.random() < c.nat_share
            self.net.add_host(
                f"s{i:04d}", upload=up, download=down, latency_ms=lat, loss=c.loss, nat=nat
            )
            listener = Listener(self, i)
            # A registered device: its credential on its disk, as after its first login.
            _, credential = self.accounts.add_device("swarm", listener.name)
            (listener.state_dir / "device.credential").write_bytes(credential)
            self.net.set_online(listener.name, False)
            self.listeners.append(listener)
        self._warm()

    def _warm(self) -> None:
        """Fill the caches with what each speaker played in the days before (oldest first, so
        that the LRU order is right; the cache's capacity keeps the most recent)."""
        if self.config.warm_days <= 0:
            return
        for listener, plays in zip(
            self.listeners, wl.past_plays(self.workload, self.config.warm_days), strict=True
        ):
            for play in plays:
                listener.cache.warm(self.file_ids[play.track])
            listener.cache.evictions = 0

    async def run(self, progress: Callable[[float, Swarm], None] | None = None) -> None:
        poll_io_seldom()  # nothing here does I/O
        with _transport.use(_Nowhere()):  # a task that is on no host must not reach the internet
            await self._run(progress)

    async def _run(self, progress: Callable[[float, Swarm], None] | None) -> None:
        c = self.config
        end = c.hours * 3600
        async with trio.open_nursery() as nursery:
            await nursery.start(self.net.run)
            with _transport.use(SimTransport(self.net, SERVICE_HOST)):
                await nursery.start(self.ap.serve, SERVICE_HOST, AP_PORT)
            for listener in self.listeners:
                # The person's commands run the speaker's streams and dials: on its host.
                with _transport.use(SimTransport(self.net, listener.name)):
                    nursery.start_soon(listener.listen, nursery)
            nursery.start_soon(self._sample, progress)
            await trio.sleep_until(end)
            for listener in self.listeners:
                listener.collect()
            self._series_point()
            nursery.cancel_scope.cancel()

    async def _sample(self, progress: Callable[[float, Swarm], None] | None) -> None:
        step = self.config.sample_s
        while True:
            await trio.sleep(step)
            for listener in self.listeners:
                listener.collect()
            self._series_point()
            if progress is not None:
                progress(trio.current_time(), self)

    def _series_point(self) -> None:
        fig = self.figures
        now = round(trio.current_time(), 3)
        if fig.series and fig.series[-1]["t_s"] == now:
            return  # the sampler and the end of the run at the same instant
        point: dict[str, float] = {"t_s": now}
        for src in ("cache", "peer", "service"):
            point[src] = fig.bytes_by_source.get(src, 0)
        point["playing"] = sum(
            1 for li in self.listeners if li.speaker is not None and li.speaker.status == "playing"
        )
        point["online"] = sum(1 for li in self.listeners if li.speaker is not None)
        fig.series.append(point)


class _Nowhere:
    """The transport of tasks not started on a simulated host: connecting is a bug."""

    async def open_tcp_stream(self, host: str, port: int) -> Any:
        raise RuntimeError(f"simulator: a task on no host dialled {host}:{port}")

    async def open_tcp_listeners(self, port: int, host: str | None) -> Any:
        raise RuntimeError(f"simulator: a task on no host listened on port {port}")


def _choose(rng: random.Random, choices: tuple[tuple[float, float], ...]) -> float:
    values = [v for v, _ in choices]
    weights = [w for _, w in choices]
    return rng.choices(values, weights)[0]


# --- running a scenario ---------------------------------------------------------------------


def run_scenario(
    config: SwarmConfig,
    progress: Callable[[float, Swarm], None] | None = None,
) -> dict[str, Any]:
    """Build and run one scenario; its figures as a JSON-ready dict."""
    seed_everything(config.seed)
    blocking.run_inline()
    logging.getLogger("cadenza").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="cadenza-swarm-"))
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    try:
        swarm = Swarm(config, tmp)
        swarm.build()
        # What was built lives for the whole run: out of the collector's sight. The speakers
        # make no reference cycles while they run (tests/integration/test_swarm.py), only
        # when one is switched off (its objects call each other back): the collector runs
        # once a simulated hour over what was made since the last time (the young
        # generations; what survives goes to the old one), over the whole heap only every
        # FULL_COLLECTION_H hours, and never by itself (its heuristic ran it every few
        # thousand allocations, for next to nothing: a tenth of the run went to full
        # collections of a heap of gigabytes, a sixth to young ones after; at 1,000 speakers
        # hourly full ones took 1.0 s at hour 1 and 2.2 s at hour 4, growing with the heap;
        # young ones take 0.6-0.8 s, the full one at hour 6 2.5 s).
        gc.collect()
        gc.freeze()
        gc.disable()
        samples_per_collection = max(1, round(3600 / config.sample_s))
        samples_per_full = samples_per_collection * FULL_COLLECTION_H
        samples = 0

        def sampled(now: float, swarm: Swarm) -> None:
            nonlocal samples
            samples += 1
            if progress is not None:
                progress(now, swarm)
            if samples % samples_per_full == 0:
                gc.collect()
            elif samples % samples_per_collection == 0:
                gc.collect(1)

        built = time.perf_counter()
        clock = VirtualClock()
        trio.run(swarm.run, sampled, clock=clock)
        finished = time.perf_counter()
        result = summarise(swarm)
        result["wall"] = {
            "build_s": round(built - started, 1),
            "run_s": round(finished - built, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        swarm.db.close()
        return result
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.unfreeze()
        blocking.run_inline(False)  # the process may go on (a test): threads again
        shutil.rmtree(tmp, ignore_errors=True)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 1)


def summarise(swarm: Swarm) -> dict[str, Any]:
    fig, c = swarm.figures, swarm.config
    total = sum(fig.bytes_by_source.values()) or 1
    music_in = fig.bytes_by_source.get("peer", 0) + fig.bytes_by_source.get("service", 0)
    used = min(fig.played_network_bytes, music_in)
    wire = fig.wire_in or 1
    overlay = fig.overlay_wire_in or 1
    peer_used = fig.bytes_by_source.get("peer", 0)
    peer_unused = min(fig.duplicate_bytes, max(0, fig.overlay_wire_in - peer_used))
    stats = swarm.workload.stats()
    return {
        "config": asdict(c),
        "workload": asdict(stats),
        "latency_ms": {
            "p50": _pct(fig.latencies_ms, 50),
            "p75": _pct(fig.latencies_ms, 75),
            "p90": _pct(fig.latencies_ms, 90),
            "p99": _pct(fig.latencies_ms, 99),
            "requests": len(fig.latencies_ms),
            "gapless": max(0, fig.plays - len(fig.latencies_ms)),
            "cdf": _cdf(fig.latencies_ms),
        },
        "latency_streamed_ms": {
            "p50": _pct(fig.latencies_streamed_ms, 50),
            "p75": _pct(fig.latencies_streamed_ms, 75),
            "p90": _pct(fig.latencies_streamed_ms, 90),
            "p99": _pct(fig.latencies_streamed_ms, 99),
            "requests": len(fig.latencies_streamed_ms),
            "cdf": _cdf(fig.latencies_streamed_ms),
        },
        "plays": fig.plays,
        "stutter_share": round(fig.stuttered / fig.plays, 5) if fig.plays else None,
        "stalled_s": round(fig.stalled_s, 1),
        "bytes": dict(sorted(fig.bytes_by_source.items())),
        "shares": {
            src: round(fig.bytes_by_source.get(src, 0) / total, 5)
            for src in ("service", "peer", "cache")
        },
        # The paper's table: what arrived on peer connections (its "overlay network"): music
        # kept, music unused (duplicates), search messages, the rest (requests, keep-alives,
        # handshakes, framing and encryption, chunks of cancelled requests).
        "overhead": {
            "overlay_wire_in": fig.overlay_wire_in,
            "music_used": round(peer_used / overlay, 5),
            "music_unused": round(peer_unused / overlay, 5),
            "search": round(fig.search_bytes / overlay, 5),
            "other": round(
                max(0, fig.overlay_wire_in - peer_used - peer_unused - fig.search_bytes) / overlay,
                5,
            ),
            "duplicate_bytes": fig.duplicate_bytes,
        },
        # Everything speakers received (service too), and how much of the music they
        # streamed (not from the cache) was played: the rest was cached unplayed (skips,
        # prefetches of tracks that did not come).
        "traffic": {
            "wire_in": fig.wire_in,
            "music_in": music_in,
            "music_share_of_wire": round(music_in / wire, 5),
            "streamed_music_played": round(used / music_in, 5) if music_in else None,
        },
        "found_by": {
            k: round(fig.found_by.get(k, 0) / fig.streams, 5) if fig.streams else None
            for k in ("tracker and search", "tracker only", "search only", "none")
        },
        "streams": fig.streams,
        "evictions": fig.evictions,
        "series": fig.series,
    }


def _cdf(values: list[float], points: int = 200) -> list[list[float]]:
    if not values:
        return []
    v = np.sort(np.asarray(values))
    idx = np.unique(np.linspace(0, len(v) - 1, min(points, len(v))).astype(int))
    return [[round(float(v[i]), 1), round((i + 1) / len(v), 5)] for i in idx]
