"""The OpenAPI 3.1 document of the control API (served at ``/api/v1/openapi.json``).

Written by hand next to the routes in :mod:`cadenza.control.http`; a schemathesis test
checks that what the speaker does matches it (no server errors, documented status codes,
responses that fit their schemas).
"""

from __future__ import annotations

from typing import Any

from cadenza.system.config import BITRATES

from .settings import MIN_CACHE

# Links in one request: 500 of the longest (a playlist link with a 64-character user name,
# ~116 bytes in JSON) still fit the 64 KiB body cap, so a valid request is never a 413.
MAX_LINKS = 500

_OBJ: dict[str, Any] = {"type": "object"}
_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_ID = "[0-9A-Za-z]{22}"
_USER = "[a-z0-9][a-z0-9._-]{0,63}"
_WORDS = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[^\\x00-\\x1f\\x7f]*[^\\x00-\\x1f\\x7f\\s][^\\x00-\\x1f\\x7f]*$",
}

SCHEMAS: dict[str, Any] = {
    "PlayableLink": {
        "type": "string",
        "pattern": f"^cadenza:((track|album)|user:{_USER}:playlist):{_ID}"
        "(#[0-9]{1,2}:[0-5][0-9])?$",
    },
    "AlbumLink": {
        "description": "an album or a playlist (a context), or a track",
        "type": "string",
        "pattern": f"^cadenza:((track|album)|user:{_USER}:playlist):{_ID}$",
    },
    "Link": {"type": "string", "pattern": f"^cadenza:(track|album|artist):{_ID}$"},
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {"status": _INT, "message": _STR},
            }
        },
    },
    "TrackSummary": {
        "type": "object",
        "properties": {
            "uri": _nullable(_STR),
            "id": _nullable(_STR),
            "title": _nullable(_STR),
            "artists": {"type": "array", "items": _nullable(_STR)},
            "album": _nullable(_STR),
            "duration_ms": _nullable(_INT),
        },
    },
    "Session": {
        "type": "object",
        "properties": {
            "state": {
                "enum": ["starting", "connecting", "online", "offline", "needs-login"],
            },
            "access_point": _STR,
            "error": _STR,
            "user": _STR,
        },
    },
    "State": {
        "type": "object",
        "required": ["status", "volume", "queue", "index", "session"],
        "properties": {
            "name": _STR,
            "status": {"enum": ["stopped", "loading", "playing", "paused", "buffering"]},
            "track": _nullable(_ref("TrackSummary")),
            "position_ms": _INT,
            "volume": {"type": "integer", "minimum": 0, "maximum": 100},
            "max_volume": {"type": "integer", "minimum": 0, "maximum": 100},
            "shuffle": _BOOL,
            "repeat": {"enum": ["off", "all", "one"]},
            "index": _INT,
            "queue": {"type": "array", "items": _ref("TrackSummary")},
            "bytes_by_source": {"type": "object", "additionalProperties": _INT},
            "underruns": _INT,
            "bad_chunks": _INT,
            "traffic": {"type": "object", "additionalProperties": _INT},
            "tracks_streamed": {"type": "array", "items": _OBJ},
            "p2p": _nullable(_OBJ),
            "start_latency_ms": {"type": "array", "items": {"type": "number"}},
            "session": _ref("Session"),
            "error": _STR,
        },
    },
    "Queue": {
        "type": "object",
        "required": ["queue", "index", "shuffle", "repeat"],
        "properties": {
            "queue": {"type": "array", "items": _ref("TrackSummary")},
            "index": _INT,
            "shuffle": _BOOL,
            "repeat": {"enum": ["off", "all", "one"]},
            "track": _nullable(_ref("TrackSummary")),
        },
    },
    "Info": {
        "type": "object",
        "required": ["id", "name", "api_version", "version", "pairing"],
        "properties": {
            "id": _STR,
            "name": _STR,
            "model": _STR,
            "version": _STR,
            "api_version": _STR,
            "audio_device": _STR,
            "open": _BOOL,
            "pairing": {"enum": ["open", "token"]},
        },
    },
    "Settings": {
        "type": "object",
        "required": ["name", "max_volume", "bitrate", "cache_size", "open"],
        "properties": {
            "name": _WORDS,
            "max_volume": {"type": "integer", "minimum": 0, "maximum": 100},
            "bitrate": {"enum": list(BITRATES)},
            "cache_size": _nullable({"type": "integer", "minimum": MIN_CACHE}),
            "open": _BOOL,
        },
    },
    "Pairing": {
        "type": "object",
        "required": ["id", "code", "name", "scope", "state"],
        "properties": {
            "id": _STR,
            "code": {"type": "string", "pattern": "^[0-9]{6}$"},
            "name": _STR,
            "scope": {"enum": ["read", "playback", "admin"]},
            "state": {"enum": ["pending", "approved", "denied", "collected"]},
            "token": _STR,
        },
    },
    "Token": {
        "type": "object",
        "required": ["id", "name", "scope"],
        "properties": {
            "id": _STR,
            "name": _STR,
            "scope": {"enum": ["read", "playback", "admin"]},
            "created": {"type": "number"},
            "last_used": _nullable({"type": "number"}),
        },
    },
}

