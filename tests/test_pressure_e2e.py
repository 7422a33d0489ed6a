"""Issue 8's defects as regression tests through the real processes (agent, mosquitto, hub).

Each test reproduces what was seen from outside: an eviction that stalled the uplink for good, an
event larger than a batch, forged and impossible acks, a lost outbox file, an agent back before
its hub, a full disk, and a stop that never finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from simulators.broker import Mosquitto
from tests.diskfull import fill, tmpfs
from tests.harness import (
    ROOT,
    Proc,
    fix_event,
    get,
    post,
    scan_event,
    timeline_rows,
    wait_for,
    write_agent_config,
    write_hub_config,
)

pytestmark = pytest.mark.slow


def start_hub(tmp: Path, broker: Mosquitto) -> Proc:
    hub = Proc("hub_bridge", write_hub_config(tmp, broker.url), tmp / "hub.log")
    hub.start()
    return hub


def start_agent(tmp: Path, broker: Mosquitto, **extra: Any) -> Proc:
    agent = Proc("edge_agent", write_agent_config(tmp, broker.url, **extra), tmp / "agent.log")
    agent.start()
    return agent


def health(agent: Proc) -> dict[str, Any]:
    result: dict[str, Any] = get(agent.api_port or 0, "/v1/health")
    return result


def hub_watermark(hub: Proc) -> int:
    devices = get(hub.api_port or 0, "/v1/devices")
    return int(devices[0]["watermark"]) if devices else 0


def wait_delivered(agent: Proc, hub: Proc, timeout: float, what: str) -> None:
    """Until the hub's watermark covers the agent's last seq and the outbox is empty."""
    wait_for(
        lambda: (
            hub_watermark(hub) >= health(agent)["queue"]["last_seq"] > 0
            and health(agent)["queue"]["depth"] == 0
        ),
        timeout,
        what,
    )


def assert_once(db: Path, ids: set[str]) -> None:
    rows = timeline_rows(db)
    stored = [i for _, i, _ in rows]
    assert len(stored) == len(set(stored)), "an event is stored twice"
    seqs = [s for s, _, _ in rows]
    assert len(seqs) == len(set(seqs)), "two events share a seq"
    missing = ids - set(stored)
    assert not missing, f"{len(missing)} accepted events are not in the timeline"


def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """Publish as another client would (a forger, or a stale hub)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def post_ok(agent: Proc, body: Any) -> list[dict[str, Any]]:
    status, out = post(agent.api_port or 0, body)
    assert status == 201, out
    return out if isinstance(out, list) else [out]


def test_an_eviction_never_stalls_the_uplink(tmp_path: Path, broker: Mosquitto) -> None:
    # a small window of small batches: the eviction notice is far beyond what is in flight
    agent = start_agent(
        tmp_path,
        broker,
        outbox={"max_bytes": "24KiB", "reserve_bytes": "64KiB"},
        uplink={"batch_max_bytes": "2KiB", "window": 1, "ack_timeout": "2s"},
    )
    hub = start_hub(tmp_path, broker)
    try:
        broker.kill()  # a dead zone
        kept: set[str] = set()
        for k in range(80):
            post_ok(agent, [fix_event(k * 10 + i) for i in range(10)])
            if k % 10 == 0:
                kept |= {a["id"] for a in post_ok(agent, [scan_event(k + i) for i in range(5)])}
        assert health(agent)["queue"]["evicted"] > 0
        broker.start()
        wait_delivered(agent, hub, 60, "the watermark to pass every evicted seq")
        assert_once(tmp_path / "timeline.db", kept)
        devices = get(hub.api_port or 0, "/v1/devices")
        assert devices[0]["missing"] == []
    finally:
        agent.stop()
        hub.stop()


def test_an_event_larger_than_a_batch_is_refused_and_one_that_fits_is_delivered(
    tmp_path: Path, broker: Mosquitto
) -> None:
    agent = start_agent(tmp_path, broker, uplink={"batch_max_bytes": "4KiB"})
    hub = start_hub(tmp_path, broker)
    try:
        status, out = post(
            agent.api_port or 0, {"type": "exception.note", "data": {"t": "x" * 5000}}
        )
        assert status == 413, out
        fits = post_ok(agent, {"type": "exception.note", "data": {"t": "y" * 3500}})
        after = post_ok(agent, [scan_event(i) for i in range(20)])
        wait_delivered(agent, hub, 30, "the large event and those after it")
        assert_once(tmp_path / "timeline.db", {a["id"] for a in fits + after})
    finally:
        agent.stop()
        hub.stop()


