"""The swarm simulator end to end: real speakers and service on the simulated network.

Runs ``cadenza bench swarm`` as the user would (two worker processes), small: 12 speakers, an
hour, a 300-track catalogue, busy listeners. Checks that the same seed gives the same
results.json byte for byte, another seed another one, and that the figures hang together. The
runs use the hot modules compiled with mypyc (the default; compiled here into a fresh cache),
except one with ``--pure``: compiled and interpreted give the same file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ARGS = ["--speakers", "12", "--hours", "1", "--tracks", "300", "--warm-days", "1"]
ARGS += ["--mean-gap-h", "0.5", "--quiet"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A cache of its own for the compiled modules: the first run here compiles them."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}


def swarm(out: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "cadenza.cli.main", "bench", "swarm", *ARGS, *extra]
    done = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "latency p50" in done.stdout and "targets (peers)" in done.stdout
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("swarm")
    runs = {"a": ["--seed", "1"], "b": ["--seed", "1", "--pure"], "c": ["--seed", "2"]}
    for name, extra in runs.items():
        swarm(base / name, env, *extra)
    return {name: base / name for name in "abc"}


def test_the_same_seed_gives_the_same_json_and_another_seed_another(
    runs: dict[str, Path],
) -> None:
    a, b, c = ((runs[n] / "results.json").read_bytes() for n in "abc")
    assert a == b  # a compiled, b interpreted
    assert a != c
    assert (runs["a"] / "swarm.png").read_bytes()[:4] == b"\x89PNG"
    perf = json.loads((runs["a"] / "perf.json").read_text())
    assert perf["peers"]["run_s"] > 0 and perf["baseline"]["max_rss_mb"] > 0


def test_the_workers_ran_compiled_modules_unless_told_pure(runs: dict[str, Path]) -> None:
    compiled = {
        name: {
            k: v["compiled"] for k, v in json.loads((runs[name] / "perf.json").read_text()).items()
        }
        for name in "abc"
    }
    assert compiled == {
        "a": {"peers": True, "baseline": True},
        "b": {"peers": False, "baseline": False},
        "c": {"peers": True, "baseline": True},
    }


def test_peers_carry_music_and_the_baseline_only_has_service_and_cache(
    runs: dict[str, Path],
) -> None:
    r = json.loads((runs["a"] / "results.json").read_text())
    peers, base = r["peers"], r["baseline"]
    # The same workload in both: the same plays were asked for.
    assert peers["workload"] == base["workload"]
    assert peers["plays"] > 20 and base["plays"] > 20
    assert peers["bytes"].get("peer", 0) > 0
    assert base["bytes"].get("peer", 0) == 0
    # With peers the service sends less.
    assert peers["bytes"]["service"] < base["bytes"]["service"]
    for s in (peers, base):
        assert math.isclose(sum(s["shares"].values()), 1.0, abs_tol=1e-3)
        found = [v for v in s["found_by"].values() if v is not None]
        assert math.isclose(sum(found), 1.0, abs_tol=1e-3)
        assert s["latency_ms"]["requests"] > 0 and s["latency_ms"]["p50"] is not None
        assert 0 <= s["stutter_share"] <= 1
        series = s["series"]
        assert series and all(
            x[src] <= y[src] for x, y in itertools.pairwise(series) for src in ("service", "peer")
        )
    assert base["found_by"]["none"] == 1.0
    assert peers["found_by"]["none"] < 1.0
    # Search traffic exists only where there are peers to search.
    assert peers["overhead"]["search"] > 0 and base["overhead"]["search"] == 0


def test_speakers_make_no_reference_cycles_so_their_memory_goes_back_at_once() -> None:
    """Found by the swarm's memory: cancelled dials and searches, lost connections and
    finished streams left reference cycles (an error raised out of its group, a connection
    keeping the error whose traceback held it, a stream's buffer calling back into the
    stream), and each held what its frames held, a track's buffer among them, until a full
    collection came by. 45 simulated minutes of 12 busy speakers with the cyclic collector
    off: nothing for it to find."""
    import gc

    from cadenza.sim.swarm import Swarm, SwarmConfig, run_scenario

    found: list[int] = []

    def progress(now: float, swarm: Swarm) -> None:
        if not found:
            gc.collect()
            gc.disable()
        found.append(gc.collect())
        gc.disable()

    # (Samples at 15, 30, 45 and 60 minutes; the run ends after the last.)
    config = SwarmConfig(speakers=12, hours=1.1, tracks=300, warm_days=1, mean_gap_h=0.5)
    try:
        result = run_scenario(config, progress)
    finally:
        gc.enable()
    assert result["plays"] > 20 and result["bytes"].get("peer", 0) > 0
    assert len(found) == 4 and found[1:] == [0, 0, 0]


def test_the_lab_scenario_writes_where_its_name_says(tmp_path: Path, env: dict[str, str]) -> None:
    """``--lab`` (bench/p2p.py's 8 speakers) once wrote over the default run's outputs in
    bench/out/swarm-1000x24h; it has its own folder."""
    cmd = [sys.executable, "-m", "cadenza.cli.main", "bench", "swarm", "--lab", "--quiet"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "bench/out/swarm-lab/results.json").read_text())
    assert results["peers"]["config"]["speakers"] == 8
    assert not (tmp_path / "bench/out/swarm-1000x24h").exists()