_ERRORS = {
    code: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
    for code, text in {
        "400": "bad request: the message names the field or parameter",
        "401": "a token is needed (or the one given is unknown or revoked)",
        "403": "the token's scope is not enough, or the Origin is foreign",
        "404": "no such thing (the message names it)",
        "405": "method not allowed on this path",
        "409": "not possible in the current state (e.g. nothing is playing)",
        "413": "request body too large",
        "421": "the Host header is not one of the speaker's names",
        "429": "too many requests (or pending pairing requests) from this address",
        "503": "the service is not reachable, or too many event streams",
    }.items()
}


def _op(
    summary: str,
    response: dict[str, Any] | None,
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    status: str = "200",
    public: bool = False,
    media: str = "application/json",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": dict(_ERRORS)}
    if response is not None:
        op["responses"][status] = {
            "description": "OK",
            "content": {media: {"schema": response}},
        }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _body(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _strict(required: list[str], **props: Any) -> dict[str, Any]:
    return _body(required, **props) | {"additionalProperties": False}


def _link_or_links(**props: Any) -> list[dict[str, Any]]:
    """Bodies naming one playable link (``uri``) or several (``uris``), with ``props``."""
    return [
        _strict(["uri"], uri=_ref("PlayableLink"), **props),
        _strict(
            ["uris"],
            uris={
                "type": "array",
                "items": _ref("PlayableLink"),
                "minItems": 1,
                "maxItems": MAX_LINKS,
            },
            **props,
        ),
    ]


def _q(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _p(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_EMPTY = {"type": "object", "maxProperties": 0}


def document(version: str) -> dict[str, Any]:
    state, queue = _ref("State"), _ref("Queue")
    position = {"type": "integer", "minimum": 0, "maximum": 86_400_000}
    uri_or_uris = {
        "oneOf": [
            *_link_or_links(position_ms=position),
            _strict(
                ["context"],
                context=_ref("AlbumLink"),
                offset={"type": "integer", "minimum": 0, "maximum": 100_000},
                position_ms=position,
            ),
        ]
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cadenza speaker control API",
            "version": version,
            "description": (
                "Drive a Cadenza speaker. Loopback clients are trusted; LAN clients pair "
                "(POST /pairing, the owner confirms) and send the token as a bearer token. "
                "Every error is a JSON body naming what was wrong. Live changes: "
                "GET /events (server-sent events)."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        # A token, or none at all: loopback clients (and LAN clients of an "open" speaker)
        # need none; for the others a missing or unknown token is a 401.
        "security": [{"token": []}, {}],
        "paths": {
            "/info": {"get": _op("Who this speaker is", _ref("Info"), public=True)},
            "/openapi.json": {"get": _op("This document", _OBJ, public=True)},
            "/state": {"get": _op("Everything at once", state)},
            "/events": {
                "get": _op(
                    "Server-sent events: `state` at once, then status, track, position, "
                    "volume, queue, connection, settings and error events",
                    _STR,
                    media="text/event-stream",
                    params=[_q("access_token", _STR)],
                )
            },
            "/play": {
                "post": _op(
                    "Play a link, a list of links, or a context (album, playlist) from an offset",
                    state,
                    body=uri_or_uris,
                )
            },
            "/pause": {"post": _op("Pause", state)},
            "/resume": {"post": _op("Resume", state)},
            "/next": {"post": _op("Next track", state)},
            "/previous": {"post": _op("Previous track (or the start of this one)", state)},
            "/seek": {
                "post": _op(
                    "Seek",
                    state,
                    body=_body(["position_ms"], position_ms=position),
                )
            },
            "/volume": {
                "put": _op(
                    "Set the volume (capped at max_volume)",
                    state,
                    body=_body(
                        ["volume"], volume={"type": "integer", "minimum": 0, "maximum": 100}
                    ),
                )
            },
            "/shuffle": {
                "put": _op("Shuffle on/off", state, body=_body(["shuffle"], shuffle=_BOOL))
            },
            "/repeat": {
                "put": _op(
                    "Repeat mode",
                    state,
                    body=_body(["repeat"], repeat={"enum": ["off", "all", "one"]}),
                )
            },
            "/queue": {
                "get": _op("The queue", queue),
                "post": _op(
                    "Add links (albums expand) at a position (default: the end)",
                    queue,
                    body={
                        "oneOf": _link_or_links(
                            position={"type": "integer", "minimum": 0, "maximum": 100_000}
                        )
                    },
                ),
                "delete": _op("Clear the queue (the playing track stays)", queue),
            },
            "/queue/move": {
                "post": _op(
                    "Move a track in the queue",
                    queue,
                    body=_body(
                        ["from", "to"],
                        **{"from": {"type": "integer", "minimum": 0, "maximum": 100_000}},
                        to={"type": "integer", "minimum": 0, "maximum": 100_000},
                    ),
                )
            },
            "/queue/{position}": {
                "delete": _op(
                    "Remove a track from the queue",
                    queue,
                    params=[_p("position", {"type": "integer", "minimum": 0})],
                )
            },
            "/search": {
                "get": _op(
                    "Search the catalog through the service",
                    {
                        "type": "object",
                        "required": ["type", "total", "items"],
                        "properties": {
                            "type": {"enum": ["track", "album", "artist"]},
                            "total": _INT,
                            "items": {"type": "array", "items": _OBJ},
                        },
                    },
                    params=[
                        _q(
                            "q",
                            {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
                            True,
                        ),
                        _q("type", {"enum": ["track", "album", "artist"]}),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 50}),
                        _q("offset", {"type": "integer", "minimum": 0, "maximum": 10000}),
                    ],
                )
            },
            "/lookup": {
                "get": _op(
                    "A track, album or artist by link",
                    {
                        "type": "object",
                        "required": ["type", "item"],
                        "properties": {
                            "type": {"enum": ["track", "album", "artist"]},
                            "item": _OBJ,
                        },
                    },
                    params=[_q("uri", _ref("Link"), True)],
                )
            },
            "/settings": {
                "get": _op("Device settings", _ref("Settings")),
                "patch": _op(
                    "Change settings (admin)",
                    _ref("Settings"),
                    body={
                        "type": "object",
                        "minProperties": 1,
                        "properties": SCHEMAS["Settings"]["properties"],
                        "additionalProperties": False,
                    },
                ),
            },
            "/stats": {"get": _op("Bytes by source, start latencies, underruns, peers", _OBJ)},
            "/speakers": {
                "get": _op(
                    "The other speakers this one sees on the LAN",
                    _body(["speakers"], speakers={"type": "array", "items": _OBJ}),
                )
            },
            "/pairing": {
                "post": _op(
                    "Ask to pair; the owner confirms (button, or an admin client)",
                    _ref("Pairing"),
                    status="201",
                    public=True,
                    body=_body(
                        ["name"],
                        name=_WORDS,
                        scope={"enum": ["read", "playback", "admin"]},
                    ),
                ),
                "get": _op(
                    "Pending pairing requests (admin)",
                    _body(["requests"], requests={"type": "array", "items": _ref("Pairing")}),
                ),
            },
            "/pairing/{rid}": {
                "get": _op(
                    "A pairing request's state; once approved, the token (only once)",
                    _ref("Pairing"),
                    public=True,
                    params=[_p("rid", _STR)],
                )
            },
            "/pairing/{rid}/approve": {
                "post": _op("Approve (admin)", _ref("Pairing"), params=[_p("rid", _STR)])
            },
            "/pairing/{rid}/deny": {
                "post": _op("Deny (admin)", _ref("Pairing"), params=[_p("rid", _STR)])
            },
            "/tokens": {
                "get": _op(
                    "Tokens handed out (admin)",
                    _body(["tokens"], tokens={"type": "array", "items": _ref("Token")}),
                )
            },
            "/tokens/{tid}": {
                "delete": _op(
                    "Revoke a token (admin)",
                    _body(["revoked"], revoked=_STR),
                    params=[_p("tid", _STR)],
                )
            },
        },
    }
