"""The carrier endpoint, ``POST /v1/fleets/{fleet}/events``, against the timeline it writes to.

A carrier posts 100-envelope requests (5 trucks, each request one truck's next 100 events) with a
fleet-scoped token to the real hub API (aiohttp on a real port, a real client over HTTP). Peer,
in the same run on the same kind of store: the same events stored straight into a timeline with
``store_many``, one batch per request, as the MQTT ingest does after its checks (no HTTP, no
per-event answer). The difference is the price of the endpoint: HTTP, the check of each envelope
as a one-event batch of the MQTT ingest's ``check_events``, and one ``Batch`` per event so the
answer says of each whether it was stored, a duplicate or rejected.

    .venv/bin/python benchmarks/bench_carrier_api.py [--requests 100] [--postgres]

``--postgres`` runs both on a private PostgreSQL too (initdb in a temp dir, fsync on). Prints one
JSON object: events/s of each, per backend, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.platform.health import HealthRegistry
from hub_bridge.api import build_app
from hub_bridge.backends import open_timeline
from hub_bridge.tenants import Tenants
from hub_bridge.timeline import Batch
from tests.inproc import Served

TOKEN = secrets.token_urlsafe(32)
TRUCKS = 5
PER_REQUEST = 100


def envelope(truck: int, seq: int) -> dict[str, Any]:
    return {
        "id": f"t{truck}-{seq}",
        "seq": seq,
        "fleet": "fastlane",
        "device": f"truck-{truck}",
        "type": "pod",
        "ts": "2026-11-21T09:00:00.000Z",
        "clock": "ntp",
        "data": {"parcel": f"P{truck}-{seq}", "kind": "none"},
        "ref": {"parcel": f"P{truck}-{seq}"},
    }


def requests_of(n: int) -> list[list[dict[str, Any]]]:
    out = []
    for r in range(n):
        truck, round_ = r % TRUCKS, r // TRUCKS
        first = round_ * PER_REQUEST + 1
        out.append([envelope(truck, s) for s in range(first, first + PER_REQUEST)])
    return out


def endpoint(url: str, reqs: list[list[dict[str, Any]]]) -> float:
    """Events/s through the API."""
    tenants = Tenants.from_tokens([("fastlane", frozenset({"fastlane"}), ["write-events"], TOKEN)])

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await open_timeline(url)
        return build_app(timeline, HealthRegistry(), tenants=tenants), timeline.close

    bodies = [json.dumps({"events": r}).encode() for r in reqs]
    with Served(make) as served:
        start = time.perf_counter()
        for body in bodies:
            req = urllib.request.Request(
                served.url + "/v1/fleets/fastlane/events",
                data=body,
                method="POST",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.loads(resp.read())
            assert answer["stored"] == PER_REQUEST, answer
        elapsed = time.perf_counter() - start
    return len(reqs) * PER_REQUEST / elapsed


def direct(url: str, reqs: list[list[dict[str, Any]]]) -> float:
    """Events/s of the same events stored straight, one batch per request."""

    async def run() -> float:
        timeline = await open_timeline(url)
        try:
            start = time.perf_counter()
            for r in reqs:
                batch = Batch("fastlane", r[0]["device"], r, [[] for _ in r])
                (result,) = await timeline.store_many([batch])
                assert result.stored == PER_REQUEST
            return len(reqs) * PER_REQUEST / (time.perf_counter() - start)
        finally:
            await timeline.close()

    return asyncio.run(run())


def compare(urls: Callable[[], str], reqs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    api = endpoint(urls(), reqs)
    peer = direct(urls(), reqs)
    return {
        "endpoint_events_per_s": round(api),
        "store_many_events_per_s": round(peer),
        "ratio": round(api / peer, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--postgres", action="store_true")
    args = p.parse_args()
    reqs = requests_of(args.requests)
    out: dict[str, Any] = {"requests": args.requests, "events_per_request": PER_REQUEST}
    with tempfile.TemporaryDirectory() as tmp:
        count = iter(range(1000))
        out["sqlite"] = compare(lambda: f"sqlite://{tmp}/t{next(count)}.db", reqs)
    if args.postgres:
        from simulators.postgres import PostgresServer

        with PostgresServer() as pg:
            out["postgresql"] = compare(pg.create_database, reqs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
