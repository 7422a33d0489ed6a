"""Webhooks from the durable queue against a real local receiver that fails, delays, drops
connections and answers out of order: every notice delivered, signed, in order per key; dead
after the last try and back by retry; a killed hub loses nothing (real SQLite file)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub_bridge.backends import open_delivery_store
from hub_bridge.delivery.push import (
    BODY_MAX,
    PushSettings,
    WebhookWorker,
    open_session,
    post,
    retry_delay,
    sign,
    verify,
)
from hub_bridge.delivery.routes import DELIVERY_ACCESS, add_delivery_routes
from hub_bridge.delivery.store import DeliveryStore, Outcome, Subscription
from hub_bridge.delivery.store_sqlite import SqliteDeliveryStore
from simulators.broker import self_signed
from tests.delivery_rig import Receiver, chaos, notice, wait_until

ROOT = Path(__file__).resolve().parent.parent
FAST = PushSettings(
    max_attempts=20, backoff_base=0.01, backoff_cap=0.05, timeout=5.0, concurrency=16, poll=0.2
)


@pytest.fixture
async def store(timeline_url: str) -> AsyncIterator[DeliveryStore]:
    """The delivery tables on each backend (the queue's rules are the store's SQL)."""
    s = await open_delivery_store(timeline_url)
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[DeliveryStore]:
    s = await SqliteDeliveryStore.open(tmp_path / "timeline.db")
    yield s
    await s.close()


def subscription(sid: str, url: str, secret: str = "s" * 32, **kw: object) -> Subscription:
    return Subscription(sid, "acme", url, secret, created=time.time(), **kw)  # type: ignore[arg-type]


async def run_worker(worker: WebhookWorker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- signing and backoff, pure ---------------------------------------------------------------


def test_signature_is_hmac_sha256_of_time_dot_body() -> None:
    body = b'{"id":"n-1","kind":"parcel.status"}'
    header = sign("whsec_abc", body, 1733212800)
    mac = hmac.new(b"whsec_abc", b"1733212800." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1733212800,v1={mac}"
    assert verify("whsec_abc", header, body, now=1733212800 + 10)
    assert not verify("whsec_abc", header, body + b" ", now=1733212800)  # body changed
    assert not verify("whsec_other", header, body, now=1733212800)  # another secret
    assert not verify("whsec_abc", header, body, now=1733212800 + 301)  # replayed later
    assert not verify("whsec_abc", "t=1733212800", body, now=1733212800)  # no v1
    assert not verify("whsec_abc", "garbage", body, now=1733212800)
    # a receiver rotating secrets accepts any v1 of the header
    both = header + "," + sign("whsec_new", body, 1733212800).split(",")[1]
    assert verify("whsec_new", both, body, now=1733212800)


def test_retry_delay_grows_is_capped_and_jittered() -> None:
    assert retry_delay(1, 2.0, 3600.0, lambda: 0.0) == 1.0
    assert retry_delay(1, 2.0, 3600.0, lambda: 1.0) == 2.0
    assert retry_delay(4, 2.0, 3600.0, lambda: 1.0) == 16.0
    assert retry_delay(30, 2.0, 3600.0, lambda: 1.0) == 3600.0
    assert retry_delay(30, 2.0, 3600.0, lambda: 0.0) == 1800.0
    assert retry_delay(10_000, 2.0, 60.0, lambda: 0.5) == 45.0  # no overflow


# -- the queue ----------------------------------------------------------------------------------


async def test_filters_choose_the_subscribers_and_a_notice_is_queued_once(
    store: DeliveryStore,
) -> None:
    await store.add_subscription(subscription("wh_0000000000000001", "http://x/a"))
    await store.add_subscription(
        subscription("wh_0000000000000002", "http://x/b", kinds=("exception.raised",))
    )
    await store.add_subscription(
        subscription(
            "wh_0000000000000003",
            "http://x/c",
            kinds=("exception.raised",),
            types=("late_risk",),
        )
    )
    other = Subscription("wh_0000000000000004", "other", "http://x/d", "s" * 32)
    await store.add_subscription(other)
    status = notice("acme", "parcel.status", "p-1", 1, {"event": {"type": "pod"}})
    misload = notice("acme", "exception.raised", "p-2", 1, {"type": "misload", "id": "m:1"})
    late = notice("acme", "exception.raised", "r-1", 1, {"type": "late_risk", "id": "l:1"})
    logged = await store.log_notices([status, misload, late], now=time.time())
    assert [n.id for n in logged] == [status.id, misload.id, late.id]
    assert await store.log_notices([status, misload, late], now=time.time()) == []  # replayed

    async def queued(sid: str) -> list[str]:
        return sorted(d["notice"] for d in await store.deliveries("acme", sid))

    assert await queued("wh_0000000000000001") == sorted([status.id, misload.id, late.id])
    assert await queued("wh_0000000000000002") == sorted([misload.id, late.id])
    assert await queued("wh_0000000000000003") == [late.id]
    assert await store.deliveries("other", "wh_0000000000000004") == []
    # the exceptions table follows raise and resolve
    assert [e["id"] for e in await store.exceptions("acme")] == ["l:1", "m:1"]
    resolved = notice("acme", "exception.resolved", "p-2", 2, {"type": "misload", "id": "m:1"})
    await store.log_notices([resolved], now=time.time())
    assert [e["id"] for e in await store.exceptions("acme")] == ["l:1"]
    assert [e["id"] for e in await store.exceptions("acme", "resolved")] == ["m:1"]
    assert [e["id"] for e in await store.exceptions("acme", "all", ("misload",))] == ["m:1"]


async def test_every_notice_delivered_signed_and_in_order_per_key(
    store: DeliveryStore,
) -> None:
    """200 notices over 10 parcels to two subscribers whose receiver fails, drops and delays."""
    async with Receiver(plan=chaos) as rx:
        for name in ("a", "b"):
            secret = f"whsec_{name * 24}"
            rx.secrets[f"/{name}"] = secret
            await store.add_subscription(
                subscription(f"wh_00000000000000a{ord(name) % 10}", rx.url(name), secret)
            )
        keys = [f"p-{k}" for k in range(10)]
        batch = [notice("acme", "parcel.status", key, n) for n in range(20) for key in keys]
        await store.log_notices(batch, now=time.time())
        worker = WebhookWorker(store, FAST)
        task = await run_worker(worker)
        try:
            await wait_until(
                lambda: sum(len(v) for v in rx.delivered.values()) >= 400, 30, "400 deliveries"
            )
            await wait_until(lambda: not worker._busy, 5, "the answers recorded")
        finally:
            await stop(task)
    want = {n.id for n in batch}
    for path in ("/a", "/b"):
        got = rx.delivered[path]
        assert sorted(got) == sorted(want)  # each exactly once: none lost, none twice
        for key in keys:
            mine = [d for d in got if f":{key}:" in d]
            assert mine == [f"parcel.status:acme:{key}:{n}" for n in range(20)], key
    assert all(h.signed for h in rx.hits)
    assert {h.event for h in rx.hits} == {"parcel.status"}
    assert {h.action for h in rx.hits} >= {"fail", "close", "ok"}  # the chaos did happen
    assert rx.max_inflight > 1  # keys went in parallel
    assert len(rx.hits) > 400  # retries happened
    for sid in ("wh_00000000000000a7", "wh_00000000000000a8"):
        states = {d["state"] for d in await store.deliveries("acme", sid, limit=1000)}
        assert states == {"delivered"}


async def test_a_slow_receiver_does_not_hold_up_the_others(sqlite_store: DeliveryStore) -> None:
    store = sqlite_store
    settings = PushSettings(backoff_base=0.01, backoff_cap=0.05, timeout=20, per_subscription=2)

    def plan(delivery: str, _attempt: int) -> str | float:
        return 2.0 if "slow" in delivery else "ok"

    async with Receiver(plan=plan) as rx:
        await store.add_subscription(
            subscription("wh_0000000000000051", rx.url("slow"), kinds=("stop.eta",))
        )
        await store.add_subscription(
            subscription("wh_0000000000000052", rx.url("fast"), kinds=("parcel.status",))
        )
        slow = [notice("acme", "stop.eta", f"slow-{k}", 1) for k in range(20)]
        fast = [notice("acme", "parcel.status", f"p-{k}", 1) for k in range(50)]
        await store.log_notices(slow + fast, now=time.time())
        task = await run_worker(WebhookWorker(store, settings))
        try:
            await wait_until(lambda: len(rx.delivered.get("/fast", [])) == 50, 10, "fast ones")
            assert len(rx.delivered.get("/slow", [])) <= 2  # the slow one had 2 at a time
        finally:
            await stop(task)


async def test_dead_after_the_last_try_the_next_goes_and_retry_brings_it_back(
    store: DeliveryStore,
) -> None:
    settings = PushSettings(max_attempts=3, backoff_base=0.01, backoff_cap=0.02, poll=0.1)
    broken = {"parcel.status:acme:p-1:0"}

    def plan(delivery: str, _attempt: int) -> str:
        return "fail" if delivery in broken else "ok"

    async with Receiver(plan=plan) as rx:
        sid = "wh_0000000000000061"
        await store.add_subscription(subscription(sid, rx.url("a")))
        first, second = (
            notice("acme", "parcel.status", "p-1", 0),
            notice("acme", "parcel.status", "p-1", 1),
        )
        await store.log_notices([first, second], now=time.time())
        worker = WebhookWorker(store, settings)
        task = await run_worker(worker)
        try:
            await wait_until(lambda: rx.delivered.get("/a") == [second.id], 10, "the second")
            assert rx.attempts[("/a", first.id)] == 3  # tried max_attempts times, no more
            dead = await store.deliveries("acme", sid, "dead")
            assert [d["notice"] for d in dead] == [first.id]
            assert dead[0]["attempts"] == 3 and dead[0]["last_error"] == "HTTP 500"
            assert dead[0]["last_status"] == 500
            broken.clear()  # the receiver is fixed; the operator retries the dead one
            assert await store.retry("acme", sid, None, time.time()) == 1
            assert await store.retry("acme", sid, None, time.time()) == 0
            worker.wake()
            await wait_until(lambda: len(rx.delivered["/a"]) == 2, 10, "the retried one")
            assert rx.delivered["/a"] == [second.id, first.id]
        finally:
            await stop(task)


async def test_max_age_makes_it_dead_with_tries_left(sqlite_store: DeliveryStore) -> None:
    store = sqlite_store
    now = [1000.0]
    settings = PushSettings(max_attempts=100, max_age=60.0, backoff_base=10, poll=0.05)
    async with Receiver(plan=lambda _d, _a: "fail") as rx:
        sid = "wh_0000000000000071"
        await store.add_subscription(subscription(sid, rx.url("a")))
        await store.log_notices([notice("acme", "parcel.status", "p-1", 0)], now=now[0])
        worker = WebhookWorker(store, settings, clock=lambda: now[0])
        task = await run_worker(worker)
        try:
            for _ in range(20):  # the fake clock jumps past each retry until max_age
                nxt = await store.next_due()
                if nxt is None:
                    break
                now[0] = max(now[0], nxt) + 0.001
                worker.wake()
                before = len(rx.hits)

                def attempted(b: int = before) -> bool:
                    return len(rx.hits) > b or not worker._busy

                await wait_until(attempted, 5, "an attempt")
                await wait_until(lambda: not worker._busy, 5, "its answer recorded")
            dead = await store.deliveries("acme", sid, "dead")
            assert len(dead) == 1
            assert dead[0]["done_at"] <= 1000.0 + 60.0 + 0.01 * 30
            assert 2 <= len(rx.hits) < 100
        finally:
            await stop(task)


async def test_answers_received_are_recorded_when_the_worker_stops(
    sqlite_store: DeliveryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    settings = PushSettings(backoff_base=0.01, backoff_cap=0.02, poll=0.1)
    real_record = store.record
    calls: list[int] = []
    held = asyncio.Event()

    async def record(outcomes: Any) -> None:
        calls.append(len(outcomes))
        if len(calls) == 1:
            held.set()
            await asyncio.Event().wait()  # the recorder's commit hangs until the stop
        await real_record(outcomes)

    monkeypatch.setattr(store, "record", record)
    async with Receiver() as rx:
        sid = "wh_00000000000000a1"
        await store.add_subscription(subscription(sid, rx.url("a")))
        await store.log_notices([notice("acme", "parcel.status", "p-1", 0)], now=time.time())
        task = await run_worker(WebhookWorker(store, settings))
        await asyncio.wait_for(held.wait(), 10)
        await stop(task)
    assert calls == [1, 1]  # the answer is recorded once more on the way out
    assert await store.deliveries("acme", sid, "pending") == []
    assert [d["state"] for d in await store.deliveries("acme", sid)] == ["delivered"]


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from hub_bridge.delivery.push import PushSettings, WebhookWorker
    from hub_bridge.delivery.store_sqlite import SqliteDeliveryStore

    async def main():
        store = await SqliteDeliveryStore.open(sys.argv[1])
        print("ready", flush=True)
        await WebhookWorker(store, PushSettings(backoff_base=0.01, backoff_cap=0.05,
                                                concurrency=4, poll=0.1)).run()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_a_hub_killed_mid_queue_loses_nothing(tmp_path: Path) -> None:
    """A worker process SIGKILLed while delivering: the next one delivers the rest; only what
    was in flight at the kill (at most ``concurrency``) arrives twice, with the same id."""
    db = tmp_path / "timeline.db"
    store = await SqliteDeliveryStore.open(db)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        async with Receiver(plan=lambda _d, _a: 0.02) as rx:
            await store.add_subscription(subscription("wh_0000000000000081", rx.url("a")))
            batch = [notice("acme", "parcel.status", f"p-{k % 7}", k) for k in range(150)]
            await store.log_notices(batch, now=time.time())

            def spawn() -> subprocess.Popen[str]:
                p = subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(db)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=ROOT,
                )
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
                return p

            first = spawn()
            try:
                await wait_until(lambda: len(rx.delivered.get("/a", [])) >= 40, 20, "40 out")
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait()
                assert first.stdout is not None
                first.stdout.close()
            at_kill = len(rx.delivered["/a"])
            assert at_kill < 150
            second = spawn()
            try:
                await wait_until(
                    lambda: set(rx.delivered["/a"]) == {n.id for n in batch}, 30, "all 150"
                )
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait()
                assert second.stdout is not None
                second.stdout.close()
    finally:
        await store.close()
    got = rx.delivered["/a"]
    assert len(got) - len(set(got)) <= 4  # in flight at the kill, sent again
    for k in range(7):  # and still in order per key
        mine = [int(d.rsplit(":", 1)[1]) for d in dict.fromkeys(got) if f":p-{k}:" in d]
        assert mine == sorted(mine)


# -- the subscriptions API --------------------------------------------------------------------


@pytest.fixture
async def api(sqlite_store: DeliveryStore) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The delivery routes over real HTTP; ``check_scope`` refuses fleet ``forbidden``."""

    async def check_scope(request: web.Request, fleet: str) -> None:
        if fleet == "forbidden":
            raise web.HTTPForbidden(
                text='{"error": "not your fleet"}', content_type="application/json"
            )

    app = web.Application()
    doc: dict[str, Any] = {"paths": {}, "components": {"schemas": {}}}
    add_delivery_routes(app, doc, store=sqlite_store, check_scope=check_scope)
    assert set(doc["paths"]) >= {"/v1/parcels/{id}", "/v1/fleets/{fleet}/webhooks"}
    assert {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops} == set(
        DELIVERY_ACCESS
    )  # every operation documented has its access rule
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield str(server.make_url("")), http
    await server.close()


