"""End to end on real processes: agent → mosquitto → hub → timeline, with faults."""

from __future__ import annotations

import threading
from pathlib import Path

from simulators.broker import Mosquitto, self_signed
from tests.harness import (
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


def start_pair(tmp_path: Path, broker: Mosquitto) -> tuple[Proc, Proc]:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    return agent, hub


def assert_exactly_once(db: Path, accepted: dict[str, int]) -> None:
    rows = timeline_rows(db)
    ids = [i for _, i, _ in rows]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    stored = {i: s for s, i, _ in rows}
    missing = [i for i in accepted if i not in stored]
    assert not missing, f"{len(missing)} accepted events are not in the timeline"
    for event_id, seq in accepted.items():
        assert stored[event_id] == seq


def test_events_reach_the_timeline_once(tmp_path: Path, broker: Mosquitto) -> None:
    agent, hub = start_pair(tmp_path, broker)
    try:
        assert agent.api_port is not None
        status, one = post(agent.api_port, scan_event(1, "app-1"))
        assert status == 201 and one["seq"] == 1 and one["id"] == "app-1"
        status, again = post(agent.api_port, scan_event(1, "app-1"))
        assert status == 201 and again == one  # idempotent on the client id
        status, batch = post(agent.api_port, [fix_event(i) for i in range(50)])
        assert status == 201 and [b["seq"] for b in batch] == list(range(2, 52))
        accepted = {one["id"]: one["seq"]} | {b["id"]: b["seq"] for b in batch}
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db)) >= 51, 20, "51 events in the timeline")
        assert_exactly_once(db, accepted)
        # the agent deletes what the hub acked
        wait_for(
            lambda: get(agent.api_port or 0, "/v1/health")["queue"]["depth"] == 0,
            20,
            "the outbox to drain",
        )
        health = get(agent.api_port, "/v1/health")
        assert health["broker"]["state"] == "connected"
        assert health["queue"]["acked"] >= 51
        devices = get(hub.api_port or 0, "/v1/devices")
        assert devices[0]["device"] == "van-042" and devices[0]["state"] == "online"
        assert devices[0]["watermark"] >= 51 and devices[0]["missing"] == []
        # a clean stop says "offline" on the retained state topic (a crash leaves it to the will)
        agent.stop()
        wait_for(
            lambda: get(hub.api_port or 0, "/v1/devices")[0]["state"] == "offline",
            10,
            "the device to be offline",
        )
    finally:
        agent.stop()
        hub.stop()


def test_invalid_posts_are_refused_with_the_reason(tmp_path: Path, broker: Mosquitto) -> None:
    agent, hub = start_pair(tmp_path, broker)
    try:
        port = agent.api_port or 0
        bad_lat = {"type": "gnss.fix", "data": {"lat": 95, "lon": 4.0, "mode": 3}}
        status, body = post(port, [fix_event(1), bad_lat])
        assert status == 400 and body["error"].startswith("events[1].data.lat")
        status, body = post(port, {"type": "nope", "data": {}})
        assert status == 400 and "unknown event type" in body["error"]
        status, body = post(port, {"type": "scan", "data": {}, "colour": "red"})
        assert status == 400 and "colour" in body["error"]
        status, body = post(port, {"type": "scan", "data": {"text": "x"}, "ts": "yesterday"})
        assert status == 400 and "ts" in body["error"]
        # nothing of the refused batch was stored
        status, ok = post(port, fix_event(2))
        assert status == 201 and ok["seq"] == 1
    finally:
        agent.stop()
        hub.stop()


