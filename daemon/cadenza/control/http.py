"""The speaker's control API under ``/api/v1`` (JSON), its live events and the web UI.

The OpenAPI 3.1 document at ``/api/v1/openapi.json`` (:mod:`cadenza.control.openapi`)
describes every route; in short:

    GET    /api/v1/info                    who this speaker is (no token needed)
    GET    /api/v1/state                   everything at once
    GET    /api/v1/events                  server-sent events: the state, then changes
    POST   /api/v1/play                    {"uri"} | {"uris"} | {"context", "offset"}
    POST   /api/v1/pause|resume|next|previous
    POST   /api/v1/seek                    {"position_ms"}
    PUT    /api/v1/volume                  {"volume"}
    PUT    /api/v1/shuffle  /repeat        {"shuffle": bool} / {"repeat": off|all|one}
    GET    /api/v1/queue                   the queue and what plays
    POST   /api/v1/queue                   {"uri"|"uris", "position"?}: add
    POST   /api/v1/queue/move              {"from", "to"}
    DELETE /api/v1/queue/{position}        remove one;  DELETE /api/v1/queue: clear
    GET    /api/v1/search?q=&type=&limit=&offset=
    GET    /api/v1/lookup?uri=
    GET    /api/v1/settings   PATCH /api/v1/settings   {"name", "max_volume", "bitrate",
                                                         "cache_size", "open"}
    GET    /api/v1/stats                   bytes by source, start latencies, underruns, peers
    GET    /api/v1/speakers                the other speakers on the LAN
    POST   /api/v1/pairing                 {"name", "scope"}: ask to pair (no token needed)
    GET    /api/v1/pairing/{id}            its state; the token once approved (once)
    GET    /api/v1/pairing                 pending requests (admin)
    POST   /api/v1/pairing/{id}/approve|deny   (admin, or the speaker's button)
    GET    /api/v1/tokens   DELETE /api/v1/tokens/{id}   (admin)

Trust (:mod:`cadenza.control.auth`): loopback clients are admins; LAN clients need a bearer
token (``Authorization: Bearer …``; for the event stream also ``?access_token=…``), unless
the owner opened the speaker. Every request's Host must be one of the speaker's own names
or addresses; a state-changing request with a foreign Origin is refused; bodies are capped;
each client address has a request rate limit. Every error is a JSON body
``{"error": {"status": N, "message": "..."}}`` that says what was wrong.

What a stranger can make it log is logged at debug or info level under a constant message
template (the details are arguments), so that the log budget
(:mod:`cadenza.system.logbudget`) counts a flood as one kind of line; a client that hangs
up mid-request costs one debug line, not a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadenza import __version__, links, net
from cadenza.errors import (
    ApiErrorCode,
    BadRequest,
    Busy,
    CadenzaError,
    Forbidden,
    NotFound,
    Throttled,
    Unauthenticated,
    Unavailable,
    UnknownLink,
)
from cadenza.protocol import api
from cadenza.speaker import REPEAT_MODES, Speaker
from cadenza.system.ratelimit import TokenBucket

from . import events, openapi
from .auth import (
    Pairing,
    TokenStore,
    host_allowed,
    is_loopback,
    origin_allowed,
    scope_allows,
)
from .settings import BLANK, Settings, check_name, validate

log = logging.getLogger("cadenza.control")

API_VERSION = "1"
# Control requests are tiny; anything bigger is a mistake or an attack.
MAX_BODY = 64 * 1024
# Nesting a JSON body may have: ours are two levels deep (an object holding a list), and the
# parser's recursion limit must not be what stops a deeper one (that is a 500).
MAX_JSON_DEPTH = 16
# Requests per second a client address may make (burst: a UI loading all its views at once).
RATE = 50.0
BURST = 200
# Event streams send a comment this often when nothing happens (keeps proxies and NATs open).
KEEPALIVE_S = 15.0
# Most event streams at once (each is a task and a socket).
MAX_STREAMS = 64
MAX_POSITION_MS = 24 * 3600 * 1000
SEARCH_TYPES = ("track", "album", "artist")


class ApiError(BadRequest):
    """A refusal only HTTP has a status for (a body over MAX_BODY: 413, a Host that is not
    the speaker's: 421): the status is the instance's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"status": status, "message": message}}, status_code=status, headers=headers
    )


