"""``cadenza ingest`` run as a command, for tests: its exit status, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str | Path, data: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ingest CLI on ``args`` with ``CADENZA_DATA=data`` (and ``env`` on top)."""
    code = "import sys; from cadenza.cli.ingest import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "CADENZA_DATA": str(data)},
    )
