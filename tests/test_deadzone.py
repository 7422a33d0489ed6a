"""Dead zones as they really are: the van's link goes silent, it does not see its broker die.

The agent runs in its own network namespace behind a veth pair; the broker and the hub run in
the root namespace. nftables rules on the van's wire drop every packet to and from the broker
(no RST, no ICMP) for a while, then a share of them at random. Throughout, a driver's app keeps
posting to the agent's API (on the van's address, reached over the same link, never dropped).
The agent must notice the dead connection by its keepalive, keep accepting, reconnect when the
link returns and deliver everything exactly once.

The figures (detection, reconnect, drain) are printed on the terminal, past the capture.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto
from tests.harness import (
    Proc,
    fix_event,
    get,
    post,
    scan_event,
    wait_for,
    write_agent_config,
    write_hub_config,
)
from tests.netns import NetnsUnavailable, VanNet

# A short keepalive, as a van in and out of tunnels wants; the agent keeps each TCP connect
# below it (paho counts its keepalive from the start of an attempt: edge_agent.platform.mqtt).
KEEPALIVE_S = 3
DEAD_S = 20.0
LOSS_S = 10.0
LOSS_PERCENT = 30
POST_EVERY_S = 0.05
# Link back -> connected again, with the default backoff: a silent link is probed about every
# second (edge_agent.platform.backoff.probe_delay), each attempt's SYN retransmitted after 1 s, so a
# return waits at most for the next SYN; the target is 2 s, the bound leaves room for a loaded
# machine.
RECONNECT_BOUND_S = 3.0
# The dead link is seen by the keepalive: a PINGREQ after one silent keepalive, the connection
# dropped after a second one, checked every second by aiomqtt.
DETECT_BOUND_S = 2 * KEEPALIVE_S + 3.0
# the driver's app is on the van's network, not loopback: it needs the API's bearer token
API_TOKEN = "dead-zone-test-token-0123456789"


@pytest.fixture
def van_net() -> Iterator[VanNet]:
    """A van network, removed after the test whatever happens; a skip only if the machine
    cannot build one (``LM_REQUIRE_NETNS=1`` turns that skip into a failure, for CI)."""
    try:
        net = VanNet.create()
    except NetnsUnavailable as exc:
        if os.environ.get("LM_REQUIRE_NETNS") == "1":
            pytest.fail(f"LM_REQUIRE_NETNS=1 but {exc}")
        pytest.skip(str(exc))
    try:
        yield net
    finally:
        net.close()


class Driver(threading.Thread):
    """The driver's app: posts a scan or a ping every ``POST_EVERY_S``, noting each 201."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(name="driver", daemon=True)
        self.host, self.port = host, port
        self.acked: dict[str, int] = {}
        self.refused: list[tuple[int, Any]] = []
        self.last_seq = 0
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            event = scan_event(i) if i % 3 == 0 else fix_event(i)
            try:
                status, body = post(self.port, event, host=self.host, token=API_TOKEN)
            except OSError as exc:  # a refused or timed-out POST is a failure of the promise
                self.refused.append((0, repr(exc)))
            else:
                if status == 201:
                    self.acked[body["id"]] = body["seq"]
                    self.last_seq = max(self.last_seq, body["seq"])
                else:
                    self.refused.append((status, body))
            i += 1
            self.halt.wait(POST_EVERY_S)


