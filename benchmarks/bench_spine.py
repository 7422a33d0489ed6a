"""Benchmarks of the spine (issue 2), each next to its peer in the same run; prints one JSON object.

    python benchmarks/bench_spine.py [a1 a2 b c d ...] [--seconds S] [--events N]

(a1) durable acceptance of single-event POSTs from 32 concurrent clients, next to the same HTTP
     stack (aiohttp) answering a no-op handler that parses the body;
(a2) durable acceptance of POSTs of 100-event batches, next to raw SQLite batched inserts
     (WAL, synchronous=FULL, 100 rows per commit);
(b)  backlog drain: N events buffered while the broker was down, from broker start until the hub's
     ack covers them all, next to paho publishing the same events one QoS 1 message each;
(c)  latency from POST to committed in the timeline (the hub's ack covering the seq) at 1,000
     events/s;
(d)  agent RSS and CPU, idle and at 10 events/s (and, for context, an aiohttp no-op handler's CPU
     at the same 10 requests/s);
(e)  agent start with a large backlog (0, 1M and 10M position events queued): process start to
     the API answering, and RSS.

Everything runs on loopback: a private mosquitto, the agent and the hub as subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.broker import Mosquitto, free_port  # noqa: E402

CLIENTS = 32
SCAN = {"type": "scan", "data": {"text": "JJD000123456789", "symbology": "code128", "source": "b"}}

NOOP_SERVER = """
import json, sys
from aiohttp import web
async def post(request):
    body = json.loads(await request.read())
    return web.json_response({"id": "x", "seq": 1} if isinstance(body, dict) else
                             [{"id": "x", "seq": i} for i, _ in enumerate(body)], status=201)
app = web.Application(client_max_size=4 * 1024 * 1024)
app.router.add_post("/v1/events", post)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


class Service:
    """``python -m MODULE run`` on a config written into ``work``; ready once it prints so."""

    def __init__(self, module: str, work: Path, name: str, cfg: dict[str, Any]) -> None:
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(cfg))
        with (work / f"{name}.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, "run", "--config", str(path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=ROOT,
            )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Agent(Service):
    """An agent subprocess on a temp outbox."""

    def __init__(self, work: Path, broker_url: str, **uplink: Any) -> None:
        self.port = free_port()
        cfg = {
            "device": {"id": "van-bench", "fleet": "bench"},
            "broker": {"url": broker_url},
            "outbox": {"path": str(work / "outbox.db"), "max_bytes": "1GiB"},
            "api": {"listen": f"127.0.0.1:{self.port}", "max_batch": 1000},
            "uplink": {"ack_timeout": "30s", "backoff_max": "1s", **uplink},
            "log": {"level": "WARNING"},
        }
        super().__init__("edge_agent", work, "agent", cfg)


class Hub(Service):
    """A hub subprocess on a temp timeline."""

    def __init__(self, work: Path, broker_url: str) -> None:
        cfg = {
            "broker": {"url": broker_url},
            "timeline": {"url": f"sqlite:///{work / 'timeline.db'}"},
            "api": {"listen": f"127.0.0.1:{free_port()}"},
            "log": {"level": "WARNING"},
        }
        super().__init__("hub_bridge", work, "hub", cfg)


async def hammer(url: str, body: Any, seconds: float, clients: int = CLIENTS) -> int:
    """POST ``body`` (or each of a list of pre-encoded ``bytes`` bodies in turn) from
    ``clients`` concurrent clients for ``seconds``; count 201 answers. Bodies are encoded before
    the clock starts: the client is not what is measured."""
    done = 0
    payloads = body if isinstance(body, list) and body and isinstance(body[0], bytes) else None
    single = json.dumps(body).encode() if payloads is None else b""
    headers = {"Content-Type": "application/json"}
    turn = 0
    deadline = time.monotonic() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done, turn
        while time.monotonic() < deadline:
            if payloads is None:
                payload = single
            else:
                payload = payloads[turn % len(payloads)]
                turn += 1
            async with http.post(url, data=payload, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"HTTP {resp.status}")
                done += 1

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return done


@contextlib.contextmanager
def noop_server() -> Iterator[tuple[int, int]]:
    """The peers' aiohttp no-op server (``NOOP_SERVER``) on a free port, once it accepts:
    (port, pid)."""
    with peer_server(NOOP_SERVER) as served:
        yield served


