"""The swarm benchmark's output: a table beside the paper's figures, the targets, and a plot.

Inputs are the JSON-ready summaries of :func:`cadenza.sim.swarm.summarise`, keyed by scenario:
``"peers"`` (peer-assisted) and ``"baseline"`` (the same workload with peers disabled). The
reference figures are Kreitz & Niemelä, "Spotify - Large Scale, Low Latency, P2P
Music-on-Demand Streaming" (P2P'10).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

PAPER: dict[str, dict[str, float]] = {
    "latency_ms": {"p50": 265, "p75": 515, "p90": 1047},
    "stutter": {"share": 0.010},
    "shares": {"service": 0.088, "peer": 0.358, "cache": 0.554},
    # Traffic received on peer connections (the paper measured at the socket layer).
    "overhead": {"music_used": 0.9480, "music_unused": 0.0238, "search": 0.0233, "other": 0.0048},
    "found_by": {
        "tracker and search": 0.751,
        "tracker only": 0.090,
        "search only": 0.070,
        "none": 0.089,
    },
}

SCENARIOS = ("peers", "baseline")
DASH = "\u2013"  # en dash, for a missing figure
Summary = dict[str, Any]
Results = dict[str, Summary]
SOURCES = (("service", "service"), ("peer", "peers"), ("cache", "cache"))


def _get(summary: dict[str, Any], *keys: str) -> Any:
    value: Any = summary
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ms(value: Any) -> str:
    return DASH if value is None else f"{value:.0f}"


def _pct(decimals: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return DASH if value is None else f"{100 * value:.{decimals}f}"

    return fmt


def _num(value: Any) -> str:
    if value is None:
        return DASH
    return str(value) if isinstance(value, int) else f"{value:g}"


def _fixed(decimals: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return DASH if value is None else f"{value:.{decimals}f}"

    return fmt


# (label, path into PAPER or None, path into a summary, formatter)
_ROWS: list[tuple[str, tuple[str, ...] | None, tuple[str, ...], Callable[[Any], str]]] = [
    ("latency p50 (ms)", ("latency_ms", "p50"), ("latency_ms", "p50"), _ms),
    ("latency p75 (ms)", ("latency_ms", "p75"), ("latency_ms", "p75"), _ms),
    ("latency p90 (ms)", ("latency_ms", "p90"), ("latency_ms", "p90"), _ms),
    ("  streamed plays: p50 (ms)", None, ("latency_streamed_ms", "p50"), _ms),
    ("  streamed plays: p75 (ms)", None, ("latency_streamed_ms", "p75"), _ms),
    ("  streamed plays: p90 (ms)", None, ("latency_streamed_ms", "p90"), _ms),
    ("stutter (% of plays)", ("stutter", "share"), ("stutter_share",), _pct(1)),
    ("bytes from service (%)", ("shares", "service"), ("shares", "service"), _pct(1)),
    ("bytes from peers (%)", ("shares", "peer"), ("shares", "peer"), _pct(1)),
    ("bytes from cache (%)", ("shares", "cache"), ("shares", "cache"), _pct(1)),
    (
        "peer traffic: music used (%)",
        ("overhead", "music_used"),
        ("overhead", "music_used"),
        _pct(2),
    ),
    (
        "peer traffic: music unused (%)",
        ("overhead", "music_unused"),
        ("overhead", "music_unused"),
        _pct(2),
    ),
    ("peer traffic: search (%)", ("overhead", "search"), ("overhead", "search"), _pct(2)),
    ("peer traffic: other (%)", ("overhead", "other"), ("overhead", "other"), _pct(2)),
    ("all traffic: music share (%)", None, ("traffic", "music_share_of_wire"), _pct(2)),
    ("streamed music that was played (%)", None, ("traffic", "streamed_music_played"), _pct(1)),
    *(
        (
            f"peer finding: {key} (% of streamed tracks)",
            ("found_by", key),
            ("found_by", key),
            _pct(1),
        )
        for key in ("tracker and search", "tracker only", "search only", "none")
    ),
    ("plays", None, ("plays",), _num),
    ("requested plays (latency counted)", None, ("latency_ms", "requests"), _num),
    ("streamed tracks", None, ("streams",), _num),
    ("speakers", None, ("config", "speakers"), _num),
    ("simulated hours", None, ("config", "hours"), _num),
    ("wall time (s)", None, ("wall", "run_s"), _fixed(1)),
    ("max RSS (MB)", None, ("wall", "max_rss_mb"), _fixed(0)),
]


def _scenarios(results: Results) -> list[str]:
    known = [s for s in SCENARIOS if s in results]
    return known + [s for s in results if s not in SCENARIOS]


def _cells(results: Results) -> tuple[list[str], list[list[str]]]:
    names = _scenarios(results)
    rows = []
    for label, paper_path, path, fmt in _ROWS:
        paper = "" if paper_path is None else fmt(_get(PAPER, *paper_path))
        rows.append([label, paper, *(fmt(_get(results[s], *path)) for s in names)])
    return ["figure", "paper", *names], rows


def targets(summary: Summary) -> dict[str, dict[str, Any]]:
    """The run against the paper's service share, stutter and median latency (below each).

    The latency judged is that of streamed plays when the summary has it: a cached track
    starts in no simulated time at all, so the median over every play says little."""
    latency = _get(summary, "latency_streamed_ms", "p50")
    if latency is None:
        latency = _get(summary, "latency_ms", "p50")
    checks = {
        "service_share": (_get(summary, "shares", "service"), PAPER["shares"]["service"]),
        "stutter_share": (_get(summary, "stutter_share"), PAPER["stutter"]["share"]),
        "latency_p50_ms": (latency, PAPER["latency_ms"]["p50"]),
    }
    return {
        name: {"value": value, "target": target, "met": value is not None and value < target}
        for name, (value, target) in checks.items()
    }


def _targets_line(results: Results) -> str:
    if "peers" not in results:
        return "targets: no peers scenario"
    t = targets(results["peers"])
    pct1 = _pct(1)
    parts = [
        ("service share", pct1(t["service_share"]["value"]) + "%", "8.8%", t["service_share"]),
        ("stutter", pct1(t["stutter_share"]["value"]) + "%", "1%", t["stutter_share"]),
        (
            "median latency (streamed plays)",
            _ms(t["latency_p50_ms"]["value"]) + " ms",
            "265 ms",
            t["latency_p50_ms"],
        ),
    ]
    return "targets (peers): " + "; ".join(
        f"{name} below {goal}: {value} {'met' if check['met'] else 'NOT met'}"
        for name, value, goal, check in parts
    )


def table(results: Results) -> str:
    """A monospace table of the run's figures beside the paper's, then the targets line."""
    header, rows = _cells(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows), "", _targets_line(results)])


def markdown_table(results: Results) -> str:
    """The same rows as :func:`table`, as a GitHub markdown table."""
    header, rows = _cells(results)
    align = ["---", *("---:" for _ in header[1:])]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *rows])


def _intervals(series: list[dict[str, Any]]) -> list[tuple[float, float, dict[str, float]]]:
    """(start h, width h, share by source) per sample interval with bytes, from cumulative
    samples."""
    out = []
    prev: dict[str, Any] = {"t_s": 0.0}
    for point in series:
        delta = {src: point.get(src, 0) - prev.get(src, 0) for src, _ in SOURCES}
        total = sum(delta.values())
        width = (point["t_s"] - prev["t_s"]) / 3600
        if total > 0 and width > 0:
            out.append((prev["t_s"] / 3600, width, {s: b / total for s, b in delta.items()}))
        prev = point
    return out


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot(results: Results, path: Path) -> None:
    """Write a PNG: latency CDFs beside the paper's points, and the byte sources over time."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    drawn = False
    for name in _scenarios(results):
        cdf = _get(results[name], "latency_ms", "cdf") or []
        if cdf:
            xs, ys = zip(*cdf, strict=True)
            left.step(xs, ys, where="post", label=name)
            drawn = True
    paper = PAPER["latency_ms"]
    left.plot(
        [paper["p50"], paper["p75"], paper["p90"]],
        [0.5, 0.75, 0.9],
        "kx",
        markersize=9,
        label="paper (Kreitz & Niemelä)",
    )
    if not drawn:
        _note(left, "no plays")
    left.set_xscale("log")
    left.set_ylim(0, 1.02)
    left.set_title("Playback latency")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("fraction of plays")
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right")

    intervals = _intervals(_get(results.get("peers", {}), "series") or [])
    if intervals:
        starts = [s for s, _, _ in intervals]
        widths = [w for _, w, _ in intervals]
        bottom = [0.0] * len(intervals)
        for src, label in SOURCES:
            heights = [shares[src] for _, _, shares in intervals]
            right.bar(starts, heights, width=widths, bottom=bottom, align="edge", label=label)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        right.legend(loc="upper right")
    else:
        _note(right, "no bytes transferred" if "peers" in results else "no peers scenario")
    right.set_ylim(0, 1)
    right.set_title("Bytes by source over time (peers)")
    right.set_xlabel("simulated time (h)")
    right.set_ylabel("share of bytes in interval")

    fig.tight_layout()
    fig.savefig(path, format="png")