def cadenza_error_response(exc: CadenzaError) -> Response:
    """The answer to a user's or client's error: its class's status and its message (and,
    for :class:`Throttled` with a ``retry_after``, when to try again)."""
    headers = None
    if isinstance(exc, Throttled) and exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.http_status, str(exc), headers)


@dataclass
class Control:
    """What the API drives besides the speaker."""

    speaker: Speaker
    info: dict[str, Any]
    settings: Settings
    tokens: TokenStore = field(default_factory=lambda: TokenStore(None))
    own_names: Callable[[], set[str]] = lambda: set()
    apply_settings: Callable[[Settings], Awaitable[None]] | None = None
    speakers: Callable[[], list[dict[str, Any]]] = lambda: []
    pairing: Pairing = field(init=False)
    streams: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.pairing = Pairing(self.tokens)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def state(self) -> dict[str, Any]:
        return self.speaker.state() | {"name": self.settings.name}


# --- guard: host, origin, size, rate, auth ----------------------------------------------------

PUBLIC = {
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/pairing"),
}


class Guard:
    """ASGI middleware: Host and Origin checks, body size and rate limits, bearer tokens."""

    def __init__(self, app: ASGIApp, control: Control) -> None:
        self.app = app
        self.control = control
        self._buckets: dict[str, TokenBucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = request.client.host if request.client else ""
        try:
            self._check(request, scope, client)
        except CadenzaError as exc:
            log.debug(
                "refused %s %s from %s: %s %s",
                scope["method"],
                scope["path"],
                client,
                exc.http_status,
                exc,
            )
            await cadenza_error_response(exc)(scope, receive, send)
            return
        exchange = _Exchange(receive, send)
        await self.app(scope, exchange.receive, exchange.send)

    def _check(self, request: Request, scope: Scope, client: str) -> None:
        own = self.control.own_names()
        if not host_allowed(request.headers.get("host"), own):
            raise ApiError(421, "this speaker does not answer to that Host name")
        method = request.method
        server = scope.get("server")
        port = server[1] if server else None  # where this request came in: the API's port
        if method not in ("GET", "HEAD", "OPTIONS") and not origin_allowed(
            request.headers.get("origin"), own, port
        ):
            raise Forbidden(
                "requests from pages other than the speaker's own are refused (Origin: "
                "it must be one of the speaker's names or addresses, with the API's port)"
            )
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise ApiError(413, f"request body over {MAX_BODY} bytes")
        loopback = is_loopback(client)
        if not loopback:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) > 4096:
                    self._buckets.clear()
                bucket = self._buckets[client] = TokenBucket(RATE, BURST)
            if bucket.wait_time(1, time.monotonic()) > 0:
                raise Throttled(f"more than {RATE:.0f} requests a second: slow down", retry_after=1)
            bucket.reserve(1, time.monotonic())
        scope.setdefault("state", {})
        if loopback:
            scope["state"]["scope"] = "admin"
            return
        token = _bearer(request)
        info = self.control.tokens.check(token, time.time()) if token else None
        if info is not None:
            scope["state"]["scope"] = info.scope
        elif token and not _public(request.method, request.url.path):
            raise Unauthenticated("unknown or revoked token: pair again")
        elif self.control.settings.open:
            scope["state"]["scope"] = "playback"
        else:
            scope["state"]["scope"] = None


def _public(method: str, path: str) -> bool:
    """Routes anyone may use (a stale token there is ignored, so a client can pair again)."""
    if (method, path) in PUBLIC or path == "/" or path.startswith("/ui/"):
        return True
    return method == "GET" and path.startswith("/api/v1/pairing/") and path.count("/") == 4


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    if request.url.path == "/api/v1/events":
        return request.query_params.get("access_token") or None
    return None


