"""The hub's STATE message (Sparkplug's primary host): birth, will, clean shutdown; and a broker
restart under a hub that leaves no unretrieved future in its log. Real mosquitto, real hub."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_agent.wire import topics
from simulators.broker import Mosquitto
from tests.harness import Proc, get, timeline_rows, wait_for, write_hub_config


class Watcher:
    """A paho client collecting the payloads of one topic (retained ones included)."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.got: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.got.put(json.loads(msg.payload))
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def next_state(self, timeout: float = 15.0) -> dict[str, Any]:
        return self.got.get(timeout=timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def hub_state(broker: Mosquitto) -> Iterator[Watcher]:
    watcher = Watcher(broker, topics.hub_state("hub-a"))
    yield watcher
    watcher.close()


def test_hub_birth_will_and_clean_shutdown(
    tmp_path: Path, broker: Mosquitto, hub_state: Watcher
) -> None:
    hub = Proc(
        "hub_bridge", write_hub_config(tmp_path, broker.url, hub_id="hub-a"), tmp_path / "hub.log"
    )
    hub.start()  # ready means subscribed: the birth follows at once
    try:
        birth = hub_state.next_state()
        assert birth["state"] == "online" and abs(birth["ts"] - time.time()) < 30
        hub.kill()  # SIGKILL: the broker sends the will
        assert hub_state.next_state()["state"] == "offline"
        hub.start()
        assert hub_state.next_state()["state"] == "online"
        assert hub.stop() == 0  # SIGTERM: a clean stop says offline itself
        last = hub_state.next_state()
        assert (last["state"], last["reason"]) == ("offline", "shutdown")
        # retained: a late subscriber learns the hub is offline
        late = Watcher(broker, topics.hub_state("hub-a"))
        try:
            assert late.next_state()["state"] == "offline"
        finally:
            late.close()
    finally:
        hub.stop()
    # the hub's own state topic matches lm/v1/+/+/state: it must not dead-letter it
    assert "dead letter" not in (tmp_path / "hub.log").read_text()


def test_broker_restarts_under_a_busy_hub_leave_no_unretrieved_future(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    stop = threading.Event()
    sent: list[int] = []

    def pump() -> None:
        # batches keep coming, so the broker dies while the hub is inside a publish of an ack
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.reconnect_delay_set(0.05, 0.2)
        client.connect_async("127.0.0.1", broker.port)
        client.loop_start()
        seq = 0
        while not stop.is_set():
            if client.is_connected():
                seq += 1
                env = {
                    "id": f"ev-{seq}",
                    "seq": seq,
                    "fleet": "acme",
                    "device": "van-1",
                    "type": "scan",
                    "ts": "2026-11-21T08:00:00.000Z",
                    "clock": "ntp",
                    "data": {"text": f"P{seq}", "symbology": "code128", "source": "x"},
                }
                client.publish(topics.events("acme", "van-1"), json.dumps({"events": [env]}), 1)
                sent.append(seq)
            time.sleep(0.002)
        client.loop_stop()
        client.disconnect()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db)) > 20, 20, "the hub ingesting")
        for i in range(3):
            # frozen first, so the hub is surely waiting for a PUBACK of an ack when the broker
            # dies: the case that stalled 10 s and left its future unretrieved
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.0)
            broker.restart()
            n = len(timeline_rows(db))
            # an ack publish cut by the restart fails at once: no 10 s wait for its timeout
            wait_for(
                lambda n=n: len(timeline_rows(db)) > n + 20,  # type: ignore[misc]
                6,
                f"the hub ingesting again after restart {i + 1}",
            )
        assert get(hub.api_port or 0, "/v1/health")["components"]["broker"]["state"] == "connected"
    finally:
        stop.set()
        thread.join(5)
        hub.stop()
    log = (tmp_path / "hub.log").read_text()
    assert "never retrieved" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
