"""The console scripts as installed in the venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_demo_streams_through_an_admitted_connection() -> None:
    out = subprocess.run(
        [BIN / "cadenza", "demo", "--mb", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "admitted with its membership certificate" in out.stdout
    assert "in 64 chunks of 16 KiB" in out.stdout


def test_version_and_help() -> None:
    for prog in ("cadenza", "cadenzad"):
        out = subprocess.run([BIN / prog, "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith(prog)
    out = subprocess.run([BIN / "cadenza"], capture_output=True, text=True)
    assert out.returncode == 2 and "demo" in out.stdout
