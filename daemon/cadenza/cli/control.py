"""``cadenza speakers|play|pause|resume|next|volume|status|queue``: drive speakers over
their HTTP control API (:mod:`cadenza.control.http`).

Which speaker (every command but ``speakers``):

1. ``--speaker NAME_OR_URL``, else the environment variable ``CADENZA_SPEAKER`` (same
   forms). A URL (``http://host:port``, or just ``host:port``) is used as it is; a name is
   matched, ignoring case, against the speakers found over mDNS (its name, its instance
   name or its id; a unique prefix of a name will do).
2. Otherwise, the one speaker on the LAN if mDNS finds exactly one,
3. else a speaker answering on ``http://127.0.0.1:4080``,
4. else an error listing the speakers found.

A speaker found over mDNS that runs on this very machine is reached over loopback when it
answers there: loopback clients need no token. Other clients send ``--token`` (or
``CADENZA_TOKEN``) as a bearer token; get one by pairing, in the speaker's web UI or with
``POST /api/v1/pairing``.

Output is short and human by default; ``--json`` prints the API's answer as it is (for
``speakers``: a list of objects). Exit status: 0 on success, 1 when the speaker refuses
(its message goes to stderr as ``cadenza: <message>``), cannot be reached or is not found,
2 for usage errors (including several speakers found and none chosen), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadenza.net.mdns import ServiceInfo

COMMANDS = ("speakers", "play", "pause", "resume", "next", "volume", "status", "queue")

SERVICE_TYPE = "_cadenza._tcp.local."
API_PATH = "/api/v1"
DEFAULT_PORT = 4080
LOCAL_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
BROWSE_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0
# A speaker that is there answers on loopback at once; this only bounds a hung one.
PROBE_TIMEOUT = 1.5

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

SYMBOLS = {"playing": "▶", "paused": "⏸", "stopped": "■", "loading": "…", "buffering": "…"}

_HOST_PORT = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):\d{1,5}$")


class CliError(Exception):
    """Something to tell the user on stderr (``cadenza: <message>``), and the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hints = tuple(hints)


