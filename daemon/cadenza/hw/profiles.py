"""Board profiles: what a speaker's sound card and GPIO header look like, one TOML file each.

A profile (``hw/boards/NAME.toml`` in a checkout, ``/usr/share/cadenza/boards`` when
installed, ``/etc/cadenza/boards`` for local ones) says how to find the board, which ALSA
device and mixer control to use, the ``config.txt`` lines it needs, and which GPIO lines
carry its amplifier enable/mute, buttons, rotary encoder and status LED::

    [board]
    name = "iqaudio-dacplus"               # = the file's stem
    description = "Raspberry Pi DAC+ (IQaudIO Pi-DAC+)"

    [board.detect]                         # a card in /proc/asound/cards that has ...
    card_ids = ["IQaudIODAC"]              # ... one of these ids (exact), and
    card_names = ["IQaudIODAC"]            # ... one of these short or long names (exact), and
    card_drivers = ["IQaudIODAC"]          # ... one of these drivers (exact);
    dt_models = ["Raspberry Pi"]           # and the device-tree model contains one of these
    hat_products = ["Raspberry Pi DAC Plus"]  # (a HAT EEPROM naming it: a stronger match)
    priority = 30                          # the higher wins when several boards match

    [audio]
    device = "plughw:CARD={card},DEV=0"    # {card} = the id of the card that matched
    mixer_controls = ["Digital"]           # tried in order; none (or absent): software volume
    mixer_db = [-103.5, 0.0]               # the control's dB range
    dtoverlay = ["iqaudio-dacplus"]        # each becomes a "dtoverlay=..." line
    config_txt = ["dtparam=audio=off"]     # other /boot/firmware/config.txt lines

    [gpio]
    chip = "gpiochip0"
    chip_labels = ["pinctrl-bcm2711"]      # found by label first (the Pi 5's chip moved)
    idle_mute_s = 10.0                     # mute the amplifier after this long without audio
    unmute_lead_ms = 150                   # unmute this long before audio starts
    amp_enable = { line = 25, active_low = false }
    mute = { line = 22, active_low = true }
    led = { line = 17, active_low = false }

    [gpio.buttons]
    long_press_ms = 1500                   # held this long: approve the pairing request
    volume_step = 5
    play_pause = { line = 5, active_low = true, bias = "pull-up", debounce_ms = 30 }

    [gpio.encoder]
    a = 23
    b = 24
    active_low = true                      # common encoders short to ground, with pull-ups
    steps_per_detent = 4                   # 4 (most), 2 or 1 quadrature steps per click
    volume_step = 2
    button = { line = 27 }

Every key but ``board.name`` and ``audio.device`` may be left out: a missing feature is
simply absent. Unknown keys and bad values are errors (:class:`ProfileError`, naming the
file and the key). Nothing here touches the hardware: :func:`read_system` reads the two
files detection needs, :func:`detect` and :func:`select` are pure.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "BUTTON_NAMES",
    "SYSTEM_DIRS",
    "AudioProfile",
    "ButtonLine",
    "Card",
    "Detect",
    "EncoderLines",
    "GpioProfile",
    "OutputLine",
    "Profile",
    "ProfileError",
    "SystemInfo",
    "default_dirs",
    "detect",
    "load_profile",
    "load_profiles",
    "parse_cards",
    "read_system",
    "select",
]

SYSTEM_DIRS = (Path("/etc/cadenza/boards"), Path("/usr/share/cadenza/boards"))
"""Where installed profiles live: local ones first (they override), then the package's."""

CHECKOUT_DIR = Path(__file__).resolve().parents[3] / "hw" / "boards"
"""The repository's profiles, when running from a checkout (daemon/cadenza/hw/ -> hw/boards)."""

BUTTON_NAMES = ("play_pause", "next", "volume_up", "volume_down")
"""The buttons a profile may wire (``[gpio.buttons.NAME]``)."""

BIASES = ("pull-up", "pull-down", "disabled", "as-is")

