"""`cadenzad` on one host of a LAN: found by mDNS from another and driven over HTTP."""

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

FIND_AND_ASK = textwrap.dedent(
    """
    import json, trio, httpx
    from cadenza.net import mdns

    async def main():
        info = await mdns.find_one("_cadenza._tcp.local.", timeout=30)
        assert info is not None, "no speaker found"
        url = f"http://{info.addresses[0]}:{info.port}{info.properties['path']}/info"
        async with httpx.AsyncClient() as http:
            r = await http.get(url)
        print(json.dumps({"name": info.name, "addresses": list(info.addresses),
                          "port": info.port, "properties": info.properties,
                          "info": r.json()}), flush=True)

    trio.run(main)
    """
)


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(2) as made:
        yield made


def test_speaker_advertised_and_answering_from_another_namespace(lan: Lan, tmp_path: Path) -> None:
    speaker_host, phone = lan.hosts
    config = tmp_path / "cadenzad.toml"
    config.write_text(
        f"""
[speaker]
name = "Kitchen"
state_dir = "{tmp_path / "state"}"
cache_dir = "{tmp_path / "cache"}"
[service]
address = "127.0.0.1:9"
mdns = false
[audio]
device = "null"
[control]
listen = "0.0.0.0:4080"
advertise = true
"""
    )
    daemon = speaker_host.popen(
        [str(BIN / "cadenzad"), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert daemon.stdout is not None
    seen = []
    for line in daemon.stdout:
        seen.append(line)
        if re.search(r"control API on http://", line):
            break
    else:
        raise AssertionError("".join(seen))
    found = phone.run(
        [sys.executable, "-c", FIND_AND_ASK], capture_output=True, text=True, timeout=90
    )
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["name"] == "Kitchen"
    assert result["addresses"] == [speaker_host.address] and result["port"] == 4080
    props = result["properties"]
    assert props["api"] == "1" and props["path"] == "/api/v1" and props["name"] == "Kitchen"
    assert result["info"]["name"] == "Kitchen" and result["info"]["id"] == props["id"]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
