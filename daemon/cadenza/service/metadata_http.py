"""The metadata HTTP API: catalog lookup and search as JSON, shaped like the seed's
(Spotify's old ``ws.spotify.com``) metadata API.

::

    GET /lookup/1/?uri=cadenza:track:<id>          -> {"track": {...}}  (album, artist alike)
    GET /lookup/1/?uri=cadenza:user:<name>:playlist:<id> -> {"playlist": {...}}
    GET /search/1/track?q=...&limit=20&offset=0    -> {"info": {...}, "tracks": [...]}
    GET /search/1/album?q=...                      -> {"info": {...}, "albums": [...]}
    GET /search/1/artist?q=...                     -> {"info": {...}, "artists": [...]}

The old API's ``.json`` suffixes (``/lookup/1/.json``, ``/search/1/track.json``) are
accepted too. Every error is ``{"error": {"status": n, "message": "..."}}`` and the message
names what was wrong: the link, the parameter, or the path.

Catalog calls are blocking and run in worker threads; hypercorn runs the app under trio.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cadenza import blocking, links
from cadenza.net.http import serve_http
from cadenza.service.catalog import (
    MAX_SEARCH_LIMIT,
    Album,
    Artist,
    Catalog,
    NotFound,
    SearchKind,
    Track,
    UnsupportedLink,
)
from cadenza.service.playlists import Playlist, Playlists

__all__ = ["DEFAULT_SEARCH_LIMIT", "metadata_app", "serve_metadata_http"]

serve_metadata_http = serve_http

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SEARCH_LIMIT = 20
# Catalog calls serialise on one SQLite connection anyway; a few threads keep a burst of
# requests queued in trio (cancellable) rather than parked on the database lock.
CATALOG_THREADS = 4
# Nine digits is far beyond any catalog and keeps int() and SQLite's integers out of trouble.
_COUNT_RE = re.compile(r"^[0-9]{1,9}$")
_KINDS: dict[str, SearchKind] = {"track": "track", "album": "album", "artist": "artist"}
_PLURAL = {"track": "tracks", "album": "albums", "artist": "artists"}


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def metadata_app(catalog: Catalog, playlists: Playlists | None = None) -> Starlette:
    """The metadata API over ``catalog`` as an ASGI app (run it under trio).

    Without ``playlists``, a playlist link is a bad request, as any link the catalog
    does not resolve.
    """
    limiter = trio.CapacityLimiter(CATALOG_THREADS)

    async def in_thread(fn: Callable[[], T]) -> T:
        return await blocking.run_sync(fn, limiter=limiter)

    async def lookup(request: Request) -> Response:
        uri = request.query_params.get("uri")
        if uri is None:
            return _error(400, "missing query parameter 'uri' (e.g. ?uri=cadenza:track:<id>)")
        try:
            link = links.parse(uri)
        except links.LinkError as exc:
            return _error(400, f"bad uri {uri!r}: {exc}")
        record: Track | Album | Artist | Playlist
        try:
            if link.kind == "playlist" and playlists is not None:
                record = await in_thread(partial(playlists.lookup, link))
            else:
                record = await in_thread(partial(catalog.lookup, link))
        except UnsupportedLink as exc:
            return _error(400, f"bad uri {uri!r}: {exc}")
        except NotFound as exc:
            return _error(404, str(exc))
        return JSONResponse({link.kind: record.to_json()})

    async def search(request: Request) -> Response:
        name = request.path_params["kind"].removesuffix(".json")
        kind = _KINDS.get(name)
        if kind is None:
            return _error(404, f"no search for {name!r}: use /search/1/track, album or artist")
        params = request.query_params
        query = params.get("q")
        if query is None:
            return _error(400, "missing query parameter 'q'")
        try:
            limit = _count(params.get("limit"), "limit", DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT)
            offset = _count(params.get("offset"), "offset", 0, None)
        except _BadRequest as exc:
            return _error(400, exc.message)
        results, total = await in_thread(
            partial(catalog.search, kind, query, limit=limit, offset=offset)
        )
        info = {
            "num_results": total,
            "limit": limit,
            "offset": offset,
            "query": query,
            "type": kind,
        }
        return JSONResponse({"info": info, _PLURAL[kind]: [r.to_json() for r in results]})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(404, f"no such endpoint {request.url.path!r}")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path!r}")
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after responding, so the server still logs the traceback.
        return _error(500, "internal error")

    return Starlette(
        routes=[
            Route("/lookup/1/", lookup, methods=["GET"]),
            Route("/lookup/1/.json", lookup, methods=["GET"]),
            Route("/search/1/{kind}", search, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def _count(text: str | None, name: str, default: int, maximum: int | None) -> int:
    if text is None:
        return default
    bound = f"from 0 to {maximum}" if maximum is not None else "0 or more"
    if not _COUNT_RE.match(text):
        raise _BadRequest(f"parameter {name!r} must be an integer {bound}, got {text!r}")
    value = int(text)
    if maximum is not None and value > maximum:
        raise _BadRequest(f"parameter {name!r} must be an integer {bound}, got {value}")
    return value
