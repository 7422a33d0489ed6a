"""Health cannot be grown from outside (issue 8): bounded counters, names and details, directly
and with 5,000 unknown ``cmd/*`` topics published to a real agent."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as paho

from edge_agent.platform.health import MAX_DETAIL_CHARS, HealthRegistry
from edge_agent.wire import topics
from simulators.broker import Mosquitto
from tests.harness import Proc, get, wait_for, write_agent_config


def test_health_registry_bounds_counters_keys_and_details() -> None:
    health = HealthRegistry()
    for i in range(5000):
        health.count("commands", f"unhandled:{i}-{'x' * 1000}")
    health.count("commands", "unhandled:manifest")
    counters = health.counters("commands")
    assert len(counters) <= 32
    assert sum(counters.values()) == 5001  # folded, never lost
    assert all(len(k) <= 64 for k in counters)
    for i in range(500):
        health.count(f"component-{i}", "n")
        health.set_state(f"state-{i}", "ok", blob="y" * 100_000, **{f"k{j}": j for j in range(100)})
    snap = health.snapshot()
    assert len(snap) <= 64
    assert "other" in snap
    assert len(json.dumps(snap)) < 64 * 1024
    assert all(
        len(v) <= MAX_DETAIL_CHARS for e in snap.values() for v in e.values() if isinstance(v, str)
    )
    # a detail named like the age cannot hide it
    fresh = HealthRegistry()
    fresh.set_state("outbox", "disk-full", since_s="bogus")
    assert fresh.snapshot()["outbox"]["since_s"] != "bogus"


def test_five_thousand_unknown_commands_keep_agent_health_small(
    tmp_path: Path, broker: Mosquitto
) -> None:
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    port = agent.api_port or 0
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:

        def counted() -> int:
            counters = get(port, "/v1/health")["components"].get("commands", {})
            return sum(counters.get("counters", {}).values())

        def probe() -> bool:
            # the agent subscribes to cmd/+ once connected: probe until a command is counted
            client.publish(topics.cmd("acme", "van-042", "probe"), b"{}", qos=1).wait_for_publish(5)
            return counted() > 0

        wait_for(probe, 20, "the agent taking commands", poll=0.2)
        probes = counted()
        infos = [
            client.publish(topics.cmd("acme", "van-042", f"bogus-{i}-{'x' * 200}"), b"{}", qos=1)
            for i in range(5000)
        ]
        for info in infos:
            info.wait_for_publish(30)
        wait_for(lambda: counted() >= probes + 5000, 30, "all 5,000 commands counted")
        body = json.dumps(get(port, "/v1/health"))
        assert len(body) < 16 * 1024, len(body)
        assert get(port, "/v1/health")["components"]["commands"]["counters"]["other"] > 4900
    finally:
        client.loop_stop()
        client.disconnect()
        agent.stop()
