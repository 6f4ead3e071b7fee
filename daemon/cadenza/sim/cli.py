"""``cadenza bench swarm`` (and ``bench/swarm.py``): run the swarm and print the paper's table.

    cadenza bench swarm [--speakers 1000] [--hours 24] [--seed 1] [--out DIR] ...

Runs the scenario twice, with peers and with peers disabled (the baseline), as two worker
processes at once (one per core), each printing its progress; then writes to ``--out``:
``results.json`` (every simulated figure of both runs: the same seed gives the same file, byte
for byte), ``perf.json`` (wall time and memory, which vary), ``table.txt`` (the table below)
and ``swarm.png`` (latency CDF and bytes by source over simulated time).

``--scale 100,300,1000`` instead runs the peers scenario at each size and reports how wall time
and memory grow. ``--lab`` runs the network-namespace bench's scenario (bench/p2p.py) in the
simulator, for the cross-check.

Workers run with ``PYTHONHASHSEED=0`` (string hashing is salted per process otherwise, and the
order of sets of strings would differ between runs), on the hot modules compiled with mypyc
(:mod:`cadenza.sim.native`: same source, same results, 15 % less time at 2 h; the first run after
a change compiles them, about 50 s). ``--pure`` runs them interpreted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from cadenza.sim.swarm import SwarmConfig

DEFAULT_OUT = Path("bench/out/swarm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SwarmConfig()
    p.add_argument("--speakers", type=int, default=d.speakers)
    p.add_argument("--hours", type=float, default=d.hours, help="simulated hours")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--tracks", type=int, default=d.tracks, help="catalogue size")
    p.add_argument("--cache-mb", type=float, default=d.cache_mb, help="each speaker's cache")
    p.add_argument(
        "--warm-days", type=float, default=d.warm_days, help="caches hold N days of plays (0: cold)"
    )
    p.add_argument(
        "--mean-gap-h", type=float, default=d.mean_gap_h, help="idle time between sessions"
    )
    p.add_argument("--standby-off-share", type=float, default=d.standby_off_share)
    p.add_argument("--nat-share", type=float, default=d.nat_share)
    p.add_argument("--loss", type=float, default=d.loss)
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}-<size>")
    p.add_argument("--only", choices=("peers", "baseline"), help="run one scenario")
    p.add_argument("--scale", help="comma-separated speaker counts: wall time and memory")
    p.add_argument("--lab", action="store_true", help="bench/p2p.py's scenario (cross-check)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--pure", action="store_true", help="run the modules interpreted, not compiled with mypyc"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)


def config_from(args: argparse.Namespace, **override: Any) -> SwarmConfig:
    names = {f.name for f in fields(SwarmConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(override)
    return SwarmConfig(**values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cadenza bench swarm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.worker:
        return _worker(Path(args.worker), quiet=args.quiet)
    if args.scale:
        return _scale(args)
    size = "lab" if args.lab else f"{args.speakers}x{args.hours:g}h"
    out: Path = args.out or Path(f"{DEFAULT_OUT}-{size}")
    out.mkdir(parents=True, exist_ok=True)
    scenarios = [args.only] if args.only else ["peers", "baseline"]
    configs = {name: config_from(args, peers=name == "peers") for name in scenarios}
    if args.lab:
        from cadenza.sim.lab import lab_config

        configs = {name: lab_config(args.seed, peers=name == "peers") for name in scenarios}
    results, perf = _run_workers(configs, quiet=args.quiet, lab=args.lab, pure=args.pure)
    from cadenza.sim import report

    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "perf.json").write_text(json.dumps(perf, indent=1, sort_keys=True) + "\n")
    for name, summary in results.items():
        summary["wall"] = perf[name]
    text = report.table(results)
    (out / "table.txt").write_text(text + "\n")
    (out / "table.md").write_text(report.markdown_table(results) + "\n")
    try:
        report.plot(results, out / "swarm.png")
        png = f", {out / 'swarm.png'}"
    except ImportError as exc:  # matplotlib is a bench extra
        png = f" (no PNG: {exc})"
    print(text)
    print(f"\nwritten: {out / 'results.json'}, {out / 'perf.json'}, {out / 'table.txt'}{png}")
    return 0


def _run_workers(
    configs: dict[str, SwarmConfig], *, quiet: bool, lab: bool = False, pure: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each scenario in its own process (in parallel); their summaries and perf figures."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if not pure:
        from cadenza.sim import native

        try:
            where = native.build(log=None if quiet else _say)
        except native.NativeBuildError as exc:
            raise SystemExit(
                f"swarm: cannot compile the hot modules: {exc}\n(--pure runs them interpreted)"
            ) from None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")]))
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    with tempfile.TemporaryDirectory(prefix="cadenza-swarm-") as tmp:
        for name, config in configs.items():
            job = Path(tmp) / f"{name}.json"
            job.write_text(json.dumps({"name": name, "lab": lab, "config": asdict(config)}))
            cmd = [sys.executable, "-m", "cadenza.sim.cli", "--worker", str(job)]
            if quiet:
                cmd.append("--quiet")
            procs[name] = (subprocess.Popen(cmd, env=env), job)
        results: dict[str, Any] = {}
        perf: dict[str, Any] = {}
        failed = []
        for name, (proc, job) in procs.items():
            if proc.wait() != 0:
                failed.append(f"{name} (exit {proc.returncode})")
                continue
            done = json.loads(job.with_suffix(".out").read_text())
            results[name] = done["summary"]
            perf[name] = done["perf"]
        if failed:
            raise SystemExit(f"swarm: scenario failed: {', '.join(failed)}")
    return results, perf


def _worker(job: Path, *, quiet: bool) -> int:
    from cadenza.sim.swarm import Swarm, run_scenario

    spec = json.loads(job.read_text())
    name = spec["name"]
    raw = spec["config"]
    config = SwarmConfig(**{k: _tuples(v) for k, v in raw.items()})
    started = time.perf_counter()

    def progress(now: float, swarm: Swarm) -> None:
        if quiet:
            return
        f = swarm.figures
        done = now / (config.hours * 3600)
        wall = time.perf_counter() - started
        eta = wall / done - wall if done > 0 else 0
        total = sum(f.bytes_by_source.values()) or 1
        shares = " ".join(
            f"{src} {100 * f.bytes_by_source.get(src, 0) / total:.0f}%"
            for src in ("service", "peer", "cache")
        )
        print(
            f"[{name:8}] {now / 3600:5.1f}/{config.hours:g} h simulated, {f.plays} plays, "
            f"{shares}, wall {wall:.0f} s, about {eta:.0f} s to go",
            file=sys.stderr,
            flush=True,
        )

    if spec.get("lab"):
        from cadenza.sim.lab import run_lab

        summary = run_lab(config, progress)
    else:
        summary = run_scenario(config, progress)
    perf = summary.pop("wall")
    from cadenza.protocol import connection
    from cadenza.sim import native

    perf["compiled"] = native.is_compiled(connection)  # what ran, not what was asked
    job.with_suffix(".out").write_text(json.dumps({"summary": summary, "perf": perf}))
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _tuples(v: Any) -> Any:
    """JSON's lists back into the configuration's tuples."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _scale(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.scale.split(",")]
    rows = []
    for n in sizes:
        config = config_from(args, speakers=n, peers=True)
        _, perf = _run_workers({"peers": config}, quiet=args.quiet, pure=args.pure)
        rows.append((n, perf["peers"]))
        pf = perf["peers"]
        print(
            f"{n:6d} speakers, {args.hours:g} h: wall {pf['build_s'] + pf['run_s']:.0f} s "
            f"(build {pf['build_s']:.0f} s), max RSS {pf['max_rss_mb']:.0f} MB",
            flush=True,
        )
    print("\nspeakers  wall s  max RSS MB")
    for n, pf in rows:
        print(f"{n:8d}  {pf['build_s'] + pf['run_s']:6.0f}  {pf['max_rss_mb']:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
