"""The swarm's hot modules compiled with mypyc, for ``cadenza bench swarm``.

The simulator spends its time in plain Python: the sans-IO connection (framing, Noise, the send
scheduler), the chunk buffer and the stream's peer scheduling, the simulated network and disk.
mypyc compiles those modules, from the same source, into C extensions; the bench's worker
processes then import the package from the compiled copy (``PYTHONPATH``), so the speakers
still run the code in this tree, only faster. The figures do not change: the same seed gives
the same ``results.json``, byte for byte, compiled or not (``tests/integration/test_swarm.py``).

:func:`build` copies the package (the ``cadenza`` this module belongs to) into a cache folder
named after a digest of its sources, the list below, mypy's and Python's versions, compiles the
list there and returns the folder to put first on ``PYTHONPATH``. A copy whose digest matches
is reused, so only the first run after a change pays the compile (about 50 s here); the
three builds used last are kept (23 MB each), older ones removed. The source tree itself gets
no ``.so`` files: an edited ``.py`` is never shadowed by a stale build.

Needs mypy (in the dev dependencies), a C compiler and Python's headers; without them,
:class:`NativeBuildError` says what failed, and ``--pure`` runs the interpreted modules.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cadenza

# The modules compiled: where a swarm's run spends its Python time (py-spy). Modules with
# async generators or classes deriving from interpreted ones (trio's ABCs, Exception
# subclasses) cannot be compiled: the stream engine, the connection's trio layer, messages.
MODULES: tuple[str, ...] = (
    "cadenza/protocol/_channels.py",
    "cadenza/protocol/_events.py",
    "cadenza/protocol/_framing.py",
    "cadenza/protocol/connection.py",
    "cadenza/protocol/frames.py",
    "cadenza/protocol/manifest.py",
    "cadenza/protocol/noise.py",
    "cadenza/protocol/scheduler.py",
    "cadenza/stream/buffer.py",
    "cadenza/stream/peers.py",
    "cadenza/stream/schedule.py",
    "cadenza/cache/policy.py",
    "cadenza/p2p/neighbours.py",
    "cadenza/sim/disk.py",
    "cadenza/sim/net.py",
    "cadenza/sim/sink.py",
)

# mypy's configuration for the compile: the project's own pyproject section is for the lint
# (and names modules the copy does not have); mypyc needs types, not strictness.
_MYPY_INI = "[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
# Builds kept in the cache (the ones used last), and how old an unfinished one must be to go.
KEEP_BUILDS = 3
STALE_WORK_S = 3600.0


class NativeBuildError(RuntimeError):
    """The compiled copy could not be built (no mypy, no compiler, a compile error)."""


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cadenza" / "native"


def source_digest(package: Path, modules: tuple[str, ...] = MODULES) -> str:
    """A digest of everything the compiled copy depends on."""
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0")
    h.update(f"{sys.version}\0{platform.machine()}\0{_mypy_version()}\0".encode())
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def build(
    cache: Path | None = None,
    *,
    modules: tuple[str, ...] = MODULES,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The folder holding a compiled copy of this ``cadenza`` (built now if needed)."""
    package = Path(cadenza.__file__).resolve().parent
    cache = cache or default_cache()
    digest = source_digest(package, modules)
    dest = cache / digest[:20]
    if (dest / "BUILT").is_file():
        os.utime(dest)  # used now: pruning keeps the builds used last
        return dest
    if log is not None:
        log(f"native: compiling {len(modules)} modules with mypyc into {dest} (once per change)")
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f"{dest.name}.tmp{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(
            package,
            work / "cadenza",
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"),
        )
        (work / "mypy.ini").write_text(_MYPY_INI)
        cmd = [sys.executable, "-m", "mypyc", "--config-file", "mypy.ini", *modules]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise NativeBuildError(f"mypyc failed (exit {proc.returncode}):\n{tail}")
        missing = [m for m in modules if not _compiled(work / m)]
        if missing:
            raise NativeBuildError(f"mypyc built no extension for: {', '.join(missing)}")
        shutil.rmtree(work / "build", ignore_errors=True)  # the generated C and objects
        (work / "BUILT").write_text(digest + "\n")
        try:
            work.rename(dest)
        except OSError:  # another process built it meanwhile
            if not (dest / "BUILT").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(cache, keep=KEEP_BUILDS)
    return dest


def prune(cache: Path, *, keep: int = KEEP_BUILDS, now: float | None = None) -> list[Path]:
    """Remove all but the ``keep`` builds used last, and unfinished ones (a build killed
    half-way) older than an hour; the paths removed."""
    now = time.time() if now is None else now
    built: list[tuple[float, Path]] = []
    removed: list[Path] = []
    for entry in cache.iterdir() if cache.is_dir() else ():
        if not entry.is_dir():
            continue
        mtime = entry.stat().st_mtime
        if (entry / "BUILT").is_file():
            built.append((mtime, entry))
        elif ".tmp" in entry.name and now - mtime > STALE_WORK_S:
            removed.append(entry)
    built.sort(reverse=True)
    removed += [path for _, path in built[keep:]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def is_compiled(module: object) -> bool:
    """True if ``module`` was loaded from a compiled extension."""
    return str(getattr(module, "__file__", "")).endswith((".so", ".pyd"))


def _compiled(source: Path) -> bool:
    return any(source.parent.glob(source.stem + ".*.so"))


def _mypy_version() -> str:
    try:
        from mypy.version import __version__
    except ImportError as exc:
        raise NativeBuildError(
            "mypy (with mypyc) is not installed: `scripts/setup` installs it, or use --pure"
        ) from exc
    return __version__


__all__ = [
    "MODULES",
    "NativeBuildError",
    "build",
    "default_cache",
    "is_compiled",
    "prune",
    "source_digest",
]
