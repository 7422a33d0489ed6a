"""Deleting only what the hub has shown is this device's: the ack's ``"got"`` names.

After a lost outbox file a device may give seqs again that an earlier incarnation gave: the hub
can hold that incarnation's event at a seq whose own event it has not seen yet, and its
watermark then covers the seq anyway. The pure part (digest, ``AckProof``) is tested on its own;
the uplink against a real mosquitto, with this test in the hub's place publishing the acks the
race produces; the hub's side through the real bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_agent.ack_proof import MAX_SENT, AckProof
from edge_agent.config import UplinkConfig
from edge_agent.outbox import Draft, Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.settings import BrokerConfig
from edge_agent.uplink import Uplink, parse_ack
from edge_agent.wire import topics
from edge_agent.wire.envelope import batch_digest, encode_batch, encode_checked
from edge_agent.wire.limits import ACK_MAX_BYTES, ACK_MAX_RANGES
from edge_agent.wire.topics import TopicName
from hub_bridge.bridge import HubBridge
from hub_bridge.config import load_hub_config
from hub_bridge.ingest import batch_proof, check_events
from hub_bridge.timeline import Timeline
from simulators.broker import Mosquitto
from tests.harness import Running, write_hub_config

TS = "2026-11-21T08:00:00.000Z"


def scan(i: int) -> Draft:
    return Draft(
        "scan", {"text": f"PARCEL{i:06d}", "symbology": "code128", "source": "hand"}, TS, "ntp"
    )


def body(seq: int, event_id: str, text: str = "P1") -> bytes:
    data = {"text": text, "symbology": "code128", "source": "hand"}
    return encode_checked(event_id, seq, "acme", "van-1", "scan", TS, "ntp", data)


# -- the names, the same on both sides ------------------------------------------------------------


def test_the_hub_names_a_message_by_its_seqs_and_the_digest_of_its_payload() -> None:
    rows = [(7, body(7, "id-a")), (8, body(8, 'q"uo\\te')), (10, body(10, "id-c"))]
    # an envelope the hub rejects still counts: its seq is accounted for, and the device sent it
    bad = json.loads(body(11, "id-d"))
    bad["ts"] = "not a time"
    payload = encode_batch([b for _, b in rows] + [json.dumps(bad).encode()])
    check = check_events(TopicName("acme", "van-1", "events"), payload, time.time())
    assert len(check.rejects) == 1 and len(check.events) == 3
    assert batch_proof(check, payload) == (7, 11, batch_digest(payload))
    # one byte otherwise: another digest
    assert batch_digest(payload) != batch_digest(payload.replace(b"id-c", b"id-e"))
    assert len(batch_digest(payload)) == 16
    garbage = b'{"events":[{"seq":"x"}]}'
    nothing = check_events(TopicName("acme", "van-1", "events"), garbage, time.time())
    assert batch_proof(nothing, garbage) is None  # no seq to name


# -- AckProof ------------------------------------------------------------------------------------


def test_a_batch_proves_its_span_only_when_its_name_matches() -> None:
    proof = AckProof()
    proof.sent(0, 1, 4, "mine")  # held 1, 2 and 4: 3 was evicted here
    proof.got([(1, 4, "theirs")])
    assert proof.reach(0) == 0
    proof.got([(1, 3, "mine"), (2, 4, "mine")])  # other seqs: not this batch
    assert proof.reach(0) == 0
    proof.got([(1, 4, "mine")])
    assert proof.reach(0) == 4


def test_a_notice_sent_ahead_proves_nothing_below_it() -> None:
    """The race that lost an event: the hub holds another incarnation's event at 5 and stores
    this device's notice at 6; its watermark covers 5 before this device's 5 reached it."""
    proof = AckProof()
    proof.sent(4, 5, 6, "probe+notice")  # the window, in order
    proof.got([(6, 6, "notice")])  # the notice sent ahead alone: not recorded as the window's
    assert proof.reach(4) == 4
    proof.got([(5, 6, "probe+notice")])
    assert proof.reach(4) == 6


def test_spans_chain_from_the_acked_seq_and_a_hole_stops_them() -> None:
    proof = AckProof()
    proof.sent(0, 1, 1, "a")
    proof.sent(1, 2, 2, "b")
    proof.sent(2, 3, 3, "c")
    proof.got([(3, 3, "c"), (1, 1, "a")])
    assert proof.reach(0) == 1  # 2 unproven: 3 waits
    assert proof.reach(0) == 1  # asking again changes nothing
    proof.got([(2, 2, "b")])
    assert proof.reach(1) == 3
    proof.sent(3, 4, 4, "d")
    proof.forget()  # renumbered: the record is void
    proof.got([(4, 4, "d")])
    assert proof.reach(3) == 3


def test_the_record_is_bounded() -> None:
    proof = AckProof()
    for i in range(MAX_SENT + 10):
        proof.sent(i, i + 1, i + 1, f"d{i}")
    proof.got([(1, 1, "d0"), (MAX_SENT + 10, MAX_SENT + 10, f"d{MAX_SENT + 9}")])
    assert proof.reach(0) == 0  # the oldest was forgotten: unproven, resent later
    assert proof.reach(MAX_SENT + 9) == MAX_SENT + 10


# -- the uplink, with this test as the hub -------------------------------------------------------


@contextlib.asynccontextmanager
async def running_agent(path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Outbox, Uplink]]:
    """An outbox at ``path`` and its uplink, running against ``broker`` until the exit."""
    outbox = await Outbox.open(path, "acme", "van-1", disk_reserve_bytes=0)
    uplink = Uplink(
        BrokerConfig(url=broker.url),
        UplinkConfig(ack_timeout=30.0),
        outbox,
        HealthRegistry(),
        fleet="acme",
        device="van-1",
        birth={},
    )
    task = asyncio.create_task(uplink.run())
    try:
        yield outbox, uplink
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await outbox.close()


@pytest.fixture
async def agent(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Outbox, Uplink]]:
    async with running_agent(tmp_path / "o.db", broker) as both:
        yield both


async def until(cond: Callable[[], bool]) -> None:
    """Polls: the outbox's acked count has no event to wait on."""
    async with asyncio.timeout(10):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_watermark_deletes_only_what_the_ack_names(
    agent: tuple[Outbox, Uplink], broker: Mosquitto
) -> None:
    outbox, _ = agent
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-hub") as hub:
        await hub.subscribe(topics.events("acme", "van-1"), qos=1)
        await outbox.append([scan(i) for i in range(3)])
        async with asyncio.timeout(10):
            message = await anext(aiter(hub.messages))
        payload = message.payload
        assert isinstance(payload, bytes)
        check = check_events(TopicName("acme", "van-1", "events"), payload, time.time())
        lo, hi, digest = batch_proof(check, payload) or (0, 0, "")
        assert (lo, hi) == (1, 3)
        ack_topic = topics.ack("acme", "van-1")

        async def ack(body: dict[str, object]) -> None:
            await hub.publish(ack_topic, json.dumps(body), qos=1, retain=True)
            await asyncio.sleep(0.3)  # the uplink has read it (nothing is expected to change)

        # the watermark covers all three, but the hub names none of them (or another batch, or
        # this one's seqs with other events): nothing is deleted
        await ack({"seq": 3, "got": []})
        await ack({"seq": 3, "check": [3, check.events[2]["id"]], "got": [[3, 3, digest]]})
        await ack({"seq": 3, "got": [[1, 2, digest]]})
        await ack({"seq": 3, "got": [[1, 3, batch_digest(payload.replace(b"scan", b"pod"))]]})
        # once the hub names what it stored, an ack without names proves nothing either
        await ack({"seq": 3})
        assert outbox.acked == 0
        assert len(await outbox.read_after(0, max_bytes=10**6)) == 3
        # named: deleted, but never beyond the watermark
        await hub.publish(ack_topic, json.dumps({"seq": 2, "got": [[lo, hi, digest]]}), qos=1)
        await until(lambda: outbox.acked == 2)
        await hub.publish(ack_topic, json.dumps({"seq": 3, "got": []}), qos=1)
        await until(lambda: outbox.acked == 3)  # proven before
    legacy = parse_ack(b'{"seq": 3}')
    assert legacy is not None and legacy.got is None  # a hub that names nothing


