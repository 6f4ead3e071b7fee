"""Real ALSA without a sound card: a private configuration with capture and paced PCMs.

    from alsa import AlsaSandbox, assert_same_pcm, requires_alsa

    @pytest.fixture
    def alsa(tmp_path, monkeypatch):
        sandbox = AlsaSandbox(tmp_path / "alsa")
        sandbox.activate(monkeypatch)  # this process: the next PCM opened uses it
        return sandbox

    # play to "default" (or "paced"), close the PCM, then:
    assert_same_pcm(alsa.capture(44100), reference)

The PCMs (all S16_LE; ``plug`` converts whatever is played to stereo at the same rate):

* ``default`` and ``cap``: the ``file`` plugin over ``null``; what is written is appended
  to ``cap-<rate>.raw`` (one file per rate, across re-opens). It consumes at once.
* ``paced``: the same, but through ``pv -L`` into ``paced-<rate>.raw``, so writes block
  as on a sound card playing in real time (about 0.4 s of slack in the pipe).
* ``null``: ALSA's own.

The ``file`` plugin records at the moment the application writes, so a capture holds
every frame written, dropped ones included, and never the silence of an underrun. A
capture is complete once the PCM is closed (the plugin waits for its pipe then).

ALSA re-reads its configuration when the list of files in ``ALSA_CONFIG_PATH`` changes,
so :meth:`AlsaSandbox.activate` works in a process that already used ALSA; a subprocess
gets :meth:`AlsaSandbox.env` (which also points ``HOME`` at the directory, for tools that
only read ``~/.asoundrc``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = [
    "ALSA_CONF",
    "AlsaSandbox",
    "assert_same_pcm",
    "requires_alsa",
    "requires_pv",
]

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")  # Debian's top-level configuration
BYTES_PER_SECOND_44K = 44100 * 4  # S16_LE stereo

requires_alsa = pytest.mark.skipif(
    not ALSA_CONF.exists(), reason=f"no ALSA configuration at {ALSA_CONF} (libasound2-data)"
)
requires_pv = pytest.mark.skipif(
    shutil.which("pv") is None, reason="pv is not installed (Debian package pv)"
)


class AlsaSandbox:
    """A directory holding an ALSA configuration (``.asoundrc``) and its captures.

    ``paced_bytes_per_second`` is the rate the ``paced`` PCM consumes at (176400 is
    44.1 kHz S16 stereo). ``extra`` is appended to the configuration verbatim.
    """

    def __init__(
        self,
        directory: Path,
        *,
        paced_bytes_per_second: int = BYTES_PER_SECOND_44K,
        extra: str = "",
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / ".asoundrc"
        d = _quote(str(self.directory))
        self.config.write_text(
            f"""\
pcm.!default {{ type plug; slave {{ pcm "cap"; format S16_LE; channels 2 }} }}
pcm.cap {{
    type file
    slave.pcm "null"
    file "|cat >> {d}/cap-%r.raw"
    format "raw"
}}
pcm.paced {{ type plug; slave {{ pcm "paced_file"; format S16_LE; channels 2 }} }}
pcm.paced_file {{
    type file
    slave.pcm "null"
    file "|pv -q -L {paced_bytes_per_second} -B 16384 >> {d}/paced-%r.raw"
    format "raw"
}}
{extra}
"""
        )

    @property
    def config_path(self) -> str:
        """The value for ``ALSA_CONFIG_PATH``: ALSA's own configuration, then ours."""
        return f"{ALSA_CONF}:{self.config}"

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Use this configuration in this process from the next PCM opened on."""
        monkeypatch.setenv("ALSA_CONFIG_PATH", self.config_path)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a subprocess that should use this configuration."""
        env = dict(os.environ if base is None else base)
        env["ALSA_CONFIG_PATH"] = self.config_path
        env["HOME"] = str(self.directory)
        return env

    def capture(self, rate: int, pcm: str = "cap") -> bytes:
        """What was played at ``rate`` on ``cap``/``default`` (or ``paced``), b"" if nothing."""
        path = self.directory / f"{pcm}-{rate}.raw"
        return path.read_bytes() if path.exists() else b""

    def clear(self) -> None:
        """Forget the captures so far."""
        for path in self.directory.glob("*.raw"):
            path.unlink()


def assert_same_pcm(actual: bytes, expected: bytes, *, frame_bytes: int = 4) -> None:
    """Assert two PCM byte strings are identical; the message says where they part."""
    if actual == expected:
        return
    common = min(len(actual), len(expected))
    first = next((i for i in range(common) if actual[i] != expected[i]), common)
    frame = first // frame_bytes
    raise AssertionError(
        f"PCM differs: {len(actual) // frame_bytes} frames vs {len(expected) // frame_bytes} "
        f"expected; first difference at frame {frame}"
        + (f" ({actual[first : first + 8].hex()} vs {expected[first : first + 8].hex()})"
           if first < common else " (one is a prefix of the other)")
    )  # fmt: skip


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"ALSA configuration path needs no quoting: {text!r}")
    return text