def timed(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    """Seconds until ``cond`` held (fails after ``timeout``)."""
    t0 = time.monotonic()
    wait_for(cond, timeout, what, poll=poll)
    return time.monotonic() - t0


@pytest.mark.slow
def test_dead_zone_silence_then_loss_delivers_exactly_once(
    tmp_path: Path, van_net: VanNet, capsys: pytest.CaptureFixture[str]
) -> None:
    with Mosquitto(host=van_net.host_addr) as broker:
        hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
        cfg = write_agent_config(
            tmp_path,
            broker.url,
            broker={"keepalive": f"{KEEPALIVE_S}s"},
            api={"listen": f"{van_net.van_addr}:0", "token": API_TOKEN},
            uplink={"ack_timeout": "5s"},
        )
        agent = Proc("edge_agent", cfg, tmp_path / "agent.log", prefix=van_net.argv())
        driver: Driver | None = None
        try:
            hub.start()
            agent.start()
            van, api, hub_api = van_net.van_addr, agent.api_port or 0, hub.api_port or 0

            def health() -> dict[str, Any]:
                return get(api, "/v1/health", host=van, token=API_TOKEN)  # type: ignore[no-any-return]

            def broker_state() -> str:
                return str(health()["broker"].get("state"))

            def device() -> dict[str, Any]:
                devices = get(hub_api, "/v1/devices")
                return devices[0] if devices else {"watermark": 0, "max_seq": 0, "state": None}

            driver = Driver(van, api)
            driver.start()
            wait_for(lambda: broker_state() == "connected", 10, "the agent connected")
            wait_for(lambda: device()["watermark"] >= 10, 10, "the first events acked")

            # the tunnel: nothing to or from the broker, the API still answers
            van_net.dead_zone(broker.port)
            entered, at_entry = time.monotonic(), driver.last_seq
            seen: dict[str, float] = {}  # seconds into the dead zone each thing was first seen
            stuck: int | None = None
            while (elapsed := time.monotonic() - entered) < DEAD_S:
                if "agent" not in seen and broker_state() != "connected":
                    seen["agent"] = elapsed
                if "hub" not in seen and device()["state"] == "offline":
                    seen["hub"] = elapsed
                if stuck is None and elapsed > 1:  # what had left the van before has landed
                    stuck = device()["max_seq"]
                time.sleep(0.1)
            assert "agent" in seen, f"the agent did not notice {DEAD_S:.0f} s of silence"
            assert seen["agent"] <= DETECT_BOUND_S, f"dead link seen after {seen['agent']:.1f} s"
            assert "hub" in seen, "the broker's will never told the hub the van was offline"
            dropped = van_net.dropped()
            assert stuck is not None and device()["max_seq"] == stuck, "events crossed a dead link"
            assert dropped["ingress"] + dropped["egress"] > 0, f"nothing was dropped: {dropped}"
            assert health()["queue"]["depth"] > 0
            behind = driver.last_seq
            assert behind - at_entry >= 50, f"{behind - at_entry} POSTs accepted in {DEAD_S} s"

            # out of the tunnel
            van_net.clear()
            reconnect_s = timed(
                lambda: broker_state() == "connected", 30, "the reconnect after the dead zone"
            )
            link_back = time.monotonic() - reconnect_s
            wait_for(lambda: device()["watermark"] >= behind, 30, f"watermark {behind}")
            drain_s = time.monotonic() - link_back

            # bursts of loss, then a clean link
            van_net.lossy(broker.port, LOSS_PERCENT)
            time.sleep(LOSS_S)
            lost = van_net.dropped()
            van_net.clear()
            loss_end = time.monotonic()
            driver.halt.set()
            driver.join(10)
            last = driver.last_seq
            wait_for(lambda: device()["watermark"] >= last, 40, f"watermark {last}", poll=0.2)
            after_loss_s = time.monotonic() - loss_end
            wait_for(lambda: health()["queue"]["depth"] == 0, 10, "the outbox emptied")

            assert driver.refused == [], f"POSTs not accepted: {driver.refused[:5]}"
            timeline: list[dict[str, Any]] = []
            while True:
                after = timeline[-1]["seq"] if timeline else 0
                page = get(hub_api, f"/v1/events?device=van-042&after_seq={after}&limit=10000")
                if not page:
                    break
                timeline += page
            seqs = [e["seq"] for e in timeline]
            assert seqs == list(range(1, len(seqs) + 1)), "seqs not contiguous from 1"
            ids = [e["id"] for e in timeline]
            assert len(ids) == len(set(ids)), "an event is in the timeline twice"
            stored = {e["id"]: e["seq"] for e in timeline}
            missing = {i: s for i, s in driver.acked.items() if stored.get(i) != s}
            assert not missing, f"{len(missing)} accepted events not in the timeline: {missing}"
            final = device()
            assert final["watermark"] == health()["queue"]["last_seq"] == seqs[-1]
            assert final["missing"] == []
            assert final["state"] == "online"

            with capsys.disabled():
                print(
                    f"\ndead zone ({DEAD_S:.0f} s, keepalive {KEEPALIVE_S} s, default backoff): "
                    f"dead link detected after {seen['agent']:.1f} s, hub saw the "
                    f"van offline after {seen['hub']:.1f} s; link back -> reconnected "
                    f"{reconnect_s:.2f} s, watermark covering everything {drain_s:.2f} s; "
                    f"{LOSS_PERCENT}% loss for {LOSS_S:.0f} s (dropped {lost}) -> watermark "
                    f"{after_loss_s:.2f} s after it ended; {len(driver.acked)} events accepted, "
                    f"{len(seqs)} in the timeline"
                )
            assert reconnect_s <= RECONNECT_BOUND_S, f"reconnect took {reconnect_s:.1f} s"
        finally:
            if driver is not None:
                driver.halt.set()
                driver.join(10)
            agent.stop()
            hub.stop()
