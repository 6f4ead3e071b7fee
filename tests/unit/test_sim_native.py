"""The compiled copy of the swarm's hot modules (cadenza.sim.native): when it is rebuilt, and
what a failed build says. That compiled and interpreted runs give the same results is checked
end to end in tests/integration/test_swarm.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cadenza.sim import native


def test_the_digest_follows_every_source_file_and_nothing_else(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    first = native.source_digest(pkg, ("a.py",))
    assert native.source_digest(pkg, ("a.py",)) == first
    (pkg / "sub" / "b.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (pkg / "notes.txt").write_text("not a source")
    assert native.source_digest(pkg, ("a.py",)) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")  # an edit anywhere in the package
    edited = native.source_digest(pkg, ("a.py",))
    assert edited != first
    assert native.source_digest(pkg, ("a.py", "sub/b.py")) != edited  # another module list
    (pkg / "sub" / "b.py").rename(pkg / "sub" / "c.py")  # same bytes, another name
    assert native.source_digest(pkg, ("a.py",)) != edited


def test_a_failed_compile_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(native.NativeBuildError, match="mypyc failed") as info:
        native.build(cache, modules=("cadenza/no_such_module.py",))
    assert "no_such_module" in str(info.value)
    assert list(cache.iterdir()) == []


def test_pruning_keeps_the_builds_used_last_and_clears_abandoned_work(tmp_path: Path) -> None:
    now = 1_000_000.0
    ages = {"a": 50, "b": 10, "c": 40, "d": 20, "e": 30}  # seconds since last used
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "BUILT").write_text("x\n")
        os.utime(tmp_path / name, (now - age, now - age))
    for name, age in (("f.tmp12", 7200), ("g.tmp13", 60)):  # killed long ago / building now
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / "notes").write_text("a file, not a build")
    removed = native.prune(tmp_path, keep=3, now=now)
    assert sorted(p.name for p in removed) == ["a", "c", "f.tmp12"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d", "e", "g.tmp13", "notes"]
