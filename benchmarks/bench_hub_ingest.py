"""Hub ingest throughput next to a bare paho subscriber, in the same run; prints one JSON object.

    python benchmarks/bench_hub_ingest.py [--backend sqlite|postgresql] [--hubs N]
                                          [--devices 50] [--batches 20] [--events 100]

``--devices`` simulated devices each publish ``--batches`` events messages of ``--events``
envelopes (valid, as agents make them: mostly ``gnss.fix``, some ``scan``; encoded before the
clock starts) on ``lm/v1/bench/{device}/events``, QoS 1, through a private mosquitto.

- **hub**: ``--hubs`` hub processes (``python -m hub_bridge run``) sharing
  ``$share/hub/lm/v1/+/+/events``, each with its own ``hub_id``. The clock runs from the first
  publish to the ack (``lm/v1/+/+/ack``, watched by a paho client) that covers every device's
  last seq. Reported: events/s, CPU seconds per event of each hub process (from /proc), and on
  PostgreSQL the lock waits seen by sampling ``pg_locks`` (ungranted) every 50 ms.
- **peer**: a bare paho subscriber process that only counts the events of the same messages
  (QoS 1 subscription); its clock runs from the first publish to the last message it counted.

Both run back to back on one broker; ``ratio`` = hub / peer. On PostgreSQL a private server is
started (``simulators.postgres``), never the machine's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.wire.envelope import encode_batch, encode_checked, new_event_id  # noqa: E402
from simulators.broker import Mosquitto, free_port  # noqa: E402

FLEET = "bench"

PEER = """
import sys, time, json
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, expect = int(sys.argv[1]), int(sys.argv[2])
seen = {"events": 0, "last": 0.0}
done = __import__("threading").Event()
def on_message(_c, _u, msg):
    seen["events"] += msg.payload.count(b'"seq":')
    seen["last"] = time.time()
    if seen["events"] >= expect:
        done.set()
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="peer", protocol=paho.MQTTv5)
c.on_message = on_message
c.connect("127.0.0.1", port)
c.subscribe("$share/peer/lm/v1/+/+/events", qos=1)
c.loop_start()
print("ready", flush=True)
done.wait(600)
print(json.dumps({"events": seen["events"], "last": seen["last"]}), flush=True)
c.disconnect()
"""


def machine() -> dict[str, Any]:
    """CPU model, cores, Python: what the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def make_payloads(devices: int, batches: int, per_batch: int) -> list[tuple[str, bytes]]:
    """Every (topic, payload) to publish, interleaved across devices as a fleet sends them:
    each device's batches in seq order; 4 fixes to 1 scan."""
    rng = random.Random(11)
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    per_device: list[list[tuple[str, bytes]]] = []
    for d in range(devices):
        device = f"van-{d:03d}"
        topic = f"lm/v1/{FLEET}/{device}/events"
        out = []
        seq = 0
        for _ in range(batches):
            bodies = []
            for _ in range(per_batch):
                seq += 1
                ts = (start + timedelta(milliseconds=250 * seq)).isoformat(timespec="milliseconds")
                env: dict[str, Any] = {
                    "id": new_event_id(),
                    "seq": seq,
                    "fleet": FLEET,
                    "device": device,
                    "ts": ts[:23] + "Z",
                    "clock": "gnss",
                }
                if seq % 5:
                    env["type"] = "gnss.fix"
                    env["data"] = {
                        "lat": round(52.3 + rng.random() / 10, 7),
                        "lon": round(4.8 + rng.random() / 10, 7),
                        "alt_m": 3.5,
                        "speed_mps": round(rng.random() * 14, 2),
                        "track_deg": round(rng.random() * 360, 1),
                        "mode": 3,
                        "quality": 1,
                        "hdop": 0.9,
                        "sats": 11,
                    }
                else:
                    env["type"] = "scan"
                    env["data"] = {
                        "text": f"JJD{d:04d}{seq:010d}",
                        "symbology": "code128",
                        "source": "handheld-1",
                    }
                    env["ref"] = {"parcel": f"JJD{d:04d}{seq:010d}", "route": "r-1"}
                # as the agent's outbox encodes it (the contract's field order)
                bodies.append(
                    encode_checked(
                        env["id"], seq, FLEET, device, env["type"], env["ts"], "gnss",
                        env["data"], env.get("ref"),
                    )
                )  # fmt: skip
            out.append((topic, encode_batch(bodies)))
        per_device.append(out)
    return [per_device[d][b] for b in range(batches) for d in range(devices)]


def publisher(port: int) -> paho.Client:
    """A paho publisher allowed many QoS 1 messages in flight (the broker queues the rest)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(client: paho.Client, payloads: list[tuple[str, bytes]]) -> float:
    """Publish everything at QoS 1; return the wall time of the first publish."""
    t0 = time.time()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in payloads]
    for info in infos:
        info.wait_for_publish(120)
    return t0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_peer(port: int, payloads: list[tuple[str, bytes]], expect: int) -> dict[str, Any]:
    """The bare subscriber's events/s on the same messages."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PEER, str(port), str(expect)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the SUBSCRIBE is in place at the broker (no ack to wait for here)
        client = publisher(port)
        t0 = publish_all(client, payloads)
        line = proc.stdout.readline()
        client.loop_stop()
        client.disconnect()
        out = json.loads(line)
        seconds = out["last"] - t0
        return {
            "events": out["events"],
            "seconds": round(seconds, 3),
            "events_per_s": round(out["events"] / seconds),
        }
    finally:
        proc.wait(10)