MAX_LINE = 1023  # the largest chips (the Pi 5's RP1 has 54 lines); anything above is a typo
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_OVERLAY_RE = re.compile(r"^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+(=[^,\s]+)?)*$")
_CHIP_RE = re.compile(r"^(gpiochip[0-9]+|/dev/[A-Za-z0-9_./-]+)$")


class ProfileError(Exception):
    """A profile cannot be used: ``file`` and ``key`` (dotted, ``gpio.buttons.next.line``)
    say where, ``str()`` is ``"FILE: KEY: what is wrong"``."""

    def __init__(self, file: Path | str, key: str, message: str) -> None:
        self.file = Path(file)
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


# --- the profile tree


@dataclass(frozen=True)
class Detect:
    """``[board.detect]``: which cards (and device-tree models) mean this board."""

    card_ids: tuple[str, ...] = ()
    card_names: tuple[str, ...] = ()
    card_drivers: tuple[str, ...] = ()
    dt_models: tuple[str, ...] = ()
    hat_products: tuple[str, ...] = ()
    priority: int = 0

    def card_matches(self, card: Card) -> bool:
        """Whether ``card`` passes every card rule that is set (at least one is)."""
        if not (self.card_ids or self.card_names or self.card_drivers):
            return False
        if self.card_ids and card.id not in self.card_ids:
            return False
        if self.card_names and not {card.short_name, card.long_name} & set(self.card_names):
            return False
        return not (self.card_drivers and card.driver not in self.card_drivers)

    def model_matches(self, dt_model: str | None) -> bool:
        """Whether the device-tree model passes (always, when no model rule is set)."""
        if not self.dt_models:
            return True
        return dt_model is not None and any(m in dt_model for m in self.dt_models)

    def hat_matches(self, hat_product: str | None) -> bool:
        return hat_product is not None and hat_product in self.hat_products


@dataclass(frozen=True)
class AudioProfile:
    """``[audio]``: the ALSA side and the boot configuration."""

    device: str
    mixer_controls: tuple[str, ...] = ()
    mixer_db: tuple[float, float] | None = None
    dtoverlay: tuple[str, ...] = ()
    config_txt: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputLine:
    """A GPIO output: ``active_low`` means the function (enable, mute, lit) is a low level."""

    line: int
    active_low: bool = False


@dataclass(frozen=True)
class ButtonLine:
    """A GPIO input for a push button (or an encoder's push switch)."""

    line: int
    active_low: bool = True
    bias: str = "pull-up"
    debounce_ms: int = 30


@dataclass(frozen=True)
class EncoderLines:
    """A rotary encoder for volume: quadrature lines ``a``/``b`` and an optional push switch."""

    a: int
    b: int
    active_low: bool = True
    bias: str = "pull-up"
    debounce_ms: int = 0
    steps_per_detent: int = 4
    volume_step: int = 2
    invert: bool = False
    button: ButtonLine | None = None


@dataclass(frozen=True)
class GpioProfile:
    """``[gpio]``: what is wired to the header. Features the board lacks are ``None``/empty."""

    chip: str = "gpiochip0"
    chip_labels: tuple[str, ...] = ()
    amp_enable: OutputLine | None = None
    mute: OutputLine | None = None
    led: OutputLine | None = None
    buttons: Mapping[str, ButtonLine] = field(default_factory=dict)
    long_press_ms: int = 1500
    button_volume_step: int = 5
    encoder: EncoderLines | None = None
    idle_mute_s: float = 10.0
    unmute_lead_ms: int = 150

    @property
    def has_amp(self) -> bool:
        return self.amp_enable is not None or self.mute is not None

    def lines(self) -> dict[int, str]:
        """Every line used, with the key that uses it."""
        used: dict[int, str] = {}
        for key, out in (("amp_enable", self.amp_enable), ("mute", self.mute), ("led", self.led)):
            if out is not None:
                used[out.line] = f"gpio.{key}"
        for name, button in self.buttons.items():
            used[button.line] = f"gpio.buttons.{name}"
        if self.encoder is not None:
            used[self.encoder.a] = "gpio.encoder.a"
            used[self.encoder.b] = "gpio.encoder.b"
            if self.encoder.button is not None:
                used[self.encoder.button.line] = "gpio.encoder.button"
        return used