async def test_subscribe_list_inspect_retry_and_unsubscribe_over_http(
    api: tuple[str, aiohttp.ClientSession], sqlite_store: DeliveryStore
) -> None:
    base, http = api
    hooks = f"{base}/v1/fleets/acme/webhooks"
    async with http.post(
        hooks, json={"url": "https://dispatch.example/hooks", "kinds": ["exception.raised"]}
    ) as r:
        assert r.status == 201
        made = await r.json()
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40  # generated
    assert made["kinds"] == ["exception.raised"] and made["types"] == []
    async with http.post(
        hooks, json={"url": "http://127.0.0.1:9/x", "secret": "k" * 20, "types": ["misload"]}
    ) as r:
        assert r.status == 201
        second = await r.json()
    assert second["secret"] == "k" * 20
    async with http.get(hooks) as r:
        listed = await r.json()
    assert [s["id"] for s in listed] == [made["id"], second["id"]]
    assert all("secret" not in s for s in listed)  # shown once, at creation
    async with http.get(f"{hooks}/{made['id']}") as r:
        assert r.status == 200 and "secret" not in await r.json()
    async with http.get(f"{base}/v1/fleets/other/webhooks/{made['id']}") as r:
        assert r.status == 404  # another fleet's id is not there
    # a dead delivery, listed and put back
    await sqlite_store.log_notices(
        [notice("acme", "exception.raised", "p-1", 1, {"type": "misload", "id": "m:1"})],
        now=time.time(),
    )
    (queued,) = await sqlite_store.deliveries("acme", second["id"])
    await sqlite_store.record(
        [Outcome(second["id"], queued["notice"], time.time(), False, dead=True, error="HTTP 500")]
    )
    async with http.get(f"{hooks}/{second['id']}/deliveries", params={"state": "dead"}) as r:
        dead = await r.json()
    assert [d["notice"] for d in dead] == [queued["notice"]]
    assert dead[0]["last_error"] == "HTTP 500"
    async with http.post(f"{hooks}/{second['id']}/retry", json={"notice": "nope"}) as r:
        assert (await r.json()) == {"requeued": 0}
    async with http.post(f"{hooks}/{second['id']}/retry") as r:
        assert (await r.json()) == {"requeued": 1}
    async with http.delete(f"{hooks}/{second['id']}") as r:
        assert r.status == 204
    async with http.delete(f"{hooks}/{second['id']}") as r:
        assert r.status == 404
    assert await sqlite_store.deliveries("acme", second["id"]) == []  # its queue went too
    async with http.get(f"{base}/v1/fleets/forbidden/webhooks") as r:
        assert r.status == 403  # check_scope was asked
    async with http.get(f"{base}/v1/exceptions", params={"fleet": "forbidden"}) as r:
        assert r.status == 403


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "url"),
        ({"url": "ftp://x/y"}, "url"),
        ({"url": "http://user:pw@x/y"}, "url"),
        ({"url": "http://x/y", "kinds": ["parcel.moved"]}, "kinds[0]"),
        ({"url": "http://x/y", "kinds": "parcel.status"}, "kinds"),
        ({"url": "http://x/y", "types": ["Late Risk"]}, "types[0]"),
        ({"url": "http://x/y", "secret": "short"}, "secret"),
        ({"url": "http://x/y", "colour": "red"}, "colour"),
        ({"url": "http://x/" + "y" * 3000}, "url"),
        ([1, 2], "JSON object"),
    ],
)
async def test_a_bad_subscription_is_refused_naming_what(
    api: tuple[str, aiohttp.ClientSession], body: Any, named: str
) -> None:
    base, http = api
    async with http.post(f"{base}/v1/fleets/acme/webhooks", json=body) as r:
        assert r.status == 400
        assert named in (await r.json())["error"]