@contextlib.contextmanager
def peer_server(code: str, *args: str) -> Iterator[tuple[int, int]]:
    """``python -c code PORT *args`` on a free port, once it accepts: (port, pid)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port), *args])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait()


def noop_rate(body: Any, seconds: float) -> float:
    with noop_server() as (port, _pid):
        url = f"http://127.0.0.1:{port}/v1/events"
        return asyncio.run(hammer(url, body, seconds)) / seconds


def agent_rate(body: Any, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(Path(d), "mqtt://127.0.0.1:1")  # no broker: acceptance only
        try:
            url = f"http://127.0.0.1:{agent.port}/v1/events"
            return asyncio.run(hammer(url, body, seconds)) / seconds
        finally:
            agent.stop()


def best_of_alternating(
    ours: Callable[[float], float], peer: Callable[[float], float], seconds: float, rounds: int = 3
) -> tuple[float, float]:
    """Best rate of each side over rounds taken in turn: other load on a shared machine hits
    both sides alike instead of whichever happened to run during it."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        b.append(peer(seconds / rounds))
        a.append(ours(seconds / rounds))
    return max(a), max(b)


def bench_a1(seconds: float) -> dict[str, Any]:
    durable, noop = best_of_alternating(
        lambda s: agent_rate(SCAN, s), lambda s: noop_rate(SCAN, s), seconds
    )
    return {
        "durable_posts_per_s": round(durable),
        "noop_posts_per_s": round(noop),
        "ratio": round(durable / noop, 3),
        "target_ratio": 0.6,
    }


def raw_sqlite_rate(rows_per_commit: int, body: bytes, seconds: float) -> float:
    """The peer of (a2): the same rows the outbox writes for client-id events (the event and
    its client id), inserted by sqlite3 alone, ``rows_per_commit`` per commit, WAL + FULL."""
    with tempfile.TemporaryDirectory() as d:
        con = sqlite3.connect(Path(d) / "raw.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,"
            " prio INTEGER NOT NULL, accepted REAL NOT NULL, body BLOB NOT NULL)"
        )
        con.execute(
            "CREATE TABLE client_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
            " accepted REAL NOT NULL, digest BLOB) WITHOUT ROWID"
        )
        n = seq = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = time.time()
            ids = [f"app-{seq + i:012d}" for i in range(rows_per_commit)]
            rows = [(seq + i, ids[i], "scan", 1, now, body) for i in range(rows_per_commit)]
            seq += rows_per_commit
            con.execute("BEGIN")
            con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            con.executemany(
                "INSERT INTO client_ids VALUES (?, ?, ?, ?)",
                [(ids[i], rows[i][0], now, b"0" * 16) for i in range(rows_per_commit)],
            )
            con.execute("COMMIT")
            n += rows_per_commit
        con.close()
        return n / seconds


def backlog_bodies(posts: int, per_post: int = 100) -> list[bytes]:
    """A driver app's backlog: ``posts`` POST bodies of ``per_post`` scans, each with its own
    client id, encoded in advance."""
    out = []
    for p in range(posts):
        batch = [
            {**SCAN, "id": f"app-{p:06d}-{i:03d}", "data": {**SCAN["data"], "text": f"JJD{p}{i}"}}
            for i in range(per_post)
        ]
        out.append(json.dumps(batch).encode())
    return out


def bench_a2(seconds: float) -> dict[str, Any]:
    bodies = backlog_bodies(4000)
    body = json.dumps({**SCAN, "id": "0" * 36, "seq": 1, "fleet": "f", "device": "d"}).encode()
    durable, raw = best_of_alternating(
        lambda s: agent_rate(bodies, s) * 100, lambda s: raw_sqlite_rate(100, body, s), seconds
    )
    return {
        "durable_events_per_s": round(durable),
        "raw_sqlite_rows_per_s": round(raw),
        "ratio_to_raw": round(durable / raw, 3),
        "target_ratio": 0.6,
    }


def acked_watcher(
    port: int, topic: str, state_topic: str | None = None
) -> tuple[paho.Client, dict[str, Any]]:
    """Subscribe to an ack topic; record when each watermark arrived (and, with
    ``state_topic``, when the device's birth message arrived: ``birth``, monotonic)."""
    state: dict[str, Any] = {"seq": 0, "times": [], "birth": None}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        if msg.topic == state_topic:
            if doc.get("state") == "online" and not msg.retain and state["birth"] is None:
                state["birth"] = time.monotonic()
            return
        seq = doc["seq"]
        state["seq"] = seq
        state["times"].append((time.time(), seq))

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    if state_topic is not None:
        client.subscribe(state_topic, qos=1)
    client.loop_start()
    return client, state