# -- the hub's side: the real bridge names what it stored ----------------------------------------


async def test_the_hub_acks_name_every_message_stored_and_none_when_conflicts_are_cut(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = load_hub_config(write_hub_config(tmp_path, broker.url))
    tl = await Timeline.open(tmp_path / "timeline.db")
    bridge = HubBridge(config, tl, HealthRegistry())
    events_topic = topics.events("acme", "van-1")
    try:
        async with (
            Running(bridge, check_still_running=True),
            aiomqtt.Client("127.0.0.1", broker.port, identifier="van-1") as van,
        ):
            await asyncio.wait_for(bridge.subscribed.wait(), 20)
            await van.subscribe(topics.ack("acme", "van-1"), qos=1)

            async def send(pairs: list[tuple[int, str]]) -> dict[str, Any]:
                """Publish one batch; the first ack that names it."""
                payload = encode_batch([body(s, i) for s, i in pairs])
                await van.publish(events_topic, payload, qos=1)
                want = [min(p[0] for p in pairs), max(p[0] for p in pairs), batch_digest(payload)]
                async with asyncio.timeout(10):
                    async for message in van.messages:
                        assert isinstance(message.payload, bytes)
                        ack = json.loads(message.payload)
                        assert isinstance(ack.get("got"), list)  # always there
                        if want in ack["got"]:
                            return ack
                raise AssertionError("unreachable")

            ack = await send([(1, "a1"), (2, "a2"), (3, "a3")])
            assert ack["seq"] == 3 and "conflicts" not in ack
            ack = await send([(2, "other"), (4, "a4")])  # 2 is taken: named, and the conflict
            assert ack["seq"] == 4 and ack["conflicts"] == [[2, 2]]
            odd = [(s, f"b{s}") for s in range(5, 5 + 2 * 101, 2)]
            await send(odd)
            # 101 conflicts, one range each: the list is cut, so nothing is named
            await van.publish(events_topic, encode_batch([body(s, f"c{s}") for s, _ in odd]), qos=1)
            async with asyncio.timeout(10):
                async for message in van.messages:
                    assert isinstance(message.payload, bytes)
                    ack = json.loads(message.payload)
                    if "conflicts" in ack:
                        break
            assert len(ack["conflicts"]) == ACK_MAX_RANGES and ack["got"] == []
            assert len(message.payload) < ACK_MAX_BYTES
    finally:
        await tl.close()


async def test_from_a_hub_that_names_nothing_an_ack_deletes_only_what_went_to_an_online_hub(
    agent: tuple[Outbox, Uplink], broker: Mosquitto
) -> None:
    """A hub of the contract's bare ``{"seq": N}``: believed up to what was published while a
    hub said on this connection that it was online; not at all while none did, or after every
    one said it is offline (a forged ack, then: what was published went to no hub)."""
    outbox, uplink = agent
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-hub") as hub:
        await hub.subscribe(topics.events("acme", "van-1"), qos=1)
        ack_topic = topics.ack("acme", "van-1")
        state = f"{topics.PREFIX}/_hub/h1/state"
        await outbox.append([scan(i) for i in range(4)])
        async with asyncio.timeout(10):
            await anext(aiter(hub.messages))  # published, and no hub has said it is online
        await hub.publish(ack_topic, json.dumps({"seq": 4}), qos=1, retain=True)
        await asyncio.sleep(0.5)
        assert outbox.acked == 0
        assert uplink.health.counters("uplink")["ack-without-hub"] >= 1
        await hub.publish(state, json.dumps({"state": "online"}), qos=1, retain=True)
        async with asyncio.timeout(10):
            await anext(aiter(hub.messages))  # a hub came online: sent again, to it
        await hub.publish(ack_topic, json.dumps({"seq": 2}), qos=1, retain=True)
        await until(lambda: outbox.acked == 2)
        await hub.publish(state, json.dumps({"state": "offline"}), qos=1, retain=True)
        await hub.publish(ack_topic, json.dumps({"seq": 4}), qos=1, retain=True)
        await asyncio.sleep(0.5)
        assert outbox.acked == 2
        assert [seq for seq, _ in await outbox.read_after(2, max_bytes=10**6)] == [3, 4]
        await hub.publish(state, json.dumps({"state": "online"}), qos=1, retain=True)
        async with asyncio.timeout(10):
            await anext(aiter(hub.messages))
        await hub.publish(ack_topic, json.dumps({"seq": 4}), qos=1, retain=True)
        await until(lambda: outbox.acked == 4)


async def test_a_hub_online_before_the_agent_connected_gets_each_batch_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A birth retained from before the connection: that hub was subscribed when the first
    batches went out, so they are not sent again, and its bare acks are believed."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-hub") as hub:
        await hub.subscribe(topics.events("acme", "van-1"), qos=1)
        state = f"{topics.PREFIX}/_hub/h1/state"
        await hub.publish(state, json.dumps({"state": "online"}), qos=1, retain=True)
        # the events are there before the agent connects: its first batch goes out at once
        setup = await Outbox.open(tmp_path / "o.db", "acme", "van-1", disk_reserve_bytes=0)
        await setup.append([scan(i) for i in range(3)])
        await setup.close()
        async with running_agent(tmp_path / "o.db", broker) as (outbox, _):
            async with asyncio.timeout(10):
                first = await anext(aiter(hub.messages))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    again = await anext(aiter(hub.messages))
                    raise AssertionError(f"sent again: {again.payload!r}")
            assert first.payload == encode_batch(
                [b for _, b in await outbox.read_after(0, max_bytes=10**6)]
            )
            await hub.publish(topics.ack("acme", "van-1"), json.dumps({"seq": 3}), qos=1)
            await until(lambda: outbox.acked == 3)