async def test_oversize_garbage_and_bad_parameters(
    api: tuple[str, aiohttp.ClientSession],
) -> None:
    base, http = api
    async with http.post(f"{base}/v1/fleets/acme/webhooks", data=b"x" * 20_000) as r:
        assert r.status == 413
    async with http.post(f"{base}/v1/fleets/acme/webhooks", data=b"{nope") as r:
        assert r.status == 400
    for path, params, named in [
        ("/v1/parcels/p-1", {}, "fleet"),
        ("/v1/parcels/p-1", {"fleet": "acme", "x": "1"}, "x"),
        ("/v1/exceptions", {"fleet": "acme", "state": "closed"}, "state"),
        ("/v1/exceptions", {"fleet": "acme", "limit": "0"}, "limit"),
        ("/v1/exceptions", {"fleet": "acme", "type": "Bad Type"}, "type"),
        ("/v1/fleets/acme/webhooks/not-an-id", {}, "id"),
        ("/v1/fleets/acme/webhooks/wh_0000000000000001/deliveries", {"state": "lost"}, "state"),
    ]:
        async with http.get(base + path, params=params) as r:
            assert r.status == 400, path
            assert (await r.json())["error"].startswith(named), path
    async with http.get(f"{base}/v1/parcels/{'p' * 300}", params={"fleet": "acme"}) as r:
        assert r.status == 400
    async with http.get(f"{base}/v1/parcels/a%2Fb", params={"fleet": "acme"}) as r:
        assert r.status == 404 and "a/b" in (await r.json())["error"]  # a "/" in a label
    async with http.get(f"{base}/v1/routes/a%0Ab", params={"fleet": "acme"}) as r:
        assert r.status == 400 and (await r.json())["error"].startswith("id:")


