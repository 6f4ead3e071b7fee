"""Board profiles: every shipped profile is valid, detection picks the right board from
real-looking /proc/asound/cards texts and device-tree models, the configuration's board
overrides it, and a bad profile names its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.hw import profiles as hwp
from cadenza.hw.profiles import (
    ProfileError,
    SystemInfo,
    detect,
    load_profile,
    load_profiles,
    parse_cards,
    read_system,
    select,
)

BOARDS = Path(__file__).resolve().parents[2] / "hw" / "boards"
BOARD_FILES = sorted(BOARDS.glob("*.toml"))

# --- samples of /proc/asound/cards (the kernel pads the id to 15 columns)

PI4_BOOKWORM = """\
 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 2 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
"""

PI3_LEGACY = """\
 0 [ALSA           ]: bcm2835_alsa - bcm2835 ALSA
                      bcm2835 ALSA
"""

PI4_HIFIBERRY_DACPLUS = """\
 0 [sndrpihifiberry]: HifiberryDacp - snd_rpi_hifiberry_dacplus
                      snd_rpi_hifiberry_dacplus
 1 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 2 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
"""

PI3_IQAUDIO_WITH_JACK = """\
 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [IQaudIODAC     ]: IQaudIODAC - IQaudIODAC
                      IQaudIODAC
"""

ZERO2_PIRATE_AUDIO = """\
 0 [sndrpihifiberry]: RPi-simple - snd_rpi_hifiberry_dac
                      snd_rpi_hifiberry_dac
"""

PI4_USB_DAC = """\
 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 2 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
 3 [Device         ]: USB-Audio - USB Audio Device
                      C-Media Electronics Inc. USB Audio Device at usb-0000:01:00.0-1.3, full speed
"""

PI5_USB_ADAPTER = """\
 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 1 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
 2 [A              ]: USB-Audio - USB-C to 3.5mm Headphone Jack A
                      Apple Inc. USB-C to 3.5mm Headphone Jack Adapter at usb-xhci-hcd.0-1, high spee
"""  # noqa: E501  (a card's long name is cut at 79 characters, as here)

PC_HDA_AND_USB = """\
 0 [PCH            ]: HDA-Intel - HDA Intel PCH
                      HDA Intel PCH at 0xf7f10000 irq 33
 1 [DAC            ]: USB-Audio - FiiO USB DAC-E10
                      FiiO FiiO USB DAC-E10 at usb-0000:00:14.0-2, full speed
"""

PC_HDA_ONLY = """\
 0 [PCH            ]: HDA-Intel - HDA Intel PCH
                      HDA Intel PCH at 0xf7f10000 irq 33
