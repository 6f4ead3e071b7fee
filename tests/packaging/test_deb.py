"""The .deb, end to end: build it (packaging/build-deb), lint it, and take it through
install, run, upgrade, remove and purge in a clean Debian 12 root, then boot that root with
systemd (packaging/test-in-chroot).

Slow (debootstrap on the first run, a few minutes after that) and root only: it runs only
with CADENZA_DEB_TEST=1. Each step's time is printed (`pytest -s` shows it as it goes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("CADENZA_DEB_TEST") != "1",
        reason="builds a .deb and debootstraps a Debian root (minutes): set CADENZA_DEB_TEST=1",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, mounts)"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap is not installed"),
]


def run(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    return done, time.monotonic() - start


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done, took = run([str(ROOT / "packaging/build-deb"), "--out", str(out)], timeout=1800)
    print(f"build-deb: {took:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"cadenza_[^_]+_[a-z0-9]+\.deb", path.name), path.name
    contents = subprocess.run(
        ["dpkg-deb", "-c", str(path)], capture_output=True, text=True, check=True
    ).stdout
    size = path.stat().st_size / 2**20
    print(f"{path.name}: {size:.1f} MiB, {len(contents.splitlines())} entries")
    return path


@pytest.mark.timeout(1800)
def test_lintian(deb: Path) -> None:
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian is not installed")
    done, took = run([lintian, "--tag-display-limit", "0", str(deb)], timeout=600)
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EW]: ", line)]
    print(f"lintian: {took:.1f} s, exit {done.returncode}, {len(tags)} errors/warnings")
    print("\n".join(tags))
    assert done.returncode == 0 and not tags


@pytest.mark.timeout(3600)
def test_install_run_purge_in_a_clean_root(deb: Path) -> None:
    done, took = run([str(ROOT / "packaging/test-in-chroot"), "--deb", str(deb)], timeout=3500)
    print(done.stdout)
    print(f"test-in-chroot: {took:.1f} s in all")
    assert done.returncode == 0, done.stderr[-5000:]
    assert re.search(r"^test-in-chroot: \d+ passed, 0 failed$", done.stdout, re.M)