@dataclass(frozen=True)
class Profile:
    """One board. ``card`` is the id of the ALSA card it was detected on (else ``None``)."""

    name: str
    description: str
    path: Path
    detect: Detect
    audio: AudioProfile
    gpio: GpioProfile | None = None
    card: str | None = None

    @property
    def alsa_device(self) -> str | None:
        """The ALSA PCM to open: ``audio.device`` with ``{card}`` filled in; ``None`` when
        it needs a card and none was detected (then the configured device stands)."""
        if "{card}" not in self.audio.device:
            return self.audio.device
        if self.card is None:
            return None
        return self.audio.device.replace("{card}", self.card)

    @property
    def mixer_card(self) -> str | None:
        """The card whose mixer to use (the detected card, or the one the device names)."""
        if self.card is not None:
            return self.card
        match = re.search(r"CARD=([^,]+)", self.audio.device)
        return match.group(1) if match and "{" not in match.group(1) else None

    def config_txt_lines(self) -> list[str]:
        """The lines /boot/firmware/config.txt needs for this board."""
        return [f"dtoverlay={o}" for o in self.audio.dtoverlay] + list(self.audio.config_txt)


# --- loading and validation


class _Table:
    """A TOML table being read: each key taken once, the rest reported as unknown."""

    def __init__(self, path: Path, prefix: str, data: Any) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(data, dict):
            raise ProfileError(path, prefix, "must be a table")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ProfileError:
        return ProfileError(self.path, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def table(self, name: str, *, required: bool = False) -> _Table | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error(name, "is missing")
            return None
        return _Table(self.path, self.key(name), value)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(name)
        if value is None:
            if required or default is None:
                raise self.error(name, "is missing (a string)")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"must be a non-empty string, not {value!r}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"must be a list of non-empty strings, not {value!r}")
        return tuple(value)

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise self.error(name, f"is missing (an integer {low}..{high})")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"must be an integer {low}..{high}, not {value!r}")
        return value

    def number(self, name: str, low: float, high: float, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number {low}..{high}, not {value!r}")
        if not (math.isfinite(value) and low <= value <= high):
            raise self.error(name, f"must be a number {low}..{high}, not {value!r}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {value!r}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            raise self.error(name, f"must be one of {allowed}, not {value!r}")
        return str(value)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "is not a known key")


def _line(table: _Table, name: str) -> int:
    return table.integer(name, 0, MAX_LINE)


def _output(table: _Table, name: str) -> OutputLine | None:
    sub = table.table(name)
    if sub is None:
        return None
    out = OutputLine(line=_line(sub, "line"), active_low=sub.boolean("active_low", False))
    sub.finish()
    return out


def _button(table: _Table, name: str) -> ButtonLine | None:
    sub = table.table(name)
    if sub is None:
        return None
    line = _line(sub, "line")
    active_low = sub.boolean("active_low", True)
    bias = sub.choice("bias", BIASES, "pull-up" if active_low else "pull-down")
    debounce = sub.integer("debounce_ms", 0, 1000, 30)
    sub.finish()
    return ButtonLine(line=line, active_low=active_low, bias=bias, debounce_ms=debounce)


def _detect(table: _Table | None) -> Detect:
    if table is None:
        return Detect()
    detect = Detect(
        card_ids=table.strings("card_ids"),
        card_names=table.strings("card_names"),
        card_drivers=table.strings("card_drivers"),
        dt_models=table.strings("dt_models"),
        hat_products=table.strings("hat_products"),
        priority=table.integer("priority", 0, 100, 0),
    )
    table.finish()
    has_card_rule = detect.card_ids or detect.card_names or detect.card_drivers
    if not has_card_rule and (detect.dt_models or detect.hat_products):
        raise table.error(
            "card_ids",
            "detection needs a card rule (card_ids, card_names "
            "or card_drivers): a board without its card is not there",
        )
    return detect


def _audio(table: _Table) -> AudioProfile:
    device = table.string("device", required=True)
    leftover = re.sub(r"\{card\}", "", device)
    if "{" in leftover or "}" in leftover or any(c.isspace() for c in device):
        raise table.error("device", f'{device!r}: the only placeholder is "{{card}}", no spaces')
    mixers = table.strings("mixer_controls")
    mixer_db: tuple[float, float] | None = None
    raw_db = table.raw("mixer_db")
    if raw_db is not None:
        ok = (
            isinstance(raw_db, list)
            and len(raw_db) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw_db)
            and all(math.isfinite(v) and -200 <= v <= 60 for v in raw_db)
            and raw_db[0] < raw_db[1]
        )
        if not ok:
            raise table.error("mixer_db", f"must be [min, max] in dB, min < max, not {raw_db!r}")
        if not mixers:
            raise table.error("mixer_db", "is given but no mixer_controls are")
        mixer_db = (float(raw_db[0]), float(raw_db[1]))
    overlays = table.strings("dtoverlay")
    for overlay in overlays:
        if overlay.startswith("dtoverlay=") or not _OVERLAY_RE.match(overlay):
            raise table.error(
                "dtoverlay",
                f"{overlay!r} is not an overlay like "
                '"hifiberry-dacplus" or "name,param=value" (without "dtoverlay=")',
            )
    lines = table.strings("config_txt")
    for line in lines:
        if "=" not in line or "\n" in line or line.startswith("dtoverlay="):
            raise table.error(
                "config_txt",
                f"{line!r} is not one config.txt line like "
                '"dtparam=audio=off" (overlays go in dtoverlay)',
            )
    table.finish()
    return AudioProfile(device, mixers, mixer_db, overlays, lines)


