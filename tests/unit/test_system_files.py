"""cadenza.system.files: the one atomic, durable file replacement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cadenza.system import files
from cadenza.system.files import atomic_write, fsync_dir, write_new


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_bytes_and_text_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, "é\n")
    assert target.read_bytes() == "é\n".encode()
    atomic_write(target, memoryview(b"abc"))
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failure_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "settings.json"
    target.write_text("old")
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[:2])  # part of it reaches the temp file first
        raise OSError(28, "No space left on device")

    def fail(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, failing, half_then_fail if failing == "write" else fail)
    with pytest.raises(OSError):
        atomic_write(target, "new content")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_interrupted_by_a_base_exception_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "k"
    target.write_bytes(b"old")

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_it_fsyncs_the_file_then_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    atomic_write(tmp_path / "x", b"1")
    assert synced == ["file", "dir"]
    # Not durable: the same atomic replacement, no fsync at all.
    synced.clear()
    atomic_write(tmp_path / "x", b"2", durable=False)
    assert synced == [] and (tmp_path / "x").read_bytes() == b"2"
    assert [f.name for f in tmp_path.iterdir()] == ["x"]  # no temp file left


def test_modes(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh"
        atomic_write(fresh, b"")
        assert _mode(fresh) == 0o644  # like open(path, "w")
        secret = tmp_path / "secret"
        atomic_write(secret, b"", mode=0o600)
        assert _mode(secret) == 0o600
        kept = tmp_path / "kept"
        kept.write_bytes(b"")
        kept.chmod(0o664)  # wider than the umask allows: kept all the same
        atomic_write(kept, b"x")
        assert _mode(kept) == 0o664
        kept.chmod(0o600)
        atomic_write(kept, b"y")
        assert _mode(kept) == 0o600
    finally:
        os.umask(umask)


def test_temp_file_in_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tmp").mkdir()
    seen: list[Path] = []
    real_replace = os.replace

    def spy(src: Path, dst: Path) -> None:
        seen.append(Path(src).parent)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    atomic_write(tmp_path / "index", b"i", tmp_dir=tmp_path / "tmp")
    assert seen == [tmp_path / "tmp"]
    assert (tmp_path / "index").read_bytes() == b"i"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_draws_no_randomness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The swarm simulator seeds os.urandom: a write must not consume it.
    def no(n: int) -> bytes:
        raise AssertionError("atomic_write drew random bytes")

    monkeypatch.setattr(os, "urandom", no)
    atomic_write(tmp_path / "a", b"a")


def test_a_leftover_with_our_name_is_skipped(tmp_path: Path) -> None:
    # A dead process with our pid (a restarted container) left temp files behind.
    n = next(files._counter)
    for i in range(n + 1, n + 4):
        (tmp_path / f".f.{os.getpid()}-{i}.tmp").write_bytes(b"stale")
    atomic_write(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"new"


def test_write_new_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write_new(path, b"abc", 0o600)
    assert path.read_bytes() == b"abc"
    assert _mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_new(path, b"x")
    fsync_dir(tmp_path)