async def test_prune_keeps_what_is_pending_and_drops_what_is_done(store: DeliveryStore) -> None:
    sid = "wh_0000000000000091"
    await store.add_subscription(subscription(sid, "http://127.0.0.1:9/a"))
    done, waiting = notice("acme", "parcel.status", "p-1", 0), notice("acme", "stop.eta", "r", 0)
    await store.log_notices(
        [done, waiting], [("parcel", "acme", "p-1", '{"parcel": "p-1"}')], now=100.0
    )
    await store.record([Outcome(sid, done.id, 150.0, True, status=200)])
    assert await store.prune(before=120.0, views_before=90.0) == 0  # nothing old enough
    assert await store.prune(before=200.0) == 2  # the delivered one and its notice
    assert [d["notice"] for d in await store.deliveries("acme", sid)] == [waiting.id]
    assert [n.id for n in await store.notices_after(0)] == [waiting.id]  # its notice stays
    assert await store.view("parcel", "acme", "p-1") is not None
    assert await store.prune(before=200.0, views_before=200.0) == 1  # the view, unchanged since
    assert await store.view("parcel", "acme", "p-1") is None


async def test_one_worker_delivers_among_hubs_on_postgresql_and_another_takes_over(
    pg_url: str,
) -> None:
    first, second = await open_delivery_store(pg_url), await open_delivery_store(pg_url)
    settings = PushSettings(backoff_base=0.01, backoff_cap=0.02, poll=0.1)
    closed: list[DeliveryStore] = []
    try:
        async with Receiver() as rx:
            await first.add_subscription(subscription("wh_00000000000000c1", rx.url("a")))
            batch = [notice("acme", "parcel.status", f"p-{k % 5}", k) for k in range(60)]
            await first.log_notices(batch[:30], now=time.time())
            a = await run_worker(WebhookWorker(first, settings))
            await wait_until(lambda: len(rx.delivered.get("/a", [])) == 30, 10, "30 by the first")
            b = await run_worker(WebhookWorker(second, settings))
            await second.log_notices(batch[30:], now=time.time())
            await wait_until(lambda: len(rx.delivered["/a"]) >= 60, 10, "60")
            for _ in range(500):  # the last answers recorded: a request cut off in flight
                # would be sent again by the next leader (at least once, not this test's case)
                if not await second.deliveries("acme", "wh_00000000000000c1", "pending"):
                    break
                await asyncio.sleep(0.01)
            await stop(a)
            await first.close()  # the leader goes: the second hub takes the queue over
            closed.append(first)
            more = [notice("acme", "parcel.status", f"p-{k % 5}", k) for k in range(60, 90)]
            await second.log_notices(more, now=time.time())
            await wait_until(lambda: len(rx.delivered["/a"]) >= 90, 15, "90, by the second")
            await stop(b)
    finally:
        for s in (first, second):
            if s not in closed:
                await s.close()
    assert sorted(rx.delivered["/a"]) == sorted(n.id for n in batch + more)  # each once


