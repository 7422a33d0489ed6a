"""``cmd/config`` (edge_agent/remote_config.py): the command checked against the running file,
the files written next to it, the trial confirmed or rolled back, and end to end with a real
mosquitto, a real hub, ``hub-bridge send config --wait`` and an agent (``edge-agent run``) that
restarts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.outbox import OutboxFull
from edge_agent.remote_config import (
    MAX_TRIAL_STARTS,
    PROBE_EVENT_TYPE,
    ROLLBACK_EVENT_TYPE,
    ConfigTrial,
    apply_config,
    failed_path,
    hub_reached,
    parse_config_command,
    previous_path,
    report_rollback,
    rollback_path,
    trial_path,
)
from edge_agent.sink import Accepted
from edge_agent.wire.commands import CommandRefused
from simulators.broker import Mosquitto, free_port
from tests.harness import (
    ROOT,
    Proc,
    post,
    scan_event,
    wait_for,
    write_agent_config,
    write_hub_config,
)

# -- helpers ----------------------------------------------------------------------------------


def base_doc(tmp: Path, broker_url: str = "mqtt://127.0.0.1:1883") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(write_agent_config(tmp, broker_url).read_text())
    return doc


def payload(config: Mapping[str, Any], cid: str = "c-1", **extra: Any) -> bytes:
    return json.dumps({"id": cid, "config": dict(config), **extra}).encode()


def with_(doc: Mapping[str, Any], section: str, **values: Any) -> dict[str, Any]:
    return {**doc, section: {**doc.get(section, {}), **values}}


@pytest.fixture
def running(tmp_path: Path) -> tuple[Path, AgentConfig, dict[str, Any]]:
    """A device file as provisioning leaves it (mode 0640) and its validated configuration."""
    doc = base_doc(tmp_path)
    path = tmp_path / "van-042.yaml"
    path.chmod(0o640)
    return path, load_agent_config(path), doc


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


# -- the command ------------------------------------------------------------------------------


def test_a_valid_command_is_the_configuration_it_carries(running: Any) -> None:
    _, current, doc = running
    change = parse_config_command(
        payload(with_(doc, "health", interval="1h"), trial="90s"), current
    )
    assert change.command == "c-1" and change.trial_s == 90.0
    assert change.config.health.interval == 3600.0 and current.health.interval == 300.0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: with_(d, "health", interval="soon"), "config: health.interval: "),
        (lambda d: with_(d, "gnss", source=5), "config: gnss.source: "),
        (lambda d: with_(d, "broker", colour="red"), "config: broker.colour: unknown key"),
        (lambda d: {k: v for k, v in d.items() if k != "outbox"}, "config: outbox: required"),
        (
            lambda d: with_(with_(d, "device", role="station"), "trips", zones=[]),
            "config: trips: a station has no trips",
        ),
        (lambda d: with_(d, "device", id="van-043"), "config: device.id: 'van-043' is not"),
        (lambda d: with_(d, "device", fleet="other"), "config: device.fleet: 'other' is not"),
        (lambda d: with_(d, "outbox", path="/tmp/elsewhere.db"), "config: outbox.path: stays"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_key(
    running: Any, edit: Any, expected: str
) -> None:
    _, current, doc = running
    with pytest.raises(CommandRefused) as refused:
        parse_config_command(payload(edit(doc)), current)
    assert str(refused.value).startswith(expected), str(refused.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[1]", 'a JSON object with an "id"'),
        (b'{"config": {}}', 'a JSON object with an "id"'),
        (b'{"id": "c", "device": {"id": "van-042"}}', "unknown field 'device'"),
        (b'{"id": "c", "config": [1]}', '"config": {...}'),
        (b'{"id": "c", "config": {}, "trial": "1s"}', "trial: '1s' is not between 2s and"),
        (b'{"id": "c", "config": {}, "trial": "soon"}', "trial: "),
    ],
)
def test_a_malformed_command_is_refused(running: Any, body: bytes, expected: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_config_command(body, running[1])
    assert expected in str(refused.value)


# -- the files --------------------------------------------------------------------------------


async def test_applying_keeps_the_previous_file_and_marks_the_trial(running: Any) -> None:
    path, current, doc = running
    before = path.read_bytes()
    assert await apply_config(path, payload(with_(doc, "health", interval="1h")), current)
    assert previous_path(path).read_bytes() == before
    assert load_agent_config(path).health.interval == 3600.0
    assert "cmd/config c-1" in path.read_text().splitlines()[0]
    assert path.stat().st_mode & 0o777 == 0o640  # the new file keeps the running file's mode
    marker = json.loads(trial_path(path).read_text())
    assert marker["command"] == "c-1" and marker["deadline"] - marker["started"] == 300.0
    # the same command again (QoS 1, the hub's resends): nothing to do, nothing rewritten
    snapshot = files_of(path)
    assert not await apply_config(path, payload(with_(doc, "health", interval="1h")), current)
    assert files_of(path) == snapshot


async def test_a_second_command_during_a_trial_keeps_the_confirmed_file(running: Any) -> None:
    path, current, doc = running
    confirmed = path.read_bytes()
    assert await apply_config(path, payload(with_(doc, "health", interval="1h"), "c-1"), current)
    trying = load_agent_config(path)
    assert await apply_config(path, payload(with_(doc, "health", interval="2h"), "c-2"), trying)
    assert previous_path(path).read_bytes() == confirmed  # not the unconfirmed c-1
    assert json.loads(trial_path(path).read_text())["command"] == "c-2"


async def test_the_running_configuration_sent_again_changes_nothing(running: Any) -> None:
    path, current, doc = running
    snapshot = files_of(path)
    assert not await apply_config(path, payload(doc), current)
    assert files_of(path) == snapshot


async def test_a_refused_command_changes_nothing(running: Any) -> None:
    path, current, doc = running
    snapshot = files_of(path)
    with pytest.raises(CommandRefused):
        await apply_config(path, payload(with_(doc, "device", id="van-043")), current)
    assert files_of(path) == snapshot


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """``folder`` read-only for this process: a tmpfs remounted ro as root (as ProtectSystem=
    strict does), a mode without w otherwise."""
    if os.geteuid() == 0:
        from tests.diskfull import tmpfs

        with tmpfs(folder, "1m"):
            yield "Read-only file system"
        return
    folder.mkdir()
    yield "Permission denied"


async def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    with read_only(folder) as reason:
        doc = base_doc(folder)
        path = folder / "van-042.yaml"
        current = load_agent_config(path)
        if os.geteuid() == 0:
            remount = ["mount", "-o", "remount,ro", str(folder)]
            subprocess.run(remount, check=True)  # noqa: ASYNC221 (before the code under test)
        else:
            folder.chmod(0o500)
        try:
            with pytest.raises(CommandRefused) as refused:
                await apply_config(path, payload(with_(doc, "health", interval="1h")), current)
            assert f"cannot write in {folder} ({reason})" in str(refused.value)
            assert "nothing was changed" in str(refused.value)
            assert sorted(p.name for p in folder.iterdir()) == ["van-042.yaml"]
        finally:
            if os.geteuid() != 0:
                folder.chmod(0o700)


# -- the trial --------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def on_trial(path: Path, current: AgentConfig, doc: dict[str, Any], clock: Clock) -> None:
    broken = with_(doc, "broker", url="mqtt://127.0.0.1:9")
    assert await apply_config(path, payload(broken, trial="60s"), current, now=clock)


async def test_no_marker_no_trial(running: Any) -> None:
    assert ConfigTrial.start(running[0]) is None


async def test_a_trial_past_its_deadline_is_rolled_back_at_start(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    good = path.read_bytes()
    await on_trial(path, current, doc, clock)
    trying = path.read_bytes()
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None and trial.remaining(clock.t) == 60.0 and trial.command == "c-1"
    clock.t += 61
    assert ConfigTrial.start(path, now=clock) is None
    assert path.read_bytes() == good and failed_path(path).read_bytes() == trying
    assert not trial_path(path).exists() and previous_path(path).read_bytes() == good
    record = json.loads(rollback_path(path).read_text())
    assert record["command"] == "c-1" and "within 1m" in record["reason"]
    # the hub sending it again (its ack was lost): refused, not tried again
    snapshot = files_of(path)
    with pytest.raises(CommandRefused, match=r"^config: rolled back at .*Z: .*within 1m"):
        await on_trial(path, current, doc, clock)
    assert files_of(path) == snapshot


async def test_the_window_begins_at_the_first_start_on_the_new_file(running: Any) -> None:
    # the restart after the command took longer than the whole trial (a slow SD card, a loaded
    # host): the file is tried for its whole window, counted from that first start
    path, current, doc = running
    clock = Clock()
    good = path.read_bytes()
    await on_trial(path, current, doc, clock)
    clock.t += 100
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None and trial.remaining(clock.t) == 60.0
    clock.t += 59  # a later restart within the window does not reset it
    again = ConfigTrial.start(path, now=clock)
    assert again is not None and again.remaining(clock.t) == 1.0
    clock.t += 2
    assert ConfigTrial.start(path, now=clock) is None
    assert path.read_bytes() == good


async def test_too_many_starts_on_one_trial_roll_it_back(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    good = path.read_bytes()
    await on_trial(path, current, doc, clock)
    for _ in range(MAX_TRIAL_STARTS):
        assert ConfigTrial.start(path, now=clock) is not None  # a crash loop, within the time
    assert ConfigTrial.start(path, now=clock) is None
    assert path.read_bytes() == good
    assert "started 5 times" in json.loads(rollback_path(path).read_text())["reason"]


async def test_a_clock_behind_the_marker_gives_a_whole_window(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    await on_trial(path, current, doc, clock)
    clock.t -= 86400 * 30  # a Pi booted offline, its clock a month behind
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None and trial.remaining(clock.t) == 60.0


@pytest.mark.parametrize("damage", ["{trunc", "[]", '{"command": "c-1", "deadline": "soon"}'])
async def test_a_damaged_marker_rolls_back(running: Any, damage: str) -> None:
    path, current, doc = running
    good = path.read_bytes()
    await on_trial(path, current, doc, Clock())
    trial_path(path).write_text(damage)
    assert ConfigTrial.start(path) is None and path.read_bytes() == good


class FakeSink:
    def __init__(self, seq: int = 10, full: int = 0) -> None:
        self.seq = seq
        self.full = full
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        if self.full:
            self.full -= 1
            raise OutboxFull("full")
        self.seq += 1
        self.events.append((type_, dict(data), event_id))
        return Accepted(event_id or f"e{self.seq}", self.seq)


class Link:
    connected = False


class Acks:
    acked = 0


def script(
    clock: Clock, steps: dict[int, Any]
) -> Any:  # a fake sleep: the clock moves, the world changes at given ticks
    tick = 0

    async def sleep(s: float) -> None:
        nonlocal tick
        tick += 1
        clock.t += s
        if tick in steps:
            steps[tick]()
        await asyncio.sleep(0)

    return sleep


async def test_a_trial_is_confirmed_by_the_hubs_ack_of_its_probe(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    await on_trial(path, current, doc, clock)
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None
    sink, link, acks, restarts = FakeSink(seq=10, full=1), Link(), Acks(), []
    acks.acked = 10  # a retained ack of what was sent before: proves nothing about this file

    def connect() -> None:
        link.connected = True

    def hub_acks() -> None:
        acks.acked = 11

    sleep = script(clock, {3: connect, 6: hub_acks})
    ok = await trial.supervise(
        sink,
        acks,
        lambda: link,
        lambda: restarts.append(1),
        now=clock,
        monotonic=clock,
        sleep=sleep,
    )
    assert ok and trial.outcome == "confirmed" and not restarts
    assert not trial_path(path).exists() and previous_path(path).exists()
    assert [e[0] for e in sink.events] == [PROBE_EVENT_TYPE]  # once, after the full outbox
    assert sink.events[0][1]["config_trial"]["command"] == "c-1"
    assert clock.t - 1_000_000.0 == pytest.approx(3.0)  # 6 polls of 0.5s: confirmed on the 6th


async def test_a_trial_that_never_reaches_the_hub_is_rolled_back(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    good = path.read_bytes()
    await on_trial(path, current, doc, clock)
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None
    link, restarts = Link(), []
    link.connected = True  # a broker, but no hub behind it: the probe stays unacked
    ok = await trial.supervise(
        FakeSink(),
        Acks(),
        lambda: link,
        lambda: restarts.append(1),
        now=clock,
        monotonic=clock,
        sleep=script(clock, {}),
    )
    assert not ok and restarts == [1] and trial.outcome == "rolled-back"
    assert clock.t - 1_000_000.0 == pytest.approx(60.0)
    assert path.read_bytes() == good
    reason = json.loads(rollback_path(path).read_text())["reason"]
    assert (
        reason == "the hub was not reached within 1m (connected to the broker, no ack from the hub)"
    )


async def test_a_trial_replaced_by_another_command_is_not_ended_by_the_old_one(
    running: Any,
) -> None:
    path, current, doc = running
    clock = Clock()
    await on_trial(path, current, doc, clock)
    trial = ConfigTrial.start(path, now=clock)
    assert trial is not None
    assert await apply_config(path, payload(with_(doc, "health", interval="2h"), "c-2"), current)
    assert not trial.confirm() and not trial.roll_back("late")
    assert json.loads(trial_path(path).read_text())["command"] == "c-2"


async def test_a_rollback_is_reported_once_with_one_id(running: Any) -> None:
    path, current, doc = running
    clock = Clock()
    await on_trial(path, current, doc, clock)
    assert ConfigTrial.start(path, now=clock) is not None  # its first start
    clock.t += 61
    assert ConfigTrial.start(path, now=clock) is None
    sink = FakeSink()
    assert await report_rollback(path, sink)
    assert not await report_rollback(path, sink)
    [(type_, data, event_id)] = sink.events
    assert (
        type_ == ROLLBACK_EVENT_TYPE and data["command"] == "c-1" and "within 1m" in data["reason"]
    )
    assert event_id == json.loads(rollback_path(path).read_text())["event_id"]


def test_hub_reached_needs_the_broker_and_the_probe_acked() -> None:
    assert hub_reached(True, 5, 5) and hub_reached(True, 6, 5)
    assert not hub_reached(False, 6, 5)  # an ack remembered from before the connection
    assert not hub_reached(True, 4, 5)
    assert not hub_reached(True, 100, None)  # no probe sent yet: no proof


# -- end to end -------------------------------------------------------------------------------


class Lines:
    """The agent's stdout read in a thread: a ready line per start (``reexec`` keeps the pipe)."""

    def __init__(self, proc: Proc) -> None:
        assert proc.proc is not None and proc.proc.stdout is not None
        self.queue: queue.Queue[str] = queue.Queue()
        stdout = proc.proc.stdout

        def pump() -> None:
            for line in stdout:
                self.queue.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def next_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            line = self.queue.get(timeout=timeout)
            doc: dict[str, Any] = json.loads(line)
            if doc.get("ready"):
                return doc


