"""The layers of the ``cadenza`` package, declared once and enforced on every import.

Each package (``cadenza.net``) or top-level module (``cadenza.speaker``) is a *unit*; a unit
may import the units of lower layers, never those of a higher one, and never another unit of
its own layer: the units of one layer are independent of each other (``daemon`` and
``service`` are two programs; ``control`` and ``p2p`` meet only in the daemon that wires
them). ``cadenza.protocol`` is sans-IO: besides the standard library it may import only the
third-party libraries in :data:`PURE_THIRD_PARTY`, and no other cadenza unit. Imports inside
functions and under ``TYPE_CHECKING`` count like any other: a deferred import is still a
dependency, and hiding one in a function is how layering erodes.

The walk reads the source with :mod:`ast`, so it sees every import without running any; a
second test imports every module in a fresh interpreter so that an import cycle, which the
static walk cannot see as such, fails too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cadenza

# Bottom first. A unit may import any unit of a lower layer; the units of one layer are
# independent. Derived from the import graph when this test was written; a new unit must be
# placed here (the test fails on an unknown unit).
LAYERS: tuple[tuple[str, ...], ...] = (
    # sans-IO: wire formats, handshakes, manifests, scheduling decisions
    ("protocol",),
    # the error vocabulary (its codes are the protocol's)
    ("errors",),
    # links (which raise its errors) and the one gate to worker threads
    ("links", "blocking"),
    # the host: configuration, systemd, files written atomically, key files, rate limits
    ("system",),
    # I/O shells over the protocol, the chunk cache, the hardware
    ("net", "cache", "hw"),
    # the account session with the service
    ("session",),
    # streaming a track; the peer overlay beside it (the engine sees the overlay only as a
    # protocol of its own; the daemon and the simulator wire the two)
    ("stream", "p2p"),
    ("player",),
    ("speaker",),
    # the HTTP control plane over the speaker
    ("control",),
    # the two programs: the speaker daemon and the central service
    ("daemon", "service"),
    # the swarm simulator runs both; the command line runs everything
    ("sim",),
    ("cli",),
)

# Units held to the sans-IO rule: the standard library, these third-party libraries, and the
# cadenza units listed for them.
PURE_THIRD_PARTY = frozenset({"cryptography", "msgpack"})
PURE_UNITS: Mapping[str, frozenset[str]] = {
    "protocol": frozenset(),
    "errors": frozenset({"protocol"}),
}

# (importing file relative to the cadenza package, imported unit) -> why it is allowed for now.
# Each entry is a debt with an owner; drop it when the reason is gone.
# (file, unit) pairs allowed to break the order, each with its reason. None today: the
# streaming engine reaches the overlay's neighbour table through a Protocol of its own
# (``stream.engine.DownloadCredit``), not by importing p2p.
EXEMPTIONS: Mapping[tuple[str, str], str] = {}

ROOT = Path(cadenza.__file__).resolve().parent
RANK: dict[str, int] = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


@dataclass(frozen=True)
class Import:
    file: str  # relative to the cadenza package, e.g. "net/mdns.py"
    line: int
    target: str  # the imported module (or the package a name was taken from)
    text: str  # the import statement as written


@dataclass(frozen=True)
class Violation:
    imp: Import
    why: str

    def __str__(self) -> str:
        return f"cadenza/{self.imp.file}:{self.imp.line}: {self.imp.text}  -- {self.why}"


def module_name(rel: str) -> str:
    """``"net/mdns.py"`` -> ``"cadenza.net.mdns"``; a package's ``__init__.py`` is the package."""
    parts = ["cadenza", *Path(rel).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str | None:
    """The unit a cadenza module belongs to; ``None`` for the ``cadenza`` package itself (its
    ``__init__`` holds the version only, and anyone may read it)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(rel: str, source: str, known: frozenset[str]) -> Iterator[Import]:
    """Every import in ``source`` (the file ``rel``), at any depth, relative ones resolved.

    ``from package import name`` names the module ``package.name`` when that is a module in
    ``known``, else ``package`` (the name is an attribute of it)."""
    is_package = Path(rel).name == "__init__.py"
    package = module_name(rel) if is_package else module_name(rel).rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = ", ".join(a.name for a in node.names)
            text = f"from {'.' * node.level}{node.module or ''} import {names}"
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield Import(rel, node.lineno, sub if sub in known else module, text)


def check(sources: Mapping[str, str]) -> list[Violation]:
    """The layering violations of ``sources`` (file relative to the package -> its text)."""
    known = frozenset(module_name(rel) for rel in sources)
    found: list[Violation] = []
    for rel, source in sorted(sources.items()):
        here = unit_of(module_name(rel))
        if here is None:
            continue
        if here not in RANK:
            found.append(
                Violation(
                    Import(rel, 1, module_name(rel), "(module)"),
                    f"unit {here!r} is in no layer: add it to LAYERS",
                )
            )
            continue
        for imp in imports(rel, source, known):
            top = imp.target.partition(".")[0]
            if top != "cadenza":
                if here in PURE_UNITS and not _pure_ok(top):
                    found.append(
                        Violation(
                            imp, f"{here} is sans-IO: stdlib and {sorted(PURE_THIRD_PARTY)} only"
                        )
                    )
                continue
            there = unit_of(imp.target)
            if there is None or there == here:
                continue
            if (rel, there) in EXEMPTIONS:
                continue
            if here in PURE_UNITS and there not in PURE_UNITS[here]:
                allowed = ", ".join(sorted(PURE_UNITS[here])) or "no other cadenza unit"
                found.append(Violation(imp, f"{here} may import {allowed} only"))
            elif there not in RANK:
                found.append(Violation(imp, f"unit {there!r} is in no layer: add it to LAYERS"))
            elif RANK[there] > RANK[here]:
                found.append(
                    Violation(
                        imp,
                        f"upward: {here} (layer {RANK[here]}) imports {there}"
                        f" (layer {RANK[there]})",
                    )
                )
            elif RANK[there] == RANK[here]:
                found.append(
                    Violation(
                        imp, f"sideways: {here} and {there} are independent (layer {RANK[here]})"
                    )
                )
    return found


def _pure_ok(top: str) -> bool:
    return top in sys.stdlib_module_names or top in PURE_THIRD_PARTY or top == "__future__"


def package_sources() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(ROOT.rglob("*.py"))
    }


def test_layers_are_respected() -> None:
    violations = check(package_sources())
    assert not violations, "layering violations:\n" + "\n".join(map(str, violations))


def test_layers_are_well_formed() -> None:
    declared = [unit for layer in LAYERS for unit in layer]
    assert len(declared) == len(set(declared)), "a unit is declared twice"
    for file, unit in EXEMPTIONS:
        assert (ROOT / file).is_file(), f"exemption for missing {file}"
        assert unit in RANK, f"exemption names unknown unit {unit}"


# -- the checker itself must be able to fail ---------------------------------------------


def test_the_check_catches_fabricated_violations() -> None:
    sources = {
        "protocol/fake.py": "import trio\nfrom cadenza.net import dial\n",
        "protocol/fine.py": "import hashlib\nimport msgpack\nfrom .frames import Frame\n",
        "protocol/frames.py": "",
        "errors.py": "from cadenza.protocol.errors import ProtocolError\nimport trio\n",
        "net/fake.py": "def later():\n    from cadenza.speaker import Speaker\n",
        "stream/fake.py": "from ..p2p.limits import TokenBucket\n",
        "daemon.py": "from cadenza import service, __version__\n",
        "service/__init__.py": "",
        "cli/fake.py": "from cadenza import daemon, sim\nimport trio\n",
        "newthing/x.py": "",
    }
    found = {(v.imp.file, v.imp.line, v.why.split(":")[0]) for v in check(sources)}
    assert found == {
        ("protocol/fake.py", 1, "protocol is sans-IO"),
        ("protocol/fake.py", 2, "protocol may import no other cadenza unit only"),
        ("errors.py", 2, "errors is sans-IO"),
        ("net/fake.py", 2, "upward"),
        ("stream/fake.py", 1, "sideways"),
        ("daemon.py", 1, "sideways"),
        ("newthing/x.py", 1, "unit 'newthing' is in no layer"),
    }, found
    message = str(next(v for v in check(sources) if v.imp.file == "net/fake.py"))
    assert message.startswith("cadenza/net/fake.py:2: from cadenza.speaker import Speaker")


# -- import cycles ----------------------------------------------------------------------

# Each module is imported with every cadenza module dropped from sys.modules first, so it is
# the entry point of its own import graph, as in a fresh interpreter; a cycle shows up as an
# ImportError (a partially initialised module) for some entry point. Third-party modules stay
# loaded: only cadenza's own cycles are in question, and reloading numpy each time is slow.
_IMPORT_ALL = textwrap.dedent(
    """
    import importlib, sys, traceback
    package, names = sys.argv[1], sys.argv[2:]
    failures = []
    for name in names:
        for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except Exception:
            failures.append(name + ":\\n" + traceback.format_exc(limit=-3))
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
    """
)


def import_each(package: str, names: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    """Import each of ``names`` (modules of ``package``, found under ``path``) on its own."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, package, *names],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_every_module_imports_on_its_own() -> None:
    names = [module_name(rel) for rel in package_sources()]
    done = import_each("cadenza", names, ROOT.parent)
    assert done.returncode == 0, f"modules that fail to import alone:\n{done.stdout}{done.stderr}"


def test_the_import_check_catches_a_fabricated_cycle(tmp_path: Path) -> None:
    package = tmp_path / "cycle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cycle.b import B\nA = 1\n")
    (package / "b.py").write_text("from cycle.a import A\nB = 1\n")
    done = import_each("cycle", ["cycle.b", "cycle.a"], tmp_path)
    assert done.returncode == 1
    assert "cycle.b:" in done.stdout and "cycle.a:" in done.stdout
    assert "partially initialized module" in done.stdout