class AckWatch:
    """Every ack the hubs publish: the highest per device and the time it arrived; counts
    watermarks that went backwards (there must be none)."""

    def __init__(self, port: int, last: dict[str, int]) -> None:
        self.last = last
        self.top: dict[str, int] = {}
        self.backwards = 0
        self.done = threading.Event()
        self.done_at = 0.0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_message = self._on
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"lm/v1/{FLEET}/+/ack", qos=1)
        self._client.loop_start()

    def _on(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        device = msg.topic.split("/")[3]
        seq = int(json.loads(msg.payload)["seq"])
        if seq < self.top.get(device, 0):
            self.backwards += 1
        self.top[device] = max(seq, self.top.get(device, 0))
        if not self.done.is_set() and all(self.top.get(d, 0) >= s for d, s in self.last.items()):
            self.done_at = time.time()
            self.done.set()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Hub:
    """A hub process on the bench's broker and timeline."""

    def __init__(self, work: Path, port: int, url: str, hub_id: str) -> None:
        cfg = {
            "hub_id": hub_id,
            "broker": {"url": f"mqtt://127.0.0.1:{port}"},
            "timeline": {"url": url},
            "api": {"listen": f"127.0.0.1:{free_port()}"},
            "ingest": {"share_group": "hub"},
            "log": {"level": "WARNING"},
        }
        path = work / f"{hub_id}.yaml"
        path.write_text(json.dumps(cfg))
        with (work / f"{hub_id}.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub_bridge", "run", "--config", str(path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=ROOT,
            )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError(f"hub {hub_id} exited: {(work / f'{hub_id}.log').read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class LockSampler:
    """Samples PostgreSQL's ungranted locks every 50 ms while the hubs ingest."""

    def __init__(self, dsn: str) -> None:
        import psycopg  # only on the PostgreSQL backend

        self._con = psycopg.connect(dsn, autocommit=True)
        self.samples = 0
        self.waiting_samples = 0
        self.max_waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            row = self._con.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            waiting = int(row[0]) if row else 0
            self.samples += 1
            self.waiting_samples += waiting > 0
            self.max_waiting = max(self.max_waiting, waiting)

    def close(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._con.close()
        return {
            "samples": self.samples,
            "samples_with_waits": self.waiting_samples,
            "max_waiting": self.max_waiting,
        }


@contextlib.contextmanager
def timeline_url(backend: str, work: Path) -> Iterator[str]:
    """The timeline the hubs share: a SQLite file, or a private PostgreSQL server."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'timeline.db'}"
        return
    from simulators.postgres import PostgresServer  # H1's private server (initdb, pg_ctl)

    with PostgresServer() as server:  # fsync on: durable commits, as in production
        yield server.create_database("bench")


def run_hubs(
    port: int, url: str, hubs: int, payloads: list[tuple[str, bytes]], work: Path
) -> dict[str, Any]:
    """``hubs`` hub processes ingesting ``payloads``: throughput, CPU, lock waits."""
    last: dict[str, int] = {}
    for topic, payload in payloads:
        device = topic.split("/")[3]
        last[device] = last.get(device, 0) + payload.count(b'"seq":')
    procs = [Hub(work, port, url, f"bench-{i}") for i in range(hubs)]
    watch = AckWatch(port, last)
    sampler = LockSampler(url) if url.startswith("postgresql") else None
    try:
        cpu0 = [cpu_seconds(h.proc.pid) for h in procs]
        client = publisher(port)
        t0 = publish_all(client, payloads)
        if not watch.done.wait(600):
            raise RuntimeError(f"the hubs did not ack everything: {watch.top}")
        cpu = [cpu_seconds(h.proc.pid) - c for h, c in zip(procs, cpu0, strict=True)]
        client.loop_stop()
        client.disconnect()
    finally:
        locks = sampler.close() if sampler is not None else None
        watch.close()
        for h in procs:
            h.stop()
    events = sum(last.values())
    seconds = watch.done_at - t0
    out: dict[str, Any] = {
        "hubs": hubs,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "cpu_s_per_event_per_hub_us": [round(c / events * hubs * 1e6, 1) for c in cpu],
        "cpu_s_total_per_event_us": round(sum(cpu) / events * 1e6, 1),
        "cpu_s_per_hub": [round(c, 2) for c in cpu],
        "watermarks_backwards": watch.backwards,
    }
    if locks is not None:
        out["lock_waits"] = locks
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--hubs", type=int, default=1)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--events", type=int, default=100, help="events per message")
    args = ap.parse_args()
    if args.backend == "sqlite" and args.hubs != 1:
        ap.error("N hubs need PostgreSQL: SQLite is one hub on one machine")
    payloads = make_payloads(args.devices, args.batches, args.events)
    expect = args.devices * args.batches * args.events
    with tempfile.TemporaryDirectory() as d, Mosquitto() as broker:
        work = Path(d)
        peer = run_peer(broker.port, payloads, expect)
        with timeline_url(args.backend, work) as url:
            hub = run_hubs(broker.port, url, args.hubs, payloads, work)
    print(
        json.dumps(
            {
                "machine": machine(),
                "backend": args.backend,
                "devices": args.devices,
                "messages": len(payloads),
                "events_per_message": args.events,
                "hub": hub,
                "peer_bare_paho_subscriber": peer,
                "ratio": round(hub["events_per_s"] / peer["events_per_s"], 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