def _encoder(table: _Table | None) -> EncoderLines | None:
    if table is None:
        return None
    a, b = _line(table, "a"), _line(table, "b")
    active_low = table.boolean("active_low", True)
    bias = table.choice("bias", BIASES, "pull-up" if active_low else "pull-down")
    debounce = table.integer("debounce_ms", 0, 100, 0)
    steps = table.integer("steps_per_detent", 1, 4, 4)
    if steps not in (1, 2, 4):
        raise table.error("steps_per_detent", f"must be 1, 2 or 4, not {steps}")
    volume_step = table.integer("volume_step", 1, 50, 2)
    invert = table.boolean("invert", False)
    button = _button(table, "button")
    table.finish()
    if a == b:
        raise table.error("b", f"is the same line as a ({a})")
    return EncoderLines(a, b, active_low, bias, debounce, steps, volume_step, invert, button)


def _gpio(table: _Table | None) -> GpioProfile | None:
    if table is None:
        return None
    chip = table.string("chip", "gpiochip0")
    if not _CHIP_RE.match(chip):
        raise table.error("chip", f'must be like "gpiochip0" or "/dev/gpiochip0", not {chip!r}')
    labels = table.strings("chip_labels")
    idle = table.number("idle_mute_s", 0.0, 3600.0, 10.0)
    lead = table.integer("unmute_lead_ms", 0, 5000, 150)
    amp_enable = _output(table, "amp_enable")
    mute = _output(table, "mute")
    led = _output(table, "led")
    buttons: dict[str, ButtonLine] = {}
    long_press, volume_step = 1500, 5
    btable = table.table("buttons")
    if btable is not None:
        long_press = btable.integer("long_press_ms", 100, 10000, 1500)
        volume_step = btable.integer("volume_step", 1, 50, 5)
        for name in BUTTON_NAMES:
            button = _button(btable, name)
            if button is not None:
                buttons[name] = button
        btable.finish()
    encoder = _encoder(table.table("encoder"))
    table.finish()
    gpio = GpioProfile(
        chip=chip,
        chip_labels=labels,
        amp_enable=amp_enable,
        mute=mute,
        led=led,
        buttons=buttons,
        long_press_ms=long_press,
        button_volume_step=volume_step,
        encoder=encoder,
        idle_mute_s=idle,
        unmute_lead_ms=lead,
    )
    _check_distinct_lines(table, gpio)
    return gpio