# -- one gate to worker threads ---------------------------------------------------------


def thread_escapes(rel: str, source: str) -> list[str]:
    """Uses of ``trio.to_thread`` in ``source`` outside :mod:`cadenza.blocking`, which the
    simulator could not run inline."""
    if rel == "blocking.py":
        return []
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        direct = (
            isinstance(node, ast.Attribute)
            and node.attr == "to_thread"
            and isinstance(node.value, ast.Name)
            and node.value.id == "trio"
        )
        imported = (isinstance(node, ast.ImportFrom) and node.module == "trio.to_thread") or (
            isinstance(node, ast.ImportFrom)
            and node.module == "trio"
            and any(a.name == "to_thread" for a in node.names)
        )
        if direct or imported:
            found.append(f"cadenza/{rel}:{node.lineno}: use cadenza.blocking.run_sync")
    return found


def test_blocking_calls_go_through_cadenza_blocking() -> None:
    found = [hit for rel, src in package_sources().items() for hit in thread_escapes(rel, src)]
    assert not found, "\n".join(found)
    fabricated = "import trio\nasync def f():\n    await trio.to_thread.run_sync(print)\n"
    assert thread_escapes("net/x.py", fabricated) == [
        "cadenza/net/x.py:3: use cadenza.blocking.run_sync"
    ]
    assert thread_escapes("net/y.py", "from trio import to_thread\n")
