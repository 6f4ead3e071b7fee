"""The speaker's configuration: defaults, the documented example, and a message per mistake."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.service.accounts import USER_RE as SERVICE_USER_RE
from cadenza.system import config
from cadenza.system.config import (
    Config,
    ConfigError,
    HostPort,
    default_speaker_name,
    format_size,
    load,
    parse,
    parse_size,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "cadenzad.toml"
SOURCE = "/etc/cadenza/test.toml"

SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, SOURCE)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def uncommented(text: str) -> str:
    """The example with every "#key = value" line made live."""
    return re.sub(r"(?m)^#(\w+ = )", r"\1", text)


# --- defaults and the example file


def test_empty_file_is_every_default() -> None:
    assert parse("", SOURCE) == Config()
    defaults = Config()
    assert defaults.speaker.name == default_speaker_name()
    assert defaults.audio.period_frames == 1024
    assert defaults.streaming.stutter_target == 0.01
    assert defaults.control.listen == HostPort("0.0.0.0", 4080)
    assert defaults.cache.max_size is None
    assert defaults.service.address is None


def test_example_file_parses_to_the_defaults() -> None:
    text = EXAMPLE.read_text()
    assert parse(text, str(EXAMPLE)) == Config()


def test_example_file_states_the_true_defaults() -> None:
    """Uncommenting every documented key changes nothing: the file shows the real defaults."""
    live = uncommented(EXAMPLE.read_text())
    assert parse(live, str(EXAMPLE)) == Config()


def test_example_file_documents_every_key_and_nothing_else() -> None:
    live = uncommented(EXAMPLE.read_text())
    document = tomllib.loads(live)
    assert set(document) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        assert isinstance(cls, type)
        assert set(document[section]) == {f.name for f in dataclasses.fields(cls)}, section


def test_to_toml_reads_back() -> None:
    assert parse(Config().to_toml()) == Config()
    text = """
        [speaker]
        name = "Küche"
        [service]
        address = "[2001:db8::7]"
        domain = "example.org."
        username = "alice"
        password_file = "/etc/cadenza/password"
        fingerprint = "3F2A:91C0:0000:1111:2222:3333:4444:5555"
        [audio]
        fallback_device = ""
        volume_control = "mixer"
        mixer_control = "Digital"
        volume = 30
        max_volume = 80
        volume_range_db = 45.5
        [cache]
        max_size = 123456789
        min_free = "1.5G"
        [control]
        listen = "[::]:0"
        [p2p]
        enabled = false
    """
    custom = parse(text)
    assert custom.speaker.name == "Küche"
    assert custom.service.address == HostPort("2001:db8::7", 4070)
    assert custom.service.domain == "example.org"
    assert custom.service.fingerprint == "3f2a:91c0:0000:1111:2222:3333:4444:5555"
    assert custom.audio.fallback_device is None
    assert custom.cache.min_free == 1536 * 1024**2
    assert custom.control.listen == HostPort("::", 0)
    assert parse(custom.to_toml()) == custom


def test_empty_name_is_the_host_name() -> None:
    assert parse('[speaker]\nname = ""').speaker.name == default_speaker_name()
    assert default_speaker_name()
    assert "." not in default_speaker_name()


# --- every key: bad values get a message naming the file, the line, the key and what is allowed

BAD_VALUES: list[tuple[str, str, list[str], str]] = [
    # section, key, bad TOML values, words of what is allowed
    ("speaker", "name", ["3", '"' + "x" * 64 + '"', '"a\\tb"'], "at most 63 bytes"),
    ("speaker", "state_dir", ['"var/lib"', '""', "1", "[]"], "an absolute path"),
    ("speaker", "cache_dir", ['"cache"', "true"], "an absolute path"),
    ("service", "address", ['"::1"', '"h:0"', '"h:x"', '"[zz]:1"', '"a b:1"', "4070"], "host:port"),
    ("service", "domain", ['"-bad.org"', '"a..b"', "1", '"a b"'], "DNS domain"),
    ("service", "mdns", ['"yes"', "1"], "true or false"),
    ("service", "username", ['"Alice"', '"a b"', "7"], "account name"),
    ("service", "password_file", ['"pw.txt"', "0"], "an absolute path"),
    ("service", "fingerprint", ['"3f2a"', '"zz"', "1"], "8 groups of 4 hex digits"),
    ("audio", "device", ['""', "0"], "ALSA PCM name"),
    ("audio", "fallback_device", ["false"], "ALSA PCM name"),
    ("audio", "period_frames", ["63", "16385", "1024.0", '"1024"', "true"], "from 64 to 16384"),
    ("audio", "periods", ["1", "65"], "from 2 to 64"),
    ("audio", "rate_policy", ['"auto"', '"Device"', "1"], 'one of "device", "resample"'),
    ("audio", "volume_control", ['"hardware"'], 'one of "software", "mixer"'),
    ("audio", "mixer_control", ["1"], "mixer control"),
    ("audio", "mixer_card", ["0"], "card name"),
    ("audio", "volume", ["-1", "101", "50.5"], "from 0 to 100"),
    ("audio", "max_volume", ["101", '"max"'], "from 0 to 100"),
    ("audio", "normalisation", ['"on"'], "true or false"),
    ("audio", "volume_range_db", ["5", "121", "nan", "inf", '"60"'], "a number from 10 to 120"),
    ("cache", "max_size", ['"2X"', "-1", '"-5M"', "1.5", '""', "true"], '"500M"'),
    ("cache", "min_free", ['"auto"', '"lots"'], '"1.5G"'),
    ("streaming", "bitrate", ["128", '"160"', "160.0"], "one of 96, 160, 320"),
    ("streaming", "first_piece_seconds", ["0", "121", '"15"'], "a number from 1 to 120"),
    ("streaming", "ahead_seconds", ["0.5", "601"], "a number from 1 to 600"),
    ("streaming", "prefetch_seconds", ["-1", "601"], "a number from 0 to 600"),
    ("streaming", "stutter_target", ["0", "0.6", "-0.01"], "greater than 0 and at most 0.5"),
    ("control", "listen", ['""', '"4080"', '"0.0.0.0"', '"h:65536"'], "host:port"),
    ("control", "advertise", ["0"], "true or false"),
    ("control", "open", ['"no"'], "true or false"),
    ("p2p", "enabled", ['"true"'], "true or false"),
    ("p2p", "port", ["-1", "65536", '"4090"'], "from 0 to 65535"),
    ("p2p", "max_neighbours", ["0", "61"], "from 1 to 60"),
    ("p2p", "max_uploads", ["-1", "33"], "from 0 to 32"),
    ("p2p", "hard_max_neighbours", ["0", "121"], "from 1 to 120"),
    ("p2p", "upload_rate", ['"fast"', "-5"], '"1.5G"'),
    ("p2p", "lan_discovery", ['"yes"'], "true or false"),
    ("hardware", "board", ['""', "3"], "profile name"),
    ("hardware", "gpio", ['"on"'], "true or false"),
]


def test_soft_neighbour_limit_above_the_hard_one_is_refused() -> None:
    problems = problems_of("[p2p]\nmax_neighbours = 40\nhard_max_neighbours = 30\n")
    assert len(problems) == 1
    assert "p2p.max_neighbours" in problems[0]
    assert "above p2p.hard_max_neighbours (30)" in problems[0]


def test_the_bad_value_table_covers_every_key() -> None:
    covered = {(section, key) for section, key, _, _ in BAD_VALUES}
    every = {
        (section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    assert covered == every


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [(s, k, v, a) for s, k, values, a in BAD_VALUES for v in values],
)
def test_bad_value_names_file_line_key_and_what_is_allowed(
    section: str, key: str, value: str, allowed: str
) -> None:
    text = f"# a comment\n[{section}]\n{key} = {value}\n"
    problem = one_problem(text)
    assert problem.startswith(f"{SOURCE}:3: {section}.{key}: expected "), problem
    assert allowed in problem, problem
    assert ", got " in problem


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        "[audio]\nperiods = 1\nvolume = 200\n[p2p]\nport = -1\n[cache]\nmin_free = 'x'\n"
    )
    keys = [re.search(r": (\w+\.\w+): ", p).group(1) for p in problems]  # type: ignore[union-attr]
    assert keys == ["audio.periods", "audio.volume", "p2p.port", "cache.min_free"]


def test_values_that_conflict() -> None:
    problem = one_problem("[audio]\nvolume = 80\nmax_volume = 60\n")
    assert problem == f"{SOURCE}:2: audio.volume: 80 is above audio.max_volume (60)"

    problem = one_problem("[service]\nmdns = false\n")
    assert problem.startswith(f"{SOURCE}:1: service: no way to find an access point")

    problem = one_problem('[service]\npassword_file = "/etc/pw"\n')
    assert "service.password_file: needs service.username" in problem

    # A value that is already wrong does not also produce a conflict message.
    problems = problems_of('[service]\nmdns = false\naddress = "::1"\n')
    assert len(problems) == 1 and "service.address" in problems[0]


def test_good_values() -> None:
    service = parse(
        '[service]\naddress = "ap.example.org:4444"\ndomain = "example.org"\nmdns = false'
    ).service
    assert service.address == HostPort("ap.example.org", 4444)
    assert str(service.address) == "ap.example.org:4444"
    assert parse('[service]\naddress = "10.0.0.2"').service.address == HostPort("10.0.0.2", 4070)
    assert parse('[audio]\nmixer_card = "1"').audio.mixer_card == "1"
    assert parse("[audio]\nvolume_range_db = 40").audio.volume_range_db == 40.0
    assert parse("[streaming]\nbitrate = 320").streaming.bitrate == 320


# --- unknown keys and sections


def test_unknown_key_suggests_the_nearest() -> None:
    problem = one_problem("[audio]\nperiods = 4\nperod_frames = 512\n")
    expected = "unknown key audio.perod_frames (did you mean period_frames?)"
    assert problem == f"{SOURCE}:3: {expected}"
    problem = one_problem("[audio]\nwhatever = 1\n")
    assert problem == f"{SOURCE}:2: unknown key audio.whatever"


def test_unknown_section_suggests_the_nearest() -> None:
    assert one_problem("[audoi]\nvolume = 3\n") == (
        f"{SOURCE}:1: unknown section [audoi] (did you mean audio?)"
    )
    assert one_problem("[nothing_like_it]\n") == f"{SOURCE}:1: unknown section [nothing_like_it]"
    # A sub-table of a section is an unknown key of that section.
    problem = one_problem("[audio.extra]\nx = 1\n")
    assert "unknown key audio.extra" in problem


def test_key_outside_any_section() -> None:
    expected = "unknown key name: keys go in a [section] (did you mean name under [speaker]?)"
    assert one_problem('name = "Kitchen"\n') == f"{SOURCE}:1: {expected}"
    assert "must be a [audio] section, got 3" in one_problem("audio = 3\n")


# --- TOML syntax


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[audio]\nperiods = \n", ":2:11: "),
        ("[audio]\nperiods = 4\nperiods = 5\n", ":3:"),
        ("[audio\n", ":1:"),
        ('[speaker]\nname = "unterminated\n', ":2:"),
    ],
)
def test_toml_syntax_errors_give_line_and_column(text: str, where: str) -> None:
    problem = one_problem(text)
    assert problem.startswith(SOURCE + where), problem
    assert "invalid TOML" in problem


def test_toml_error_at_the_end_of_the_file() -> None:
    assert one_problem("a = [") == f"{SOURCE}: invalid TOML: Invalid value (at the end of the file)"


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_config_error(text: str) -> None:
    try:
        parse(text, SOURCE)
    except ConfigError as exc:
        assert exc.problems
        assert all(p.startswith(SOURCE) for p in exc.problems)


TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)


@given(
    st.sampled_from([(s, k) for s, k, _, _ in BAD_VALUES]),
    st.one_of(TOML_SCALARS, st.lists(TOML_SCALARS.filter(lambda v: isinstance(v, int)))),
)
def test_any_value_of_any_key_is_taken_or_named(key: tuple[str, str], value: object) -> None:
    section, name = key
    if isinstance(value, list):
        rendered = "[" + ", ".join(str(int(v)) for v in value) + "]"
    elif isinstance(value, bool):
        rendered = "true" if value else "false"
    elif isinstance(value, float):
        rendered = repr(value)  # inf and -inf are TOML too
    elif isinstance(value, str):
        rendered = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    else:
        rendered = str(value)
    try:
        parse(f"[{section}]\n{name} = {rendered}\n", SOURCE)
    except ConfigError as exc:
        assert all(f"{section}.{name}" in p for p in exc.problems), exc.problems


# --- sizes and addresses


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("500M", 500 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1.5G", 1536 * 1024**2),
        ("2g", 2 * 1024**3),
        ("64K", 65536),
        ("1T", 1024**4),
        ("10GiB", 10 * 1024**3),
        ("10GB", 10 * 1024**3),
        (" 3 M ", 3 * 1024**2),
        ("0.5K", 512),
        (".5K", 512),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse(f'[cache]\nmax_size = "{text}"').cache.max_size == size


@pytest.mark.parametrize("text", ["", "M", "1.2.3G", "5X", "-1G", "1e9", "ten", "1 G B", "5Mi"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_plain_integer_sizes_and_auto() -> None:
    assert parse("[cache]\nmax_size = 123").cache.max_size == 123
    assert parse('[cache]\nmax_size = "auto"').cache.max_size is None
    with pytest.raises(ValueError):
        parse_size(-1)


def test_format_size() -> None:
    assert format_size(2 * 1024**3) == "2G"
    assert format_size(1536 * 1024**2) == "1536M"
    assert format_size(1000) == 1000
    assert format_size(0) == 0


def test_automatic_cache_size() -> None:
    auto = Config().cache
    assert auto.size_limit(free_bytes=20 * 1024**3) == 2 * 1024**3
    assert auto.size_limit(free_bytes=500 * 1024**3) == 10 * 1024**3
    assert parse('[cache]\nmax_size = "3G"').cache.size_limit(free_bytes=1) == 3 * 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ap.example.org:4070", HostPort("ap.example.org", 4070)),
        ("10.1.2.3:1", HostPort("10.1.2.3", 1)),
        ("[::1]:4070", HostPort("::1", 4070)),
        ("[fe80::1]", HostPort("fe80::1", 4070)),
        ("localhost", HostPort("localhost", 4070)),
    ],
)
def test_host_port(text: str, expected: HostPort) -> None:
    assert HostPort.parse(text, default_port=4070) == expected
    assert HostPort.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("::1", "brackets"),
        ("[::1", "closing bracket"),
        ("[::1]x", "after the brackets"),
        ("[1.2.3.4]:5", "not an IPv6 address"),
        (":80", "no host"),
        ("host", "no port"),
        ("host:", "not a number"),
        ("host:0", "not from 1"),
        ("ho st:1", "neither an IP address nor a host name"),
    ],
)
def test_host_port_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        HostPort.parse(text)


def test_account_names_follow_the_service_rule() -> None:
    assert config.USER_RE.pattern == SERVICE_USER_RE.pattern


# --- reading files


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "cadenzad.toml")
    assert load() == Config()


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cadenzad.toml"
    path.write_text("[audio]\nperiods = 8\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    assert load().audio.periods == 8


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: no such file"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[speaker]\nname = "K\xfcche"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}:2: not UTF-8 text (byte 19)"


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cadenzad.toml"
    path.write_text("[audio]\n\nperiods = 1\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    expected = "audio.periods: expected an integer from 2 to 64, got 1"
    assert caught.value.problems == (f"{path}:3: {expected}",)
    assert load(EXAMPLE) == Config()
