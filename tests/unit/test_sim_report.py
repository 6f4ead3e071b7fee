"""The swarm benchmark's report: the table beside the paper, the targets, the plot."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cadenza.sim.report import DASH, PAPER, markdown_table, plot, table, targets


def summary(peers: bool) -> dict[str, Any]:
    """A small synthetic summary shaped like ``cadenza.sim.swarm.summarise``'s."""
    return {
        "config": {"speakers": 50, "hours": 3.0, "seed": 1, "tracks": 2000, "peers": peers},
        "workload": {"speakers": 50, "plays": 217, "sessions": 21},
        "latency_ms": {
            "p50": 137.6 if peers else 212.4,
            "p75": 179.0,
            "p90": 216.0,
            "p99": 235.5,
            "requests": 84,
            "gapless": 85,
            "cdf": [[12.0, 0.01], [100.0, 0.3], [137.6, 0.5], [216.0, 0.9], [235.5, 1.0]],
        },
        "plays": 169,
        "stutter_share": 0.0 if peers else 0.02,
        "stalled_s": 0.0,
        "bytes": {"cache": 144056908, "peer": 147472384, "service": 353566585},
        "shares": (
            {"service": 0.05, "peer": 0.4, "cache": 0.55}
            if peers
            else {"service": 0.777, "peer": 0.0, "cache": 0.223}
        ),
        "overhead": {
            "wire_in": 512165265,
            "music_used": 0.613,
            "music_unused": 0.365,
            "search": 0.0123,
            "other": 0.0094,
            "duplicate_bytes": 0,
        },
        "found_by": (
            {
                "tracker and search": 0.169,
                "tracker only": 0.0844,
                "search only": 0.014,
                "none": 0.732,
            }
            if peers
            else {
                "tracker and search": None,
                "tracker only": None,
                "search only": None,
                "none": None,
            }
        ),
        "streams": 142,
        "evictions": 0,
        "series": [
            {"t_s": 600.0, "cache": 0, "peer": 0, "service": 1200000, "playing": 3, "online": 40},
            {"t_s": 1200.0, "cache": 0, "peer": 0, "service": 1200000, "playing": 0, "online": 40},
            {"t_s": 1800.0, "cache": 500, "peer": 1500, "service": 1202000, "playing": 2},
        ],
        "wall": {"build_s": 1.4, "run_s": 141.9, "max_rss_mb": 380.9},
    }


def results() -> dict[str, dict[str, Any]]:
    return {"baseline": summary(peers=False), "peers": summary(peers=True)}


