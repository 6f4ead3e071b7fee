"""Live events for controllers: what changed between two snapshots of the speaker's state.

Every controller connected to ``GET /api/v1/events`` first gets the whole state (event
``state``), then one event per kind of change, each carrying what a controller needs to
redraw that part (pure; the HTTP layer feeds it successive snapshots):

    status      {"status"}                       playing, paused, buffering, loading, stopped
    track       {"track", "index"}               another track is current
    position    {"position_ms", "status"}        the playhead moved (about every 0.25 s
                                                 while playing) or jumped (a seek)
    volume      {"volume", "max_volume"}
    queue       {"queue", "index", "shuffle", "repeat"}
    connection  {"session"}                      the link to the service changed
    settings    {"name"}                         the speaker was renamed
    error       {"error"}                        the player reported an error

Events carry a snapshot, never a delta, so a controller that missed one is right again at
the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Event = tuple[str, dict[str, Any]]

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("status", ("status",)),
    ("track", ("track", "index")),
    ("volume", ("volume", "max_volume")),
    ("queue", ("queue", "index", "shuffle", "repeat")),
    ("connection", ("session",)),
    ("settings", ("name",)),
    ("error", ("error",)),
)


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Event]:
    """The events that take a controller from ``old`` to ``new`` (None: it knows nothing)."""
    if old is None:
        return [("state", dict(new))]
    events: list[Event] = []
    for name, keys in _GROUPS:
        if any(old.get(k) != new.get(k) for k in keys):
            if name == "error" and not new.get("error"):
                continue
            events.append((name, {k: new.get(k) for k in keys}))
    if old.get("position_ms") != new.get("position_ms") or old.get("status") != new.get("status"):
        events.append(
            ("position", {"position_ms": new.get("position_ms"), "status": new.get("status")})
        )
    return events
