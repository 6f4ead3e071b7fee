"""The control plane as a service: the HTTP API, its mDNS advertisement, and the other
speakers seen on the LAN.

:func:`run_control` loads the device settings (the configuration's values, overridden by
what was changed over the API), serves the API, advertises ``_cadenza._tcp.local.`` with
TXT ``id``, ``name``, ``model``, ``api``, ``path`` and ``pairing`` (re-announced when the
speaker is renamed or opened; goodbye packets on shutdown), and browses the same type so
``GET /api/v1/speakers`` lists the other speakers (one reachable speaker is enough for an
app to see them all).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from cadenza import blocking
from cadenza.cache.store import Cache
from cadenza.net import mdns
from cadenza.net.http import serve_http
from cadenza.speaker import Speaker
from cadenza.speaker.commands import SetVolume

from . import settings as settings_mod
from .auth import TokenStore
from .http import Control, control_app
from .settings import Settings

log = logging.getLogger("cadenza.control")

SPEAKER_SERVICE_TYPE = "_cadenza._tcp.local."


@dataclass
class ControlPlane:
    control: Control
    address: tuple[str, int]
    advertisement: mdns.Advertisement | None = None

    @property
    def mdns_name(self) -> str | None:
        return self.advertisement.name if self.advertisement is not None else None


def _label(name: str) -> str:
    """A DNS-SD instance name: at most 63 bytes of UTF-8, cut at a character boundary."""
    return name.encode()[:63].decode(errors="ignore") or "cadenza"


def _txt(info: dict[str, Any], settings: Settings) -> dict[str, str]:
    return {
        "id": str(info["id"]),
        "name": settings.name,
        "model": str(info.get("model", "cadenza")),
        "api": "1",
        "path": "/api/v1",
        "pairing": "open" if settings.open else "token",
    }


async def run_control(
    speaker: Speaker,
    info: dict[str, Any],
    *,
    host: str,
    port: int,
    state_dir: Path,
    defaults: Settings,
    cache: Cache | None = None,
    advertise: bool = True,
    on_name: Callable[[str], None] | None = None,
    task_status: trio.TaskStatus[ControlPlane] = trio.TASK_STATUS_IGNORED,
) -> None:
    settings_path = state_dir / "settings.json"
    current = settings_mod.load(settings_path, defaults)
    others: dict[str, dict[str, Any]] = {}
    plane: ControlPlane | None = None
    bound: tuple[str, int] = (host, port)

    def own_names() -> set[str]:
        names = {"localhost", socket.gethostname(), f"{socket.gethostname()}.local"}
        names.update(mdns.host_addresses())
        names.add(bound[0])
        if plane is not None and plane.advertisement is not None:
            server = plane.advertisement.info.host
            if server:
                names.add(server.rstrip("."))
        return names

    async def apply(new: Settings) -> None:
        old = control.settings
        if new.max_volume != old.max_volume:
            await speaker.set_volume(None, max_volume=new.max_volume)
        if new.bitrate != old.bitrate:
            speaker.bitrate = new.bitrate  # from the next track on
        if new.cache_size != old.cache_size and cache is not None:
            await blocking.run_sync(cache.set_capacity, new.cache_size or cache.capacity)
        settings_mod.save(settings_path, new, defaults)
        if new.name != old.name and on_name is not None:
            on_name(new.name)
        adv = plane.advertisement if plane is not None else None
        if adv is not None and (new.name != old.name or new.open != old.open):
            with contextlib.suppress(Exception):
                await adv.update(
                    properties=_txt(info, new),
                    name=_label(new.name) if new.name != old.name else None,
                )
        log.info("settings changed: %s", {k: v for k, v in new.public().items()})

    control = Control(
        speaker,
        info,
        current,
        tokens=TokenStore(state_dir / "tokens.json"),
        own_names=own_names,
        apply_settings=apply,
        speakers=lambda: sorted(others.values(), key=lambda s: str(s.get("name"))),
    )
    speaker.submit(SetVolume(None, max_volume=current.max_volume))
    speaker.bitrate = current.bitrate
    if on_name is not None:
        on_name(current.name)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_http, control_app(control), host, port))
        plane = ControlPlane(control, bound)
        if advertise:
            plane.advertisement = await nursery.start(
                partial(
                    mdns.advertise,
                    SPEAKER_SERVICE_TYPE,
                    _label(current.name),
                    bound[1],
                    _txt(info, current),
                )
            )
            nursery.start_soon(_browse, info["id"], others)
        task_status.started(plane)


async def _browse(own_id: str, others: dict[str, dict[str, Any]]) -> None:
    """Keep ``others`` up to date with the speakers on the LAN (not this one)."""
    async with mdns.browse(SPEAKER_SERVICE_TYPE) as browser:
        async with aclosing(browser.events()) as events:
            async for event in events:
                if isinstance(event, mdns.Removed):
                    others.pop(event.name, None)
                    continue
                info = event.info
                if info.properties.get("id") == own_id:
                    continue
                address = info.addresses[0] if info.addresses else None
                others[info.name] = {
                    "name": info.properties.get("name", info.name),
                    "id": info.properties.get("id"),
                    "model": info.properties.get("model"),
                    "pairing": info.properties.get("pairing"),
                    "addresses": list(info.addresses),
                    "port": info.port,
                    "url": f"http://{address}:{info.port}{info.properties.get('path', '/api/v1')}"
                    if address
                    else None,
                }


def default_settings(name: str, config: Any) -> Settings:
    return replace(
        Settings(name=name),
        max_volume=config.audio.max_volume,
        bitrate=config.streaming.bitrate,
        cache_size=config.cache.max_size,
        open=config.control.open,
    )