# --- speakers and choosing one (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A speaker to talk to: ``url`` is its root (``http://host:port``, no trailing slash)."""

    url: str
    name: str | None = None
    id: str | None = None
    model: str | None = None
    pairing: str | None = None
    api: str | None = None
    instance: str | None = None  # the mDNS instance name, when found over mDNS
    addresses: tuple[str, ...] = ()
    port: int | None = None
    api_path: str = API_PATH

    @property
    def api_url(self) -> str:
        return self.url + self.api_path

    @property
    def label(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url


def speaker_url(text: str) -> str | None:
    """The root URL ``text`` names (``http(s)://host[:port][/api/v1]`` or ``host:port``),
    or None if it is not a URL (then it is a speaker's name)."""
    text = text.strip()
    if _HOST_PORT.match(text):
        text = "http://" + text
    if not re.match(r"^https?://", text, re.IGNORECASE):
        return None
    parts = urllib.parse.urlsplit(text)
    try:
        if not parts.hostname or parts.port == 0:
            return None
    except ValueError:  # a port that is not a number, or out of range
        return None
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path[: -len(API_PATH)]
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def from_service(info: ServiceInfo) -> Target:
    """The speaker an mDNS answer (``_cadenza._tcp``) describes."""
    props = info.properties
    # IPv4 first (ServiceInfo sorts them so); an IPv6 link-local address would need a zone.
    usable = [a for a in info.addresses if not ipaddress.ip_address(a).is_link_local]
    address = (usable or list(info.addresses) or [info.host or info.name])[0]
    path = props.get("path") or API_PATH
    return Target(
        url=f"http://{_url_host(address.rstrip('.'))}:{info.port}",
        name=props.get("name") or info.name,
        id=props.get("id") or None,
        model=props.get("model") or None,
        pairing=props.get("pairing") or None,
        api=props.get("api") or None,
        instance=info.name,
        addresses=tuple(info.addresses),
        port=info.port,
        api_path="/" + path.strip("/") if path.strip("/") else "",
    )


def _key(text: str | None) -> str:
    return (text or "").strip().casefold()


def _choices(found: Sequence[Target]) -> list[str]:
    return [f"  {t.label}" for t in found]


def match_speaker(wanted: str, found: Sequence[Target]) -> Target:
    """The speaker of ``found`` that ``wanted`` names: its name, instance name or id
    (ignoring case), else the one name it is a prefix of. CliError if none or several."""
    key = _key(wanted)
    if not key:
        raise CliError("--speaker is empty: give a speaker's name or URL", EXIT_USAGE)
    exact = [t for t in found if key in (_key(t.name), _key(t.instance), _key(t.id))]
    candidates = exact or [t for t in found if _key(t.name).startswith(key)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise CliError(
            f"{len(candidates)} speakers match {wanted!r}; give one's URL with --speaker:",
            EXIT_USAGE,
            _choices(candidates),
        )
    if found:
        raise CliError(
            f"no speaker named {wanted!r} on the LAN; found:", EXIT_ERROR, _choices(found)
        )
    raise CliError(
        f"no speaker named {wanted!r}: none found on the LAN over mDNS"
        " (give its URL instead: --speaker http://HOST:PORT)"
    )


def choose_speaker(
    wanted: str | None,
    browse: Callable[[Callable[[list[Target]], bool]], list[Target]],
    probe_local: Callable[[], Target | None],
) -> Target:
    """The speaker to drive, by the rules in this module's docstring.

    ``wanted`` is ``--speaker`` or ``CADENZA_SPEAKER``; ``browse(done)`` lists the speakers
    found over mDNS, stopping early once ``done(found)`` is true; ``probe_local()`` is the
    speaker answering on :data:`LOCAL_URL`, or None. Neither is called unless needed.
    """
    if wanted is not None and wanted.strip():
        url = speaker_url(wanted)
        if url is not None:
            return Target(url)

        def named(found: list[Target]) -> bool:
            key = _key(wanted)
            return any(key in (_key(t.name), _key(t.instance), _key(t.id)) for t in found)

        return match_speaker(wanted, browse(named))
    if wanted is not None:
        raise CliError("--speaker is empty: give a speaker's name or URL", EXIT_USAGE)
    found = browse(lambda found: False)
    if len(found) == 1:
        return found[0]
    local = probe_local()
    if local is not None:
        return local
    if found:
        raise CliError(
            f"{len(found)} speakers on the LAN; say which with --speaker NAME_OR_URL"
            " (or CADENZA_SPEAKER):",
            EXIT_USAGE,
            _choices(found),
        )
    raise CliError(
        f"no speaker found: none on the LAN (mDNS) and none on {LOCAL_URL};"
        " give one with --speaker http://HOST:PORT (or CADENZA_SPEAKER)"
    )


def is_on_this_host(target: Target, host_addresses: Iterable[str]) -> bool:
    """Whether a speaker found over mDNS advertises one of this machine's addresses."""
    own = set(host_addresses)
    return any(a in own for a in target.addresses)


# --- formatting (pure) ------------------------------------------------------------------------


def clock(ms: int | float | None) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = max(0, int((ms or 0) // 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _artist_names(track: Mapping[str, Any]) -> list[str]:
    names = []
    for artist in track.get("artists") or []:
        name = artist.get("name") if isinstance(artist, Mapping) else artist
        if name:
            names.append(str(name))
    return names


def describe(track: Mapping[str, Any]) -> str:
    """``Title — Artist, Artist`` (a track summary or a full track record)."""
    title = track.get("title") or track.get("uri") or "unknown track"
    artists = _artist_names(track)
    return f"{title} — {', '.join(artists)}" if artists else str(title)


def status_head(state: Mapping[str, Any]) -> str:
    """``▶ Title — Artist (1:23 / 3:45)``; other states name themselves (``⏸ paused: …``)."""
    status = str(state.get("status") or "stopped")
    symbol = SYMBOLS.get(status, "?")
    track = state.get("track")
    if not track:
        return f"{symbol} {status}" + (", nothing playing" if status == "stopped" else "")
    word = "" if status == "playing" else f"{status}: "
    position = clock(state.get("position_ms"))
    duration = track.get("duration_ms")
    timing = f"{position} / {clock(duration)}" if duration else position
    return f"{symbol} {word}{describe(track)} ({timing})"


def format_status(state: Mapping[str, Any]) -> str:
    """The state in a line, plus lines for the queue position, session and errors."""
    parts = [status_head(state)]
    if state.get("volume") is not None:
        parts.append(f"volume {state['volume']}")
    if state.get("name"):
        parts.append(f"speaker {state['name']}")
    lines = [" · ".join(parts)]
    queue = state.get("queue") or []
    index = state.get("index")
    if state.get("track") and len(queue) > 1 and isinstance(index, int) and index >= 0:
        lines.append(f"track {index + 1} of {len(queue)}")
    session = state.get("session") or {}
    if session.get("state") and session["state"] != "online":
        text = f"session {session['state']}"
        if session.get("error"):
            text += f": {session['error']}"
        lines.append(text)
    if state.get("error"):
        lines.append(f"error: {state['error']}")
    return "\n".join(lines)


def format_queue(view: Mapping[str, Any]) -> str:
    """A numbered list, the current track marked with ▶."""
    queue = view.get("queue") or []
    if not queue:
        return "the queue is empty"
    index = view.get("index") if view.get("track") else None
    width = len(str(len(queue)))
    lines = []
    for n, track in enumerate(queue):
        mark = "▶" if n == index else " "
        duration = f"  {clock(track['duration_ms'])}" if track.get("duration_ms") else ""
        lines.append(f"{mark} {n + 1:>{width}}. {describe(track)}{duration}")
    modes = []
    if view.get("shuffle"):
        modes.append("shuffle on")
    if view.get("repeat") and view["repeat"] != "off":
        modes.append(f"repeat {view['repeat']}")
    if modes:
        lines.append(" · ".join(modes))
    return "\n".join(lines)


def speaker_json(target: Target) -> dict[str, Any]:
    out = asdict(target)
    out["addresses"] = list(target.addresses)
    out["api_url"] = target.api_url
    out["address"] = urllib.parse.urlsplit(target.url).hostname
    return out


def format_speakers(found: Sequence[Target]) -> str:
    """One line per speaker: name, address:port, id, pairing mode."""
    if not found:
        return ""
    rows = [
        (
            t.name or "?",
            urllib.parse.urlsplit(t.url).netloc,
            f"id {t.id or '?'}",
            f"pairing {t.pairing or '?'}",
        )
        for t in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]])
        for row in rows
    )


# --- arguments ----------------------------------------------------------------------------------


def _volume(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the volume is a whole number 0..100, not {text!r}"
        ) from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"the volume is 0..100, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"give 0 < seconds <= 60, not {text}")
    return value


def add_control_commands(sub: Any) -> None:
    """Add the speaker commands to the top-level parser's subparsers (``sub``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print the API's answer as JSON (for scripts)"
    )
    common.add_argument(
        "--timeout",
        type=_seconds,
        default=BROWSE_SECONDS,
        metavar="SECONDS",
        help=f"how long to look for speakers over mDNS (default {BROWSE_SECONDS:g})",
    )
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--speaker",
        "-s",
        metavar="NAME_OR_URL",
        help="the speaker: its name on the LAN or http://HOST:PORT (default: $CADENZA_SPEAKER,"
        f" the only speaker on the LAN, or {LOCAL_URL})",
    )
    target.add_argument(
        "--token",
        metavar="TOKEN",
        help="the bearer token from pairing (default: $CADENZA_TOKEN; loopback needs none)",
    )

    def add(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=list(parents)
        )
        return parser

    add("speakers", "list the speakers on the LAN (mDNS)", common)
    play = add("play", "play a cadenza: link, or the first track matching words", common, target)
    play.add_argument(
        "what",
        nargs="+",
        metavar="URI_OR_WORDS",
        help="cadenza:track:… or cadenza:album:…, or words to search tracks for",
    )
    add("pause", "pause playback", common, target)
    add("resume", "resume playback", common, target)
    add("next", "skip to the next track", common, target)
    volume = add("volume", "set the volume (or show it)", common, target)
    volume.add_argument("volume", nargs="?", type=_volume, metavar="N", help="0..100")
    add("status", "what plays, where and how loud", common, target)
    add("queue", "the queue, the playing track marked", common, target)


# --- talking to a speaker -----------------------------------------------------------------------


class Api:
    """A speaker's control API over HTTP; failures become :class:`CliError`."""

    def __init__(self, target: Target, token: str | None, timeout: float = REQUEST_TIMEOUT) -> None:
        import httpx

        self.target = target
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # trust_env=False: a proxy from the environment would not reach a LAN speaker.
        self._http = httpx.Client(
            base_url=target.api_url, headers=headers, timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        import httpx

        url = self.target.url
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.TimeoutException:
            raise CliError(
                f"the speaker at {url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the speaker at {url}: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"talking to the speaker at {url} failed: {_reason(exc)}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            if data is None:
                raise CliError(f"the speaker at {url} answered {path} with something not JSON")
            return data
        raise self._error(response.status_code, data, response.text)

    def _error(self, status: int, data: Any, text: str) -> CliError:
        message = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = data["error"].get("message")
        if not message:
            message = f"HTTP {status} from {self.target.url}: {text.strip()[:200] or 'no reason'}"
        hints: list[str] = []
        if status == 401:
            hints = _pairing_hints(self.target)
        return CliError(str(message), EXIT_ERROR, hints)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if text:
        return text
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else type(exc).__name__


def _pairing_hints(target: Target) -> list[str]:
    port = urllib.parse.urlsplit(target.url).port or DEFAULT_PORT
    return [
        "over the LAN a speaker needs a token: pair this computer in its web UI"
        f" ({target.url}/) or with its API (POST {target.api_path}/pairing, approved by the"
        " owner), then pass --token TOKEN or set CADENZA_TOKEN",
        f"on the speaker itself, http://127.0.0.1:{port} needs no token",
    ]


# --- finding speakers (I/O) ---------------------------------------------------------------------


def browse(timeout: float, done: Callable[[list[Target]], bool] | None = None) -> list[Target]:
    """The speakers mDNS finds within ``timeout`` seconds (sooner once ``done(found)``)."""
    import trio

    return trio.run(_browse, timeout, done)


async def _browse(timeout: float, done: Callable[[list[Target]], bool] | None) -> list[Target]:
    from contextlib import aclosing

    import trio

    from cadenza.net import mdns

    def found(services: Mapping[str, ServiceInfo]) -> list[Target]:
        return sorted(
            (from_service(info) for info in services.values()),
            key=lambda t: (_key(t.name), t.url),
        )

    async with mdns.browse(SERVICE_TYPE) as browser:
        with trio.move_on_after(timeout):
            async with aclosing(browser.events()) as events:
                async for _ in events:
                    if done is not None and done(found(browser.services)):
                        break
        return found(browser.services)


def probe(url: str, token: str | None = None, timeout: float = PROBE_TIMEOUT) -> Target | None:
    """The speaker answering ``GET /api/v1/info`` at ``url``, or None."""
    try:
        with Api(Target(url), token, timeout) as api:
            info = api.call("GET", "/info")
    except CliError:
        return None
    if not isinstance(info, dict) or "id" not in info:
        return None
    return Target(
        url,
        name=info.get("name"),
        id=info.get("id"),
        model=info.get("model"),
        pairing=info.get("pairing"),
        api=info.get("api_version"),
    )


def _via_loopback(target: Target) -> Target:
    """``target``, reached over loopback (no token needed) if it runs on this machine."""
    from cadenza.net import mdns

    if target.port is None or not is_on_this_host(target, mdns.host_addresses()):
        return target
    local = probe(f"http://127.0.0.1:{target.port}")
    if local is None or local.id != target.id:
        return target
    return replace(target, url=local.url)


def resolve_speaker(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    wanted = args.speaker if args.speaker is not None else env.get("CADENZA_SPEAKER") or None
    browse_error: list[str] = []

    def look(done: Callable[[list[Target]], bool]) -> list[Target]:
        try:
            return browse(args.timeout, done)
        except Exception as exc:  # no multicast interface, port 5353 refused, ...
            browse_error.append(str(exc) or type(exc).__name__)
            return []

    try:
        target = choose_speaker(wanted, look, lambda: probe(LOCAL_URL))
    except CliError as exc:
        if browse_error:
            exc.hints += (f"(mDNS did not work here: {browse_error[0]})",)
        raise
    return _via_loopback(target) if target.instance is not None else target


# --- the commands -------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _speakers(args: argparse.Namespace) -> int:
    try:
        found = browse(args.timeout)
    except Exception as exc:
        raise CliError(f"cannot look for speakers over mDNS: {exc}") from None
    if args.json:
        _print_json([speaker_json(t) for t in found])
    elif found:
        print(format_speakers(found))
    else:
        print(f"no speakers found on the LAN (looked {args.timeout:g} s)", file=sys.stderr)
    return EXIT_OK


def _play(api: Api, args: argparse.Namespace) -> int:
    from cadenza import links

    text = " ".join(args.what).strip()
    if not text:
        raise CliError("nothing to play: give a cadenza: link or words to search for", EXIT_USAGE)
    query: str | None = None
    hit: dict[str, Any] | None = None
    try:
        link = links.parse(text)
    except links.LinkError as exc:
        if re.match(r"^cadenza:\S*$", text):
            raise CliError(str(exc), EXIT_USAGE) from None
        query = text
    else:
        if link.kind == "search":
            query = link.query
    if query is not None:
        found = api.call("GET", "/search", params={"q": query, "type": "track", "limit": 1})
        items = found.get("items") or []
        if not items:
            raise CliError(f"no track matches {query!r}")
        hit = items[0]
        body: dict[str, Any] = {"uri": hit["uri"]}
    elif link.kind in ("album", "playlist"):
        body = {"context": text}
    else:
        body = {"uri": text}
    state = api.call("POST", "/play", body=body)
    if args.json:
        _print_json(state)
        return EXIT_OK
    track = state.get("track") or hit
    line = f"▶ playing {describe(track)}" if track else f"▶ playing {text}"
    album = (track or {}).get("album")
    if isinstance(album, Mapping):
        album = album.get("title")
    if album:
        line += f" · {album}"
    queue = state.get("queue") or []
    if len(queue) > 1:
        line += f" · {len(queue)} tracks queued"
    if query is not None:
        line += f"  (found by searching {query!r})"
    print(line)
    return EXIT_OK


def _simple(api: Api, args: argparse.Namespace) -> int:
    state = api.call("POST", f"/{args.command}")
    if args.json:
        _print_json(state)
    else:
        print(status_head(state))
    return EXIT_OK


def _set_volume(api: Api, args: argparse.Namespace) -> int:
    if args.volume is None:
        state = api.call("GET", "/state")
    else:
        state = api.call("PUT", "/volume", body={"volume": args.volume})
    if args.json:
        _print_json(state)
        return EXIT_OK
    line = f"volume {state.get('volume')}"
    if args.volume is not None and state.get("volume") != args.volume:
        line += f" (the speaker's maximum is {state.get('max_volume')})"
    print(line)
    return EXIT_OK


_Action = Callable[[Api, argparse.Namespace], int]


def _show(path: str, format: Callable[[Mapping[str, Any]], str]) -> _Action:
    """An action that GETs ``path`` and prints it as JSON (``--json``) or ``format``ted."""

    def show(api: Api, args: argparse.Namespace) -> int:
        found = api.call("GET", path)
        if args.json:
            _print_json(found)
        else:
            print(format(found))
        return EXIT_OK

    return show


_ACTIONS: dict[str, _Action] = {
    "play": _play,
    "pause": _simple,
    "resume": _simple,
    "next": _simple,
    "volume": _set_volume,
    "status": _show("/state", format_status),
    "queue": _show("/queue", format_queue),
}


def control_main(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run one of :data:`COMMANDS` with parsed arguments; the exit status."""
    env = os.environ if env is None else env
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # ▶ on a terminal that cannot show it
    try:
        if args.command == "speakers":
            return _speakers(args)
        target = resolve_speaker(args, env)
        token = args.token if args.token is not None else env.get("CADENZA_TOKEN") or None
        with Api(target, token) as api:
            return _ACTIONS[args.command](api, args)
    except CliError as exc:
        print(f"cadenza: {exc.message}", file=sys.stderr)
        for hint in exc.hints:
            print(f"cadenza: {hint}" if not hint.startswith("  ") else hint, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
