"""Commands to devices, kept until the device answers (DESIGN §10 ``hub-bridge send``).

The queue's pure checks; the store on real SQLite files (supersede, bounds, retention, what is
due, whose answer counts); the API in-process on a real port; and end to end with a real
mosquitto, real hub and agent processes and the real ``hub-bridge send`` command line: a device
offline when the command is sent, a hub restarted before the device answered, a refusal, forged
answers, and every exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.yamlconf import ConfigError
from edge_agent.wire import topics
from hub_bridge.api import build_app
from hub_bridge.bridge import HubBridge
from hub_bridge.commands import (
    PAYLOAD_MAX_BYTES,
    CommandAckError,
    CommandError,
    CommandLimits,
    parse_command_ack,
    prepare_command,
    resend_delay,
)
from hub_bridge.config import load_hub_config
from hub_bridge.timeline import Timeline
from simulators.broker import Mosquitto, free_port
from tests.harness import ROOT, Proc, Running, get, wait_for, write_agent_config, write_hub_config
from tests.inproc import Served

MANIFEST = {
    "route": "r-1",
    "depot": {"lat": 52.5, "lon": 13.4, "radius_m": 80},
    "stops": [{"id": "s1", "lat": 52.51, "lon": 13.41, "radius_m": 60, "parcels": ["P1"]}],
}
BAD_MANIFEST = {**MANIFEST, "depot": {"lat": 95, "lon": 1, "radius_m": 50}}
LIMITS = CommandLimits(max_per_device=5, retention_s=100.0, resend_s=10.0, resend_max_s=40.0)


# -- the pure part -----------------------------------------------------------------------------


def test_a_command_is_a_bounded_json_object_that_the_hub_gives_its_id() -> None:
    cid, payload = prepare_command(json.dumps(MANIFEST).encode())
    doc = json.loads(payload)
    assert next(iter(doc)) == "id" and doc["id"] == cid and len(cid) == 36
    assert {k: v for k, v in doc.items() if k != "id"} == MANIFEST
    assert prepare_command(b"{}")[0] != prepare_command(b"{}")[0]  # unique ids
    refused = {
        b"[1, 2]": "not an array",
        b'"x"': "not a string",
        b"{": "not JSON",
        b"\xff{}": "not UTF-8",
        b'{"a": NaN}': "a: NaN",
        b'{"a": {"b": "\\ud800"}}': "a.b: a lone surrogate",
        b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}": "nesting deeper",
        b'{"id": "mine"}': "id: the hub gives",
    }
    for body, why in refused.items():
        with pytest.raises(CommandError, match=why) as err:
            prepare_command(body)
        assert err.value.status == 400
    big = json.dumps({"x": "a" * PAYLOAD_MAX_BYTES}).encode()
    with pytest.raises(CommandError, match="more than") as err:
        prepare_command(big)
    assert err.value.status == 413
    # fits alone, but not with its id
    edge = json.dumps({"x": "a" * (PAYLOAD_MAX_BYTES - 20)}).encode()
    assert len(edge) <= PAYLOAD_MAX_BYTES
    with pytest.raises(CommandError, match="with its id") as err:
        prepare_command(edge)
    assert err.value.status == 413


def test_resends_back_off_to_a_cap() -> None:
    delays = [resend_delay(n, LIMITS) for n in range(1, 8)]
    assert delays == [10.0, 20.0, 40.0, 40.0, 40.0, 40.0, 40.0]
    assert resend_delay(10_000, LIMITS) == 40.0
    with pytest.raises(ValueError, match="max_per_device"):
        CommandLimits(max_per_device=2)


def test_answers_are_decoded_within_bounds() -> None:
    assert parse_command_ack(b'{"id": "c-1", "ok": true}').ok is True
    refused = parse_command_ack(b'{"id": "c-1", "ok": false, "error": "depot: bad"}')
    assert (refused.ok, refused.error) == (False, "depot: bad")
    assert parse_command_ack(b'{"id": "c", "ok": false}').error == "refused"
    assert (
        len(
            parse_command_ack(json.dumps({"id": "c", "ok": False, "error": "e" * 9}).encode()).error
            or ""
        )
        == 9
    )
    for payload in (
        b"",
        b"[]",
        b'{"id": 1, "ok": true}',
        b'{"id": "", "ok": true}',
        b'{"id": "c", "ok": "yes"}',
        b'{"id": "c", "ok": false, "error": 5}',
        b'{"id": "c\\n", "ok": true}',
        json.dumps({"id": "x" * 129, "ok": True}).encode(),
        b'{"id": "c", "ok": true, "x": [[[]]]}',
        b'{"id": "c", "ok": true, "pad": "' + b"x" * 5000 + b'"}',
    ):
        with pytest.raises(CommandAckError):
            parse_command_ack(payload)


# -- the store -----------------------------------------------------------------------------------


async def add(tl: Timeline, name: str, now: float, device: str = "van-1") -> tuple[str, list[str]]:
    cid, payload = prepare_command(json.dumps({"n": now}).encode())
    return cid, await tl.add_command("acme", device, name, cid, payload, LIMITS, now)


async def statuses(tl: Timeline, device: str = "van-1") -> list[tuple[str, str]]:
    return [(c["name"], c["status"]) for c in await tl.commands("acme", device)]


async def test_a_newer_command_supersedes_and_the_queue_is_bounded(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        old, none = await add(tl, "manifest", 1.0)
        assert none == []
        plan, _ = await add(tl, "loadplan", 2.0)
        new, superseded = await add(tl, "manifest", 3.0)
        assert superseded == [old]  # the unanswered older manifest, not the load plan
        assert await statuses(tl) == [
            ("manifest", "queued"),
            ("loadplan", "queued"),
            ("manifest", "superseded"),
        ]
        gone = await tl.command(old)
        assert gone is not None and gone["superseded_by"] == new and gone["next_send"] is None
        # answered commands are not superseded: the device applied them
        assert await tl.ack_command("acme", "van-1", new, True, None, 4.0) == "recorded"
        _, superseded = await add(tl, "manifest", 5.0)
        assert superseded == []
        # bounded per device: 5 kept, the finished and oldest go first, never an unanswered one
        for i in range(6):
            await add(tl, "report" if i % 2 else "config", 6.0 + i)
        kept = await tl.commands("acme", "van-1")
        assert len(kept) == LIMITS.max_per_device
        unanswered = [c for c in kept if c["status"] == "queued"]
        assert {c["name"] for c in unanswered} == {"manifest", "loadplan", "report", "config"}
        assert plan in {c["id"] for c in unanswered}
        # other devices are not touched; finished ones past the retention are deleted
        other, _ = await add(tl, "manifest", 10.0, device="van-2")
        await tl.ack_command("acme", "van-2", other, True, None, 11.0)
        assert await tl.prune_commands(LIMITS, 11.0 + LIMITS.retention_s - 1) == 0
        assert await tl.prune_commands(LIMITS, 11.0 + LIMITS.retention_s + 1) >= 1
        assert await tl.command(other) is None
        assert len(await tl.commands("acme", "van-1")) == LIMITS.max_per_device - 1
    finally:
        await tl.close()


async def test_what_is_due_skips_offline_devices_and_finished_commands(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        a, _ = await add(tl, "manifest", 100.0, device="van-1")
        b, _ = await add(tl, "manifest", 101.0, device="van-2")
        assert [c.id for c in await tl.due_commands(99.0)] == []
        assert [c.id for c in await tl.due_commands(200.0)] == [a, b]  # longest waiting first
        await tl.command_sent(a, 200.0, 200.0 + resend_delay(1, LIMITS))
        assert [c.id for c in await tl.due_commands(205.0)] == [b]
        assert await tl.next_command_due() == 101.0
        due = await tl.due_commands(210.0)
        assert [(c.id, c.sent_count) for c in due] == [(b, 0), (a, 1)]
        # a device known to be offline gets nothing until its birth makes its commands due
        await tl.set_state("acme", "van-2", "offline", "{}")
        assert [c.id for c in await tl.due_commands(1000.0)] == [a]
        await tl.set_state("acme", "van-2", "online", "{}")
        assert await tl.commands_due_now("acme", "van-2", 300.0) == 1
        assert [c.id for c in await tl.due_commands(300.0)] == [a, b]  # a due since 210
        # answered: never due again, a birth does not bring it back
        await tl.ack_command("acme", "van-2", b, False, "depot: bad", 301.0)
        assert await tl.commands_due_now("acme", "van-2", 302.0) == 0
        assert [c.id for c in await tl.due_commands(1000.0)] == [a]
        # an answer arriving while it was being published: sent counted, not scheduled again
        await tl.ack_command("acme", "van-1", a, True, None, 303.0)
        await tl.command_sent(a, 304.0, 400.0)
        done = await tl.command(a)
        assert done is not None and (done["sent_count"], done["next_send"]) == (2, None)
        assert await tl.next_command_due() is None
    finally:
        await tl.close()


async def test_only_the_commands_own_device_can_answer_it(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        cid, _ = await add(tl, "manifest", 1.0)
        assert await tl.ack_command("acme", "van-2", cid, True, None) == "wrong-device"
        assert await tl.ack_command("other", "van-1", cid, True, None) == "wrong-device"
        assert await tl.ack_command("acme", "van-1", "no-such-id", True, None) == "unknown"
        assert await statuses(tl) == [("manifest", "queued")]
        assert await tl.ack_command("acme", "van-1", cid, False, "depot: lat 95") == "recorded"
        assert await tl.ack_command("acme", "van-1", cid, True, None) == "again"
        got = await tl.command(cid)
        assert got is not None
        assert (got["status"], got["ok"], got["error"]) == ("refused", False, "depot: lat 95")
        assert got["payload"]["id"] == cid
    finally:
        await tl.close()


# -- the API ---------------------------------------------------------------------------------------


def call(url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def hub_api(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    woken: list[int] = []

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        tl = await Timeline.open(tmp_path / "timeline.db")
        app = build_app(
            tl, HealthRegistry(), commands_changed=lambda: woken.append(1), command_limits=LIMITS
        )
        return app, tl.close

    with Served(make) as served:
        yield served.url, woken


def test_the_api_queues_lists_and_refuses_commands(hub_api: tuple[str, list[int]]) -> None:
    url, woken = hub_api
    dev = f"{url}/v1/devices/acme/van-1/commands"
    status, first = call(f"{dev}/manifest", json.dumps(MANIFEST).encode())
    assert status == 202 and first["status"] == "queued" and first["superseded"] == []
    assert first["device_known"] is False and woken == [1]
    status, second = call(f"{dev}/manifest", json.dumps(MANIFEST).encode())
    assert status == 202 and second["superseded"] == [first["id"]]
    status, listed = call(dev)
    assert status == 200
    assert [(c["id"], c["status"]) for c in listed] == [
        (second["id"], "queued"),
        (first["id"], "superseded"),
    ]
    assert listed[0]["size"] == len(
        json.dumps({"id": second["id"], **MANIFEST}, separators=(",", ":"))
    )
    status, one = call(f"{url}/v1/commands/{second['id']}")
    assert status == 200 and one["payload"] == {"id": second["id"], **MANIFEST}
    bad = {
        (f"{dev}/manifest", b"[1]"): (400, "not an array"),
        (f"{dev}/manifest", b'{"a": 1e400}'): (400, "a: "),
        (f"{dev}/manifest", b'{"id": "x"}'): (400, "id"),
        (f"{dev}/manifest", b"{" + b" " * PAYLOAD_MAX_BYTES + b"}"): (413, "more than"),
        (f"{dev}/frobnicate", b"{}"): (400, "name: frobnicate is not a command"),
        (f"{url}/v1/devices/ACME/van-1/commands/manifest", b"{}"): (400, "fleet"),
        (f"{url}/v1/devices/acme/van-1%0A/commands/manifest", b"{}"): (400, "device"),
        (f"{dev}/manifest?x=1", b"{}"): (400, "x: unknown parameter"),
    }
    for (target, body), (code, why) in bad.items():
        status, answer = call(target, body)
        assert (status, why in answer["error"]) == (code, True), (target, answer)
    assert woken == [1, 1]  # nothing refused was queued
    assert call(dev)[1][0]["id"] == second["id"]
    assert call(f"{url}/v1/commands/0190-nope")[0] == 404
    assert call(f"{url}/v1/commands/a%20b")[0] == 400
    assert call(f"{dev}?limit=0")[0] == 400
    assert call(f"{url}/v1/devices/acme/van-9/commands") == (200, [])
    paths = call(f"{url}/v1/openapi.json")[1]["paths"]
    assert "/v1/devices/{fleet}/{device}/commands/{name}" in paths
    assert "202" in paths["/v1/devices/{fleet}/{device}/commands/{name}"]["post"]["responses"]


# -- the running hub, in-process: resends while unanswered -------------------------------------


async def test_the_hub_resends_until_answered_then_stops(tmp_path: Path, broker: Mosquitto) -> None:
    config = load_hub_config(write_hub_config(tmp_path, broker.url))
    tl = await Timeline.open(tmp_path / "timeline.db")
    got: list[dict[str, Any]] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topics.cmd("acme", "van-5", "+"), qos=1)
    client.loop_start()
    fast = CommandLimits(resend_s=0.05, resend_max_s=0.2)
    bridge = HubBridge(config, tl, HealthRegistry(), fast)
    try:
        async with Running(bridge, check_still_running=True):
            await asyncio.wait_for(bridge.subscribed.wait(), 20)
            cid, payload = prepare_command(json.dumps(MANIFEST).encode())
            await tl.add_command("acme", "van-5", "manifest", cid, payload, fast)
            bridge.commands_changed()
            for _ in range(400):  # several publications while nobody answers
                if len(got) >= 4:
                    break
                await asyncio.sleep(0.05)
            assert len(got) >= 4 and all(g == {"id": cid, **MANIFEST} for g in got)
            ack = json.dumps({"id": cid, "ok": True})
            client.publish(topics.cmd_ack("acme", "van-5"), ack, qos=1).wait_for_publish(5)
            for _ in range(400):
                found = await tl.command(cid)
                if found is not None and found["status"] == "ok":
                    break
                await asyncio.sleep(0.05)
            assert found is not None and found["status"] == "ok" and found["next_send"] is None
            assert found["sent_count"] >= 4
            assert bridge.health.counters("commands")["ack-recorded"] == 1
    finally:
        client.loop_stop()
        client.disconnect()
        await tl.close()


# -- end to end: real processes and the real command line ----------------------------------------


def send_cmd(
    config: Path, name: str, file: Path, *extra: str, device: str = "van-042"
) -> list[str]:
    return [
        sys.executable, "-m", "hub_bridge", "send", name, "--config", str(config),
        "--fleet", "acme", "--device", device, *extra, str(file),
    ]  # fmt: skip


def run_send(*args: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        send_cmd(*args, **kw),
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=90,
    )


def popen_send(*args: Any, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        send_cmd(*args, **kw),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def command_of(hub: Proc, cid: str) -> dict[str, Any]:
    assert hub.api_port is not None
    found: dict[str, Any] = get(hub.api_port, f"/v1/commands/{cid}")
    return found


def hub_counters(hub: Proc) -> dict[str, int]:
    assert hub.api_port is not None
    comps = get(hub.api_port, "/v1/health")["components"]
    return dict(comps.get("commands", {}).get("counters", {}))


def agent_proc(tmp_path: Path, broker: Mosquitto) -> Proc:
    cfg = write_agent_config(tmp_path, broker.url, trips={"zones": []})
    return Proc("edge_agent", cfg, tmp_path / "agent.log")


def test_a_device_offline_when_sent_gets_it_at_its_birth(tmp_path: Path, broker: Mosquitto) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    agent = agent_proc(tmp_path, broker)
    hub.start()
    waiting = popen_send(
        hub_cfg, "manifest", write_json(tmp_path / "m.json", MANIFEST), "--wait", "60s"
    )
    try:
        assert waiting.stdout is not None
        queued = json.loads(waiting.stdout.readline())
        assert queued["status"] == "queued" and queued["device_known"] is False
        cid = queued["id"]
        wait_for(lambda: command_of(hub, cid)["sent_count"] >= 1, 20, "the first publication")
        assert command_of(hub, cid)["status"] == "sent"  # to nobody: the van is not there yet
        agent.start()
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["status"] == "ok"
        done = command_of(hub, cid)
        assert done["ok"] is True and done["sent_count"] >= 2  # sent again at the birth
        assert agent.api_port is not None
        trips = get(agent.api_port, "/v1/health")["components"]["trips"]["counters"]
        assert trips["manifest-applied"] >= 1
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
        agent.stop()
        hub.stop()


def test_a_restarted_hub_sends_what_is_unanswered(tmp_path: Path, broker: Mosquitto) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    agent = agent_proc(tmp_path, broker)
    hub.start()
    try:
        sent = run_send(hub_cfg, "manifest", write_json(tmp_path / "m.json", MANIFEST))
        assert sent.returncode == 0, sent.stderr
        assert "has not heard of acme/van-042" in sent.stderr
        cid = json.loads(sent.stdout)["id"]
        wait_for(lambda: command_of(hub, cid)["sent_count"] == 1, 20, "the first publication")
        hub.kill()  # SIGKILL before anyone answered
        agent.start()  # its birth is retained; the command it never got is not in its session
        hub.start()
        wait_for(lambda: command_of(hub, cid)["status"] == "ok", 30, "the answer after a restart")
        assert command_of(hub, cid)["sent_count"] >= 2
    finally:
        agent.stop()
        hub.stop()


def test_a_refused_command_is_recorded_and_not_sent_again(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    agent = agent_proc(tmp_path, broker)
    hub.start()
    agent.start()
    try:
        assert agent.api_port is not None
        bad = run_send(
            hub_cfg, "manifest", write_json(tmp_path / "bad.json", BAD_MANIFEST), "--wait", "30s"
        )
        assert bad.returncode == 1, bad.stderr
        assert "acme/van-042 refused manifest" in bad.stderr and "depot" in bad.stderr
        refused = json.loads(bad.stdout.splitlines()[-1])
        assert refused["status"] == "refused" and "depot" in refused["error"]
        sent_before = command_of(hub, refused["id"])["sent_count"]
        agent.stop()
        agent.start()  # a new birth: what is unanswered goes again, a refusal is an answer
        good = run_send(
            hub_cfg, "manifest", write_json(tmp_path / "m.json", MANIFEST), "--wait", "30s"
        )
        assert good.returncode == 0, good.stderr
        # the agent's birth reached the hub before its answer to the second command
        again = command_of(hub, refused["id"])
        assert (again["status"], again["sent_count"]) == ("refused", sent_before)
        # a refused command is finished: the next one of its name supersedes nothing
        assert json.loads(good.stdout.splitlines()[0])["superseded"] == []
        counters = get(agent.api_port, "/v1/health")["components"]["trips"]["counters"]
        assert counters["manifest-applied"] >= 1 and "manifest-invalid" not in counters
    finally:
        agent.stop()
        hub.stop()


def test_answers_from_another_devices_topic_are_ignored(tmp_path: Path, broker: Mosquitto) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    hub.start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()

    def answer(device: str, payload: bytes) -> None:
        client.publish(topics.cmd_ack("acme", device), payload, qos=1).wait_for_publish(5)

    try:
        sent = run_send(hub_cfg, "manifest", write_json(tmp_path / "m.json", MANIFEST))
        cid = json.loads(sent.stdout)["id"]
        answer("van-999", json.dumps({"id": cid, "ok": True}).encode())  # forged
        answer("van-042", json.dumps({"id": "not-a-command", "ok": True}).encode())
        answer("van-042", b"{not json")
        wait_for(
            lambda: {"ack-wrong-device", "ack-unknown", "ack-invalid"} <= set(hub_counters(hub)),
            20,
            "the three answers counted",
        )
        got = command_of(hub, cid)
        assert got["status"] == "sent" and got["acked_at"] is None
        assert hub.api_port is not None
        dead = get(hub.api_port, "/v1/dead-letters")
        assert [d["topic"] for d in dead] == [topics.cmd_ack("acme", "van-042")]
        answer("van-042", json.dumps({"id": cid, "ok": False, "error": "no"}).encode())
        answer("van-042", json.dumps({"id": cid, "ok": True}).encode())  # the first answer stays
        wait_for(lambda: hub_counters(hub).get("ack-again") == 1, 20, "the second answer")
        got = command_of(hub, cid)
        assert (got["status"], got["error"]) == ("refused", "no")
        counters = hub_counters(hub)
        assert (counters["ack-wrong-device"], counters["ack-unknown"]) == (1, 1)
    finally:
        client.loop_stop()
        client.disconnect()
        hub.stop()


def test_the_exit_codes_of_send(tmp_path: Path, broker: Mosquitto) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    hub.start()
    manifest = write_json(tmp_path / "m.json", MANIFEST)
    try:
        assert hub.api_port is not None
        # 2: bad input, nothing queued
        for name, doc in (("list", [MANIFEST]), ("with-id", {**MANIFEST, "id": "x"})):
            bad = run_send(hub_cfg, "manifest", write_json(tmp_path / f"{name}.json", doc))
            assert bad.returncode == 2, bad.stderr
            assert f"{name}.json" in bad.stderr
        assert run_send(hub_cfg, "manifest", tmp_path / "missing.json").returncode == 2
        assert run_send(hub_cfg, "manifest", manifest, device="VAN").returncode == 2
        assert run_send(hub_cfg, "manifest", manifest, "--wait", "soon").returncode == 2
        assert run_send(hub_cfg, "frobnicate", manifest).returncode == 2
        assert run_send(tmp_path / "nope.yaml", "manifest", manifest).returncode == 2
        assert get(hub.api_port, "/v1/devices/acme/van-042/commands") == []
        # 3: no answer in time, still queued
        late = run_send(hub_cfg, "manifest", manifest, "--wait", "1s")
        assert late.returncode == 3, late.stderr
        assert "still queued" in late.stderr
        cid = json.loads(late.stdout)["id"]
        assert command_of(hub, cid)["status"] == "sent"
        # 4: superseded by a newer manifest while waiting
        waiting = popen_send(hub_cfg, "manifest", manifest, "--wait", "60s")
        assert waiting.stdout is not None
        first = json.loads(waiting.stdout.readline())
        assert first["superseded"] == [cid]
        newer = run_send(hub_cfg, "manifest", manifest)
        assert newer.returncode == 0
        _, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 4, err
        assert json.loads(newer.stdout)["id"] in err
        # 5: no hub there, nothing queued
        away = tmp_path / "away"
        away.mkdir()
        nobody = write_hub_config(away, broker.url, api={"listen": f"127.0.0.1:{free_port()}"})
        gone = run_send(nobody, "manifest", manifest)
        assert gone.returncode == 5 and "cannot be reached" in gone.stderr
    finally:
        hub.stop()


def test_the_command_limits_come_from_the_hub_configuration(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("commands: {resend: 2s, resend_max: 1m, max_per_device: 10, retention: 1d}\n")
    limits = load_hub_config(path).commands.limits
    assert limits == CommandLimits(
        max_per_device=10, retention_s=86400.0, resend_s=2.0, resend_max_s=60.0
    )
    path.write_text("commands:\n  max_per_device: 3\n")
    with pytest.raises(ConfigError, match=r"hub.yaml:2: commands.max_per_device"):
        load_hub_config(path)


def test_a_hub_with_tokens_takes_commands_only_with_a_token_that_may_send_them(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The hub as `hub-bridge run` starts it from `tenants.tokens`; `send --token-file`."""
    from hub_bridge.tenants import new_token

    ops, ops_hash = new_token()
    reader, reader_hash = new_token()
    (tmp_path / "ops.token").write_text(ops + "\n")
    (tmp_path / "reader.token").write_text(reader)
    tokens = [
        {"name": "ops", "fleets": "all", "rights": ["read", "commands"], "token_sha256": ops_hash},
        {"name": "ro", "fleet": "acme", "rights": ["read"], "token_sha256": reader_hash},
    ]
    hub_cfg = write_hub_config(tmp_path, broker.url, tenants={"tokens": tokens})
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    hub.start()
    manifest = write_json(tmp_path / "m.json", MANIFEST)
    try:
        nobody = run_send(hub_cfg, "manifest", manifest)
        assert nobody.returncode == 2 and "401" in nobody.stderr, nobody.stderr
        read_only = run_send(
            hub_cfg, "manifest", manifest, "--token-file", str(tmp_path / "reader.token")
        )
        assert read_only.returncode == 2 and "403" in read_only.stderr, read_only.stderr
        sent = run_send(hub_cfg, "manifest", manifest, "--token-file", str(tmp_path / "ops.token"))
        assert sent.returncode == 0, sent.stderr
        cid = json.loads(sent.stdout)["id"]
        assert hub.api_port is not None
        found = get(hub.api_port, f"/v1/commands/{cid}", token=reader)
        assert found["id"] == cid
    finally:
        hub.stop()