# -- the HTTP client of the webhooks (aiohttp's, as the worker sets it up) ----------------------


class RawServer:
    """A loopback TCP server answering each request with the next canned bytes (for ``None``,
    closing the connection without a word; after an answer whose index is in ``close_after``,
    closing it once answered, as a receiver's keep-alive timeout does); records the requests'
    first lines and counts connections."""

    def __init__(self, answers: list[bytes | None], close_after: frozenset[int] = frozenset()):
        self.answers = answers
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._open:  # connections still open end now, their handlers with them
            writer.close()
        await asyncio.gather(*(t for t in self._open.values() if t), return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks?x=1"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open[writer] = asyncio.current_task()
        try:
            while self.answers:
                first = await reader.readline()
                if not first:
                    return
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests.append(first)
                answer = self.answers.pop(0)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if len(self.requests) - 1 in self.close_after:
                    return
        except ConnectionError:
            return  # the client closed a connection it would not read further: its right
        finally:
            self._open.pop(writer, None)
            writer.close()
            self.closed += 1


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BIG = 4 * BODY_MAX
CLIENT = PushSettings(timeout=5.0)


def chunked(size: int, end: bool) -> bytes:
    """A chunked 200 of ``size`` bytes, finished or not (then more is to come, never)."""
    piece = b"x" * 4096
    body = b"".join(b"1000\r\n" + piece + b"\r\n" for _ in range(size // 4096))
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + (b"0\r\n\r\n" if end else b"")
    )


@pytest.mark.parametrize(
    ("answer", "status", "reused"),
    [
        (OK, 200, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, True),
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
            202,
            True,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, False),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 999999\r\n\r\n", 500, False),  # too big to read
        (b"HTTP/1.1 200 OK\r\n\r\nthe rest until the close", 200, False),  # never closed
        (chunked(BODY_MAX // 2, end=True), 200, True),  # within the cap: read, kept
        (chunked(BIG, end=False), 200, False),  # past the cap: not read to its (no) end
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * BIG,
            200,
            False,
        ),  # megabytes announced, some sent: the hub reads none of them and does not wait
        (
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
            302,
            True,
        ),  # returned, not followed
    ],
)
async def test_the_client_reads_each_kind_of_answer_and_keeps_the_connection_when_it_can(
    answer: bytes, status: int, reused: bool
) -> None:
    async with open_session(CLIENT) as http, RawServer([answer, OK]) as srv:
        assert await post(http, srv.url, {"X-A": "1"}, b"{}") == status
        assert srv.requests == [b"POST /hooks?x=1 HTTP/1.1\r\n"]  # a 3xx not followed
        assert await post(http, srv.url, {}, b"{}") == 200
        assert srv.connections == (1 if reused else 2)


async def test_an_idle_close_a_drop_garbage_a_cut_answer_and_header_injection() -> None:
    async with open_session(CLIENT) as http:
        async with RawServer([OK, OK], close_after=frozenset({0})) as srv:
            assert await post(http, srv.url, {}, b"{}") == 200
            # the receiver closed the kept connection while idle: a new one carries the next
            await wait_until(lambda: srv.closed == 1, 5, "the idle connection closed")
            assert await post(http, srv.url, {}, b"{}") == 200
            assert srv.connections == 2
        async with RawServer([None]) as srv:
            with pytest.raises(aiohttp.ServerDisconnectedError):  # dropped: not delivered
                await post(http, srv.url, {}, b"{}")
            assert srv.connections == 2  # tried once more at once, on a new connection
        async with RawServer([b"SMTP ready\r\n\r\n"]) as srv:
            with pytest.raises(aiohttp.ClientResponseError):
                await post(http, srv.url, {}, b"{}")
        async with RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]) as srv:
            with pytest.raises(aiohttp.ClientPayloadError):
                await post(http, srv.url, {}, b"{}")  # cut mid-answer: not delivered
        async with RawServer([OK]) as srv:
            with pytest.raises(ValueError, match="header injection"):
                await post(http, srv.url, {"X-Evil": "a\r\nInjected: 1"}, b"{}")
            assert srv.requests == []  # nothing was sent
        with pytest.raises(ValueError, match="not an http"):
            await post(http, "ftp://127.0.0.1/x", {}, b"{}")


