"""Shared test set-up: makes helper modules in tests/ importable (``from netns import Lan``)."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