def _check_distinct_lines(table: _Table, gpio: GpioProfile) -> None:
    seen: dict[int, str] = {}
    for key, line in _all_lines(gpio):
        if line in seen:
            raise ProfileError(table.path, key, f"line {line} is already used by {seen[line]}")
        seen[line] = key


def _all_lines(gpio: GpioProfile) -> Iterable[tuple[str, int]]:
    for key, out in (("amp_enable", gpio.amp_enable), ("mute", gpio.mute), ("led", gpio.led)):
        if out is not None:
            yield f"gpio.{key}.line", out.line
    for name, button in gpio.buttons.items():
        yield f"gpio.buttons.{name}.line", button.line
    if gpio.encoder is not None:
        yield "gpio.encoder.a", gpio.encoder.a
        yield "gpio.encoder.b", gpio.encoder.b
        if gpio.encoder.button is not None:
            yield "gpio.encoder.button.line", gpio.encoder.button.line


def parse_profile(text: str, path: Path | str) -> Profile:
    """A profile from TOML text; ``path`` names it in errors (and its stem is the name)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(path, "", f"not valid TOML: {e}") from None
    top = _Table(path, "", data)
    board = top.table("board", required=True)
    assert board is not None
    name = board.string("name", required=True)
    if not _NAME_RE.match(name):
        raise board.error("name", f"{name!r} must be lower-case letters, digits and '-'")
    if path.suffix == ".toml" and name != path.stem:
        raise board.error("name", f"{name!r} must be the file's name ({path.stem!r})")
    description = board.string("description", name)
    detect = _detect(board.table("detect"))
    board.finish()
    audio_table = top.table("audio", required=True)
    assert audio_table is not None
    audio = _audio(audio_table)
    gpio = _gpio(top.table("gpio"))
    top.finish()
    return Profile(name, description, path, detect, audio, gpio)


def load_profile(path: Path | str) -> Profile:
    """Read and validate one profile file (:class:`ProfileError` naming file and key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(path, "", f"cannot be read: {e}") from None
    return parse_profile(text, path)


def default_dirs() -> list[Path]:
    """Where profiles are looked for, first wins: ``/etc/cadenza/boards`` (local boards),
    the checkout's ``hw/boards`` (when running from one), ``/usr/share/cadenza/boards``."""
    dirs = [SYSTEM_DIRS[0]]
    if CHECKOUT_DIR.is_dir():
        dirs.append(CHECKOUT_DIR)
    dirs.append(SYSTEM_DIRS[1])
    return dirs


def load_profiles(dirs: Path | str | Iterable[Path | str] | None = None) -> dict[str, Profile]:
    """Every ``*.toml`` profile in ``dirs`` (default :func:`default_dirs`), by name.

    A directory that does not exist is skipped; a name found in an earlier directory hides
    the same name in a later one; the same name twice in one directory is an error.
    """
    if dirs is None:
        dirs = default_dirs()
    elif isinstance(dirs, str | Path):
        dirs = [dirs]
    profiles: dict[str, Profile] = {}
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        here: dict[str, Profile] = {}
        for path in sorted(directory.glob("*.toml")):
            profile = load_profile(path)
            if profile.name in here:
                raise ProfileError(
                    path, "board.name", f"{profile.name!r} is also {here[profile.name].path}"
                )
            here[profile.name] = profile
        for name, profile in here.items():
            profiles.setdefault(name, profile)
    return dict(sorted(profiles.items()))


# --- detection


class Card(NamedTuple):
    """One entry of /proc/asound/cards."""

    number: int
    id: str
    driver: str
    short_name: str
    long_name: str


_CARD_RE = re.compile(r"^\s*(\d+)\s+\[([^\]]*?)\s*\]:\s+(\S+)\s+-\s+(.*?)\s*$")


def parse_cards(text: str) -> list[Card]:
    """The cards in /proc/asound/cards' text (``" 0 [id  ]: driver - short\\n   long"``)."""
    cards: list[Card] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _CARD_RE.match(line)
        if match is None:
            continue
        long_name = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if _CARD_RE.match(long_name):
            long_name = ""
        index, card_id, driver, short = match.groups()
        cards.append(Card(int(index), card_id.strip(), driver, short, long_name or short))
    return cards


class SystemInfo(NamedTuple):
    """What detection reads from the running system."""

    cards_text: str
    dt_model: str | None
    hat_product: str | None = None


def _read_dt_string(paths: Sequence[Path]) -> str | None:
    for path in paths:
        try:
            raw = path.read_bytes()[:4096]
        except OSError:
            continue
        text = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        return text or None
    return None


def read_system(root: Path | str = "/") -> SystemInfo:
    """Read /proc/asound/cards, the device-tree model (``/proc/device-tree/model``, else
    ``/sys/firmware/devicetree/base/model``) and a HAT EEPROM's product name. Anything
    missing or unreadable is empty or ``None``: this never raises for an odd system."""
    root = Path(root)
    try:
        cards = (root / "proc/asound/cards").read_bytes()[:65536].decode("utf-8", "replace")
    except OSError:
        cards = ""
    bases = [root / "proc/device-tree", root / "sys/firmware/devicetree/base"]
    model = _read_dt_string([b / "model" for b in bases])
    hat = _read_dt_string([b / "hat/product" for b in bases])
    return SystemInfo(cards, model, hat)


def detect(
    cards_text: str,
    dt_model: str | None,
    profiles: Mapping[str, Profile] | Iterable[Profile],
    *,
    hat_product: str | None = None,
) -> Profile | None:
    """The board these cards (and device-tree model) show, with ``card`` set; else ``None``.

    A profile matches when one card passes its card rules and the model passes its model
    rule. Of several matches, a HAT EEPROM naming the board wins, then the higher
    ``priority``, then the card listed first (the lower index), then the name.
    """
    items = profiles.values() if isinstance(profiles, Mapping) else profiles
    cards = parse_cards(cards_text)
    best: tuple[tuple[int, int, int, str], Profile] | None = None
    for profile in items:
        rules = profile.detect
        if not rules.model_matches(dt_model):
            continue
        for card in cards:
            if not rules.card_matches(card):
                continue
            key = (
                0 if rules.hat_matches(hat_product) else 1,
                -rules.priority,
                card.number,
                profile.name,
            )
            if best is None or key < best[0]:
                best = (key, dataclasses.replace(profile, card=card.id))
            break
    return best[1] if best else None


def select(
    profiles: Mapping[str, Profile],
    board: str | None,
    system: SystemInfo,
) -> Profile | None:
    """The profile to use: ``board`` from the configuration when set (``"auto"`` or empty:
    detect; ``"none"``: no board support), else :func:`detect` on ``system``.

    A named board still gets its card filled in when one of its cards is present. An
    unknown name is a :class:`ValueError` listing the known ones.
    """
    if board is None or board in ("", "auto"):
        return detect(system.cards_text, system.dt_model, profiles, hat_product=system.hat_product)
    if board == "none":
        return None
    if board not in profiles:
        known = ", ".join(sorted(profiles)) or "none found"
        raise ValueError(f"unknown board {board!r} (known: {known}; or auto, none)")
    profile = profiles[board]
    for card in parse_cards(system.cards_text):
        if profile.detect.card_matches(card):
            return dataclasses.replace(profile, card=card.id)
    return profile
