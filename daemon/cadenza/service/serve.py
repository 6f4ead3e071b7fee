"""`cadenza serve`: every service role in one process (the embedded default).

Data directory layout::

    DATA/service.db          SQLite: accounts, catalog, playlists, bans, reports
    DATA/storage/            encoded files by content (see storage.py)
    DATA/keys/static.key     the access point's Noise static key (X25519, 0600)
    DATA/keys/signing.key    the service's Ed25519 signing key (certificates, manifests; 0600)
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from cadenza.net import mdns
from cadenza.protocol.admission import PROTOCOL_VERSION
from cadenza.protocol.certificate import fingerprint
from cadenza.protocol.manifest import ManifestSigner

from .access_point import AccessPoint
from .accounts import Accounts
from .catalog import Catalog
from .db import Database
from .keys import load_or_create_signing_key, load_or_create_static_key
from .metadata_http import metadata_app, serve_metadata_http
from .playlists import Playlists
from .storage import Storage

log = logging.getLogger("cadenza.service")

AP_SERVICE_TYPE = "_cadenza-ap._tcp.local."
DEFAULT_AP_PORT = 4070
DEFAULT_HTTP_PORT = 4071


@dataclass(frozen=True)
class ServeConfig:
    data: Path
    listen: tuple[str | None, int] = (None, DEFAULT_AP_PORT)  # None: every address
    http: tuple[str | None, int] | None = (None, DEFAULT_HTTP_PORT)
    advertise: bool = True
    name: str = ""  # instance name on mDNS; default: the host name


@dataclass(frozen=True)
class Running:
    access_point: AccessPoint
    ap_address: tuple[str, int]
    http_address: tuple[str, int] | None
    fingerprint: str
    mdns_name: str | None


class Roles:
    """The service's roles opened on a data directory (also used by the CLI tools)."""

    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.db = Database(data / "service.db")
        self.signing_key = load_or_create_signing_key(data / "keys" / "signing.key")
        self.static = load_or_create_static_key(data / "keys" / "static.key")
        self.accounts = Accounts(self.db)
        self.catalog = Catalog(self.db)
        self.playlists = Playlists(self.db, self.catalog)
        self.storage = Storage(data / "storage", ManifestSigner(self.signing_key))

    def close(self) -> None:
        self.db.close()


async def run_service(
    config: ServeConfig, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    roles = Roles(config.data)
    try:
        ap = AccessPoint(
            static=roles.static,
            signing_key=roles.signing_key,
            db=roles.db,
            accounts=roles.accounts,
            catalog=roles.catalog,
            storage=roles.storage,
            playlists=roles.playlists,
        )
        fp = fingerprint(roles.static.public)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(ap.serve, *config.listen))
            ap_addr = listeners[0].socket.getsockname()[:2]
            http_addr = None
            if config.http is not None:
                app = metadata_app(roles.catalog, roles.playlists)
                host, port = config.http
                http_addr = await nursery.start(
                    partial(serve_metadata_http, app, host or "0.0.0.0", port)
                )
            mdns_name = None
            if config.advertise:
                name = config.name or socket.gethostname()
                adv = await nursery.start(
                    partial(
                        mdns.advertise,
                        AP_SERVICE_TYPE,
                        name,
                        ap_addr[1],
                        {
                            "fp": fp,
                            "proto": str(PROTOCOL_VERSION),
                            "http": str(http_addr[1] if http_addr else ""),
                        },
                    )
                )
                mdns_name = adv.name
            task_status.started(Running(ap, ap_addr, http_addr, fp, mdns_name))
    finally:
        roles.close()
