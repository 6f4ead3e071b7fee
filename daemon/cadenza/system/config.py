"""The speaker's configuration: ``/etc/cadenza/cadenzad.toml``, checked before anything starts.

The file is TOML with one table per section (``[speaker]``, ``[service]``, ``[audio]``,
``[cache]``, ``[streaming]``, ``[control]``, ``[p2p]``); every key is optional and documented,
with its default, in ``packaging/cadenzad.toml``. A bad value, an unknown key or an unknown
section is an error: :func:`parse` collects every problem and raises one :class:`ConfigError`
whose lines each name the file, the line when it can be found, the key (``audio.periods``)
and what is allowed. The daemon refuses to start rather than guess.

Values not set are ``None`` in the :class:`Config` tree (an empty string in the file): no
service address, no fingerprint pin, an automatic cache size, and so on.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

_T = TypeVar("_T")

DEFAULT_PATH = Path("/etc/cadenza/cadenzad.toml")
"""Read when no ``--config`` is given; its absence means "all defaults"."""

DEFAULT_AP_PORT = 4070
"""The access point's port when an address or a DNS A record does not say (the service's)."""

# The [streaming] defaults. They live here, the lowest layer that needs them (the configuration
# documents them), and the speaker, the streaming engine, the start policy and the control
# plane's settings take their defaults from these rather than repeating the numbers.
BITRATES = (96, 160, 320)  # kbps: the qualities the service encodes each track in
DEFAULT_BITRATE = 160
DEFAULT_FIRST_PIECE_S = 15.0  # the first request of a track asks for this much audio
DEFAULT_AHEAD_S = 15.0  # then the buffer is kept this far ahead of the playing position
DEFAULT_PREFETCH_S = 30.0  # the next track starts streaming this long before the end
DEFAULT_STUTTER_TARGET = 0.01  # playback starts once a stutter is at most this likely

AUTO_CACHE_SHARE = 0.10
"""An automatic cache takes this share of the free space (seed: 10%) ..."""

AUTO_CACHE_CAP = 10 * 1024**3
"""... but never more than this (seed: 10 GB)."""

# The service's rule for account names (cadenza.service.accounts.USER_RE): a name it would
# refuse can never log in, so say so now instead of at the first login.
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

MAX_NAME_BYTES = 63
"""A speaker's name is its mDNS instance label: at most 63 bytes of UTF-8 (RFC 6763 4.1.1)."""


class ConfigError(Exception):
    """The configuration cannot be used.

    ``problems`` holds one line per problem, each naming the file (and line, when found),
    the key and what is allowed; ``str()`` is those lines joined.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# --- public helpers


class HostPort(NamedTuple):
    """A host (name or IP address, IPv6 without brackets) and a port: ``host, port = hp``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None, lowest_port: int = 1) -> HostPort:
        """Parse ``host:port``, ``[v6]:port``, or (with ``default_port``) ``host``/``[v6]``.

        Raises ValueError saying what is wrong.
        """
        text = text.strip()
        port_text: str | None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError("no closing bracket")
            host, rest = text[1:end], text[end + 1 :]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
            if rest and not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after the brackets")
            port_text = rest[1:] if rest else None
        elif text.count(":") > 1:
            raise ValueError("an IPv6 address goes in brackets")
        else:
            host, colon, port_text = text.partition(":")
            if not colon:
                port_text = None
            if not host:
                raise ValueError("no host")
            if not _is_ipv4(host) and not is_domain_name(host):
                raise ValueError(f"{host!r} is neither an IP address nor a host name")
        if port_text is None:
            if default_port is None:
                raise ValueError("no port")
            return cls(host, default_port)
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not lowest_port <= port <= 65535:
            raise ValueError(f"port {port} is not from {lowest_port} to 65535")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def is_domain_name(text: str) -> bool:
    """True for a syntactically valid DNS name (labels of letters, digits, ``-``, ``_``)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


_SIZE_RE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE | re.ASCII
)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string like ``"500M"``, ``"1.5G"``, ``"2GiB"``, ``"4096"``.

    K, M, G and T are powers of 1024; fractions of a byte are dropped. Raises ValueError.
    """
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size {value}")
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"not a size: {value!r}") from None
    return int(number * _UNITS[match.group(2).lower()])


def format_size(size: int) -> str | int:
    """``size`` as ``"2G"``/``"500M"``/``"64K"`` when a whole number of units, else the int."""
    for unit in "TGMK":
        factor = _UNITS[unit.lower()]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def default_speaker_name() -> str:
    """The host name without its domain (a speaker's default name)."""
    name = socket.gethostname().split(".")[0]
    return name.encode()[:MAX_NAME_BYTES].decode(errors="ignore") or "Cadenza"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"no TOML form for {value!r}")


