"""A hostile music folder given to ``cadenza ingest`` (issue 17, item 8): file names that are
not UTF-8, with a newline or a terminal escape in them, symbolic link loops. The real CLI
in a subprocess, its output as strict UTF-8 as under most locales. The old code printed a
traceback (the name that is not UTF-8), called a loop "permission denied" and split a line
at the newline.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from ingestcli import run_cli


def write_wav_bytes_name(folder: Path, name: bytes, seed: int) -> None:
    """A one-second noise WAV whose name is raw bytes (not necessarily UTF-8)."""
    audio = np.random.default_rng(seed).uniform(-0.3, 0.3, (44100, 2))
    with open(os.path.join(os.fsencode(folder), name), "wb") as f:
        soundfile.write(f, audio, 44100, format="WAV")


def test_cli_reports_each_odd_file_name_on_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    write_wav_bytes_name(folder, b"caf\xe9.wav", 60)
    write_wav_bytes_name(folder, b"fine.wav", 61)
    (folder / "two\nlines.wav").write_bytes(b"not audio")
    (folder / "\x1b[2Jwipe.wav").write_bytes(b"not audio either")
    (folder / "loop.wav").symlink_to("loop.wav")
    (folder / "up").symlink_to("..")
    # Strict, as under most locales: a name's undecodable bytes printed as they are would
    # raise UnicodeEncodeError.
    env = {"PYTHONIOENCODING": "utf-8:strict"}

    out = run_cli(folder, data=tmp_path / "data", env=env)

    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    *failures, summary = out.stdout.splitlines()
    assert failures == [
        "3 failed:",
        f"  {folder}/loop.wav: cannot read: too many levels of symbolic links"
        " (a symbolic link loop)",
        f"  {folder}/\\x1b[2Jwipe.wav: cannot decode: Format not recognised",
        f"  {folder}/two\\nlines.wav: cannot decode: Format not recognised",
    ]
    assert summary.startswith("5 files: 2 added, 0 already present, 3 failed")
    progress = out.stderr.splitlines()
    assert progress[0] == "ingesting 5 files"
    assert [line.split("]")[0] for line in progress[1:]] == [f"[{i}/5" for i in range(1, 6)]
    assert f"added: {folder}/caf\\xe9.wav (caf\ufffd)" in out.stderr
    assert "\x1b" not in out.stderr