def row(text: str, label: str) -> list[str]:
    """The cells after the label on the table's line for ``label``."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(label + " ")]
    return line[len(label) :].split()


def test_table_columns_in_order() -> None:
    header = table(results()).splitlines()[0].split()
    assert header == ["figure", "paper", "peers", "baseline"]
    only = table({"baseline": summary(peers=False)}).splitlines()[0].split()
    assert only == ["figure", "paper", "baseline"]


def test_table_paper_and_run_figures() -> None:
    text = table(results())
    assert row(text, "latency p50 (ms)") == ["265", "138", "212"]
    assert row(text, "latency p75 (ms)") == ["515", "179", "179"]
    assert row(text, "latency p90 (ms)") == ["1047", "216", "216"]
    assert row(text, "stutter (% of plays)") == ["1.0", "0.0", "2.0"]
    assert row(text, "bytes from service (%)") == ["8.8", "5.0", "77.7"]
    assert row(text, "bytes from peers (%)") == ["35.8", "40.0", "0.0"]
    assert row(text, "bytes from cache (%)") == ["55.4", "55.0", "22.3"]
    assert row(text, "peer traffic: music used (%)") == ["94.80", "61.30", "61.30"]
    assert row(text, "peer traffic: music unused (%)") == ["2.38", "36.50", "36.50"]
    assert row(text, "peer traffic: search (%)") == ["2.33", "1.23", "1.23"]
    assert row(text, "peer traffic: other (%)") == ["0.48", "0.94", "0.94"]
    label = "peer finding: {} (% of streamed tracks)"
    assert row(text, label.format("tracker and search")) == ["75.1", "16.9", DASH]
    assert row(text, label.format("tracker only")) == ["9.0", "8.4", DASH]
    assert row(text, label.format("search only")) == ["7.0", "1.4", DASH]
    assert row(text, label.format("none")) == ["8.9", "73.2", DASH]
    assert row(text, "plays") == ["169", "169"]
    assert row(text, "streamed tracks") == ["142", "142"]
    assert row(text, "speakers") == ["50", "50"]
    assert row(text, "simulated hours") == ["3", "3"]
    assert row(text, "wall time (s)") == ["141.9", "141.9"]
    assert row(text, "max RSS (MB)") == ["381", "381"]


def test_table_columns_aligned() -> None:
    lines = table(results()).splitlines()
    rows = lines[: lines.index("")]
    assert len({len(ln) for ln in rows if "(" in ln or ln.startswith("-")}) == 1


def test_table_none_is_dash() -> None:
    s = summary(peers=True)
    s["latency_ms"].update(p50=None, p75=None, p90=None, cdf=[])
    s["stutter_share"] = None
    text = table({"peers": s})
    assert row(text, "latency p50 (ms)") == ["265", DASH]
    assert row(text, "stutter (% of plays)") == ["1.0", DASH]
    assert f"median latency (streamed plays) below 265 ms: {DASH} ms NOT met" in text
    assert f"stutter below 1%: {DASH}% NOT met" in text


def test_table_targets_line() -> None:
    text = table(results())
    (line,) = [ln for ln in text.splitlines() if ln.startswith("targets")]
    assert "service share below 8.8%: 5.0% met" in line
    assert "stutter below 1%: 0.0% met" in line
    assert "median latency (streamed plays) below 265 ms: 138 ms met" in line
    swapped = {"peers": summary(peers=False)}
    line = table(swapped).splitlines()[-1]
    assert "service share below 8.8%: 77.7% NOT met" in line
    assert "stutter below 1%: 2.0% NOT met" in line
    assert "median latency (streamed plays) below 265 ms: 212 ms met" in line
    assert table({"baseline": summary(peers=False)}).splitlines()[-1].endswith("no peers scenario")


def test_markdown_table() -> None:
    md = markdown_table(results()).splitlines()
    assert md[0] == "| figure | paper | peers | baseline |"
    assert set(md[1].replace(" ", "")) <= set("|-:")
    text = table(results()).splitlines()
    assert len(md) - 2 == text.index("") - 2
    assert all(ln.startswith("| ") and ln.endswith(" |") and ln.count(" | ") == 3 for ln in md)
    assert "| latency p50 (ms) | 265 | 138 | 212 |" in md


def test_targets() -> None:
    t = targets(summary(peers=True))
    assert t == {
        "service_share": {"value": 0.05, "target": 0.088, "met": True},
        "stutter_share": {"value": 0.0, "target": 0.01, "met": True},
        "latency_p50_ms": {"value": 137.6, "target": 265, "met": True},
    }
    s = summary(peers=False)
    s["latency_ms"]["p50"] = 265
    t = targets(s)
    assert not t["service_share"]["met"]
    assert not t["stutter_share"]["met"]
    assert not t["latency_p50_ms"]["met"]  # strictly below
    s["stutter_share"] = None
    s["latency_ms"]["p50"] = None
    t = targets(s)
    assert t["stutter_share"] == {"value": None, "target": 0.01, "met": False}
    assert t["latency_p50_ms"] == {"value": None, "target": 265, "met": False}


def test_paper_figures() -> None:
    assert DASH == "\u2013"
    assert PAPER["latency_ms"] == {"p50": 265, "p75": 515, "p90": 1047}
    assert sum(PAPER["shares"].values()) == 1.0
    assert abs(sum(PAPER["overhead"].values()) - 1.0) < 0.0002  # as printed: 99.99 %
    assert abs(sum(PAPER["found_by"].values()) - 1.0) < 0.002


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 0 and data.startswith(b"\x89PNG")


def test_plot_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "swarm.png"
    plot(results(), out)
    assert is_png(out)


def test_plot_empty(tmp_path: Path) -> None:
    empty = copy.deepcopy(results())
    for s in empty.values():
        s["latency_ms"]["cdf"] = []
        s["series"] = []
    out = tmp_path / "empty.png"
    plot(empty, out)
    assert is_png(out)
    out = tmp_path / "nothing.png"
    plot({}, out)
    assert is_png(out)
