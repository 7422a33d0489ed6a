"""Event in, status and webhook out: latency at 1,000 events/s (issue 12: p99 <= 250 ms).

A plain script (``python benchmarks/bench_delivery.py [--seconds 10] [--rate 1000] [--backend
sqlite|postgresql]``) that prints one JSON object. One hub's delivery side on a real timeline
(an SQLite file, or a private PostgreSQL server started for the run): the projector with the real
delivery model, the webhook worker and the stream hub (``DeliveryService``), and a webhook
receiver in a process of its own (a real aiohttp server on loopback, answering 200 at once).

Fifty routes of 40 stops (two parcels each) are sent as manifests through the timeline's
command queue and their vans leave the depot; then events are stored in the timeline at
``rate`` per second, in batches of 50 every 50 ms, as the bridge stores what devices publish
(the MQTT ingest itself is measured by ``bench_hub_ingest.py``). Two mixes:

- ``pods``: every event a proof of delivery of another parcel, so every event changes a status
  and makes a webhook (1,000 webhooks a second);
- ``fleet``: what vans send: 80 % GNSS fixes (each refreshes the route's ETAs; a ``stop.eta``
  notice when one moved a minute or more), 20 % proofs of delivery.

For each PoD: ``status`` is the time from the event's commit in the timeline to the commit of its
parcel's new status in the delivery store (what the API answers from then on); ``webhook`` the
time to the receiver getting the signed POST. The receiver subscribes to ``parcel.status``.
The bridge's commit wakes the projector, as ``DeliveryService.events_stored`` does in the hub.

``--client N`` measures the webhook worker's HTTP client alone: N signed POSTs, 64 at a time,
through ``push.post`` on the worker's session (``push.open_session``) to the same receiver,
against aiohttp's client with its defaults in the same run (CPU of this process per POST).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.wire.envelope import format_ts, new_event_id  # noqa: E402
from hub_bridge.backends import open_delivery_store, open_timeline  # noqa: E402
from hub_bridge.commands import CommandLimits  # noqa: E402
from hub_bridge.delivery.projector import DeliveryConfig, DeliveryService  # noqa: E402
from hub_bridge.delivery.push import PushSettings, open_session, post, sign  # noqa: E402
from hub_bridge.delivery.store import (  # noqa: E402
    LoggedNotice,
    Subscription,
)
from hub_bridge.timeline import Batch  # noqa: E402

TARGET_P99_S = 0.250
ROUTES = 50
STOPS = 40
BATCH = 50


def _receiver() -> None:
    """The receiver process: answers 200 at once, prints what it got when told to stop."""
    got: list[tuple[str, str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        t = time.time()
        body = json.loads(await request.read())
        got.append((body["kind"], body["key"], t))
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    json.dump(got, sys.stdout)


def _manifest(r: int) -> dict[str, Any]:
    stops = []
    for s in range(STOPS):
        lat, lon = 52.0 + 0.001 * (s + 1), 4.0 + 0.01 * r
        stops.append(
            {
                "id": f"r{r}-s{s}",
                "lat": lat,
                "lon": lon,
                "radius_m": 40,
                "parcels": [f"r{r}-s{s}-p0", f"r{r}-s{s}-p1"],
            }
        )
    return {
        "route": f"r{r}",
        "depot": {"lat": 52.0, "lon": 4.0 + 0.01 * r, "radius_m": 150},
        "stops": stops,
    }


class Injector:
    """Makes the vans' envelopes, numbered per device, with event times at the wall clock."""

    def __init__(self) -> None:
        self.seq = dict.fromkeys(range(ROUTES), 0)
        self.next_parcel = dict.fromkeys(range(ROUTES), 0)
        self.fix_n = dict.fromkeys(range(ROUTES), 0)

    def env(self, r: int, type_: str, data: dict[str, Any], **ref: str) -> dict[str, Any]:
        self.seq[r] += 1
        from datetime import UTC, datetime

        e: dict[str, Any] = {
            "id": new_event_id(),
            "seq": self.seq[r],
            "fleet": "acme",
            "device": f"van-{r}",
            "type": type_,
            "ts": format_ts(datetime.now(UTC)),
            "clock": "gnss",
            "data": data,
        }
        if ref:
            e["ref"] = ref
        return e

    def pod(self, r: int) -> tuple[dict[str, Any], str]:
        k = self.next_parcel[r]
        self.next_parcel[r] += 1
        s, p = divmod(k, 2)
        pid = f"r{r}-s{s % STOPS}-p{p}" if k < STOPS * 2 else f"r{r}-x{k}"
        lat = 52.0 + 0.001 * (s % STOPS + 1)
        data = {"parcel": pid, "kind": "signature", "lat": lat, "lon": 4.0 + 0.01 * r}
        return self.env(r, "pod", data, parcel=pid), pid

    def fix(self, r: int) -> dict[str, Any]:
        self.fix_n[r] += 1
        lat = 52.0 + 0.00001 * self.fix_n[r]
        data = {"lat": lat, "lon": 4.0 + 0.01 * r, "mode": 3, "speed_mps": 8.0}
        return self.env(r, "gnss.fix", data)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50_ms": round(_pct(xs, 0.50) * 1000, 1),
        "p95_ms": round(_pct(xs, 0.95) * 1000, 1),
        "p99_ms": round(_pct(xs, 0.99) * 1000, 1),
        "max_ms": round(max(xs) * 1000, 1) if xs else None,
    }


