"""Device settings changed over the API, kept in the state directory (``settings.json``).

They start from the configuration file and, once changed over the API, override it (so a
phone's rename survives a restart). :func:`validate` checks a patch and names the field
that is wrong.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from cadenza.errors import BadRequest
from cadenza.system.config import BITRATES as BITRATES
from cadenza.system.config import DEFAULT_BITRATE
from cadenza.system.files import atomic_write

log = logging.getLogger("cadenza.control")

NAME_MAX = 63  # a DNS-SD instance name label is at most 63 bytes
MIN_CACHE = 16 * 1024 * 1024  # below this not even one long track fits


@dataclass(frozen=True)
class Settings:
    name: str
    max_volume: int = 100
    bitrate: int = DEFAULT_BITRATE
    cache_size: int | None = None  # bytes; None: automatic
    open: bool = False  # every LAN client may drive playback without pairing

    def public(self) -> dict[str, Any]:
        return asdict(self)


# What JSON Schema's (ECMAScript's) \s matches: what "blank" means for the API's inputs.
# Python's str.strip() also strips \x1c-\x1f and \x85, which ECMAScript does not.
BLANK = (
    "\t\n\x0b\x0c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def check_name(value: object, field: str) -> str:
    """A name people see: text, not blank, at most NAME_MAX characters, no control ones."""
    if not isinstance(value, str) or not value.strip(BLANK):
        raise BadRequest(f"field {field!r} must be a non-empty string", field=field)
    text = value.strip(BLANK)
    if len(value) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest(
            f"field {field!r} must be at most {NAME_MAX} characters, no control characters",
            field=field,
        )
    if any("\ud800" <= c <= "\udfff" for c in value):
        # JSON may escape one (\ud800); no UTF-8 can carry it, so no answer could show it.
        raise BadRequest(f"field {field!r} holds a lone surrogate: not text", field=field)
    return text


def validate(current: Settings, patch: Any) -> Settings:
    """``current`` with ``patch`` applied; :class:`BadRequest` naming the bad field."""
    if not isinstance(patch, dict) or not patch:
        raise BadRequest("body must be a JSON object with at least one setting")
    known = {f.name for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for key, value in patch.items():
        if type(value) is float and value.is_integer():
            value = int(value)  # JSON has one number type: 80.0 is the integer 80
        if key not in known:
            raise BadRequest(
                f"unknown setting {key!r} (known: {', '.join(sorted(known))})", field=key
            )
        if key == "name":
            value = check_name(value, "name")
        elif key == "max_volume":
            if type(value) is not int or not 0 <= value <= 100:
                raise BadRequest(
                    f"field 'max_volume' must be an integer 0..100, got {value!r}", field=key
                )
        elif key == "bitrate":
            if type(value) is not int or value not in BITRATES:
                allowed = ", ".join(map(str, BITRATES))
                raise BadRequest(
                    f"field 'bitrate' must be one of {allowed}, got {value!r}", field=key
                )
        elif key == "cache_size":
            if value is not None and (type(value) is not int or value < MIN_CACHE):
                raise BadRequest(
                    f"field 'cache_size' must be null (automatic) or bytes >= {MIN_CACHE}",
                    field=key,
                )
        elif key == "open" and type(value) is not bool:
            raise BadRequest(f"field 'open' must be true or false, got {value!r}", field=key)
        changes[key] = value
    return replace(current, **changes)


def load(path: Path, defaults: Settings) -> Settings:
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return defaults
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return defaults
    try:
        return validate(defaults, saved) if saved else defaults
    except ValueError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return defaults


def save(path: Path, settings: Settings, defaults: Settings) -> None:
    """Keep only what differs from the configuration's values."""
    changed = {k: v for k, v in asdict(settings).items() if getattr(defaults, k) != v}
    atomic_write(path, json.dumps(changed))