def send(
    hub_cfg: Path, doc: Mapping[str, Any], tmp: Path, name: str
) -> subprocess.CompletedProcess[str]:
    file = tmp / f"{name}.json"
    file.write_text(json.dumps(doc))
    return subprocess.run(
        [
            sys.executable, "-m", "hub_bridge", "send", "config", "--config", str(hub_cfg),
            "--fleet", "acme", "--device", "van-042", "--wait", "30s", str(file),
        ],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60, check=False,
    )  # fmt: skip


def timeline(db: Path) -> list[tuple[str, str]]:
    """(type, id) of every stored event of van-042."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT type, id FROM events WHERE device = 'van-042' ORDER BY seq")
        return [(str(t), str(i)) for t, i in rows]
    finally:
        con.close()


def test_config_commands_end_to_end(tmp_path: Path, broker: Mosquitto) -> None:
    hub_cfg = write_hub_config(tmp_path, broker.url)
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    cfg = write_agent_config(tmp_path, broker.url)
    doc = json.loads(cfg.read_text())
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    hub.start()
    agent.start()
    lines = Lines(agent)
    posted: list[str] = []

    def post_scan() -> None:
        assert agent.api_port is not None
        status, body = post(agent.api_port, scan_event(len(posted)))
        assert status == 201, body
        posted.append(body["id"])

    try:
        post_scan()
        original = cfg.read_bytes()
        # refused: an invalid value, and another device's identity; nothing changes
        bad = send(hub_cfg, {"config": with_(doc, "health", interval="soon")}, tmp_path, "bad")
        assert bad.returncode == 1 and "config: health.interval: " in bad.stderr, bad.stderr
        other = send(hub_cfg, {"config": with_(doc, "device", id="van-043")}, tmp_path, "other")
        assert other.returncode == 1 and "config: device.id: 'van-043'" in other.stderr
        assert cfg.read_bytes() == original and not previous_path(cfg).exists()
        assert not trial_path(cfg).exists()

        # a valid change: acked, the agent restarts on it, reaches the hub, the trial ends
        good = with_(doc, "health", interval="1h")
        sent = send(hub_cfg, {"config": good, "trial": "30s"}, tmp_path, "good")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout.splitlines()[-1])["status"] == "ok"
        lines.next_ready()  # the restart on the new file
        wait_for(lambda: not trial_path(cfg).exists(), 30, "the trial confirmed")
        assert previous_path(cfg).read_bytes() == original
        assert load_agent_config(cfg).health.interval == 3600.0
        assert not rollback_path(cfg).exists()
        post_scan()
        good_file = cfg.read_bytes()

        # a broker nobody listens on: acked, applied, then rolled back by the agent itself
        dead = with_(good, "broker", url=f"mqtt://127.0.0.1:{free_port()}")
        sent = send(hub_cfg, {"config": dead, "trial": "3s"}, tmp_path, "dead")
        assert sent.returncode == 0, sent.stderr
        lines.next_ready()  # on the dead broker
        post_scan()  # accepted while on trial: in the outbox, sent after the roll-back
        lines.next_ready()  # back on the file that reached the hub
        assert cfg.read_bytes() == good_file and not trial_path(cfg).exists()
        assert "mqtt://127.0.0.1" in failed_path(cfg).read_text()
        record = json.loads(rollback_path(cfg).read_text())
        assert "never connected to the broker" in record["reason"]
        post_scan()

        # a file the agent cannot even start with (its API port taken): rolled back at once
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            busy = with_(good, "api", listen=f"127.0.0.1:{port}")
            sent = send(hub_cfg, {"config": busy, "trial": "5m"}, tmp_path, "busy")
            assert sent.returncode == 0, sent.stderr
            assert lines.next_ready()["api_port"] == agent.api_port  # the old file's API
        assert cfg.read_bytes() == good_file and not trial_path(cfg).exists()
        record = json.loads(rollback_path(cfg).read_text())
        assert record["reason"].startswith("the agent could not start: "), record

        # nothing accepted was lost, nothing stored twice, and the timeline says what happened
        db = tmp_path / "timeline.db"

        def all_there() -> bool:
            ids = {i for _, i in timeline(db)}
            types = {t for t, _ in timeline(db)}
            return set(posted) <= ids and ROLLBACK_EVENT_TYPE in types

        wait_for(all_there, 30, "every scan and the roll-back report in the timeline")
        stored = timeline(db)
        assert len({i for _, i in stored}) == len(stored)
        assert sum(1 for _, i in stored if i in posted) == len(posted) == 4
        wait_for(
            lambda: sum(1 for t, _ in timeline(db) if t == ROLLBACK_EVENT_TYPE) == 2,
            30,
            "both roll-backs reported",
        )
        assert agent.proc is not None and agent.proc.poll() is None  # one process throughout
    finally:
        assert agent.stop() == 0
        hub.stop()


class Notify:
    """systemd's end of ``NOTIFY_SOCKET``: an abstract unix datagram socket read by a thread
    (a sender finding the queue full would wait), recording who sent which line."""

    def __init__(self) -> None:
        self.name = f"@lastmile-rc-{os.getpid()}-{id(self)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.settimeout(0.2)
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.seen: list[tuple[int, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            creds = [p for _, k, p in anc if k == socket.SCM_CREDENTIALS]
            pid = struct.unpack("iII", creds[0][:12])[0] if creds else -1
            for line in data.decode().split("\n"):
                if line:
                    self.lines.put((pid, line))

    def until(self, field: str, timeout: float = 30.0) -> None:
        """Take lines until ``field`` (``READY=1``) comes."""
        while True:
            got = self.lines.get(timeout=timeout)
            self.seen.append(got)
            if got[1] == field:
                return

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()


class Hub:
    """The hub's side of MQTT for one command, with paho: publish it, take the device's ack."""

    def __init__(self, broker: Mosquitto) -> None:
        self.acks: queue.Queue[bytes] = queue.Queue()
        self.online = threading.Event()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect(broker.host, broker.port)
        client.subscribe([("lm/v1/acme/van-042/cmd-ack", 1), ("lm/v1/acme/van-042/state", 1)])
        client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker"
        self.client = client

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/cmd-ack"):
            self.acks.put(bytes(msg.payload))
        elif json.loads(msg.payload).get("state") == "online":
            self.online.set()  # the birth comes after the agent's subscriptions

    def command(self, name: str, payload: str) -> dict[str, Any]:
        assert self.online.wait(30), "the device never came online"
        self.client.publish(f"lm/v1/acme/van-042/cmd/{name}", payload, qos=1).wait_for_publish(10)
        answer: dict[str, Any] = json.loads(self.acks.get(timeout=30))
        return answer

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_restart_is_one_running_service_to_systemd(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = Notify()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.name)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    cfg = write_agent_config(tmp_path, broker.url)
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    hub = Hub(broker)
    try:
        assert agent.proc is not None
        pid = agent.proc.pid
        notify.until("READY=1")
        doc = with_(json.loads(cfg.read_text()), "health", interval="1h")
        command = json.dumps({"id": "c-9", "config": doc})
        assert hub.command("config", command) == {"id": "c-9", "ok": True}
        notify.until("READY=1")  # the new image, the same process
        assert load_agent_config(cfg).health.interval == 3600.0
        senders = {p for p, _ in notify.seen}
        assert senders == {pid}
        assert "STOPPING=1" not in [line for _, line in notify.seen]
        assert [line for _, line in notify.seen].count("READY=1") == 2
    finally:
        hub.close()
        assert agent.stop() == 0
        notify.until("STOPPING=1", timeout=10)
        notify.close()