class _Exchange:
    """One request's ``receive`` and ``send`` as the app sees them.

    A body that grows past MAX_BODY without a Content-Length (chunked) is refused. Once the
    client has gone (``http.disconnect``), nothing more is sent: hypercorn has already
    closed the exchange (answering 400 to a body cut short), and a second answer would only
    raise inside hypercorn and be logged as a traceback.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._seen = 0
        self.gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > MAX_BODY:
                raise ApiError(413, f"request body over {MAX_BODY} bytes")
        elif message["type"] == "http.disconnect":
            self.gone = True
        return message

    async def send(self, message: Message) -> None:
        if not self.gone:
            await self._send(message)


# --- helpers ------------------------------------------------------------------------------------


async def json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(413, f"request body over {MAX_BODY} bytes")
    if not body:
        return {}
    too_deep = f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest(too_deep) from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(too_deep)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` nests (without recursing: it is a
    stranger's data)."""
    deepest = 0
    todo = [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in item)
    return deepest


def int_field(data: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    if name not in data or data[name] is None:
        if default is None:
            raise BadRequest(f"missing field {name!r}", field=name)
        return default
    value = _integral(data[name])
    if type(value) is not int or not lo <= value <= hi:
        raise BadRequest(f"field {name!r} must be an integer {lo}..{hi}, got {value!r}", field=name)
    return value


def _integral(value: Any) -> Any:
    """JSON has one number type: 132.0 is the integer 132 (JSON Schema agrees)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def uris_field(data: dict[str, Any]) -> list[str]:
    if "uris" in data:
        uris = data["uris"]
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise BadRequest("field 'uris' must be a non-empty list of strings", field="uris")
        if len(uris) > openapi.MAX_LINKS:
            raise BadRequest(f"field 'uris' holds at most {openapi.MAX_LINKS} links", field="uris")
        return uris
    if "uri" in data:
        if not isinstance(data["uri"], str):
            raise BadRequest("field 'uri' must be a string", field="uri")
        return [data["uri"]]
    raise BadRequest("give 'uri' or 'uris'", field="uri")


def query_int(request: Request, name: str, lo: int, hi: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise BadRequest(f"query parameter {name!r} must be an integer {lo}..{hi}", field=name)
    return int(raw)


Handler = Callable[[Request], Awaitable[Response]]


def route(path: str, method: str, scope: str | None, control: Control) -> Callable[[Any], Handler]:
    """A route whose handler needs ``scope`` (None: anyone) and whose errors are JSON."""

    def wrap(fn: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                if scope is not None:
                    granted = request.scope.get("state", {}).get("scope")
                    if granted is None:
                        raise Unauthenticated("this needs a token: pair with the speaker first")
                    if not scope_allows(granted, scope):
                        raise Forbidden(f"this needs the {scope!r} scope (yours: {granted!r})")
                result = await fn(request)
            except ClientDisconnect:
                # Nobody is left to answer (_Exchange drops what is sent): one line, no traceback.
                log.debug(
                    "%s %s: the client %s went away mid-request",
                    method,
                    path,
                    request.client.host if request.client else "?",
                )
                return Response(status_code=400)
            except (net.NetError, trio.TooSlowError) as exc:
                return cadenza_error_response(Unavailable(f"the service is not reachable: {exc}"))
            except CadenzaError as exc:
                return cadenza_error_response(exc)
            except Exception:
                # A bug, whatever its type: a KeyError is no "not found", a ValueError no
                # "bad request". The client learns nothing of it but that it was ours.
                log.exception("control API failed on %s %s", method, path)
                return error_response(500, "internal error")
            if method != "GET":
                control.notify()
            return result if isinstance(result, Response) else JSONResponse(result)

        return endpoint

    return wrap


# --- the app --------------------------------------------------------------------------------------


def control_app(control: Control) -> ASGIApp:
    speaker = control.speaker
    routes: list[Route] = []
    by_path: dict[str, dict[str, Handler]] = {}

    def r(path: str, method: str, scope: str | None) -> Callable[[Any], Any]:
        def add(fn: Any) -> Any:
            by_path.setdefault(path, {})[method] = route(path, method, scope, control)(fn)
            return fn

        return add

    @r("/api/v1/info", "GET", None)
    async def get_info(request: Request) -> dict[str, Any]:
        return control.info | {
            "name": control.settings.name,
            "version": __version__,
            "api_version": API_VERSION,
            "open": control.settings.open,
            "pairing": "open" if control.settings.open else "token",
        }

    @r("/api/v1/openapi.json", "GET", None)
    async def get_openapi(request: Request) -> dict[str, Any]:
        return openapi.document(__version__)

    @r("/api/v1/state", "GET", "read")
    async def get_state(request: Request) -> dict[str, Any]:
        return control.state()

    @r("/api/v1/play", "POST", "playback")
    async def play(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        position = int_field(data, "position_ms", 0, MAX_POSITION_MS, default=0)
        if "context" in data:
            if not isinstance(data["context"], str):
                raise BadRequest("field 'context' must be a link (album or track)", field="context")
            offset = int_field(data, "offset", 0, 100_000, default=0)
            await speaker.play([data["context"]], position, start_index=offset)
        else:
            await speaker.play(uris_field(data), position)
        return control.state()

    def simple(path: str, action: Callable[[], Awaitable[None]]) -> None:
        @r(path, "POST", "playback")
        async def handler(request: Request) -> dict[str, Any]:
            await json_body(request)  # must be empty or an object
            await action()
            return control.state()

    simple("/api/v1/pause", speaker.pause)
    simple("/api/v1/resume", speaker.resume)
    simple("/api/v1/next", speaker.next_track)
    simple("/api/v1/previous", speaker.previous_track)

    @r("/api/v1/seek", "POST", "playback")
    async def seek(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        await speaker.seek(int_field(data, "position_ms", 0, MAX_POSITION_MS))
        return control.state()

    @r("/api/v1/volume", "PUT", "playback")
    async def volume(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        await speaker.set_volume(int_field(data, "volume", 0, 100))
        return control.state()

    @r("/api/v1/shuffle", "PUT", "playback")
    async def shuffle(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        if type(data.get("shuffle")) is not bool:
            raise BadRequest("field 'shuffle' must be true or false", field="shuffle")
        await speaker.set_shuffle(data["shuffle"])
        return control.state()

    @r("/api/v1/repeat", "PUT", "playback")
    async def repeat(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        if data.get("repeat") not in REPEAT_MODES:
            raise BadRequest(
                f"field 'repeat' must be one of {', '.join(REPEAT_MODES)}", field="repeat"
            )
        await speaker.set_repeat(data["repeat"])
        return control.state()

    def queue_view() -> dict[str, Any]:
        st = control.state()
        return {k: st[k] for k in ("queue", "index", "shuffle", "repeat", "track")}

    @r("/api/v1/queue", "GET", "read")
    async def get_queue(request: Request) -> dict[str, Any]:
        return queue_view()

    @r("/api/v1/queue", "POST", "playback")
    async def add_queue(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        uris = uris_field(data)
        position = None
        if data.get("position") is not None:
            position = int_field(data, "position", 0, 100_000)
        await speaker.add_to_queue(uris, position)
        return queue_view()

    @r("/api/v1/queue/move", "POST", "playback")
    async def move_queue(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        await speaker.move_in_queue(
            int_field(data, "from", 0, 100_000), int_field(data, "to", 0, 100_000)
        )
        return queue_view()

    @r("/api/v1/queue/{position:int}", "DELETE", "playback")
    async def remove_queue(request: Request) -> dict[str, Any]:
        await speaker.remove_from_queue(request.path_params["position"])
        return queue_view()

    @r("/api/v1/queue", "DELETE", "playback")
    async def clear_queue(request: Request) -> dict[str, Any]:
        await speaker.clear_queue()
        return queue_view()

    @r("/api/v1/search", "GET", "read")
    async def search(request: Request) -> dict[str, Any]:
        q = request.query_params.get("q", "").strip(BLANK)
        if not q:
            raise BadRequest("query parameter 'q' (the words to search for) is missing", field="q")
        if len(q) > 200:
            raise BadRequest("query parameter 'q' is over 200 characters", field="q")
        kind = request.query_params.get("type", "track")
        if kind not in SEARCH_TYPES:
            raise BadRequest(
                f"query parameter 'type' must be one of {', '.join(SEARCH_TYPES)}", field="type"
            )
        limit = query_int(request, "limit", 1, api.MAX_SEARCH_LIMIT, 20)
        offset = query_int(request, "offset", 0, 10_000, 0)
        reply = await speaker.session.request(api.Search(kind, q, limit, offset), timeout=10)
        assert isinstance(reply, api.SearchReply)
        return {"type": kind, "total": reply.total, "items": list(reply.items)}

    @r("/api/v1/lookup", "GET", "read")
    async def lookup(request: Request) -> dict[str, Any]:
        uri = request.query_params.get("uri", "")
        link = links.parse(uri)
        try:
            reply = await speaker.session.request(api.Lookup(str(link)), timeout=10)
        except net.RequestFailed as exc:
            if exc.code == ApiErrorCode.NOT_FOUND:
                raise UnknownLink(f"unknown {link.kind}: {uri}") from None
            if exc.code in (ApiErrorCode.UNSUPPORTED, ApiErrorCode.BAD_REQUEST):
                raise BadRequest(exc.message, field="uri") from None
            raise
        assert isinstance(reply, api.LookupReply)
        return {"type": reply.kind, "item": reply.record}

    @r("/api/v1/settings", "GET", "read")
    async def get_settings(request: Request) -> dict[str, Any]:
        return control.settings.public()

    @r("/api/v1/settings", "PATCH", "admin")
    async def patch_settings(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        new = validate(control.settings, data)
        if control.apply_settings is not None:
            await control.apply_settings(new)
        control.settings = new
        return new.public()

    @r("/api/v1/stats", "GET", "read")
    async def stats(request: Request) -> dict[str, Any]:
        st = control.state()
        lat = st["start_latency_ms"]
        return {
            "bytes_by_source": st["bytes_by_source"],
            "traffic": st["traffic"],
            "start_latency_ms": lat,
            "start_latency_p50_ms": sorted(lat)[len(lat) // 2] if lat else None,
            "underruns": st["underruns"],
            "bad_chunks": st["bad_chunks"],
            "tracks_streamed": st["tracks_streamed"],
            "peers": st["p2p"],
        }

    @r("/api/v1/speakers", "GET", "read")
    async def speakers(request: Request) -> dict[str, Any]:
        return {"speakers": control.speakers()}

    # --- pairing and tokens -----------------------------------------------------------------

    @r("/api/v1/pairing", "POST", None)
    async def ask_pairing(request: Request) -> Response:
        data = await json_body(request)
        name = check_name(data.get("name"), "name")
        scope = data.get("scope", "playback")
        client = request.client.host if request.client else ""
        req = control.pairing.ask(name, scope, client, time.time())  # PairingRefused: a 429
        # Info, not a warning: anyone on the LAN can ask (up to the per-address limit).
        log.info(
            "pairing asked by %s (%s, scope %s): code %s; confirm with the button or an admin",
            name,
            client or "?",
            scope,
            req.code,
        )
        return JSONResponse(req.public(), status_code=201)

    @r("/api/v1/pairing", "GET", "admin")
    async def list_pairing(request: Request) -> dict[str, Any]:
        return {"requests": [p.public() for p in control.pairing.pending(time.time())]}

    @r("/api/v1/pairing/{rid}", "GET", None)
    async def pairing_state(request: Request) -> dict[str, Any]:
        rid = request.path_params["rid"]
        req = control.pairing.get(rid, time.time())
        if req is None:
            raise NotFound(f"no pairing request {rid!r} (expired or never made)")
        out: dict[str, Any] = req.public()
        token = control.pairing.collect(rid, time.time())
        if token is not None:
            out |= {"state": "approved", "token": token}
        return out

    def decide(path: str, approve: bool) -> None:
        @r(path, "POST", "admin")
        async def handler(request: Request) -> dict[str, Any]:
            rid = request.path_params["rid"]
            now = time.time()
            req = control.pairing.approve(rid, now) if approve else control.pairing.deny(rid, now)
            if req is None:
                raise NotFound(f"no pending pairing request {rid!r}")
            log.warning("pairing %s: %s (%s)", req.state, req.name, req.scope)
            return req.public()

    decide("/api/v1/pairing/{rid}/approve", True)
    decide("/api/v1/pairing/{rid}/deny", False)

    @r("/api/v1/tokens", "GET", "admin")
    async def list_tokens(request: Request) -> dict[str, Any]:
        return {"tokens": [t.public() for t in control.tokens.list()]}

    @r("/api/v1/tokens/{tid}", "DELETE", "admin")
    async def revoke(request: Request) -> dict[str, Any]:
        tid = request.path_params["tid"]
        if not control.tokens.revoke(tid):
            raise NotFound(f"no token {tid!r}")
        log.warning("token %s revoked", tid)
        return {"revoked": tid}

    # --- events -------------------------------------------------------------------------------

    @r("/api/v1/events", "GET", "read")
    async def get_events(request: Request) -> Response:
        if control.streams >= MAX_STREAMS:
            raise Busy(f"too many event streams (at most {MAX_STREAMS})")
        return StreamingResponse(
            _event_stream(control),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- web UI -------------------------------------------------------------------------------

    async def web(request: Request) -> Response:
        name = request.path_params.get("file", "index.html")
        data, kind = _web_file(name)
        if data is None:
            return error_response(404, f"no such page {request.url.path!r}")
        return Response(data, media_type=kind, headers={"Cache-Control": "no-cache"})

    routes.append(Route("/", web, methods=["GET"]))
    routes.append(Route("/ui/{file:path}", web, methods=["GET"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            detail = str(exc.detail)
            if exc.status_code == 405:
                detail = f"{request.method} is not allowed on {request.url.path}"
            elif exc.status_code == 404:
                detail = f"no such endpoint {request.url.path!r}"
            return error_response(exc.status_code, detail, dict(exc.headers or {}))
        log.exception("control API failed on %s", request.url.path)
        return error_response(500, "internal error")

    # One route per path, so a wrong method gets a 405 whose Allow lists every method there.
    for path, methods in by_path.items():
        routes.insert(0, Route(path, _dispatch(methods), methods=list(methods)))
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: not_found, Exception: not_found}
    )
    return Guard(app, control)


def _dispatch(methods: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint


async def _event_stream(control: Control) -> AsyncIterator[bytes]:
    control.streams += 1
    try:
        last: dict[str, Any] | None = None
        while True:
            now = control.state()
            for name, data in events.diff(last, now):
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            last = now
            with trio.move_on_after(KEEPALIVE_S) as idle:
                async with trio.open_nursery() as nursery:

                    async def wake(wait: Callable[[], Awaitable[Any]]) -> None:
                        await wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(wake, control.speaker.wait_changed)
                    nursery.start_soon(wake, control.changed.wait)
            if idle.cancelled_caught:
                yield b": keep-alive\n\n"
    finally:
        control.streams -= 1


_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


def _web_file(name: str) -> tuple[bytes | None, str]:
    if "/" in name or name.startswith(".") or not name:
        return None, ""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in _TYPES:
        return None, ""
    try:
        data = resources.files("cadenza.control").joinpath("web", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, ""
    return data, _TYPES[suffix]
