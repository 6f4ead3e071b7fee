"""The network-namespace bench's scenario (bench/p2p.py), in the simulator: the cross-check.

bench/p2p.py runs a real service and 8 real speakers in network namespaces: the 16 shortest
tracks of Debian's drascula-music, 6 plays per speaker (the first a Zipf draw, s = 1, then 61%
follow on to the next track, 39% new draws; 20% skipped part-way), every play a ``play`` of
that one track, speakers starting 3 s apart, cold caches, links shaped with ``tc tbf`` (uplinks
1-8 Mbit/s, downlinks 8-50 Mbit/s, the service's uplink 20 Mbit/s, no added delay or loss).
:func:`lab_config` and :func:`run_lab` build the same: the same plan (the bench's own draw,
same seed), the same bandwidths (same draw order), tracks of the same durations (file sizes at
160 kbps: duration x 20 kB/s, where the bench has oggenc's actual sizes).
"""

from __future__ import annotations

import bisect
import random
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from cadenza import blocking
from cadenza.sim import workload as wl
from cadenza.sim.clock import VirtualClock
from cadenza.sim.swarm import MBIT, SERVICE_HOST, Swarm, SwarmConfig, seed_everything, summarise

DRASCULA = Path("/usr/share/scummvm/drascula/audio")
# bench/p2p.py's values (kept in step by hand: that file is a script, not a module).
UPLINKS = [1, 2, 4, 8]  # Mbit/s
DOWNLINKS = [8, 16, 30, 50]
SERVICE_UPLINK = 20
FOLLOW_ON = 0.61
SKIP = 0.20
SPEAKERS = 8
PLAYS = 6
TRACKS = 16
START_GAP_S = 3.0


def drascula_tracks(n: int = TRACKS, folder: Path = DRASCULA) -> list[tuple[str, float]]:
    """The ``n`` shortest tracks as (name, seconds), in the bench's catalogue order."""
    import mutagen

    if not any(folder.glob("*.ogg")):
        raise SystemExit(
            f"no Ogg Vorbis tracks in {folder}: install Debian's drascula-music"
            " (apt-get install drascula-music)"
        )
    lengths = sorted((mutagen.File(p).info.length, p.stem) for p in sorted(folder.glob("*.ogg")))[
        :n
    ]
    return sorted(((name, s) for s, name in lengths), key=lambda t: _natural(t[0]))


def _natural(name: str) -> list[Any]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def bench_plan(
    names: list[str], durations: dict[str, float], speakers: int, plays: int, seed: int
) -> dict[int, list[tuple[str, float]]]:
    """bench/p2p.py's ``workload``: per speaker (1..n), (track, seconds to let it play)."""
    rng = random.Random(seed)
    popularity = names[:]
    rng.shuffle(popularity)
    weights = [1 / (rank + 1) for rank in range(len(popularity))]
    cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]

    def zipf() -> str:
        return popularity[bisect.bisect(cumulative, rng.random() * cumulative[-1])]

    plan: dict[int, list[tuple[str, float]]] = {}
    for s in range(1, speakers + 1):
        session: list[tuple[str, float]] = []
        current = zipf()
        for n in range(plays):
            if n > 0:
                nxt = names.index(current) + 1
                current = names[nxt] if rng.random() < FOLLOW_ON and nxt < len(names) else zipf()
            length = durations[current]
            seconds = length * rng.uniform(0.2, 0.8) if rng.random() < SKIP else length + 1.0
            session.append((current, seconds))
        plan[s] = session
    return plan


def lab_config(seed: int = 1, *, peers: bool = True) -> SwarmConfig:
    return SwarmConfig(
        speakers=SPEAKERS,
        hours=0.5,
        seed=seed,
        tracks=TRACKS,
        peers=peers,
        warm_days=0,
        mean_gap_h=1.0,
        diurnal_amplitude=0.0,
        standby_off_share=0.0,
        latency_ms=(0.05, 0.05),
        loss=0.0,
        nat_share=0.0,
        service_latency_ms=0.05,
        boot_spread_s=0.0,
        sample_s=60.0,
    )


def _lab_workload(config: SwarmConfig, tracks: list[tuple[str, float]]) -> wl.Workload:
    names = [n for n, _ in tracks]
    durations = dict(tracks)
    bitrate = wl.BITRATE_BPS
    catalogue = wl.Catalogue(
        tracks=tuple(
            wl.Track(i, 0, i, d, round(d * bitrate / 8)) for i, (_, d) in enumerate(tracks)
        ),
        albums=(range(len(tracks)),),
        by_rank=tuple(range(len(tracks))),
        rank_of=tuple(range(len(tracks))),
        next_album=(0,),
    )
    plan = bench_plan(names, durations, config.speakers, PLAYS, config.seed)
    plays, sessions = [], []
    for s in range(1, config.speakers + 1):
        start = (s - 1) * START_GAP_S
        ps = tuple(
            wl.Play(names.index(name), start, seconds, False, seconds < durations[name])
            for name, seconds in plan[s]
        )
        plays.append(ps)
        sessions.append((wl.Session(start, start, 0, len(ps)),))
    wconfig = wl.WorkloadConfig(
        speakers=config.speakers,
        tracks=len(tracks),
        duration_s=config.hours * 3600,
        zipf_exponent=1.0,
    )
    return wl.Workload(wconfig, config.seed, 1.0, catalogue, tuple(plays), tuple(sessions))


def run_lab(
    config: SwarmConfig,
    progress: Callable[[float, Swarm], None] | None = None,
    tracks: list[tuple[str, float]] | None = None,
) -> dict[str, Any]:
    """bench/p2p.py's scenario on the simulated network; figures as :func:`summarise`'s."""
    seed_everything(config.seed)
    blocking.run_inline()
    tmp = Path(tempfile.mkdtemp(prefix="cadenza-lab-"))
    started = time.perf_counter()
    try:
        swarm = Swarm(config, tmp, workload=_lab_workload(config, tracks or drascula_tracks()))
        swarm.build()
        rng = random.Random(config.seed)  # bench/p2p.py: one generator, up then down per host
        for listener in swarm.listeners:
            host = swarm.net.hosts[listener.name]
            host.upload = rng.choice(UPLINKS) * MBIT
            host.download = rng.choice(DOWNLINKS) * MBIT
            listener.lab = True
        swarm.net.hosts[SERVICE_HOST].upload = SERVICE_UPLINK * MBIT
        trio.run(swarm.run, progress, clock=VirtualClock())
        result = summarise(swarm)
        result["wall"] = {
            "build_s": 0.0,
            "run_s": round(time.perf_counter() - started, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        swarm.db.close()
        return result
    finally:
        blocking.run_inline(False)  # the process may go on (a test): threads again
        shutil.rmtree(tmp, ignore_errors=True)
