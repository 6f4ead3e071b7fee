"""The service's key files, now in :mod:`cadenza.system.keys`.

The speaker daemon loads its Noise static key the same way, and it must not import the service;
the code moved down to the system layer, which both may import. These names stay importable
from here for the service's own modules, ``cadenza ingest`` and the tests.
"""

from __future__ import annotations

from cadenza.system.keys import (
    KEY_SIZE,
    KeyFileError,
    load_or_create_signing_key,
    load_or_create_static_key,
)

__all__ = ["KEY_SIZE", "KeyFileError", "load_or_create_signing_key", "load_or_create_static_key"]