async def run(mix: str, seconds: float, rate: int, pg_url: str | None = None) -> dict[str, Any]:
    """One run of ``mix`` at ``rate`` events per second for ``seconds``, on SQLite or on the
    PostgreSQL database ``pg_url``."""
    receiver, port = _start_receiver()  # started once, before anything runs
    with tempfile.TemporaryDirectory() as tmp:
        url = pg_url or f"sqlite://{Path(tmp) / 'timeline.db'}"
        timeline = await open_timeline(url)
        store = await open_delivery_store(url)
        status_at: dict[str, float] = {}
        logged = store.log_notices

        async def timed(*a: Any, **kw: Any) -> list[LoggedNotice]:
            out = await logged(*a, **kw)
            now = time.time()
            for n in out:
                if n.kind == "parcel.status":
                    status_at.setdefault(n.key, now)
            return out

        store.log_notices = timed  # type: ignore[method-assign]
        config = DeliveryConfig.model_validate(
            {
                "checkpoint": float(os.environ.get("BENCH_CHECKPOINT", "30")),
                "webhooks": {"allow_private": True},  # the receiver is on loopback
            }
        )
        service = DeliveryService(timeline, store, config)
        inj = Injector()
        for r in range(ROUTES):
            cid = new_event_id()
            body = json.dumps({"id": cid, **_manifest(r)})
            await timeline.add_command("acme", f"van-{r}", "manifest", cid, body, CommandLimits())
        task = asyncio.create_task(service.run())
        # the vans leave the depot: every parcel out for delivery (not measured)
        departs = [
            inj.env(r, "trip.depart", {"zone": "depot"}, route=f"r{r}") for r in range(ROUTES)
        ]
        for r, e in enumerate(departs):
            await timeline.store("acme", f"van-{r}", [e], [[]])
        service.events_stored()
        deadline = time.monotonic() + 60
        while len(status_at) < ROUTES * STOPS * 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        warmup = len(status_at)
        status_at.clear()
        # subscribed now: the receiver gets what the measured events cause, not the departures
        if os.environ.get("BENCH_NO_HOOK") is None:
            await store.add_subscription(
                Subscription(
                    "wh_00000000000000be",
                    "acme",
                    f"http://127.0.0.1:{port}/hook",
                    "whsec_" + "b" * 32,
                    kinds=("parcel.status",),
                    created=time.time(),
                )
            )
            # the worker reads the subscriptions once a second: measured from when it has this
            # one (else the first second's webhooks wait up to a second for it, a start-up
            # artefact the p99 of a 20 s run would mostly be)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not service.worker._subs:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        stored_at: dict[str, float] = {}
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        sent = 0
        k = 0
        while time.monotonic() - start < seconds:
            by_dev: dict[int, list[dict[str, Any]]] = {}
            pods: list[str] = []
            for _ in range(BATCH):
                r = k % ROUTES
                k += 1
                if mix == "pods" or k % 5 == 0:
                    e, pid = inj.pod(r)
                    pods.append(pid)
                else:
                    e = inj.fix(r)
                by_dev.setdefault(r, []).append(e)
            # one commit for all the devices' batches, as the bridge's group commit does
            await timeline.store_many(
                [Batch("acme", f"van-{r}", es, [[] for _ in es]) for r, es in by_dev.items()]
            )
            now = time.time()
            for pid in pods:
                stored_at[pid] = now
            service.events_stored()
            sent += BATCH
            nxt = start + (sent / rate)
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        elapsed = time.monotonic() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(set(stored_at) & set(status_at)) < len(  # noqa: ASYNC110
            stored_at
        ):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last webhooks
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        receiver.send_signal(signal.SIGTERM)
        out, _ = receiver.communicate(timeout=30)
        got = json.loads(out)
        hooked: dict[str, float] = {}
        for kind, key, t in got:
            if kind == "parcel.status":
                hooked.setdefault(key, t)
        await store.close()
        await timeline.close()
    status = [status_at[p] - t for p, t in stored_at.items() if p in status_at]
    webhook = [hooked[p] - t for p, t in stored_at.items() if p in hooked]
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "mix": mix,
        "events": sent,
        "events_per_s": round(sent / elapsed),
        "pods": len(stored_at),
        "warmup_statuses": warmup,
        "status": _summary(status),
        "webhook": _summary(webhook),
        "status_missing": len(stored_at) - len(status),
        "webhook_missing": len(stored_at) - len(webhook),
        "hub_cpu_per_s": round(cpu / elapsed, 3),
        "p99_ok": bool(webhook) and max(_pct(status, 0.99), _pct(webhook, 0.99)) <= TARGET_P99_S,
    }


