"""`cadenza serve` on one host of a LAN, found and used from another with no configuration."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import NETNS_MARKS, Lan

pytestmark = NETNS_MARKS

BIN = Path(sys.executable).parent

# Runs on the second host: find the access point by mDNS, dial it, check its key.
FIND_AND_DIAL = textwrap.dedent(
    """
    import json, trio
    from cadenza import net
    from cadenza.net import mdns
    from cadenza.protocol.admission import hello_payload
    from cadenza.protocol.certificate import fingerprint
    from cadenza.protocol.noise import KeyPair

    async def main():
        info = await mdns.find_one("_cadenza-ap._tcp.local.", timeout=30)
        assert info is not None, "no access point found"
        ident = net.Identity(KeyPair.generate(), hello_payload("lan-test"))
        async with net.open_connection(info.addresses[0], info.port, identity=ident) as conn:
            key_fp = fingerprint(conn.remote_static)
        print(json.dumps({"name": info.name, "addresses": list(info.addresses),
                          "port": info.port, "properties": info.properties,
                          "dialled_fingerprint": key_fp}), flush=True)

    trio.run(main)
    """
)


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(2) as made:
        yield made


def test_access_point_advertised_and_reachable_from_another_namespace(
    lan: Lan, tmp_path: Path
) -> None:
    server, speaker = lan.hosts
    serve = server.popen(
        [
            str(BIN / "cadenza"),
            "serve",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            "0.0.0.0:4070",
            "--http",
            "127.0.0.1:0",
            "--name",
            "Test Service",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert serve.stdout is not None
    lines = []
    fp = None
    for line in serve.stdout:
        lines.append(line)
        m = re.search(r"fingerprint ([0-9a-f:]+)", line)
        if m:
            fp = m.group(1)
        if "advertised on the LAN" in line:
            break
    assert fp is not None, "".join(lines)

    found = speaker.run(
        [sys.executable, "-c", FIND_AND_DIAL], capture_output=True, text=True, timeout=90
    )
    assert found.returncode == 0, found.stderr
    info = json.loads(found.stdout)
    assert info["name"] == "Test Service"
    assert info["addresses"] == [server.address]
    assert info["port"] == 4070
    assert info["properties"]["fp"] == fp
    assert info["properties"]["proto"] == "1"
    # The key the access point proved in the handshake is the one it advertised.
    assert info["dialled_fingerprint"] == fp

    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=20) == 0