"""

NO_CARDS = "--- no soundcards ---\n"

PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI3 = "Raspberry Pi 3 Model B Plus Rev 1.3"
ZERO2 = "Raspberry Pi Zero 2 W Rev 1.0"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"


@pytest.fixture(scope="module")
def shipped() -> dict[str, hwp.Profile]:
    return load_profiles(BOARDS)


# --- the shipped profiles


def test_the_boards_the_issue_asks_for_are_there(shipped: dict[str, hwp.Profile]) -> None:
    assert {
        "pi-headphones",
        "usb-dac",
        "hifiberry-dacplus",
        "iqaudio-dacplus",
        "pimoroni-pirate-audio",
    } <= set(shipped)
    i2s = [p for p in shipped.values() if p.audio.dtoverlay]
    assert len(i2s) >= 3


@pytest.mark.parametrize("path", BOARD_FILES, ids=[p.stem for p in BOARD_FILES])
def test_every_shipped_profile_loads_and_is_sane(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.description
    # Every shipped board can be detected, by a card rule.
    rules = profile.detect
    assert rules.card_ids or rules.card_names or rules.card_drivers
    assert "CARD=" in profile.audio.device
    if profile.audio.mixer_db is not None:
        low, high = profile.audio.mixer_db
        assert -130 <= low < high <= 24
    for line in profile.config_txt_lines():
        assert "=" in line and "\n" not in line
    gpio = profile.gpio
    if gpio is not None:
        lines = gpio.lines()
        # On the Pi's header (BCM 0-27), never on the pins the audio itself uses:
        # I2S (18-21), nor the I2C (2, 3) through which the DACs are configured.
        assert all(0 <= line <= 27 for line in lines), lines
        assert not set(lines) & {2, 3, 18, 19, 20, 21}, lines
        for button in gpio.buttons.values():
            assert 0 < button.debounce_ms <= 100
            assert button.bias == ("pull-up" if button.active_low else "pull-down")


def test_shipped_facts(shipped: dict[str, hwp.Profile]) -> None:
    dacplus = shipped["hifiberry-dacplus"]
    assert dacplus.config_txt_lines()[0] == "dtoverlay=hifiberry-dacplus"
    assert dacplus.audio.mixer_controls == ("Digital",)
    assert dacplus.audio.mixer_db == (-103.5, 0.0)
    assert dacplus.alsa_device == "plughw:CARD=sndrpihifiberry,DEV=0"
    assert dacplus.gpio is None  # nothing on the header

    iq = shipped["iqaudio-dacplus"]
    assert "dtoverlay=iqaudio-dacplus" in iq.config_txt_lines()
    assert iq.gpio is not None and iq.gpio.mute == hwp.OutputLine(22, active_low=True)
    assert iq.gpio.encoder is not None
    assert (iq.gpio.encoder.a, iq.gpio.encoder.b) == (23, 24)
    assert iq.gpio.encoder.button is not None and iq.gpio.encoder.button.line == 27

    pirate = shipped["pimoroni-pirate-audio"]
    assert pirate.config_txt_lines()[:2] == ["dtoverlay=hifiberry-dac", "gpio=25=op,dh"]
    assert pirate.audio.mixer_controls == ()  # software volume
    assert pirate.gpio is not None
    assert pirate.gpio.amp_enable == hwp.OutputLine(25, active_low=False)
    assert {n: b.line for n, b in pirate.gpio.buttons.items()} == {
        "play_pause": 5,
        "volume_down": 6,
        "next": 16,
        "volume_up": 24,
    }
    assert all(b.active_low and b.bias == "pull-up" for b in pirate.gpio.buttons.values())

    jack = shipped["pi-headphones"]
    assert jack.audio.mixer_controls == ("PCM", "Headphone")
    assert jack.alsa_device is None  # needs the detected card

    usb = shipped["usb-dac"]
    assert usb.audio.mixer_db is None and not usb.audio.dtoverlay


def test_default_dirs_find_the_checkout() -> None:
    dirs = hwp.default_dirs()
    assert BOARDS in dirs
    assert dirs[0] == Path("/etc/cadenza/boards")
    assert dirs[-1] == Path("/usr/share/cadenza/boards")
    assert set(load_profiles()) >= set(load_profiles(BOARDS))


# --- detection


@pytest.mark.parametrize(
    ("cards", "model", "board", "card", "device"),
    [
        (PI4_BOOKWORM, PI4, "pi-headphones", "Headphones", "plughw:CARD=Headphones,DEV=0"),
        (PI3_LEGACY, PI3, "pi-headphones", "ALSA", "plughw:CARD=ALSA,DEV=0"),
        (PI4_HIFIBERRY_DACPLUS, PI4, "hifiberry-dacplus", "sndrpihifiberry", None),
        (PI3_IQAUDIO_WITH_JACK, PI3, "iqaudio-dacplus", "IQaudIODAC", None),
        (ZERO2_PIRATE_AUDIO, ZERO2, "pimoroni-pirate-audio", "sndrpihifiberry", None),
        (PI4_USB_DAC, PI4, "usb-dac", "Device", "plughw:CARD=Device,DEV=0"),
        (PI5_USB_ADAPTER, PI5, "usb-dac", "A", "plughw:CARD=A,DEV=0"),
        (PC_HDA_AND_USB, None, "usb-dac", "DAC", "plughw:CARD=DAC,DEV=0"),
    ],
)
def test_detection_picks_the_board(
    shipped: dict[str, hwp.Profile],
    cards: str,
    model: str | None,
    board: str,
    card: str,
    device: str | None,
) -> None:
    found = detect(cards, model, shipped)
    assert found is not None and found.name == board
    assert found.card == card
    assert found.alsa_device == (device or shipped[board].audio.device)
    assert found.mixer_card == card


@pytest.mark.parametrize(
    ("cards", "model"),
    [
        (PC_HDA_ONLY, None),
        (NO_CARDS, PI4),
        ("", None),
        (PI5_USB_ADAPTER.split(" 2 [")[0], PI5),  # a Pi 5: HDMI only, no jack
        (PI4_BOOKWORM, None),  # a "Headphones" card on something that is not a Pi
        (PI4_BOOKWORM, "Hardkernel ODROID-C4"),
    ],
)
def test_detection_finds_nothing(
    shipped: dict[str, hwp.Profile], cards: str, model: str | None
) -> None:
    assert detect(cards, model, shipped) is None


def test_detection_accepts_a_list_and_is_order_independent(
    shipped: dict[str, hwp.Profile],
) -> None:
    forward = detect(PI4_USB_DAC, PI4, list(shipped.values()))
    backward = detect(PI4_USB_DAC, PI4, list(reversed(shipped.values())))
    assert forward is not None and backward is not None
    assert forward.name == backward.name == "usb-dac"


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def _board(name: str, card_id: str, priority: int = 0, extra: str = "") -> str:
    return f"""
