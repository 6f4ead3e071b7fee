"""`cadenzad` put together: configuration → keys → session → cache → player → control API.

:func:`run_speaker` starts every part with ``nursery.start`` and reports started only
when the control API listens and the audio device is open; it never waits for the
service (the session connects in the background and says so in the state).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from cadenza import blocking
from cadenza.cache.store import Cache
from cadenza.control.plane import default_settings, run_control
from cadenza.hw.controls import run_board
from cadenza.hw.gpio import GpioUnavailable, open_chip
from cadenza.hw.profiles import Profile, load_profiles, read_system, select
from cadenza.net import mdns
from cadenza.p2p.overlay import Overlay, OverlayConfig
from cadenza.player.player import Player
from cadenza.player.volume import MixerVolume, Volume
from cadenza.protocol.certificate import fingerprint
from cadenza.protocol.messages import Message
from cadenza.session import discovery
from cadenza.session.client import Credentials, Endpoint, Session
from cadenza.speaker import Speaker, Status
from cadenza.speaker.commands import SetVolume
from cadenza.system.config import Config
from cadenza.system.keys import load_or_create_static_key

log = logging.getLogger("cadenza.daemon")


@dataclass
class Running:
    speaker: Speaker
    control_address: tuple[str, int]
    url: str
    audio_device: str
    mdns_name: str | None
    config: Config | None = None
    cache: Cache | None = None
    overlay: Overlay | None = None

    def reload(self, new: Config) -> list[str]:
        """Apply what can change while playing; returns the keys that need a restart."""
        old = self.config
        if old is None:
            return []
        changed = _changed_keys(old, new)
        sp, st, ov = self.speaker, new.streaming, self.overlay
        live = {
            "streaming.first_piece_seconds",
            "streaming.ahead_seconds",
            "streaming.prefetch_seconds",
            "streaming.stutter_target",
            "streaming.bitrate",
            "audio.max_volume",
            "audio.normalisation",
        }
        sp.configure(st, bitrate="streaming.bitrate" in changed)  # else an API bitrate stands
        sp.normalisation = new.audio.normalisation
        if "audio.max_volume" in changed:
            sp.submit(SetVolume(None, max_volume=new.audio.max_volume))
        if self.cache is not None and new.cache.max_size is not None:
            live.add("cache.max_size")
            if "cache.max_size" in changed:
                self.cache.set_capacity(new.cache.max_size)
        if ov is not None:
            live |= {"p2p.max_uploads", "p2p.upload_rate", "p2p.max_neighbours"}
            if "p2p.max_uploads" in changed:
                ov.set_max_uploads(new.p2p.max_uploads)
            if "p2p.upload_rate" in changed:
                ov.bucket.set_rate(float(new.p2p.upload_rate or 0), trio.current_time())
            ov.neighbours.soft_max = min(new.p2p.max_neighbours, ov.neighbours.hard_max)
        self.config = new
        return sorted(changed - live)


def _read_password(path: Path | None) -> str:
    if path is None:
        return ""
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")


async def run_speaker(
    config: Config, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    sp, svc, audio, ctl = config.speaker, config.service, config.audio, config.control
    state_dir, cache_dir = sp.state_dir, sp.cache_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    static = load_or_create_static_key(state_dir / "static.key")
    name = sp.name or socket.gethostname()

    async def candidates() -> list[Endpoint]:
        found = await discovery.find_access_points(
            address=svc.address, domain=svc.domain, use_mdns=svc.mdns
        )
        return [Endpoint(e.host, e.port, e.source, e.fingerprint) for e in found]

    overlay: Overlay | None = None

    async def on_push(msg: Message) -> None:
        if overlay is not None:
            await overlay.on_push(msg)

    session = Session(
        static=static,
        state_dir=state_dir,
        candidates=candidates,
        credentials=Credentials(svc.username or "", _read_password(svc.password_file), name),
        pinned_fingerprint=svc.fingerprint or None,
        on_push=on_push,
    )
    cache = Cache(cache_dir, capacity=config.cache.max_size)
    board = await blocking.run_sync(_board, config)
    wanted = audio.device
    if board is not None and wanted == "default" and board.alsa_device:
        wanted = board.alsa_device  # the board's card, not whatever ALSA's default is
    devices = [wanted] + ([audio.fallback_device] if audio.fallback_device else [])
    player, device = Player.open_first(
        devices,
        period_frames=audio.period_frames,
        periods=audio.periods,
        volume_range_db=audio.volume_range_db,
        volume=_mixer_volume(audio, board),
    )
    if device != wanted:
        log.warning("audio device %r cannot be opened; playing to %r instead", wanted, device)
    speaker = Speaker(
        session=session,
        cache=cache,
        player=player,
        streaming=config.streaming,
        volume=audio.volume,
        max_volume=audio.max_volume,
        metadata_path=state_dir / "tracks.json",
        normalisation=audio.normalisation,
    )
    p2p = config.p2p
    if p2p.enabled:
        overlay = Overlay(
            session=session,
            cache=cache,
            static=static,
            config=OverlayConfig(
                port=p2p.port,
                soft_max=p2p.max_neighbours,
                hard_max=p2p.hard_max_neighbours,
                max_uploads=p2p.max_uploads,
                upload_rate=p2p.upload_rate or 0,
                lan=p2p.lan_discovery,
            ),
            buffer_low=speaker.playback_buffer_low,
        )
        speaker.overlay = overlay
    player.on_event = speaker.player_event
    info = {
        "id": fingerprint(static.public).replace(":", "")[:16],
        "name": name,
        "model": "cadenza",
        "audio_device": device,
    }
    ctl_host, ctl_port = ctl.listen
    try:
        async with trio.open_nursery() as nursery:
            if overlay is not None:
                # First: the session logs in with the port peers reach us on.
                await nursery.start(overlay.run)
            await nursery.start(session.run)
            await nursery.start(speaker.run)
            plane = await nursery.start(
                partial(
                    run_control,
                    speaker,
                    info,
                    host=ctl_host,
                    port=ctl_port,
                    state_dir=state_dir,
                    defaults=default_settings(name, config),
                    cache=cache,
                    advertise=ctl.advertise,
                    on_name=lambda new: info.__setitem__("name", new),
                )
            )
            bound = plane.address
            url_host = bound[0] if bound[0] not in ("0.0.0.0", "::") else _lan_address()
            url = f"http://{url_host}:{bound[1]}/"
            mdns_name = plane.mdns_name
            if board is not None and board.gpio is not None and config.hardware.gpio:
                await _start_board(nursery, board, _BoardActions(speaker, plane.control))
            task_status.started(
                Running(speaker, bound, url, device, mdns_name, config, cache, overlay)
            )
    finally:
        await blocking.run_sync(player.close)
        cache.close()


def _changed_keys(old: Config, new: Config) -> set[str]:
    keys: set[str] = set()
    for section in dataclasses.fields(old):
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                keys.add(f"{section.name}.{f.name}")
    return keys


def _lan_address() -> str:
    addrs = mdns.host_addresses()
    return addrs[0] if addrs else "127.0.0.1"


def _board(config: Config) -> Profile | None:
    """The board profile: detected, named in the configuration, or none."""
    name = config.hardware.board
    if name == "none":
        return None
    profiles = load_profiles()
    try:
        board = select(profiles, name, read_system())
    except ValueError as exc:
        raise BoardError(f"hardware.board: {exc}") from None
    if board is not None:
        log.info("board: %s (%s)", board.name, board.description)
    elif name == "auto":
        log.info("no known board detected: plain ALSA (%d profiles known)", len(profiles))
    return board


async def _start_board(nursery: trio.Nursery, board: Profile, actions: _BoardActions) -> None:
    """The board's buttons, encoder, LED and amplifier (a board without a usable GPIO chip
    still plays; the log says why its controls are off)."""
    assert board.gpio is not None
    try:
        chip = await blocking.run_sync(open_chip, board.gpio.chip, board.gpio.chip_labels)
        await nursery.start(run_board, board, chip, actions)
    except (GpioUnavailable, OSError) as exc:
        log.warning("board %s: GPIO controls unavailable (%s)", board.name, exc)
        return
    log.info("board %s: buttons, encoder, LED and amplifier control on", board.name)


class _BoardActions:
    """What the board's controls do to the speaker."""

    def __init__(self, speaker: Speaker, control: Any) -> None:
        self.speaker = speaker
        self.control = control

    async def play_pause(self) -> None:
        sp = self.speaker
        if sp.status == Status.PAUSED:
            await sp.resume()
        elif sp.status in (Status.PLAYING, Status.BUFFERING, Status.LOADING):
            await sp.pause()
        elif sp.queue:
            await sp.play([t["uri"] for t in sp.queue], start_index=max(0, sp.index))
        self.control.notify()

    async def next(self) -> None:
        await self.speaker.next_track()
        self.control.notify()

    async def volume_step(self, delta: int) -> None:
        await self.speaker.set_volume(self.speaker.volume + delta)
        self.control.notify()

    async def approve_pairing(self) -> None:
        req = self.control.pairing.approve_oldest(time.time())
        if req is not None:
            log.warning("pairing approved with the button: %s (%s)", req.name, req.scope)

    def state(self) -> str:
        if self.control.pairing.pending(time.time()):
            return "pairing"
        if not self.speaker.session.online and self.speaker.status == "stopped":
            return "offline"
        return self.speaker.status


class BoardError(RuntimeError):
    """The configured board is not one of the profiles."""


def _mixer_volume(audio: Any, board: Profile | None = None) -> Volume | None:
    """The ALSA mixer control named in the configuration (or the board's), or None for
    software volume."""
    if audio.volume_control != "mixer":
        return None
    controls = [audio.mixer_control] if audio.mixer_control else []
    if board is not None:
        controls += list(board.audio.mixer_controls)
    card: Any = audio.mixer_card
    if card is None and board is not None:
        card = board.mixer_card
    card = card if card is not None else 0
    if isinstance(card, str) and card.isdigit():
        card = int(card)
    problems = []
    for control in controls or ["Master"]:
        try:
            return MixerVolume(control, card, range_db=audio.volume_range_db)
        except Exception as exc:  # alsaaudio.ALSAAudioError and friends: no such control
            problems.append(f"{control!r}: {exc}")
    log.warning(
        "no usable mixer control on card %r (%s): using software volume",
        card,
        "; ".join(problems),
    )
    return None