class Stream:
    """Posts scans one by one from a thread; records what the agent answered 201 to."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: dict[str, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                status, body = post(self.port, scan_event(i), timeout=2)
            except OSError as exc:  # the agent is down: nothing was accepted
                self.errors.append(repr(exc))
                self._stop.wait(0.05)
                continue
            if status == 201:
                self.accepted[body["id"]] = body["seq"]

    def more(self, n: int, what: str) -> None:
        """Wait until ``n`` more events than now were accepted."""
        target = len(self.accepted) + n
        wait_for(lambda: len(self.accepted) >= target, 30, what)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_all_stored(db: Path, accepted: dict[str, int], timeout: float) -> None:
    """Wait until every accepted id is in the timeline."""
    wait_for(lambda: {i for _, i, _ in timeline_rows(db)} >= set(accepted), timeout, "all accepted")


def test_agent_sigkill_mid_stream_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    agent, hub = start_pair(tmp_path, broker)
    try:
        with Stream(agent.api_port or 0) as stream:
            stream.more(150, "150 accepted events")
            agent.kill()
            agent.start()  # same config, same port: the streamer carries on
            stream.more(150, "150 more after restart")
        db = tmp_path / "timeline.db"
        wait_all_stored(db, stream.accepted, 30)
        assert_exactly_once(db, stream.accepted)
        seqs = [s for s, _, _ in timeline_rows(db)]
        assert seqs == list(range(1, len(seqs) + 1)), "seqs are contiguous across the crash"
    finally:
        agent.stop()
        hub.stop()


def test_broker_killed_without_persistence_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    agent, hub = start_pair(tmp_path, broker)
    try:
        with Stream(agent.api_port or 0) as stream:
            stream.more(100, "100 accepted events")
            broker.kill()  # everything queued or in flight in the broker is gone
            stream.more(100, "the agent accepting while offline")
            broker.start()
            stream.more(100, "more events after the broker is back")
        db = tmp_path / "timeline.db"
        wait_all_stored(db, stream.accepted, 60)
        assert_exactly_once(db, stream.accepted)
        assert not stream.errors  # the agent kept accepting while the broker was down
    finally:
        agent.stop()
        hub.stop()


def test_hub_killed_and_restarted_loses_and_duplicates_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    agent, hub = start_pair(tmp_path, broker)
    try:
        with Stream(agent.api_port or 0) as stream:
            stream.more(100, "100 accepted events")
            hub.kill()
            stream.more(100, "events while the hub is down")
            hub.start()
            stream.more(100, "events after the hub is back")
        db = tmp_path / "timeline.db"
        wait_all_stored(db, stream.accepted, 60)
        assert_exactly_once(db, stream.accepted)
        wait_for(
            lambda: get(agent.api_port or 0, "/v1/health")["queue"]["depth"] == 0,
            30,
            "the agent to see every event acked",
        )
    finally:
        agent.stop()
        hub.stop()


def test_two_hubs_share_the_load_through_a_shared_subscription(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hubs = []
    for name in ("hub-a", "hub-b"):
        d = tmp_path / name
        d.mkdir()
        # one timeline for both instances: watermarks come from the database
        cfg = write_hub_config(
            d, broker.url, tmp_path / "timeline.db", ingest={"share_group": "hub"}, hub_id=name
        )
        hub = Proc("hub_bridge", cfg, d / "hub.log")
        hub.start()
        hubs.append(hub)
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    try:
        accepted: dict[str, int] = {}
        for i in range(200):
            status, body = post(agent.api_port or 0, scan_event(i))
            assert status == 201
            accepted[body["id"]] = body["seq"]
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db)) >= 200, 30, "200 events")
        assert_exactly_once(db, accepted)
        stored = [
            get(h.api_port or 0, "/v1/health")["components"]["ingest"]["counters"].get("stored", 0)
            for h in hubs
        ]
        assert sum(stored) == 200
        assert all(n > 0 for n in stored), f"one hub did all the work: {stored}"
    finally:
        agent.stop()
        for h in hubs:
            h.stop()


def test_mutual_tls_to_the_broker(tmp_path: Path) -> None:
    tls = self_signed(tmp_path / "pki")
    files = {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}
    with Mosquitto(tls=tls) as broker:
        hub = Proc(
            "hub_bridge",
            write_hub_config(tmp_path, broker.url, broker={"tls": files}),
            tmp_path / "hub.log",
        )
        hub.start()
        cfg = write_agent_config(tmp_path, broker.url, broker={"tls": files})
        agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
        agent.start()
        try:
            status, body = post(agent.api_port or 0, scan_event(1))
            assert status == 201
            db = tmp_path / "timeline.db"
            wait_for(lambda: len(timeline_rows(db)) == 1, 20, "the event over TLS")
            assert timeline_rows(db)[0][1] == body["id"]
            # a client without a certificate is refused by the broker
            bare = write_agent_config(tmp_path, broker.url, device="van-bare")
            intruder = Proc("edge_agent", bare, tmp_path / "bare.log")
            intruder.start()
            wait_for(
                lambda: (
                    get(intruder.api_port or 0, "/v1/health")["broker"]["state"] == "disconnected"
                ),
                20,
                "the broker to refuse a client without certificate",
            )
            intruder.stop()
        finally:
            agent.stop()
            hub.stop()


def test_a_killed_agent_is_announced_offline_by_its_will(tmp_path: Path, broker: Mosquitto) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    cfg = write_agent_config(tmp_path, broker.url, broker={"keepalive": "1s"})
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    try:

        def state() -> str | None:
            devices = get(hub.api_port or 0, "/v1/devices")
            return devices[0]["state"] if devices else None

        wait_for(lambda: state() == "online", 10, "the birth message")
        agent.kill()  # no clean shutdown: only the broker can tell
        wait_for(lambda: state() == "offline", 15, "the will")
    finally:
        agent.stop()
        hub.stop()


def test_an_agent_that_cannot_start_exits_instead_of_hanging(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Its API port taken: the agent reports why and exits (systemd restarts it), the outbox
    closed behind it, rather than staying alive and serving nothing."""
    import socket

    import pytest

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = write_agent_config(tmp_path, broker.url, api={"listen": f"127.0.0.1:{port}"})
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    try:
        with pytest.raises(AssertionError, match="exited"):
            agent.start(timeout=30, replace_taken_port=False)
        assert agent.proc is not None and agent.proc.wait(10) != 0
        assert "address already in use" in (tmp_path / "agent.log").read_text().lower()
    finally:
        agent.stop()
        taken.close()