[board]
name = "{name}"
[board.detect]
card_ids = ["{card_id}"]
priority = {priority}
{extra}
[audio]
device = "plughw:CARD={{card}},DEV=0"
"""


def test_a_hat_eeprom_beats_priority_and_ties_go_to_the_first_card(tmp_path: Path) -> None:
    _write(tmp_path, "low", _board("low", "X", 1, 'hat_products = ["Acme DAC"]'))
    _write(tmp_path, "high", _board("high", "X", 50))
    _write(tmp_path, "other", _board("other", "Y", 50))
    boards = load_profiles(tmp_path)
    cards = " 0 [Y              ]: d - Y\n   Y\n 1 [X              ]: d - X\n   X\n"
    assert detect(cards, None, boards).name == "other"  # type: ignore[union-attr]
    found = detect(cards, None, boards, hat_product="Acme DAC")
    assert found is not None and found.name == "low" and found.card == "X"


def test_parse_cards() -> None:
    cards = parse_cards(PI4_USB_DAC)
    assert [c.id for c in cards] == ["Headphones", "vc4hdmi0", "vc4hdmi1", "Device"]
    usb = cards[3]
    assert usb.number == 3 and usb.driver == "USB-Audio"
    assert usb.short_name == "USB Audio Device"
    assert usb.long_name.startswith("C-Media Electronics Inc. USB Audio Device at usb-")
    assert parse_cards(NO_CARDS) == []


# --- the configuration's board


def test_config_overrides_detection(shipped: dict[str, hwp.Profile]) -> None:
    system = SystemInfo(PI4_USB_DAC, PI4)
    assert select(shipped, None, system).name == "usb-dac"  # type: ignore[union-attr]
    assert select(shipped, "auto", system).name == "usb-dac"  # type: ignore[union-attr]
    assert select(shipped, "", system).name == "usb-dac"  # type: ignore[union-attr]
    assert select(shipped, "none", system) is None
    # Named: that board, with its card when present ...
    jack = select(shipped, "pi-headphones", system)
    assert jack is not None and jack.name == "pi-headphones" and jack.card == "Headphones"
    assert jack.alsa_device == "plughw:CARD=Headphones,DEV=0"
    # ... even where detection would find nothing (a board without a card, yet).
    iq = select(shipped, "iqaudio-dacplus", SystemInfo(NO_CARDS, None))
    assert iq is not None and iq.name == "iqaudio-dacplus" and iq.card is None
    assert iq.alsa_device == "plughw:CARD=IQaudIODAC,DEV=0"
    usb = select(shipped, "usb-dac", SystemInfo(NO_CARDS, None))
    assert usb is not None and usb.alsa_device is None
    with pytest.raises(ValueError, match=r"unknown board 'hifiberry'.*hifiberry-dacplus"):
        select(shipped, "hifiberry", system)


def test_a_board_without_detection_rules_is_only_chosen_by_name(tmp_path: Path) -> None:
    _write(tmp_path, "diy", '[board]\nname = "diy"\n[audio]\ndevice = "default"\n')
    boards = load_profiles(tmp_path)
    assert detect(PI4_BOOKWORM, PI4, boards) is None
    diy = select(boards, "diy", SystemInfo(PI4_BOOKWORM, PI4))
    assert diy is not None and diy.alsa_device == "default" and diy.mixer_card is None


def test_earlier_directories_win_and_missing_ones_are_skipped(tmp_path: Path) -> None:
    local = tmp_path / "etc"
    _write(local, "usb-dac", _board("usb-dac", "MyDAC", 99))
    boards = load_profiles([local, tmp_path / "missing", BOARDS])
    assert boards["usb-dac"].detect.card_ids == ("MyDAC",)
    assert "hifiberry-dacplus" in boards


# --- reading the system


def test_read_system(tmp_path: Path) -> None:
    (tmp_path / "proc/asound").mkdir(parents=True)
    (tmp_path / "proc/asound/cards").write_text(PI4_HIFIBERRY_DACPLUS)
    (tmp_path / "proc/device-tree/hat").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(PI4.encode() + b"\0")
    (tmp_path / "proc/device-tree/hat/product").write_bytes(b"Raspberry Pi DAC Plus\0")
    info = read_system(tmp_path)
    assert info == SystemInfo(PI4_HIFIBERRY_DACPLUS, PI4, "Raspberry Pi DAC Plus")


def test_read_system_falls_back_and_never_raises(tmp_path: Path) -> None:
    assert read_system(tmp_path) == SystemInfo("", None, None)
    base = tmp_path / "sys/firmware/devicetree/base"
    base.mkdir(parents=True)
    (base / "model").write_bytes(ZERO2.encode() + b"\0garbage")
    (tmp_path / "proc/asound").mkdir(parents=True)
    (tmp_path / "proc/asound/cards").mkdir()  # unreadable as a file
    assert read_system(tmp_path) == SystemInfo("", ZERO2, None)


def test_read_system_on_this_machine() -> None:
    info = read_system()
    assert isinstance(info.cards_text, str)
    assert info.dt_model is None or isinstance(info.dt_model, str)


# --- bad profiles

GOOD = """\
[board]
name = "bad"
description = "a test board"

