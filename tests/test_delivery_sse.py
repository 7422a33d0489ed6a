"""The server-sent event stream over real HTTP: live notices of the client's fleet, a resume with
Last-Event-ID that misses nothing and repeats nothing, a slow client cut off without holding up
the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub_bridge.backends import open_delivery_store
from hub_bridge.delivery.routes import add_delivery_routes
from hub_bridge.delivery.sse import StreamHub
from hub_bridge.delivery.store import DeliveryStore
from tests.delivery_rig import notice, wait_until


@dataclass
class Rig:
    store: DeliveryStore
    hub: StreamHub
    base: str
    http: aiohttp.ClientSession


@pytest.fixture
async def rig(timeline_url: str) -> AsyncIterator[Rig]:
    store = await open_delivery_store(timeline_url)
    hub = StreamHub(store, poll=5.0, buffer=50, heartbeat=0.3)  # woken, never polled in time
    app = web.Application()
    add_delivery_routes(app, None, store=store, stream=hub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    task = asyncio.create_task(hub.run())
    async with aiohttp.ClientSession() as http:
        yield Rig(store, hub, str(server.make_url("")), http)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.close()
    await store.close()


async def events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    """The next ``n`` SSE events of ``resp`` (comments skipped), each ``{"id","event","data"}``."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while len(out) < n:
            line = (await resp.content.readline()).decode()
            if line == "":
                raise AssertionError(f"the stream ended after {len(out)} events")
            line = line.rstrip("\n")
            if not line:
                if "data" in cur:
                    out.append(cur)
                cur = {}
            elif line.startswith((":", "retry:")):
                continue
            else:
                name, _, value = line.partition(": ")
                cur[name] = json.loads(value) if name == "data" else value
    return out


async def log(rig: Rig, *ns: Any) -> None:
    await rig.store.log_notices(list(ns), now=time.time())
    rig.hub.wake()


async def test_live_notices_of_the_fleet_then_a_resume_with_last_event_id(rig: Rig) -> None:
    url = f"{rig.base}/v1/fleets/acme/stream"
    async with rig.http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await wait_clients(rig, 1)
        first = [notice("acme", "parcel.status", "p-1", k) for k in range(3)]
        await log(rig, notice("other", "parcel.status", "p-9", 0), *first)
        got = await events(resp, 3)
        assert [e["data"]["id"] for e in got] == [n.id for n in first]  # not the other fleet's
        assert {e["event"] for e in got} == {"parcel.status"}
        assert [json.dumps(e["data"], separators=(",", ":"), sort_keys=True) for e in got] == [
            n.body for n in first
        ]  # the very bytes a webhook carries
        last = got[-1]["id"]
    await wait_clients(rig, 0)
    missed = [notice("acme", "stop.eta", "r-1", k) for k in range(5)]
    await log(rig, *missed)
    async with rig.http.get(url, headers={"Last-Event-ID": last}) as resp:
        got = await events(resp, 5)
        assert [e["data"]["id"] for e in got] == [n.id for n in missed]
        live = notice("acme", "parcel.status", "p-2", 0)
        await log(rig, live)
        (again,) = await events(resp, 1)
        assert again["data"]["id"] == live.id  # after the backlog, live, nothing twice
        assert int(again["id"]) > int(got[-1]["id"])
    # the query parameter does the same as the header, and kinds filter
    async with rig.http.get(url, params={"last_event_id": last, "kinds": "parcel.status"}) as r:
        (only,) = await events(r, 1)
        assert only["data"]["id"] == live.id


async def wait_clients(rig: Rig, n: int) -> None:
    await wait_until(lambda: rig.hub.clients == n, 5, f"{n} stream clients")


async def test_a_slow_client_is_cut_off_and_resumes_while_others_get_everything(
    rig: Rig,
) -> None:
    """The slow client reads nothing: once the sockets' buffers are full (large notices fill
    them fast) its own buffer of 50 overflows; the fast client gets every notice meanwhile."""
    url = f"{rig.base}/v1/fleets/acme/stream"
    pad = "x" * 60_000
    batch = [notice("acme", "parcel.status", f"p-{k}", k, {"pad": pad, "k": k}) for k in range(400)]
    async with rig.http.get(url) as slow, rig.http.get(url) as fast:
        await wait_clients(rig, 2)
        got = []
        for k in range(0, 400, 10):
            await log(rig, *batch[k : k + 10])
            got += await events(fast, 10)
        assert [e["data"]["id"] for e in got] == [n.id for n in batch]
        await wait_clients(rig, 1)  # the slow one was cut off
        raw = b""
        with contextlib.suppress(aiohttp.ClientPayloadError):  # dropped mid-event
            async with asyncio.timeout(10):
                async for chunk in slow.content.iter_any():
                    raw += chunk
        text = raw.decode(errors="replace").rpartition("\n\n")[0]  # whole events only
        seen = [json.loads(line[6:])["id"] for line in text.splitlines() if line[:6] == "data: "]
        ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
    assert seen == [n.id for n in batch[: len(seen)]]
    assert len(seen) < 400
    async with rig.http.get(url, headers={"Last-Event-ID": ids[-1] if ids else "0"}) as again:
        rest = await events(again, 400 - len(seen))
    assert [e["data"]["id"] for e in rest] == [n.id for n in batch[len(seen) :]]


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ({"kinds": "nope"}, {}, 400),
        ({"last_event_id": "-1"}, {}, 400),
        ({"color": "red"}, {}, 400),
        ({}, {"Last-Event-ID": "abc"}, 400),
    ],
)
async def test_bad_parameters_are_named(
    rig: Rig, query: dict[str, str], headers: dict[str, str], status: int
) -> None:
    async with rig.http.get(
        f"{rig.base}/v1/fleets/acme/stream", params=query, headers=headers
    ) as resp:
        assert resp.status == status
        assert "error" in await resp.json()
    async with rig.http.get(f"{rig.base}/v1/fleets/BAD!/stream") as resp:
        assert resp.status == 400
