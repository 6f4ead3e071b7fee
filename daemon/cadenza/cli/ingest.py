"""`cadenza ingest [--data DIR] [--jobs N] PATH...`: add music files to the service's catalog.

Opens the data directory the service uses (``DATA/service.db``, ``DATA/storage``,
``DATA/keys/signing.key``, created if missing) and ingests every audio file in the paths
(see :mod:`cadenza.service.ingest`). On a terminal, progress is one line redrawn in place;
otherwise one line per file. Failures are listed by name, then a summary. Names and
reasons are printed with control characters and bytes that are not UTF-8 escaped
(:func:`cadenza.service.ingest.printable`), so every file is reported on one line.

Exit status: 0 if every file was added or already present, 1 if some failed (the others
are still ingested) or the data directory cannot be opened, 2 for usage errors, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cadenza.cli import positive_int
from cadenza.cli.service import add_data_argument, data_dir

if TYPE_CHECKING:
    # Imported when ingesting, not when the top-level parser is built: numpy, soundfile
    # and friends take a while to load.
    from cadenza.service.ingest import Progress

DEFAULT_JOBS = 2
# Width of the progress bar's [####    ] part, in characters.
BAR_WIDTH = 24
# Redraw the terminal line at most this often; a redraw per file is plenty.
MIN_REDRAW_S = 0.1


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``cadenza ingest``, for the top-level parser's subcommand."""
    add_data_argument(parser)
    parser.add_argument(
        "--jobs",
        "-j",
        type=positive_int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"files prepared at once, each with three encoders (default {DEFAULT_JOBS})",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="audio files (WAV, FLAC, MP3, Ogg Vorbis, Opus, AIFF) or folders to search",
    )


def ingest_main(args: argparse.Namespace) -> int:
    """Run ``cadenza ingest`` with parsed arguments; the exit status."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cadenza.protocol.manifest import ManifestSigner
    from cadenza.service.catalog import Catalog
    from cadenza.service.db import Database
    from cadenza.service.ingest import IngestSetupError, ingest
    from cadenza.service.keys import KeyFileError, load_or_create_signing_key
    from cadenza.service.storage import Storage, StorageError

    data = data_dir(args)
    try:
        data.mkdir(parents=True, exist_ok=True)
        key: Ed25519PrivateKey = load_or_create_signing_key(data / "keys" / "signing.key")
        db = Database(data / "service.db")
    except (OSError, KeyFileError, sqlite3.Error) as e:
        print(
            f"cadenza ingest: cannot open the data directory {_printable(data)}: {_printable(e)}",
            file=sys.stderr,
        )
        return 1
    printer = ProgressPrinter(sys.stderr)
    try:
        catalog = Catalog(db)
        storage = Storage(data / "storage", ManifestSigner(key))
        report = ingest(
            args.paths, storage=storage, catalog=catalog, progress=printer, jobs=args.jobs
        )
    except (IngestSetupError, StorageError, OSError, sqlite3.Error) as e:
        printer.close()
        print(f"cadenza ingest: {_printable(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        printer.close()
        print("cadenza ingest: interrupted; what was added so far stays", file=sys.stderr)
        return 130
    finally:
        db.close()
    printer.close()
    if report.failed:
        print(f"{len(report.failed)} failed:")
        for path, reason in report.failed:
            print(f"  {_printable(path)}: {_printable(reason)}")
    print(report.summary())
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cadenza.cli.ingest``: the subcommand on its own."""
    parser = argparse.ArgumentParser(
        prog="cadenza ingest", description="Add music files to the service's catalog."
    )
    add_ingest_arguments(parser)
    return ingest_main(parser.parse_args(argv))


class ProgressPrinter:
    """Turns :class:`cadenza.service.ingest.Progress` events into text on ``stream``.

    On a terminal: ``[#######         ] 12/31  0:42 ETA 1:10  name`` redrawn in place,
    with failures printed above it as they happen. Elsewhere (a log, a pipe): one line
    per file.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._bar_shown = False
        self._last_draw = 0.0
        self._started = time.monotonic()

    def __call__(self, event: Progress) -> None:
        if self.tty:
            self._terminal(event)
        elif event.status == "scanned":
            self.stream.write(f"ingesting {event.total} file{_s(event.total)}\n")
        else:
            name = _printable(event.path)
            detail = f": {_printable(event.detail)}" if event.status == "failed" else ""
            if event.status == "added" and event.detail:
                detail = f" ({_printable(event.detail)})"
            self.stream.write(f"[{event.done}/{event.total}] {event.status}: {name}{detail}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    def _terminal(self, event: Progress) -> None:
        if event.status == "failed":
            self._clear()
            self.stream.write(f"failed: {_printable(event.path)}: {_printable(event.detail)}\n")
        now = time.monotonic()
        final = event.done == event.total
        if now - self._last_draw < MIN_REDRAW_S and not final and event.status != "failed":
            return
        self._last_draw = now
        line = bar_line(event.done, event.total, event.elapsed, event.path)
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + line[:width] + "\x1b[K")
        self._bar_shown = True

    def _clear(self) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[K")


def bar_line(done: int, total: int, elapsed: float, path: Path | None) -> str:
    """``[#####           ] 12/31  0:42 ETA 1:10  track12.ogg`` (ETA once a file is done)."""
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    bar = "#" * filled + " " * (BAR_WIDTH - filled)
    eta = ""
    if 0 < done < total:
        eta = f" ETA {_clock(elapsed / done * (total - done))}"
    name = f"  {_printable(path.name)}" if path is not None else ""
    return f"[{bar}] {done}/{total}  {_clock(elapsed)}{eta}{name}"


def _printable(text: object) -> str:
    # Imported here, not at the top: this module is loaded to build the command line
    # parser, and the ingest module brings numpy and soundfile with it.
    from cadenza.service.ingest import printable

    return printable(text)


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


if __name__ == "__main__":
    sys.exit(main())