# --- value kinds: parse a raw TOML value, say what is allowed, write it back


class _Invalid(Exception):
    """A raw value is not allowed: ``expected`` says what is, ``detail`` what is wrong."""

    def __init__(self, expected: str, detail: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.detail = detail


class _Kind(Generic[_T]):
    expected: str

    def parse(self, raw: object) -> _T:
        raise NotImplementedError

    def dump(self, value: _T) -> object:
        """The value as a TOML scalar that :meth:`parse` turns back into ``value``."""
        return value


class _Bool(_Kind[bool]):
    expected = "true or false"

    def parse(self, raw: object) -> bool:
        if not isinstance(raw, bool):
            raise _Invalid(self.expected)
        return raw


class _Int(_Kind[int]):
    def __init__(self, low: int, high: int, note: str = "") -> None:
        self.low, self.high = low, high
        self.expected = f"an integer from {low} to {high}{note}"

    def parse(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not self.low <= raw <= self.high:
            raise _Invalid(self.expected)
        return raw


class _Float(_Kind[float]):
    def __init__(self, low: float, high: float, *, open_low: bool = False) -> None:
        self.low, self.high, self.open_low = low, high, open_low
        self.expected = (
            f"a number greater than {low:g} and at most {high:g}"
            if open_low
            else f"a number from {low:g} to {high:g}"
        )

    def parse(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Invalid(self.expected)
        value = float(raw)
        low_ok = value > self.low if self.open_low else value >= self.low
        if not (math.isfinite(value) and low_ok and value <= self.high):
            raise _Invalid(self.expected)
        return value


class _Choice(_Kind[_T]):
    def __init__(self, *choices: _T) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(_toml_value(c) for c in choices)

    def parse(self, raw: object) -> _T:
        for choice in self.choices:
            if type(raw) is type(choice) and raw == choice:
                return choice
        raise _Invalid(self.expected)


class _Text(_Kind[str | None]):
    """A string without control characters; "" is None when ``optional``."""

    def __init__(self, what: str, *, optional: bool = False) -> None:
        self.optional = optional
        self.expected = f'{what}, or "" for none' if optional else what

    def parse(self, raw: object) -> str | None:
        if not isinstance(raw, str) or _has_control(raw):
            raise _Invalid(self.expected)
        if raw == "":
            if self.optional:
                return None
            raise _Invalid(self.expected)
        return self.check(raw)

    def check(self, text: str) -> str:
        return text

    def dump(self, value: str | None) -> object:
        return "" if value is None else value


class _Required(_Kind[str]):
    """A non-empty string without control characters."""

    def __init__(self, what: str) -> None:
        self.expected = what

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or raw == "" or _has_control(raw):
            raise _Invalid(self.expected)
        return raw


class _SpeakerName(_Kind[str]):
    expected = f'a name of at most {MAX_NAME_BYTES} bytes, or "" for the host name'

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or _has_control(raw):
            raise _Invalid(self.expected)
        if raw.strip() == "":
            return default_speaker_name()
        if len(raw.encode()) > MAX_NAME_BYTES:
            raise _Invalid(self.expected)
        return raw


class _UserName(_Text):
    def __init__(self) -> None:
        super().__init__("an account name (1 to 64 of a-z 0-9 . _ -)", optional=True)

    def check(self, text: str) -> str:
        if not USER_RE.match(text):
            raise _Invalid(self.expected)
        return text


class _Domain(_Text):
    def __init__(self) -> None:
        super().__init__('a DNS domain like "example.org"', optional=True)

    def check(self, text: str) -> str:
        if not is_domain_name(text):
            raise _Invalid(self.expected)
        return text.rstrip(".")


class _Fingerprint(_Text):
    _RE = re.compile(r"^[0-9a-f]{4}(?::[0-9a-f]{4}){7}$")

    def __init__(self) -> None:
        super().__init__(
            'a key fingerprint as "cadenza serve" prints it (8 groups of 4 hex digits'
            ' joined by ":")',
            optional=True,
        )

    def check(self, text: str) -> str:
        text = text.strip().lower()
        if not self._RE.match(text):
            raise _Invalid(self.expected)
        return text


class _Path(_Kind[Path]):
    expected = "an absolute path"

    def parse(self, raw: object) -> Path:
        if not isinstance(raw, str) or not raw.startswith("/") or _has_control(raw):
            raise _Invalid(self.expected)
        return Path(raw)

    def dump(self, value: Path) -> object:
        return str(value)


class _OptionalPath(_Kind[Path | None]):
    expected = 'an absolute path, or "" for none'

    def parse(self, raw: object) -> Path | None:
        if raw == "":
            return None
        try:
            return _Path().parse(raw)
        except _Invalid:
            raise _Invalid(self.expected) from None

    def dump(self, value: Path | None) -> object:
        return "" if value is None else str(value)


class _Size(_Kind[int | None]):
    def __init__(self, *, auto: bool) -> None:
        self.auto = auto
        self.expected = 'a size in bytes: an integer, or a string like "500M" or "1.5G"' + (
            ' (K, M, G, T are powers of 1024), or "auto"' if auto else " (powers of 1024)"
        )

    def parse(self, raw: object) -> int | None:
        if self.auto and raw == "auto":
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise _Invalid(self.expected)
        try:
            return parse_size(raw)
        except ValueError:
            raise _Invalid(self.expected) from None

    def dump(self, value: int | None) -> object:
        return "auto" if value is None else format_size(value)


class _Address(_Kind[HostPort | None]):
    def __init__(self, *, optional: bool, default_port: int | None, lowest_port: int) -> None:
        self.optional = optional
        self.default_port = default_port
        self.lowest_port = lowest_port
        example = default_port or 80
        self.expected = (
            '"host:port"'
            + ("" if default_port is None else f" (port {default_port} if left out)")
            + f', an IPv6 address in brackets ("[2001:db8::1]:{example}")'
            + (', or "" for none' if optional else "")
        )

    def parse(self, raw: object) -> HostPort | None:
        if not isinstance(raw, str):
            raise _Invalid(self.expected)
        if raw == "" and self.optional:
            return None
        try:
            return HostPort.parse(raw, default_port=self.default_port, lowest_port=self.lowest_port)
        except ValueError as exc:
            raise _Invalid(self.expected, str(exc)) from None

    def dump(self, value: HostPort | None) -> object:
        return "" if value is None else str(value)


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


# --- the configuration tree

_KIND = "kind"


def _kind(kind: _Kind[Any]) -> dict[str, _Kind[Any]]:
    return {_KIND: kind}


@dataclass(frozen=True)
class SpeakerConfig:
    """``[speaker]``: who this speaker is and where it keeps its files."""

    name: str = field(default_factory=default_speaker_name, metadata=_kind(_SpeakerName()))
    state_dir: Path = field(default=Path("/var/lib/cadenza"), metadata=_kind(_Path()))
    cache_dir: Path = field(default=Path("/var/cache/cadenza"), metadata=_kind(_Path()))


@dataclass(frozen=True)
class ServiceConfig:
    """``[service]``: how to find and log in to the central service."""

    address: HostPort | None = field(
        default=None,
        metadata=_kind(_Address(optional=True, default_port=DEFAULT_AP_PORT, lowest_port=1)),
    )
    domain: str | None = field(default=None, metadata=_kind(_Domain()))
    mdns: bool = field(default=True, metadata=_kind(_Bool()))
    username: str | None = field(default=None, metadata=_kind(_UserName()))
    password_file: Path | None = field(default=None, metadata=_kind(_OptionalPath()))
    fingerprint: str | None = field(default=None, metadata=_kind(_Fingerprint()))


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: the ALSA output, volume and loudness."""

    device: str = field(
        default="default", metadata=_kind(_Required('an ALSA PCM name like "default" or "hw:0"'))
    )
    fallback_device: str | None = field(
        default="null", metadata=_kind(_Text("an ALSA PCM name", optional=True))
    )
    period_frames: int = field(default=1024, metadata=_kind(_Int(64, 16384)))
    periods: int = field(default=4, metadata=_kind(_Int(2, 64)))
    rate_policy: str = field(default="device", metadata=_kind(_Choice("device", "resample")))
    volume_control: str = field(default="software", metadata=_kind(_Choice("software", "mixer")))
    mixer_control: str | None = field(
        default=None, metadata=_kind(_Text('an ALSA mixer control like "PCM"', optional=True))
    )
    mixer_card: str | None = field(
        default=None, metadata=_kind(_Text("an ALSA card name or index", optional=True))
    )
    volume: int = field(default=50, metadata=_kind(_Int(0, 100)))
    max_volume: int = field(default=100, metadata=_kind(_Int(0, 100)))
    normalisation: bool = field(default=True, metadata=_kind(_Bool()))
    volume_range_db: float = field(default=60.0, metadata=_kind(_Float(10, 120)))


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: the on-disk cache of whole encoded files."""

    max_size: int | None = field(default=None, metadata=_kind(_Size(auto=True)))
    min_free: int = field(default=1024**3, metadata=_kind(_Size(auto=False)))

    def size_limit(self, free_bytes: int) -> int:
        """The cache's cap given the file system's ``free_bytes`` (when the cache is empty).

        ``max_size`` when set; automatic: 10% of the free space, at most 10 GiB (seed).
        """
        if self.max_size is not None:
            return self.max_size
        return min(int(free_bytes * AUTO_CACHE_SHARE), AUTO_CACHE_CAP)


@dataclass(frozen=True)
class StreamingConfig:
    """``[streaming]``: what to fetch, how far ahead, and when to start playing."""

    bitrate: int = field(default=DEFAULT_BITRATE, metadata=_kind(_Choice(*BITRATES)))
    first_piece_seconds: float = field(
        default=DEFAULT_FIRST_PIECE_S, metadata=_kind(_Float(1, 120))
    )
    ahead_seconds: float = field(default=DEFAULT_AHEAD_S, metadata=_kind(_Float(1, 600)))
    prefetch_seconds: float = field(default=DEFAULT_PREFETCH_S, metadata=_kind(_Float(0, 600)))
    stutter_target: float = field(
        default=DEFAULT_STUTTER_TARGET, metadata=_kind(_Float(0, 0.5, open_low=True))
    )


@dataclass(frozen=True)
class ControlConfig:
    """``[control]``: the local HTTP API."""

    listen: HostPort = field(
        default=HostPort("0.0.0.0", 4080),
        metadata=_kind(_Address(optional=False, default_port=None, lowest_port=0)),
    )
    advertise: bool = field(default=True, metadata=_kind(_Bool()))
    open: bool = field(default=False, metadata=_kind(_Bool()))


@dataclass(frozen=True)
class P2PConfig:
    """``[p2p]``: the peer-to-peer overlay."""

    enabled: bool = field(default=True, metadata=_kind(_Bool()))
    port: int = field(default=4090, metadata=_kind(_Int(0, 65535, " (0: any free port)")))
    max_neighbours: int = field(default=20, metadata=_kind(_Int(1, 60)))
    hard_max_neighbours: int = field(default=30, metadata=_kind(_Int(1, 120)))
    max_uploads: int = field(default=4, metadata=_kind(_Int(0, 32)))
    upload_rate: int | None = field(default=0, metadata=_kind(_Size(auto=False)))
    lan_discovery: bool = field(default=True, metadata=_kind(_Bool()))


@dataclass(frozen=True)
class HardwareConfig:
    """``[hardware]``: the board (DAC, buttons, encoder, LED, amplifier) from hw/boards."""

    board: str = field(
        default="auto",
        metadata=_kind(
            _Required('"auto" (detect), "none", or a profile name like "hifiberry-dacplus"')
        ),
    )
    gpio: bool = field(default=True, metadata=_kind(_Bool()))


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``Config()`` is every default."""

    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)

    def to_toml(self) -> str:
        """Every key of every section, in TOML that :func:`parse` reads back to ``self``."""
        lines: list[str] = []
        for section, cls in _SECTIONS.items():
            values = getattr(self, section)
            lines.append(f"[{section}]")
            for f in dataclasses.fields(cls):
                kind: _Kind[Any] = f.metadata[_KIND]
                lines.append(f"{f.name} = {_toml_value(kind.dump(getattr(values, f.name)))}")
            lines.append("")
        return "\n".join(lines)


_SECTIONS: dict[str, type] = {
    "speaker": SpeakerConfig,
    "service": ServiceConfig,
    "audio": AudioConfig,
    "cache": CacheConfig,
    "streaming": StreamingConfig,
    "control": ControlConfig,
    "p2p": P2PConfig,
    "hardware": HardwareConfig,
}


# --- reading


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and check the configuration file.

    ``path`` None means the default, ``/etc/cadenza/cadenzad.toml``; if that does not exist,
    the result is every default. A ``path`` given explicitly must exist. Blocks (file I/O).
    Raises :class:`ConfigError`.
    """
    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        if not explicit:
            return Config()
        raise ConfigError([f"{file}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read it: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{file}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    return parse(text, str(file))


_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)


def parse(text: str, source: str = "<config>") -> Config:
    """Check the TOML ``text`` and build a :class:`Config`; ``source`` names it in messages.

    Raises :class:`ConfigError` listing every problem found.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.match(message)
        if match:
            what, line, column = match.groups()
            raise ConfigError([f"{source}:{line}:{column}: invalid TOML: {what}"]) from None
        message = message.replace("(at end of document)", "(at the end of the file)")
        raise ConfigError([f"{source}: invalid TOML: {message}"]) from None

    problems = _Problems(source, text)
    sections: dict[str, Any] = {}
    for name, table in document.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            problems.unknown_top_level(name, table)
        elif not isinstance(table, dict):
            problems.add(None, name, f"must be a [{name}] section, got {_show(table)}")
        else:
            sections[name] = _section(cls, name, table, problems)
    config = Config(**sections)
    _check_together(config, problems)
    problems.raise_if_any()
    return config


def _section(cls: type[_T], section: str, table: Mapping[str, object], problems: _Problems) -> _T:
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        f = known.get(key)
        if f is None:
            hint = _did_you_mean(key, known)
            problems.add(section, key, None, f"unknown key {section}.{key}{hint}")
            continue
        kind: _Kind[Any] = f.metadata[_KIND]
        try:
            values[key] = kind.parse(raw)
        except _Invalid as exc:
            detail = f" ({exc.detail})" if exc.detail else ""
            problems.add(section, key, f"expected {exc.expected}, got {_show(raw)}{detail}")
    return cls(**values)


def _check_together(config: Config, problems: _Problems) -> None:
    # Only between values that were read as written: a bad one already has its message.
    audio, service = config.audio, config.service
    if problems.clean("audio") and audio.volume > audio.max_volume:
        problems.add(
            "audio", "volume", f"{audio.volume} is above audio.max_volume ({audio.max_volume})"
        )
    p2p = config.p2p
    if problems.clean("p2p") and p2p.max_neighbours > p2p.hard_max_neighbours:
        problems.add(
            "p2p",
            "max_neighbours",
            f"{p2p.max_neighbours} is above p2p.hard_max_neighbours ({p2p.hard_max_neighbours})",
        )
    if not problems.clean("service"):
        return
    if service.address is None and service.domain is None and not service.mdns:
        problems.add(
            None,
            "service",
            "no way to find an access point: set service.address or service.domain,"
            " or leave service.mdns = true",
        )
    if service.password_file is not None and service.username is None:
        problems.add("service", "password_file", "needs service.username (whose password it is)")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _show(raw: object) -> str:
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, datetime | date | time):
        return raw.isoformat()
    if isinstance(raw, str) and len(raw) > 60:
        return _toml_value(raw[:50] + "…")
    if isinstance(raw, bool | int | float | str):
        return _toml_value(raw)
    return repr(raw)


class _Problems:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.found: list[str] = []
        self._sections: set[str | None] = set()

    def add(
        self, section: str | None, key: str, message: str | None, whole: str | None = None
    ) -> None:
        """``section.key: message``; ``whole`` replaces the ``key: message`` part."""
        self._sections.add(section)
        name = key if section is None else f"{section}.{key}"
        line = self._locate(section, key)
        where = self.source if line is None else f"{self.source}:{line}"
        self.found.append(f"{where}: {whole if whole is not None else f'{name}: {message}'}")

    def unknown_top_level(self, name: str, value: object) -> None:
        if isinstance(value, dict):
            hint = _did_you_mean(name, _SECTIONS)
            self.add(None, name, None, f"unknown section [{name}]{hint}")
            return
        owners = [s for s, cls in _SECTIONS.items() if name in _field_names(cls)]
        hint = f" (did you mean {name} under [{owners[0]}]?)" if owners else ""
        self.add(None, name, None, f"unknown key {name}: keys go in a [section]{hint}")

    def clean(self, section: str) -> bool:
        """True if no problem was found in ``section`` so far."""
        return section not in self._sections

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)

    def _locate(self, section: str | None, key: str) -> int | None:
        # Best effort: the usual layout, "[section]" then "key = value" lines.
        current: str | None = None
        quoted = re.escape(key)
        key_re = re.compile(rf"^\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*=")
        header_re = re.compile(r"^\s*\[\s*([^\]\s]+)\s*\]")
        for number, line in enumerate(self.lines, 1):
            header = header_re.match(line)
            if header:
                current = header.group(1)
                if section is None and current == key:
                    return number
            elif current == section and key_re.match(line):
                return number
        return None


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


__all__ = [
    "DEFAULT_AP_PORT",
    "DEFAULT_PATH",
    "AudioConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "HostPort",
    "P2PConfig",
    "ServiceConfig",
    "SpeakerConfig",
    "StreamingConfig",
    "default_speaker_name",
    "format_size",
    "is_domain_name",
    "load",
    "parse",
    "parse_size",
]