def test_forged_and_impossible_acks_delete_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    agent = start_agent(tmp_path, broker)
    hub: Proc | None = None
    try:
        ids = {a["id"] for a in post_ok(agent, [scan_event(i) for i in range(30)])}
        ack_topic = "lm/v1/acme/van-042/ack"
        publish_retained(broker, ack_topic, b'{"seq": 999999999}')
        publish_retained(broker, ack_topic, json.dumps({"seq": 2**60}).encode())
        publish_retained(broker, ack_topic, b'{"seq": 5, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}")
        time.sleep(1.5)  # longer than the agent's ack flush
        queue = health(agent)["queue"]
        assert queue["depth"] >= 30, "a forged ack deleted unsent events"
        counters = health(agent)["components"]["uplink"]["counters"]
        assert counters.get("impossible-ack", 0) >= 1
        # the real hub comes: everything accepted reaches the timeline exactly once
        publish_retained(broker, ack_topic, b"")  # clear the forgery, as an operator would
        hub = start_hub(tmp_path, broker)
        wait_delivered(agent, hub, 30, "delivery after the forged acks")
        assert_once(tmp_path / "timeline.db", ids)
    finally:
        agent.stop()
        if hub is not None:
            hub.stop()


def _lose_outbox(tmp: Path, with_floor: bool) -> None:
    for path in tmp.glob("van-042.outbox.db*"):
        if with_floor or not path.name.endswith(".seq"):
            path.unlink()


@pytest.mark.parametrize("floor_kept", [True, False], ids=["db-lost", "db-and-floor-lost"])
def test_a_lost_outbox_never_reuses_seqs_the_hub_holds(
    tmp_path: Path, broker: Mosquitto, floor_kept: bool
) -> None:
    agent = start_agent(tmp_path, broker)
    hub = start_hub(tmp_path, broker)
    try:
        first = {a["id"] for a in post_ok(agent, [scan_event(i) for i in range(100)])}
        wait_delivered(agent, hub, 30, "the first 100")
        agent.stop()
        broker.kill()  # the retained ack is gone too: the hub republishes it on reconnect
        _lose_outbox(tmp_path, with_floor=not floor_kept)
        agent.start()
        # offline, the new file hands out seqs again: more events than the hub holds
        second = {a["id"] for a in post_ok(agent, [scan_event(1000 + i) for i in range(150)])}
        broker.start()
        wait_delivered(agent, hub, 60, "the events accepted after the loss")
        assert_once(tmp_path / "timeline.db", first | second)
    finally:
        agent.stop()
        hub.stop()


def test_an_agent_back_before_its_hub_resends_when_the_hub_comes_online(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # ack_timeout far longer than the test allows: only the hub's birth can trigger the resend
    agent = start_agent(tmp_path, broker, uplink={"ack_timeout": "60s"})
    hub: Proc | None = None
    try:
        ids = {a["id"] for a in post_ok(agent, [scan_event(i) for i in range(40)])}
        time.sleep(1.0)  # published to no subscriber: the batch is gone
        hub = start_hub(tmp_path, broker)
        began = time.monotonic()
        wait_delivered(agent, hub, 15, "the resend on the hub's birth")
        assert time.monotonic() - began < 15
        assert_once(tmp_path / "timeline.db", ids)
    finally:
        agent.stop()
        if hub is not None:
            hub.stop()


def test_sigterm_while_the_broker_drops_the_agent_stops_within_seconds(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = start_hub(tmp_path, broker)
    try:
        for round_ in range(3):
            agent = start_agent(tmp_path, broker)
            post_ok(agent, [scan_event(round_ * 100 + i) for i in range(50)])
            time.sleep(0.2 * round_)
            assert agent.proc is not None
            began = time.monotonic()
            broker.kill()
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(30)
            took = time.monotonic() - began
            # well inside the life cycle's 10 s grace: the uplink itself stopped
            assert took < 8, f"round {round_}: the agent took {took:.1f}s to stop"
            assert agent.proc.returncode == 0
            agent.stop()
            broker.start()
    finally:
        hub.stop()


def test_a_stop_that_hangs_ends_after_the_grace(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from edge_agent.platform.lifecycle import run_until_signalled

        async def main(stop):
            print("ready", flush=True)  # the signal handlers are in place
            await stop.wait()
            print("stopping", flush=True)
            while True:  # a task that swallows its cancellation
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        run_until_signalled(main, "INFO", grace_s=1.0)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - began < 10
    assert proc.returncode == 1
    assert "did not stop" in err and "task " in err  # where it hung is in the log


def test_a_full_disk_answers_507_and_recovers_by_itself(tmp_path: Path, broker: Mosquitto) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        outbox = {"path": str(disk / "van-042.outbox.db"), "disk_reserve": "256KiB"}
        agent = start_agent(tmp_path, broker, outbox=outbox)
        hub: Proc | None = None
        try:
            broker.kill()  # nothing can be acked while the disk fills
            fill(disk / "other-process.log", leave=400 * 1024)
            accepted: set[str] = set()
            status, out = 201, None
            for k in range(2000):
                status, out = post(agent.api_port or 0, [scan_event(k * 10 + i) for i in range(10)])
                if status != 201:
                    break
                accepted |= {a["id"] for a in out}
            assert status == 507 and "disk" in out["error"], out
            assert accepted
            assert health(agent)["components"]["outbox"]["state"] == "disk-full"
            # the broker and the hub come back: the backlog drains, acks apply on the full disk
            broker.start()
            hub = start_hub(tmp_path, broker)
            wait_for(
                lambda: (
                    len({i for _, i, _ in timeline_rows(tmp_path / "timeline.db")} & accepted)
                    == len(accepted)
                ),
                60,
                "the backlog in the timeline",
            )
            # room returns when the other process's file goes: accepting again, health ok
            (disk / "other-process.log").unlink()
            wait_for(
                lambda: post(agent.api_port or 0, scan_event(99_999))[0] == 201,
                30,
                "the agent to accept again",
            )
            wait_for(
                lambda: health(agent)["components"]["outbox"]["state"] == "ok",
                10,
                "health ok again",
            )
            # and across a restart on a full disk: the agent starts and answers 507, not 500
            agent.stop()
            fill(disk / "other-process.log", leave=0)
            agent.start()
            for k in range(2000):  # what room the file itself still has is used, then 507
                status, out = post(agent.api_port or 0, [scan_event(k * 10 + i) for i in range(10)])
                if status != 201:
                    break
            assert status == 507, out
        finally:
            agent.stop()
            if hub is not None:
                hub.stop()


def test_a_full_disk_at_the_hub_acks_nothing_and_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        timeline = disk / "timeline.db"
        hub = Proc(
            "hub_bridge",
            write_hub_config(tmp_path, broker.url, timeline=timeline),
            tmp_path / "hub.log",
        )
        hub.start()
        agent = start_agent(tmp_path, broker)
        try:
            first = {a["id"] for a in post_ok(agent, [scan_event(i) for i in range(10)])}
            wait_delivered(agent, hub, 20, "the first events")
            fill(disk / "other-process.log", leave=0)
            ids = set(first)
            for k in range(30):  # more than the file's free pages and the WAL can take
                ids |= {
                    a["id"]
                    for a in post_ok(agent, [scan_event(100 + k * 50 + i) for i in range(50)])
                }
            wait_for(
                lambda: (
                    get(hub.api_port or 0, "/v1/health")["components"]
                    .get("timeline", {})
                    .get("state")
                    == "unwritable"
                ),
                20,
                "the hub to report its store unwritable",
            )
            assert health(agent)["queue"]["depth"] > 0  # nothing unstored was acked
            (disk / "other-process.log").unlink()
            wait_delivered(agent, hub, 60, "delivery once the hub's disk has room")
            assert_once(timeline, ids)
            assert hub.proc is not None and hub.proc.poll() is None
        finally:
            agent.stop()
            hub.stop()
