"""The speaker's control API under ``/api/v1`` (JSON), first cut.

    GET  /api/v1/info        who this speaker is
    GET  /api/v1/state       status, track, position, volume, queue, bytes by source
    POST /api/v1/play        {"uri": ...} or {"uris": [...]}, optional "position_ms"
    POST /api/v1/pause | resume | next | previous
    POST /api/v1/seek        {"position_ms": ...}
    PUT  /api/v1/volume      {"volume": 0-100}

Every error is a JSON body ``{"error": {"status": N, "message": "..."}}`` that says
what was wrong (an unknown URI is a 404 naming it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cadenza import __version__, links
from cadenza.speaker import Speaker, Unavailable, UnknownLink

log = logging.getLogger("cadenza.control")

API_VERSION = "1"
# Control requests are tiny; anything bigger is a mistake or an attack.
MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"request body over {MAX_BODY} bytes")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


def _int_field(
    data: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None
) -> int:
    if name not in data:
        if default is None:
            raise HTTPException(400, f"missing field {name!r}")
        return default
    value = data[name]
    if type(value) is not int or not lo <= value <= hi:
        raise HTTPException(400, f"field {name!r} must be an integer {lo}..{hi}, got {value!r}")
    return value


def control_app(speaker: Speaker, info: dict[str, Any]) -> Starlette:
    Handler = Callable[[Request], Awaitable[JSONResponse]]

    def guarded(fn: Handler) -> Handler:
        async def wrapper(request: Request) -> JSONResponse:
            try:
                return await fn(request)
            except HTTPException as exc:
                return _error(exc.status_code, str(exc.detail))
            except links.LinkError as exc:
                return _error(400, str(exc))
            except UnknownLink as exc:
                return _error(404, str(exc))
            except Unavailable as exc:
                return _error(503, str(exc))
            except LookupError as exc:
                return _error(409, str(exc))

        return wrapper

    @guarded
    async def get_info(request: Request) -> JSONResponse:
        return JSONResponse(info | {"version": __version__, "api_version": API_VERSION})

    @guarded
    async def get_state(request: Request) -> JSONResponse:
        return JSONResponse(speaker.state())

    @guarded
    async def play(request: Request) -> JSONResponse:
        data = await _json_body(request)
        if "uris" in data:
            uris = data["uris"]
            if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
                raise HTTPException(400, "field 'uris' must be a non-empty list of strings")
        elif "uri" in data:
            if not isinstance(data["uri"], str):
                raise HTTPException(400, "field 'uri' must be a string")
            uris = [data["uri"]]
        else:
            raise HTTPException(400, "give 'uri' or 'uris'")
        position = _int_field(data, "position_ms", 0, 24 * 3600 * 1000, default=0)
        await speaker.play(uris, position)
        return JSONResponse(speaker.state())

    def simple(action: Callable[[], Any]) -> Handler:
        @guarded
        async def handler(request: Request) -> JSONResponse:
            result = action()
            if hasattr(result, "__await__"):
                await result
            return JSONResponse(speaker.state())

        return handler

    @guarded
    async def seek(request: Request) -> JSONResponse:
        data = await _json_body(request)
        await speaker.seek(_int_field(data, "position_ms", 0, 24 * 3600 * 1000))
        return JSONResponse(speaker.state())

    @guarded
    async def volume(request: Request) -> JSONResponse:
        data = await _json_body(request)
        speaker.set_volume(_int_field(data, "volume", 0, 100))
        return JSONResponse(speaker.state())

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, HTTPException):
            return _error(exc.status_code, str(exc.detail) or "not found")
        return _error(500, "internal error")

    routes = [
        Route("/api/v1/info", get_info, methods=["GET"]),
        Route("/api/v1/state", get_state, methods=["GET"]),
        Route("/api/v1/play", play, methods=["POST"]),
        Route("/api/v1/pause", simple(speaker.pause), methods=["POST"]),
        Route("/api/v1/resume", simple(speaker.resume), methods=["POST"]),
        Route("/api/v1/next", simple(speaker.next_track), methods=["POST"]),
        Route("/api/v1/previous", simple(speaker.previous_track), methods=["POST"]),
        Route("/api/v1/seek", seek, methods=["POST"]),
        Route("/api/v1/volume", volume, methods=["PUT"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, 500: not_found})
