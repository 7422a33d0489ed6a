"""Commands and their acks (DESIGN §2): a real agent and a real mosquitto.

Each command with an ``id`` is answered on ``cmd-ack``: ok once applied, refused with the reason
(an invalid manifest, a command the device does not know); a command without an id is applied
without an answer; the same command delivered twice gets the same answer.
"""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from edge_agent.wire import topics
from edge_agent.wire.commands import command_ack, command_id
from simulators.broker import Mosquitto
from tests.harness import Proc, get, wait_for, write_agent_config, write_hub_config

MANIFEST = {
    "route": "r-1",
    "depot": {"lat": 52.5, "lon": 13.4, "radius_m": 80},
    "stops": [{"id": "s1", "lat": 52.51, "lon": 13.41, "radius_m": 60, "parcels": ["P1"]}],
}


def test_command_id_is_read_only_from_a_bounded_object() -> None:
    assert command_id(b'{"id": "c-1", "route": "r"}') == "c-1"
    for payload in (b"", b"\xff\xfe", b"[1]", b'{"id": 5}', b'{"id": ""}', b"{" * 100_000):
        assert command_id(payload) is None, payload[:20]
    assert command_id(json.dumps({"id": "x" * 129}).encode()) is None
    assert json.loads(command_ack("c", "bad " * 500))["error"].startswith("bad")
    assert len(json.loads(command_ack("c", "bad " * 500))["error"]) <= 512
    assert json.loads(command_ack("c")) == {"id": "c", "ok": True}


def test_commands_are_acked_with_their_outcome(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = write_agent_config(tmp_path, broker.url, trips={"zones": []})
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    acks: queue.Queue[dict[str, Any]] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: acks.put(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topics.cmd_ack("acme", "van-042"), qos=1)
    client.loop_start()
    agent.start()
    try:
        port = agent.api_port
        assert port is not None

        def send(name: str, body: dict[str, Any]) -> None:
            topic = topics.cmd("acme", "van-042", name)
            client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

        def probe() -> bool:  # the agent subscribes once connected: probe until it answers
            send("probe", {"id": "probe"})
            try:
                return acks.get(timeout=0.3)["id"] == "probe"
            except queue.Empty:
                return False

        wait_for(probe, 20, "the agent answering commands", poll=0.1)
        while not acks.empty():
            acks.get()
        send("manifest", {**MANIFEST, "id": "m-1"})
        assert acks.get(timeout=10) == {"id": "m-1", "ok": True}
        send("manifest", {**MANIFEST, "id": "m-1"})  # delivered again: the same answer
        assert acks.get(timeout=10) == {"id": "m-1", "ok": True}
        bad = {**MANIFEST, "id": "m-2", "depot": {"lat": 95, "lon": 1, "radius_m": 50}}
        send("manifest", bad)
        answer = acks.get(timeout=10)
        assert answer["id"] == "m-2" and answer["ok"] is False and "depot" in answer["error"]
        send("frobnicate", {"id": "f-1"})
        answer = acks.get(timeout=10)
        assert answer["id"] == "f-1" and answer["ok"] is False
        assert "frobnicate" in answer["error"]
        send("manifest", MANIFEST)  # no id: applied, no answer owed
        send("probe", {"id": "last"})
        assert acks.get(timeout=10)["id"] == "last"  # nothing came in between

        def counters() -> dict[str, int]:
            return dict(get(port, "/v1/health")["components"]["trips"]["counters"])

        # m-1 twice and the one without an id were applied; the refused one was not
        wait_for(lambda: counters().get("manifest-applied") == 3, 10, "three manifests applied")
        assert counters()["manifest-invalid"] == 1
    finally:
        client.loop_stop()
        client.disconnect()
        agent.stop()


def test_cmd_report_answers_with_the_doctors_report_as_an_event(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    acks: queue.Queue[dict[str, Any]] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: acks.put(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topics.cmd_ack("acme", "van-042"), qos=1)
    client.loop_start()
    hub.start()
    agent.start()
    try:
        assert hub.api_port is not None

        def asked() -> bool:  # the agent subscribes once connected: ask until it answers
            topic = topics.cmd("acme", "van-042", "report")
            client.publish(topic, json.dumps({"id": "rep-1"}), qos=1).wait_for_publish(5)
            try:
                return acks.get(timeout=0.5) == {"id": "rep-1", "ok": True}
            except queue.Empty:
                return False

        wait_for(asked, 20, "the report command acknowledged", poll=0.1)

        def reports() -> list[dict[str, Any]]:
            events = get(hub.api_port or 0, "/v1/events?device=van-042")
            return [e["data"] for e in events if e["type"] == "device.report"]

        wait_for(lambda: bool(reports()), 60, "the device.report event in the timeline", poll=0.5)
        (report,) = reports()[:1]
        names = {c["name"] for c in report["checks"]}
        assert {"config", "broker", "outbox-file"} <= names and isinstance(report["ok"], bool)
    finally:
        client.loop_stop()
        client.disconnect()
        agent.stop()
        hub.stop()