[board.detect]
card_ids = ["X"]

[audio]
device = "hw:CARD=X,DEV=0"
mixer_controls = ["Digital"]
mixer_db = [-103.5, 0.0]
"""

GPIO = """
[gpio]
chip = "gpiochip0"
led = { line = 17 }
[gpio.buttons]
next = { line = 16 }
"""


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[audio]\ndevice = 'default'\n", "board", "is missing"),
        ("[board\n", "", "not valid TOML"),
        (GOOD.replace('name = "bad"', 'name = "Bad Board"'), "board.name", "lower-case"),
        (GOOD.replace('name = "bad"', 'name = "other"'), "board.name", "file's name"),
        (GOOD.replace('name = "bad"', "name = 3"), "board.name", "non-empty string"),
        (GOOD + "[gpoi]\n", "gpoi", "not a known key"),
        (GOOD.replace("mixer_db", "mixr_db"), "audio.mixr_db", "not a known key"),
        (GOOD.replace('device = "hw:CARD=X,DEV=0"', ""), "audio.device", "is missing"),
        (GOOD.replace("CARD=X", "CARD={name}"), "audio.device", "placeholder"),
        (GOOD.replace("[-103.5, 0.0]", "[0.0, -103.5]"), "audio.mixer_db", "min < max"),
        (GOOD.replace("[-103.5, 0.0]", "[-103.5]"), "audio.mixer_db", "[min, max]"),
        (GOOD.replace('mixer_controls = ["Digital"]', ""), "audio.mixer_db", "no mixer_controls"),
        (GOOD.replace('["Digital"]', '["Digital", 4]'), "audio.mixer_controls", "strings"),
        (GOOD + 'dtoverlay = ["dtoverlay=x"]\n', "audio.dtoverlay", "without"),
        (GOOD + 'dtoverlay = ["a b"]\n', "audio.dtoverlay", "not an overlay"),
        (GOOD + 'config_txt = ["dtoverlay=x"]\n', "audio.config_txt", "overlays go"),
        (GOOD + 'config_txt = ["nonsense"]\n', "audio.config_txt", "config.txt line"),
        (GOOD.replace('card_ids = ["X"]', "card_ids = 7"), "board.detect.card_ids", "list"),
        (
            GOOD.replace('card_ids = ["X"]', 'dt_models = ["Pi"]'),
            "board.detect.card_ids",
            "card rule",
        ),
        (
            GOOD.replace('card_ids = ["X"]', 'card_ids = ["X"]\npriority = 101'),
            "board.detect.priority",
            "0..100",
        ),
        (
            GOOD.replace('card_ids = ["X"]', 'card_ids = ["X"]\nmodel = "Pi"'),
            "board.detect.model",
            "not a known key",
        ),
        (GOOD + GPIO.replace("gpiochip0", "chip0"), "gpio.chip", "gpiochip0"),
        (GOOD + GPIO.replace("line = 16", "line = 1024"), "gpio.buttons.next.line", "0..1023"),
        (GOOD + GPIO.replace("line = 16", "line = -1"), "gpio.buttons.next.line", "0..1023"),
        (GOOD + GPIO.replace("line = 17", 'line = "17"'), "gpio.led.line", "integer"),
        (GOOD + GPIO.replace("line = 17", "line = true"), "gpio.led.line", "integer"),
        (GOOD + GPIO.replace("{ line = 17 }", "{ pin = 17 }"), "gpio.led.line", "is missing"),
        (
            GOOD + GPIO.replace("line = 17 }", "line = 17, active_low = 1 }"),
            "gpio.led.active_low",
            "true or false",
        ),
        (
            GOOD + GPIO.replace("line = 16 }", 'line = 16, bias = "up" }'),
            "gpio.buttons.next.bias",
            '"pull-up"',
        ),
        (
            GOOD + GPIO.replace("line = 16 }", "line = 16, debounce_ms = -5 }"),
            "gpio.buttons.next.debounce_ms",
            "0..1000",
        ),
        (GOOD + GPIO + "previous = { line = 12 }\n", "gpio.buttons.previous", "not a known key"),
        (
            GOOD + GPIO + "volume_up = { line = 16 }\n",
            "gpio.buttons.volume_up.line",
            "already used by gpio.buttons.next.line",
        ),
        (GOOD + GPIO + "long_press_ms = 50\n", "gpio.buttons.long_press_ms", "100..10000"),
        (
            GOOD + GPIO.replace("[gpio.buttons]", "mute = { line = 17 }\n[gpio.buttons]"),
            "gpio.led.line",
            "already used by gpio.mute.line",
        ),
        (
            GOOD + GPIO.replace('chip = "gpiochip0"', "idle_mute_s = -1"),
            "gpio.idle_mute_s",
            "0.0..3600.0",
        ),
        (GOOD + GPIO + "[gpio.encoder]\na = 5\n", "gpio.encoder.b", "is missing"),
        (GOOD + GPIO + "[gpio.encoder]\na = 5\nb = 5\n", "gpio.encoder.b", "same line"),
        (
            GOOD + GPIO + "[gpio.encoder]\na = 5\nb = 6\nsteps_per_detent = 3\n",
            "gpio.encoder.steps_per_detent",
            "1, 2 or 4",
        ),
        (
            GOOD + GPIO + "[gpio.encoder]\na = 5\nb = 6\nbutton = { line = 16 }\n",
            "gpio.encoder.button.line",
            "already used",
        ),
        (
            GOOD + GPIO + "[gpio.encoder]\na = 5\nb = 6\nspeed = 2\n",
            "gpio.encoder.speed",
            "not a known key",
        ),
    ],
)
def test_bad_profiles_name_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = _write(tmp_path, "bad", text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    error = info.value
    assert error.file == path
    assert error.key == key
    assert message in error.message
    assert str(error).startswith(f"{path}: {key + ': ' if key else ''}")


def test_the_good_base_is_good(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "bad", GOOD + GPIO))
    assert profile.gpio is not None and profile.gpio.led == hwp.OutputLine(17)
    assert profile.gpio.buttons["next"] == hwp.ButtonLine(16, True, "pull-up", 30)


def test_a_bad_profile_in_a_directory_fails_the_load(tmp_path: Path) -> None:
    _write(tmp_path, "good", _board("good", "X"))
    _write(tmp_path, "broken", _board("broken", "Y").replace("device", "devise"))
    with pytest.raises(ProfileError, match=r"broken\.toml: audio\.devi"):
        load_profiles(tmp_path)


def test_unreadable_profile(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(path)
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "missing.toml")
