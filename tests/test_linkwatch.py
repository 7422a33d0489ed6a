"""Reconnecting when the network changes: the rtnetlink watcher and the uplink's pause.

The watcher is tested on this machine's real kernel (a dummy interface added and removed in the
root namespace: root only, said where it cannot run); the parser on crafted and mutated bytes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.linkwatch import LinkWatch, route_changes
from edge_agent.platform.settings import BrokerConfig
from edge_agent.uplink import Uplink
from simulators.broker import Mosquitto, free_port


def message(kind: int, body: bytes = b"\0" * 16) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + body + b"\0" * (-length % 4)


def test_route_changes_counts_link_address_and_route_messages() -> None:
    datagram = message(16) + message(20, b"\1" * 13) + message(3) + message(25)
    assert route_changes(datagram) == 3  # NEWLINK, NEWADDR, DELROUTE; NLMSG_DONE is not one
    assert route_changes(b"") == 0
    assert route_changes(struct.pack("=IHHII", 4, 16, 0, 0, 0)) == 0  # a length below the header


@given(st.binary(max_size=512))
def test_route_changes_never_raises_or_hangs(data: bytes) -> None:
    assert 0 <= route_changes(data) <= len(data) // 16


@pytest.fixture
def root_with_ip() -> str:
    ip = shutil.which("ip")
    if os.geteuid() != 0 or ip is None:
        pytest.skip("adding a network interface needs root and iproute2; this run has neither")
    return ip


async def test_a_new_interface_is_seen(root_with_ip: str) -> None:
    watch = LinkWatch()
    assert watch.start()
    name = f"lmw{os.getpid() % 100000}"
    try:
        await asyncio.sleep(0.05)
        watch.changed.clear()
        add = [root_with_ip, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"]
        await asyncio.to_thread(subprocess.run, add, check=True)
        async with asyncio.timeout(5):
            await watch.changed.wait()
        assert watch.changes >= 1
    finally:
        delete = [root_with_ip, "link", "del", name]
        await asyncio.to_thread(subprocess.run, delete, check=False, capture_output=True)
        watch.close()


async def test_a_network_change_ends_the_backoff(tmp_path: object) -> None:
    """The broker is back but the backoff has grown long: a change of the network makes the
    uplink try at once instead of sleeping it out."""
    port = free_port()
    outbox = await Outbox.open(f"{tmp_path}/o.db", "acme", "van-1", disk_reserve_bytes=0)
    health = HealthRegistry()
    watch = LinkWatch()  # not started: the test sets ``changed`` as the kernel would
    uplink = Uplink(
        BrokerConfig(url=f"mqtt://127.0.0.1:{port}"),
        UplinkConfig(backoff_max=60.0),
        outbox,
        health,
        fleet="acme",
        device="van-1",
        birth={},
        link=watch,
    )
    task = asyncio.create_task(uplink.run())
    broker = Mosquitto(port=port)
    try:
        await asyncio.sleep(6)  # refused again and again: the backoff has grown to many seconds
        await asyncio.to_thread(broker.start)
        began = time.monotonic()
        watch.changed.set()
        while not uplink.connected:
            assert time.monotonic() - began < 3, "the network change did not end the backoff"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await outbox.close()
        broker.stop()