async def test_the_worker_counts_a_redirect_as_a_failure_and_does_not_follow_it(
    sqlite_store: DeliveryStore,
) -> None:
    store = sqlite_store
    redirect = (
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    )
    settings = PushSettings(max_attempts=2, backoff_base=0.01, backoff_cap=0.02, poll=0.1)
    async with RawServer([redirect, redirect]) as srv:
        sid = "wh_00000000000000d1"
        await store.add_subscription(subscription(sid, srv.url))
        await store.log_notices([notice("acme", "parcel.status", "p-1", 0)], now=time.time())
        worker = WebhookWorker(store, settings)
        task = await run_worker(worker)
        try:
            await wait_until(lambda: len(srv.requests) == 2, 10, "two tries")
            await wait_until(lambda: not worker._busy, 5, "the second answer recorded")
        finally:
            await stop(task)
    (gone,) = await store.deliveries("acme", sid, "dead")
    assert gone["last_status"] == 307 and gone["last_error"] == "HTTP 307"
    assert srv.requests == [b"POST /hooks?x=1 HTTP/1.1\r\n"] * 2  # never to /elsewhere


def certificate(folder: Path, dns: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for the host name ``dns`` only."""
    cert, key = folder / f"{dns}.pem", folder / f"{dns}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={dns}",
            "-addext", f"subjectAltName=DNS:{dns}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_verified_with_the_host_name_checked_through_the_worker(
    tmp_path: Path, sqlite_store: DeliveryStore
) -> None:
    tls = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls.cert, tls.key)
    client_ctx = ssl.create_default_context(cafile=str(tls.cert))
    peers: set[object] = set()
    got: list[str] = []
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        got.append(request.headers.get("X-LM-Delivery", ""))
        return web.json_response({"got": len(await request.read())})

    app.router.add_post("/h", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://localhost:{port}/h"
    try:
        async with open_session(CLIENT, tls=client_ctx) as http:
            assert await post(http, url, {}, b"{}") == 200
            assert await post(http, url, {}, b"{}") == 200
        assert len(peers) == 1  # one connection, kept
        async with open_session(CLIENT) as http:  # the system's trust store does not vouch
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await post(http, url, {}, b"{}")
        other_cert, _ = certificate(tmp_path, "elsewhere.test")
        other = ssl.create_default_context(cafile=str(other_cert))
        both = ssl.create_default_context(cafile=str(tls.cert))
        both.load_verify_locations(cafile=str(other_cert))
        async with open_session(CLIENT, tls=other) as http:  # another CA
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await post(http, url, {}, b"{}")
        # a certificate the CA did sign, for another name than the one asked for
        server_ctx.load_cert_chain(other_cert, tmp_path / "elsewhere.test.key")
        async with open_session(CLIENT, tls=both) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError, match=r"[Hh]ostname"):
                await post(http, url, {}, b"{}")
        server_ctx.load_cert_chain(tls.cert, tls.key)
        # the worker's session takes the context given
        await sqlite_store.add_subscription(subscription("wh_00000000000000e1", url))
        batch = [notice("acme", "parcel.status", "p-1", n) for n in range(3)]
        await sqlite_store.log_notices(batch, now=time.time())
        task = await run_worker(WebhookWorker(sqlite_store, FAST, tls=client_ctx))
        try:
            await wait_until(lambda: len(got) == 5, 10, "three webhooks over https")
        finally:
            await stop(task)
        assert got[2:] == [n.id for n in batch]
    finally:
        await runner.cleanup()


# -- receivers inside the hub's network: refused unless allowed ----------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # a cloud's metadata service
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("224.0.0.1", False),
        ("not-an-address", False),
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    from hub_bridge.delivery.push import is_public_address

    assert is_public_address(address) is public


async def test_subscriptions_to_private_receivers_are_refused_unless_allowed(
    sqlite_store: DeliveryStore,
) -> None:
    app = web.Application()
    add_delivery_routes(app, None, store=sqlite_store, allow_private=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hooks = str(server.make_url("/v1/fleets/acme/webhooks"))
    try:
        async with aiohttp.ClientSession() as http:
            for url in (
                "http://127.0.0.1:9/hooks",
                "http://10.1.2.3/hooks",
                "http://[::1]:8080/hooks",
                "http://169.254.169.254/latest",
                "http://localhost:9/hooks",
            ):
                async with http.post(hooks, json={"url": url}) as r:
                    assert r.status == 400, url
                    assert "allow_private" in (await r.json())["error"], url
            # a public address literal needs no lookup: taken
            async with http.post(hooks, json={"url": "https://93.184.216.34/hooks"}) as r:
                assert r.status == 201
    finally:
        await server.close()


async def test_the_worker_never_connects_to_a_private_receiver_unless_allowed(
    sqlite_store: DeliveryStore,
) -> None:
    """Checked at every connection: an address literal, and a name that resolves inward (as a
    name may come to, after the subscription was taken)."""
    store = sqlite_store
    settings = PushSettings(max_attempts=1, poll=0.05, allow_private=False)
    async with Receiver() as rx:
        by_ip, by_name = "wh_00000000000000a1", "wh_00000000000000a2"
        await store.add_subscription(subscription(by_ip, rx.url("ip")))
        await store.add_subscription(
            subscription(by_name, rx.url("name").replace("127.0.0.1", "localhost"))
        )
        await store.log_notices([notice("acme", "parcel.status", "p-1", 0)], now=time.time())
        task = await run_worker(WebhookWorker(store, settings))
        try:

            async def both_dead() -> bool:
                dead = [await store.deliveries("acme", sid, "dead") for sid in (by_ip, by_name)]
                return all(len(d) == 1 for d in dead)

            deadline = time.monotonic() + 10
            while not await both_dead():
                assert time.monotonic() < deadline, "both deliveries dead"
                await asyncio.sleep(0.05)
            assert rx.hits == []  # nothing ever reached the receiver
            (ip,) = await store.deliveries("acme", by_ip, "dead")
            (name,) = await store.deliveries("acme", by_name, "dead")
            assert "not a public address" in ip["last_error"]
            assert "no public address" in name["last_error"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