def _start_receiver() -> tuple[subprocess.Popen[str], int]:
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    return receiver, int(receiver.stdout.readline())


async def client(n: int, width: int = 64) -> dict[str, Any]:
    """``n`` POSTs through the worker's client and through aiohttp's defaults, in turns."""
    import aiohttp

    receiver, port = _start_receiver()
    url = f"http://127.0.0.1:{port}/hook"
    body = json.dumps({"kind": "bench", "key": "k", "payload": {"parcel": "p-1"}}).encode()

    def headers(i: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-LM-Event": "parcel.status",
            "X-LM-Delivery": f"n-{i}",
            "X-LM-Signature": sign("whsec_" + "b" * 32, body, int(time.time())),
        }

    async def worker_client(http: aiohttp.ClientSession, i: int) -> int:
        return await post(http, url, headers(i), body)

    async def default_client(http: aiohttp.ClientSession, i: int) -> int:
        async with http.post(url, data=body, headers=headers(i)) as r:
            await r.read()
            return r.status

    async def one(name: str) -> dict[str, Any]:
        http = (
            open_session(PushSettings(), user_agent="bench")
            if name == "worker"
            else aiohttp.ClientSession()
        )
        send = worker_client if name == "worker" else default_client
        statuses: list[int] = []

        async def lanes() -> None:
            queue = iter(range(n))

            async def lane() -> None:
                for i in queue:
                    statuses.append(await send(http, i))

            await asyncio.gather(*(lane() for _ in range(width)))

        async with http:
            await lanes()  # warm: the connections made
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            await lanes()
            wall = time.monotonic() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        assert statuses.count(200) == 2 * n, "every POST answered 200"
        return {
            "client": name,
            "posts": n,
            "posts_per_s": round(n / wall),
            "cpu_us_per_post": round(cpu / n * 1e6, 1),
        }

    try:
        # in turns, twice: the machine's other work falls on both alike
        runs = [await one(name) for _ in range(2) for name in ("worker", "aiohttp-defaults")]
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.communicate(timeout=60)
    return {"width": width, "runs": runs}


def main() -> None:
    """Print the JSON result of both mixes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--mix", choices=["pods", "fleet", "both"], default="both")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--client", type=int, metavar="N", help="the webhook client alone: N POSTs")
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        _receiver()
        return
    if args.client:
        load = [round(x, 2) for x in os.getloadavg()]
        result = asyncio.run(client(args.client))
        print(json.dumps({"benchmark": "webhook client", "load_before": load, **result}, indent=2))
        return
    mixes = ["pods", "fleet"] if args.mix == "both" else [args.mix]
    load = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews the figures
    if args.backend == "sqlite":
        results = [asyncio.run(run(m, args.seconds, args.rate)) for m in mixes]
    else:
        from simulators.postgres import PostgresServer

        results = []
        with PostgresServer() as pg:  # a private server, fsync on, as a hub would run it
            for m in mixes:
                results.append(asyncio.run(run(m, args.seconds, args.rate, pg.create_database())))
    print(
        json.dumps(
            {
                "benchmark": "delivery: event stored -> status committed and webhook received",
                "rate": args.rate,
                "backend": args.backend,
                "seconds": args.seconds,
                "target_p99_ms": TARGET_P99_S * 1000,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_before": load,
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                },
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