def bench_b(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        broker = Mosquitto()
        agent = Agent(work, broker.url)
        url = f"http://127.0.0.1:{agent.port}/v1/events"

        async def fill() -> None:
            async with aiohttp.ClientSession() as http:
                for i in range(0, events, 1000):
                    batch = [
                        {**SCAN, "data": {**SCAN["data"], "text": f"JJD{k:012d}"}}
                        for k in range(i, min(events, i + 1000))
                    ]
                    async with http.post(url, json=batch) as resp:
                        assert resp.status == 201, await resp.text()

        asyncio.run(fill())
        agent.stop()  # the van is parked with its backlog while the hub comes up
        broker.start()
        hub = Hub(work, broker.url)
        watcher, state = acked_watcher(
            broker.port, "lm/v1/bench/van-bench/ack", "lm/v1/bench/van-bench/state"
        )
        time.sleep(0.5)  # the retained offline of the stop above has arrived
        t0 = time.monotonic()
        agent = Agent(work, broker.url)
        deadline = t0 + 600
        while state["seq"] < events and time.monotonic() < deadline:
            time.sleep(0.01)
        done = time.monotonic()
        # from the agent's birth message (issue 14): the drain, not the interpreter's start-up
        drain_s = done - (state["birth"] or t0)
        process_s = done - t0
        watcher.loop_stop()
        watcher.disconnect()
        agent.stop()
        hub.stop()

        # the peer: paho publishing the same events one QoS 1 message each
        con = sqlite3.connect(work / "outbox.db")
        con.close()
        bodies = [
            json.dumps({**SCAN, "seq": k, "id": f"id-{k}"}).encode() for k in range(1, events + 1)
        ]
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.max_inflight_messages_set(100)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        while not client.is_connected():
            time.sleep(0.01)
        t1 = time.monotonic()
        # at most 20,000 unacknowledged at once: paho's message ids are 16 bits
        pending: deque[paho.MQTTMessageInfo] = deque()
        for b in bodies:
            pending.append(client.publish("bench/peer", b, qos=1))
            if len(pending) >= 20_000:
                pending.popleft().wait_for_publish(60)
        for info in pending:
            info.wait_for_publish(60)
        peer_s = time.monotonic() - t1
        client.loop_stop()
        client.disconnect()
        broker.stop()
    ours = events / drain_s
    peer = events / peer_s
    return {
        "events": events,
        "drain_s": round(drain_s, 2),
        "from_process_start_s": round(process_s, 2),
        "drain_events_per_s": round(ours),
        "paho_qos1_events_per_s": round(peer),
        "ratio": round(ours / peer, 2),
        "target_ratio": 3,
        "all_acked": state["seq"] >= events,
    }


def bench_c(seconds: float, rate: int = 1000, window: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        broker = Mosquitto()
        broker.start()
        hub = Hub(work, broker.url)
        agent = Agent(work, broker.url, **({"window": window} if window else {}))
        watcher, state = acked_watcher(broker.port, "lm/v1/bench/van-bench/ack")
        sent: dict[int, float] = {}
        url = f"http://127.0.0.1:{agent.port}/v1/events"

        rtt: list[float] = []
        payload = json.dumps(SCAN).encode()
        headers = {"Content-Type": "application/json"}

        async def load() -> None:
            interval = 1 / rate
            conn = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=conn) as http:

                async def one() -> None:
                    t = time.time()
                    async with http.post(url, data=payload, headers=headers) as resp:
                        body = await resp.json()
                    sent[body["seq"]] = t
                    rtt.append((time.time() - t) * 1000)

                tasks = []
                start = time.monotonic()
                n = int(seconds * rate)
                for i in range(n):
                    delay = start + i * interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one()))
                await asyncio.gather(*tasks)

        asyncio.run(load())
        last = max(sent)
        deadline = time.monotonic() + 60
        while state["seq"] < last and time.monotonic() < deadline:
            time.sleep(0.01)
        watcher.loop_stop()
        watcher.disconnect()
        agent.stop()
        hub.stop()
        broker.stop()
    acks = sorted(state["times"], key=lambda x: x[1])
    lat = []
    j = 0
    for seq in sorted(sent):
        while j < len(acks) and acks[j][1] < seq:
            j += 1
        if j < len(acks):
            lat.append((acks[j][0] - sent[seq]) * 1000)
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)

    rtt.sort()
    return {
        "rate_per_s": rate,
        "events": len(sent),
        "post_rtt_ms_p50": round(rtt[len(rtt) // 2], 1),
        "post_rtt_ms_p99": round(rtt[int(len(rtt) * 0.99)], 1),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(lat[-1], 1),
        "target_p99_ms": 50,
    }


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def bench_d(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        broker = Mosquitto()
        broker.start()
        hub = Hub(work, broker.url)
        agent = Agent(work, broker.url)
        pid = agent.proc.pid
        time.sleep(2)
        c0, _ = proc_usage(pid)
        time.sleep(seconds)
        c1, rss_idle = proc_usage(pid)
        idle_cpu = (c1 - c0) / seconds

        c2, _ = proc_usage(pid)
        t = time.monotonic()
        asyncio.run(trickle(agent.port, seconds))
        elapsed = time.monotonic() - t
        c3, rss_busy = proc_usage(pid)
        busy_cpu = (c3 - c2) / elapsed
        agent.stop()
        hub.stop()
        floor = floor_cpu_at_10_per_s(seconds, broker.port)
        broker.stop()
    return {
        "idle_rss_mb": round(rss_idle / 2**20, 1),
        "idle_cpu_pct": round(idle_cpu * 100, 2),
        "rss_mb_at_10_per_s": round(rss_busy / 2**20, 1),
        "cpu_pct_at_10_per_s": round(busy_cpu * 100, 2),
        "noop_http_cpu_pct_at_10_per_s": round(noop_cpu_at_10_per_s(seconds) * 100, 2),
        "bare_pipeline_cpu_pct_at_10_per_s": round(floor * 100, 2),
        "target_rss_mb": 60,
        "target_cpu_pct": 2,
    }


async def trickle(port: int, seconds: float) -> None:
    """One single-event POST every 100 ms for ``seconds``."""
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        for i in range(int(seconds * 10)):
            delay = start + i / 10 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with http.post(f"http://127.0.0.1:{port}/v1/events", json=SCAN):
                pass


def noop_cpu_at_10_per_s(seconds: float) -> float:
    """Context for (d): the CPU share of aiohttp answering the same trickle with a no-op
    handler (the HTTP part alone, a floor the agent cannot go under on this machine)."""
    with noop_server() as (port, pid):
        c0, _ = proc_usage(pid)
        t = time.monotonic()
        asyncio.run(trickle(port, seconds))
        elapsed = time.monotonic() - t
        c1, _ = proc_usage(pid)
        return (c1 - c0) / elapsed


FLOOR_AGENT = """
import asyncio, json, sqlite3, sys
import paho.mqtt.client as paho
from aiohttp import web
port, broker_port, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=FULL")
con.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="floor", protocol=paho.MQTTv5)
mqtt.on_connect = lambda c, *_: c.subscribe("lm/v1/bench/van-floor/ack", qos=1)
mqtt.connect("127.0.0.1", broker_port)
mqtt.loop_start()
seq = 0
def commit(s, body):
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO events VALUES (?, ?)", (s, body))
    con.execute("COMMIT")
async def post(request):
    global seq
    event = json.loads(await request.read())
    seq += 1
    body = json.dumps({**event, "seq": seq}).encode()
    await asyncio.get_running_loop().run_in_executor(None, commit, seq, body)
    mqtt.publish("lm/v1/bench/van-floor/events", b'{"events":[' + body + b']}', qos=1)
    return web.json_response({"id": "x", "seq": seq}, status=201)
app = web.Application()
app.router.add_post("/v1/events", post)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


def floor_cpu_at_10_per_s(seconds: float, broker_port: int) -> float:
    """Context for (d): the least the same four steps cost here, done bare. An aiohttp handler
    parses the event, commits it to SQLite (WAL, FULL) on an executor thread, answers and
    publishes it at QoS 1 with paho's own network thread; an echo client acks each message on
    the ack topic, which the floor agent receives at QoS 1: the four MQTT packets per event of
    the agent, without validation, group commits, deletes, health or reconnects."""
    echo = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_message(c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        seq = json.loads(msg.payload)["events"][-1]["seq"]
        c.publish("lm/v1/bench/van-floor/ack", json.dumps({"seq": seq}), qos=1, retain=True)

    echo.on_message = on_message
    echo.connect("127.0.0.1", broker_port)
    echo.subscribe("lm/v1/bench/van-floor/events", qos=1)
    echo.loop_start()
    try:
        with (
            tempfile.TemporaryDirectory() as d,
            peer_server(FLOOR_AGENT, str(broker_port), f"{d}/floor.db") as (port, pid),
        ):
            time.sleep(1)  # connected and subscribed
            c0, _ = proc_usage(pid)
            t = time.monotonic()
            asyncio.run(trickle(port, seconds))
            elapsed = time.monotonic() - t
            c1, _ = proc_usage(pid)
    finally:
        echo.loop_stop()
        echo.disconnect()
    return (c1 - c0) / elapsed


def fill_outbox(path: Path, events: int) -> None:
    """An outbox holding ``events`` unacked position pings, written straight into its tables
    (the agent's own schema, made by opening it once) so that filling does not take an hour."""
    import asyncio as aio

    from edge_agent.outbox import Outbox

    async def make() -> None:
        ob = await Outbox.open(path, "bench", "van-bench", max_bytes=2**40, disk_reserve_bytes=0)
        await ob.close()

    aio.run(make())
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = time.time()
    total = 0
    for start in range(1, events + 1, 100_000):
        rows = []
        for seq in range(start, min(events, start + 99_999) + 1):
            body = json.dumps(
                {"id": f"{seq:032x}", "seq": seq, "fleet": "bench", "device": "van-bench",
                 "type": "gnss.fix", "ts": "2026-11-21T08:00:00.000Z", "clock": "gnss",
                 "data": {"lat": 52.1, "lon": 4.3, "mode": 3}},
                separators=(",", ":"),
            ).encode()  # fmt: skip
            total += len(body)
            rows.append((seq, f"{seq:032x}", "gnss.fix", 0, now, body))
        con.execute("BEGIN")
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    con.execute(
        "UPDATE meta SET value = CASE key WHEN 'next_seq' THEN ? WHEN 'depth' THEN ?"
        " WHEN 'bytes' THEN ? ELSE value END",
        (events + 1, events, total),
    )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def bench_start(sizes: list[int]) -> dict[str, Any]:
    """(e) agent start with a large backlog: from the process start to the API answering, and
    RSS then, for each queue size (Greengrass took about 5 minutes with 26.5k spooled)."""
    out: dict[str, Any] = {}
    for events in sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            work = Path(d)
            if events:
                fill_outbox(work / "outbox.db", events)
            size = (work / "outbox.db").stat().st_size if events else 0
            t0 = time.monotonic()
            agent = Agent(work, "mqtt://127.0.0.1:1")  # returns on the ready line
            health = None
            while health is None:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{agent.port}/v1/health", timeout=5
                    ) as resp:
                        health = json.loads(resp.read())
                except OSError:
                    time.sleep(0.01)
            answered = time.monotonic() - t0
            _, rss = proc_usage(agent.proc.pid)
            time.sleep(1.0)
            _, rss_later = proc_usage(agent.proc.pid)
            agent.stop()
            out[str(events)] = {
                "file_mb": round(size / 2**20),
                "to_api_s": round(answered, 2),
                "rss_mb": round(rss / 2**20, 1),
                "rss_mb_1s_later": round(rss_later / 2**20, 1),
                "depth": health["queue"]["depth"],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", default=["a1", "a2", "b", "c", "d"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument(
        "--backlogs", default="0,1000000,10000000", help="(e): queue sizes, comma-separated"
    )
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    for name in args.which:
        if name == "a1":
            out["a1"] = bench_a1(args.seconds)
        elif name == "a2":
            out["a2"] = bench_a2(args.seconds)
        elif name == "b":
            out["b"] = bench_b(args.events)
        elif name == "c":
            out["c"] = bench_c(args.seconds)
        elif name == "d":
            out["d"] = bench_d(args.seconds)
        elif name == "e":
            out["e"] = bench_start([int(n) for n in args.backlogs.split(",")])
        else:
            raise SystemExit(f"unknown benchmark {name!r}")
        print(json.dumps({name: out[name]}), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
