"""psycopg 3 against asyncpg on the timeline's insert path, on a private PostgreSQL (fsync on).

Each round stores 100-event batches the way ``PgTimeline`` does: one transaction per batch, one
statement inserting the whole batch with ``ON CONFLICT DO NOTHING RETURNING`` (arrays through
``unnest``), or the batch sent with COPY into a temporary table and moved with one
``INSERT ... SELECT ... ON CONFLICT``. A quarter of each batch repeats the previous batch's
events (a device's resend), so de-duplication works. Both drivers run the same SQL on the same
server in the same run, alternately, several rounds; the best round of each is reported.
``pgtimeline-store_many`` is the timeline itself on the same batches (psycopg, binary
parameters, one ``lm_store_many`` statement per group of 16 batches: de-duplication,
accounting, the watermark and the ack computed by the database).

    .venv/bin/python benchmarks/bench_pg_driver.py [--batches 400] [--rounds 3]

Prints one JSON object: events/s and batch latency (median, p99) per driver and method.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no type hints: one reason for psycopg
import psycopg

from hub_bridge.timeline import Batch as TBatch
from hub_bridge.timeline_pg import PgTimeline
from simulators.postgres import PostgresServer

TS = "2026-11-21T08:00:00.000Z"

SCHEMA = """
CREATE TABLE keys (
    fleet text NOT NULL, device text NOT NULL, seq bigint NOT NULL, id text NOT NULL,
    received double precision NOT NULL, body text NOT NULL,
    PRIMARY KEY (fleet, device, seq), UNIQUE (fleet, device, id)
);
"""

UNNEST_PG = (
    "INSERT INTO keys (fleet, device, seq, id, received, body)"
    " SELECT %b, %b, s, i, %b, b FROM unnest(%b::bigint[], %b::text[], %b::text[]) AS t(s, i, b)"
    " ON CONFLICT DO NOTHING RETURNING seq"
)
UNNEST_APG = (
    "INSERT INTO keys (fleet, device, seq, id, received, body)"
    " SELECT $1, $2, s, i, $3, b FROM unnest($4::bigint[], $5::text[], $6::text[]) AS t(s, i, b)"
    " ON CONFLICT DO NOTHING RETURNING seq"
)
MOVE = (
    "INSERT INTO keys (fleet, device, seq, id, received, body)"
    " SELECT fleet, device, seq, id, received, body FROM incoming"
    " ON CONFLICT DO NOTHING RETURNING seq"
)
TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS incoming (fleet text, device text, seq bigint, id text,"
    " received double precision, body text) ON COMMIT DELETE ROWS"
)

Batch = tuple[str, str, list[int], list[str], list[str]]


def make_batches(n: int, devices: int = 50, size: int = 100) -> list[Batch]:
    """``n`` batches round-robin over ``devices``; each repeats a quarter of the last one."""
    out: list[Batch] = []
    next_seq = dict.fromkeys(range(devices), 1)
    ids: dict[tuple[int, int], str] = {}
    for k in range(n):
        d = k % devices
        start = max(1, next_seq[d] - size // 4)
        seqs = list(range(start, start + size))
        for s in seqs:
            ids.setdefault((d, s), str(uuid.uuid4()))
        next_seq[d] = seqs[-1] + 1
        bodies = [
            json.dumps({"id": ids[(d, s)], "seq": s, "type": "gnss.fix",
                        "data": {"lat": 48.1 + s * 1e-5, "lon": 11.5, "speed_mps": 8.2}})
            for s in seqs
        ]  # fmt: skip
        out.append(("acme", f"van-{d:03d}", seqs, [ids[(d, s)] for s in seqs], bodies))
    return out


async def run_psycopg(url: str, batches: list[Batch], copy: bool) -> list[float]:
    lat: list[float] = []
    async with await psycopg.AsyncConnection.connect(url) as con:
        if copy:
            await con.execute(TEMP)
            await con.commit()
        for fleet, device, seqs, ids, bodies in batches:
            t0 = time.perf_counter()
            async with con.transaction(), con.cursor() as cur:
                now = time.time()
                if copy:
                    async with cur.copy(
                        "COPY incoming (fleet, device, seq, id, received, body) FROM STDIN"
                    ) as cp:
                        for s, i, b in zip(seqs, ids, bodies, strict=True):
                            await cp.write_row((fleet, device, s, i, now, b))
                    await cur.execute(MOVE)
                else:
                    await cur.execute(UNNEST_PG, (fleet, device, now, seqs, ids, bodies))
                await cur.fetchall()
            lat.append(time.perf_counter() - t0)
    return lat


async def run_asyncpg(url: str, batches: list[Batch], copy: bool) -> list[float]:
    lat: list[float] = []
    con = await asyncpg.connect(url)
    try:
        if copy:
            await con.execute(TEMP)
        for fleet, device, seqs, ids, bodies in batches:
            t0 = time.perf_counter()
            async with con.transaction():
                now = time.time()
                if copy:
                    await con.copy_records_to_table(
                        "incoming",
                        records=[
                            (fleet, device, s, i, now, b)
                            for s, i, b in zip(seqs, ids, bodies, strict=True)
                        ],
                    )
                    await con.fetch(MOVE)
                else:
                    await con.fetch(UNNEST_APG, fleet, device, now, seqs, ids, bodies)
            lat.append(time.perf_counter() - t0)
    finally:
        await con.close()
    return lat


async def run_timeline(url: str, batches: list[Batch], group: int = 16) -> list[float]:
    """The whole store: ``PgTimeline.store_many`` (dedup, accounting, watermark, ack) on groups
    of ``group`` batches, as the hub commits what queued up meanwhile. Latency is per batch."""
    tl = await PgTimeline.open(url)
    lat: list[float] = []
    try:
        for k in range(0, len(batches), group):
            chunk = [
                TBatch(fleet, device, envs, [[] for _ in envs], bodies=bodies)
                for fleet, device, seqs, ids, bodies in batches[k : k + group]
                for envs in [[{"id": i, "seq": s, "type": "gnss.fix", "ts": TS}
                              for s, i in zip(seqs, ids, strict=True)]]
            ]  # fmt: skip
            t0 = time.perf_counter()
            await tl.store_many(chunk)
            lat += [(time.perf_counter() - t0) / len(chunk)] * len(chunk)
    finally:
        await tl.close()
    return lat


def summary(lat: list[float], events: int) -> dict[str, Any]:
    ordered = sorted(lat)
    return {
        "events_per_s": round(events / sum(lat)),
        "batch_ms_median": round(statistics.median(ordered) * 1000, 3),
        "batch_ms_p99": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runners: dict[str, Callable[[str, list[Batch]], Awaitable[list[float]]]] = {
        "psycopg-unnest": lambda u, b: run_psycopg(u, b, copy=False),
        "asyncpg-unnest": lambda u, b: run_asyncpg(u, b, copy=False),
        "psycopg-copy": lambda u, b: run_psycopg(u, b, copy=True),
        "asyncpg-copy": lambda u, b: run_asyncpg(u, b, copy=True),
        "pgtimeline-store_many": run_timeline,
    }
    batches = make_batches(args.batches)
    events = sum(len(b[2]) for b in batches)
    best: dict[str, dict[str, Any]] = {}
    with PostgresServer(fsync=True) as pg:
        for r in range(args.rounds):
            for name, run in runners.items():
                url = pg.create_database(f"b_{name.replace('-', '_')}_{r}")
                if not name.startswith("pgtimeline"):
                    pg.psql(SCHEMA, url.rsplit("/", 1)[1])
                lat = await run(url, batches)
                result = summary(lat, events)
                if name not in best or result["events_per_s"] > best[name]["events_per_s"]:
                    best[name] = result
    print(
        json.dumps(
            {
                "benchmark": "pg_driver_insert_path",
                "batches": args.batches,
                "batch_size": 100,
                "rounds": args.rounds,
                "versions": {"psycopg": psycopg.__version__, "asyncpg": asyncpg.__version__},
                "results": best,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
