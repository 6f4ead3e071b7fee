"""The console scripts as installed in the venv."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_demo_starts_plays_and_stops_cleanly(tmp_path: Path) -> None:
    # No sound card here: the demo falls back to ALSA null, paced by the clock.
    proc = subprocess.Popen(
        [BIN / "cadenza", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("playing") and "Morning Arpeggio" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode == 0, text
    assert "speaker API: http://127.0.0.1:" in text
    assert "4 added" in text or "added 4" in text, text


def test_version_and_help() -> None:
    for prog in ("cadenza", "cadenzad"):
        out = subprocess.run([BIN / prog, "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith(prog)
    out = subprocess.run([BIN / "cadenza"], capture_output=True, text=True)
    assert out.returncode == 2 and "demo" in out.stdout


def test_board_in_the_configuration_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "cadenzad.toml"
    config.write_text('[hardware]\nboard = "no-such-board"\n')
    r = subprocess.run(
        [BIN / "cadenzad", "--config", config, "--check-config"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "hardware.board: no profile 'no-such-board'" in r.stderr
    assert "hifiberry-dacplus" in r.stderr  # the known ones are listed
    config.write_text('[hardware]\nboard = "pimoroni-pirate-audio"\n')
    r = subprocess.run(
        [BIN / "cadenzad", "--config", config, "--check-config"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
