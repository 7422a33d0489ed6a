"""One device's 1,000 events read from a PostgreSQL timeline holding millions (the store's part
of ``GET /v1/events``), and the same read from SQLite holding the same events as the peer.

The timelines are filled directly with SQL (``generate_series``), not through ingest: 10,000
devices of 1,000 events each by default (10 M), each device's events spread over 30 days, so
on PostgreSQL one device's read crosses 30 daily partitions. Then ``events(fleet, device,
limit=1000)`` for random devices, timed one by one.

    .venv/bin/python benchmarks/bench_pg_events.py [--devices 10000] [--per-device 1000]
        [--queries 300] [--no-sqlite]

Prints one JSON object: rows stored, fill time, read latency (median, p99, max) per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hub_bridge.timeline import Timeline
from hub_bridge.timeline_pg import PgTimeline
from simulators.postgres import PostgresServer

DAYS = 30
BODY = (
    '{"id":"\' || md5(i::text) || \'","seq":\' || s || \',"fleet":"acme","device":"van-\' || d'
    ' || \'","type":"gnss.fix","ts":"2026-11-21T08:00:00.000Z","clock":"gnss","data":{"lat":48.137'
    ',"lon":11.575,"alt_m":519.2,"speed_mps":8.4,"track_deg":181.5,"hdop":0.9,"sats":11}}'
)


def pg_fill_sql(devices: int, per_device: int, now: float) -> list[str]:
    """Keys and events for ``devices`` x ``per_device`` events, received over ``DAYS`` days."""
    span = DAYS * 86400.0 / per_device
    rows = (
        f"SELECT i, i % {devices} AS d, i / {devices} + 1 AS s,"
        f" {now} - ({per_device} - i / {devices}) * {span} AS r"
        f" FROM generate_series(0, {devices * per_device - 1}) AS i"
    )
    return [
        f"INSERT INTO event_keys (fleet, device, seq, id, received)"
        f" SELECT 'acme', 'van-' || d, s, md5(i::text), r FROM ({rows}) g",
        f"INSERT INTO events (pos, fleet, device, seq, id, type, ts, received, flags, body)"
        f" SELECT i + 1, 'acme', 'van-' || d, s, md5(i::text), 'gnss.fix',"
        f" '2026-11-21T08:00:00.000Z', r, NULL, '{BODY}' FROM ({rows}) g",
        f"INSERT INTO devices (fleet, device, watermark, last_seen)"
        f" SELECT 'acme', 'van-' || d, {per_device}, {now}"
        f" FROM generate_series(0, {devices - 1}) AS d",
        "ANALYZE",
    ]


async def time_reads(tl: Any, devices: int, queries: int, per_device: int) -> dict[str, Any]:
    rng = random.Random(7)
    lat: list[float] = []
    for _ in range(queries):
        device = f"van-{rng.randrange(devices)}"
        t0 = time.perf_counter()
        got = [e async for e in tl.events("acme", device, limit=1000)]
        lat.append(time.perf_counter() - t0)
        assert len(got) == min(1000, per_device), (device, len(got))
    lat.sort()
    return {
        "queries": queries,
        "ms_median": round(statistics.median(lat) * 1000, 2),
        "ms_p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
        "ms_max": round(lat[-1] * 1000, 2),
    }


async def bench_pg(devices: int, per_device: int, queries: int) -> dict[str, Any]:
    now = time.time()
    with PostgresServer(fsync=False, settings={"max_wal_size": "4GB"}) as pg:
        url = pg.create_database("bench")
        tl = await PgTimeline.open(url)
        for day in range(DAYS + 1):
            await tl._ensure_partition(now - day * 86400.0)
        t0 = time.perf_counter()
        for sql in pg_fill_sql(devices, per_device, now):
            pg.psql(sql, "bench")
        fill = time.perf_counter() - t0
        stored = await tl.count("events")
        await time_reads(tl, devices, 20, per_device)  # warm the cache as a running hub has it
        result = await time_reads(tl, devices, queries, per_device)
        result.update(
            events_stored=stored, partitions=len(await tl.partitions()), fill_s=round(fill, 1)
        )
        await tl.close()
        return result


async def bench_sqlite(devices: int, per_device: int, queries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.db"
        tl = await Timeline.open(path)
        await tl.close()
        t0 = time.perf_counter()
        con = sqlite3.connect(path)
        n = devices * per_device
        # the same size of body, one text for all (reads parse it as they would any)
        body = json.dumps(
            {"id": "0" * 32, "seq": 1, "fleet": "acme", "device": "van-1", "type": "gnss.fix",
             "ts": "2026-11-21T08:00:00.000Z", "clock": "gnss",
             "data": {"lat": 48.137, "lon": 11.575, "alt_m": 519.2, "speed_mps": 8.4,
                      "track_deg": 181.5, "hdop": 0.9, "sats": 11}},
            separators=(",", ":"),
        )  # fmt: skip
        con.execute(
            "WITH RECURSIVE g(value) AS (SELECT 0 UNION ALL SELECT value + 1 FROM g"
            " WHERE value < ?)"
            " INSERT INTO events (fleet, device, seq, id, type, ts, received, flags, body)"
            " SELECT 'acme', 'van-' || (value % ?), value / ? + 1, 'id-' || value, 'gnss.fix',"
            " '2026-11-21T08:00:00.000Z', 0, NULL, ? FROM g",
            (n - 1, devices, devices, body),
        )
        con.commit()
        con.close()
        fill = time.perf_counter() - t0
        tl = await Timeline.open(path)
        await time_reads(tl, devices, 20, per_device)
        result = await time_reads(tl, devices, queries, per_device)
        result.update(events_stored=await tl.count("events"), fill_s=round(fill, 1))
        await tl.close()
        return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--per-device", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "benchmark": "timeline_events_one_device",
        "events": args.devices * args.per_device,
        "postgresql": await bench_pg(args.devices, args.per_device, args.queries),
    }
    if not args.no_sqlite:
        out["sqlite"] = await bench_sqlite(args.devices, args.per_device, args.queries)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
