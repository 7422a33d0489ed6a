"""The uplink: publishes the outbox to the hub over MQTT and applies the hub's ack watermark.

Delivery is at-least-once and the outbox is the only source of truth (DESIGN §3.2):

- events go out in seq order, packed into batches of at most 256 KiB, with up to ``window``
  batches published but not yet covered by the hub's ack watermark;
- an event is deleted only when the watermark (``lm/v1/{fleet}/{device}/ack``, retained) covers
  it, never on the broker's PUBACK: a broker restarted without persistence, a crashed hub, a
  partition lose nothing. From a hub that names the batches it stored (``"got"``), only as far
  as those names prove that the seqs hold this device's events (``ack_proof``);
- after a reconnect, or when the oldest batch in flight has waited ``ack_timeout`` for the
  watermark, everything above the watermark is sent again (the hub de-duplicates);
- reconnects use capped exponential backoff with full jitter; the broker state is reported to the
  health registry once per transition;
- a birth message (retained) announces the agent on the state topic; the MQTT will and a clean
  shutdown announce it offline;
- a watermark below what this outbox already had acked means the hub lost its store: the seqs in
  between are announced as ``outbox.evicted`` (reason ``acked-earlier``) so the hub's gap
  detection does not wait for them forever;
- a command is applied only from this device's own ``cmd/{name}`` topic: anything else that
  arrives (the broker's ACL should deliver nothing else) is ignored and counted
  (``foreign-command``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from edge_agent.ack_proof import AckProof
from edge_agent.config import UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.platform.backoff import backoff_delay, is_silence, probe_delay
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.linkwatch import LinkWatch
from edge_agent.platform.mqtt import make_client
from edge_agent.platform.settings import BrokerConfig
from edge_agent.wire import topics
from edge_agent.wire.commands import CommandRefused, command_ack, command_id
from edge_agent.wire.envelope import EnvelopeError, batch_digest, encode_batch
from edge_agent.wire.limits import ACK_MAX_BYTES, ACK_MAX_GOT, ACK_MAX_RANGES, BATCH_OVERHEAD

__all__ = ["MAX_SEQ", "Ack", "Uplink", "parse_ack", "parse_hub_state"]

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], Awaitable[None]]
"""Applies one command (name, payload); raises ``CommandRefused`` to refuse it."""

MAX_SEQ = 2**48
"""An ack at or beyond this is impossible and ignored: no device counts this far, and a seq
floor taken from the clock (milliseconds, about 2**41 today) stays far below it. Renumbering on
a forged ack can thus cost a device at most 2**48 of its 2**53 seqs, never an event."""

LINK_JITTER_S = 0.25
"""Most a reconnect waits after the network changed (vans of one depot do not share a modem)."""

NOTICE_BATCH = 64
"""Most notices read ahead of the window at once."""

_HUB_STATE_PREFIX = f"{topics.PREFIX}/_hub/"
_DIGEST_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class Ack:
    """The hub's ack: watermark ``seq``; optionally the highest seq it holds of this device
    (``top``), the id of its stored event at one seq (``check``), the seq ranges of the last
    batch that it holds with other events (``conflicts``), so a device can tell whether those
    seqs are its own events, and the messages it just stored (``got``: ``[lo, hi, digest]``;
    None when the hub does not name them)."""

    seq: int
    top: int | None = None
    check: tuple[int, str] | None = None
    conflicts: tuple[tuple[int, int], ...] = ()
    got: tuple[tuple[int, int, str], ...] | None = None


def _nonneg_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_ack(payload: bytes) -> Ack | None:
    """The ack ``{"seq": N, "top"?: M, "check"?: [S, ID], "conflicts"?: [[LO, HI], ...],
    "got"?: [[LO, HI, DIGEST], ...]}``, or None if it is not one (malformed optional parts are
    ignored; a malformed ``got`` names nothing)."""
    if len(payload) > ACK_MAX_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    seq = _nonneg_int(obj.get("seq"))
    if seq is None:
        return None
    top = _nonneg_int(obj.get("top"))
    check = obj.get("check")
    pair: tuple[int, str] | None = None
    if (
        isinstance(check, list)
        and len(check) == 2
        and _nonneg_int(check[0]) is not None
        and isinstance(check[1], str)
    ):
        pair = (int(check[0]), check[1])
    ranges: list[tuple[int, int]] = []
    raw = obj.get("conflicts")
    if isinstance(raw, list):
        for item in raw[:ACK_MAX_RANGES]:
            if isinstance(item, list) and len(item) == 2:
                lo, hi = _nonneg_int(item[0]), _nonneg_int(item[1])
                if lo is not None and hi is not None and lo <= hi:
                    ranges.append((lo, hi))
    return Ack(seq, top, pair, tuple(ranges), _parse_got(obj.get("got")))


def _parse_got(raw: Any) -> tuple[tuple[int, int, str], ...] | None:
    if raw is None:
        return None
    named: list[tuple[int, int, str]] = []
    if isinstance(raw, list):
        for item in raw[:ACK_MAX_GOT]:
            if isinstance(item, list) and len(item) == 3:
                lo, hi, digest = _nonneg_int(item[0]), _nonneg_int(item[1]), item[2]
                if (
                    lo is not None
                    and hi is not None
                    and lo <= hi
                    and isinstance(digest, str)
                    and len(digest) <= _DIGEST_MAX_CHARS
                ):
                    named.append((lo, hi, digest))
    return tuple(named)


def parse_hub_state(payload: bytes) -> str | None:
    """``online`` or ``offline`` from a hub's state message; None if it is not one."""
    if not payload or len(payload) > ACK_MAX_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    state = obj.get("state") if isinstance(obj, dict) else None
    return state if state in ("online", "offline") else None


def _body_id(body: bytes) -> str | None:
    """The ``id`` of a stored envelope (the outbox writes it first)."""
    try:
        env = json.loads(body)
    except ValueError:
        return None
    eid = env.get("id") if isinstance(env, dict) else None
    return eid if isinstance(eid, str) else None


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(slots=True)
class _InFlight:
    last_seq: int
    sent_at: float


class Uplink:
    """Runs until cancelled: connect, publish, apply acks, reconnect."""

    def __init__(
        self,
        broker: BrokerConfig,
        uplink: UplinkConfig,
        outbox: Outbox,
        health: HealthRegistry,
        *,
        fleet: str,
        device: str,
        birth: dict[str, Any],
        on_command: CommandHandler | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        link: LinkWatch | None = None,
    ) -> None:
        self.broker = broker
        self.cfg = uplink
        self.outbox = outbox
        self.health = health
        self.fleet = fleet
        self.device = device
        self.birth = birth
        self.on_command = on_command
        self._mono = monotonic
        self.link = link
        """When given, a change of the host's links, addresses or routes ends a backoff early."""
        # one event for everything the sender waits on: an ack, a commit, a reconnect
        self._wake = asyncio.Event()
        outbox.commit_listeners.append(self._wake.set)
        self._hub_watermark: int | None = None
        self._resync_announced = -1
        self._resend = True
        self._hubs: dict[str, str] = {}
        """Each hub instance's last state as this connection heard it (``_hub/{id}/state``)."""
        self._published_hi = 0
        """The highest seq published on this connection since a hub was listening (one that came
        online while none was drops what was published before)."""
        self._rebased_above = 0
        self._seqs_agree = False
        self._proof = AckProof()
        self._proving = False
        """Set by the first ack that names what it stored: from then on only such names prove."""
        self.published_batches = 0
        self.resends = 0
        self._client: aiomqtt.Client | None = None
        self._foreign_logged = False

    @property
    def connected(self) -> bool:
        """Whether a broker connection is up."""
        return self._client is not None

    async def run(self) -> None:
        """Connect and serve forever, reconnecting with backoff; returns only when cancelled."""
        attempt = 0
        state_topic = topics.state(self.fleet, self.device)
        will = aiomqtt.Will(
            state_topic,
            json.dumps({"state": "offline", "reason": "lost"}),
            qos=1,
            retain=True,
        )
        while True:
            if self.link is not None:
                self.link.changed.clear()  # what changes from now on may end the next pause
            client = make_client(
                self.broker,
                f"edge-{self.fleet}-{self.device}",
                will=will,
                max_inflight=max(20, self.cfg.window * 2),
            )
            try:
                async with client:
                    if _cancelling():  # a stop requested while connecting: stop, do not serve
                        raise asyncio.CancelledError
                    attempt = 0
                    self._client = client
                    self.health.set_state("broker", "connected", url=self.broker.url)
                    try:
                        await self._serve(client, state_topic)
                    finally:
                        self._client = None
                        if _cancelling():
                            # a clean stop: the broker sends the will only on a lost connection
                            with contextlib.suppress(Exception):
                                await asyncio.shield(self._say_offline(client, state_topic))
            except aiomqtt.MqttError as exc:
                # a connection lost while the task is being cancelled must not swallow the
                # cancellation (the agent would never stop): stop now
                if _cancelling():
                    raise asyncio.CancelledError from exc
                self.health.set_state("broker", "disconnected", error=str(exc))
                if is_silence(exc):
                    # nothing answered: probe again soon, a returning link must not wait for a
                    # backoff meant for a broker that refuses
                    attempt = 0
                    await self._pause(min(probe_delay(), self.cfg.backoff_max))
                    continue
            delay = backoff_delay(attempt, cap=self.cfg.backoff_max)
            attempt += 1
            if await self._pause(delay):
                attempt = 0

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` before the next attempt, or less: True if the network changed.

        A van's link coming back (a modem re-attached, an address or a route back) is worth an
        attempt at once, with a jitter of a quarter second at most; the backoff with full
        jitter stays for a broker that refuses (restarting under a whole fleet).
        """
        if self.link is None:
            await asyncio.sleep(delay)
            return False
        try:
            async with asyncio.timeout(delay):
                await self.link.changed.wait()
        except TimeoutError:
            return False
        await asyncio.sleep(random.uniform(0, LINK_JITTER_S))
        return True

    async def _say_offline(self, client: aiomqtt.Client, state_topic: str) -> None:
        payload = {"state": "offline", "reason": "shutdown", "ts": round(time.time(), 3)}
        await asyncio.wait_for(
            client.publish(state_topic, json.dumps(payload), qos=1, retain=True), 2
        )

    async def _serve(self, client: aiomqtt.Client, state_topic: str) -> None:
        self._resend = True  # after a (re)connect, everything not acked is sent again
        # what the last connection heard and sent says nothing of this one: a broker that
        # restarted without persistence lost the hubs' subscriptions and their births
        self._hubs.clear()
        self._published_hi = 0
        await client.subscribe(topics.ack(self.fleet, self.device), qos=1)
        await client.subscribe(topics.cmd(self.fleet, self.device, "+"), qos=1)
        await client.subscribe(topics.HUB_STATE_FILTER, qos=1)
        birth = {**self.birth, "state": "online", "ts": round(time.time(), 3)}
        await client.publish(state_topic, json.dumps(birth), qos=1, retain=True)
        # not a TaskGroup with an empty body: Python 3.11's TaskGroup leaves its parent task
        # cancelled for good when a child fails while it waits in __aexit__, and the agent could
        # then neither tell a stop from a lost connection nor stop at all
        tasks = [
            asyncio.create_task(self._receive(client), name="uplink-receive"),
            asyncio.create_task(self._send(client), name="uplink-send"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:  # read every child's end: none is left "never retrieved"
                if not task.cancelled():
                    task.exception()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise aiomqtt.MqttError("the uplink stopped serving")

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic = topics.ack(self.fleet, self.device)
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic == ack_topic:
                await self._on_ack(payload)
            elif topic.startswith(_HUB_STATE_PREFIX):
                self._on_hub_state(topic, payload, retained=bool(message.retain))
            elif not self._own_command(topic):
                self._on_foreign(topic)
            elif self.on_command is not None:
                await self._on_command(client, topic, payload)

    def _own_command(self, topic: str) -> bool:
        """Whether ``topic`` is ``lm/v1/{fleet}/{device}/cmd/{name}`` of this very device."""
        try:
            name = topics.parse(topic)
        except EnvelopeError:
            return False
        return (name.fleet, name.device, name.kind) == (self.fleet, self.device, "cmd")

    def _on_foreign(self, topic: str) -> None:
        """A message on a topic that is not this device's to read: never applied, never answered.

        The broker's ACL should never deliver one (DESIGN §2); a session left with a wider
        subscription (the same client id used elsewhere, a broker without the ACL) could. The
        first is logged, every one is counted (``foreign-command`` in health).
        """
        self.health.count("uplink", "foreign-command")
        if not self._foreign_logged:
            self._foreign_logged = True
            log.warning("ignored a message on %r: not this device's command topic", topic[:200])

    async def _on_command(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        """Apply a command and answer it on ``cmd-ack`` when it carries an ``id``."""
        assert self.on_command is not None
        error: str | None = None
        try:
            name = topics.parse(topic).name or ""
            await self.on_command(name, payload)
        except CommandRefused as exc:
            error = str(exc) or "refused"
            self.health.count("uplink", "command-refused")
        except Exception as exc:
            log.exception("command on %s failed", topic)
            self.health.count("uplink", "command-failed")
            error = f"failed: {type(exc).__name__}"
        cid = command_id(payload)
        if cid is not None:
            ack = command_ack(cid, error)
            await client.publish(topics.cmd_ack(self.fleet, self.device), ack, qos=1)

    def _on_hub_state(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """A hub instance's birth or will: when one comes online, resend what is unacked now.

        After a broker restart without persistence the agent may be back before the hub and
        publish to no subscriber; without this it would wait a whole ``ack_timeout``. A birth
        retained from before this connection is a hub that was subscribed already, when this
        connection's first batches went out: nothing to send again.
        """
        hub = topic[len(_HUB_STATE_PREFIX) :].split("/", 1)[0][:64]
        state = parse_hub_state(payload)
        if state is None:
            self.health.count("uplink", "bad-hub-state")
            return
        before = self._hubs.get(hub)
        if before is None and len(self._hubs) >= 64:
            return  # no topic flood can grow this table
        listening = "online" in self._hubs.values()
        self._hubs[hub] = state
        if state == "online" and before != "online" and not retained:
            if before is not None:
                log.info("hub %s is online: resending what is unacked", hub)
            if not listening:
                # it subscribed just now: what was published before may have gone to no one
                self._published_hi = 0
            self._resend = True
            self._wake.set()

    async def _on_ack(self, payload: bytes) -> None:
        ack = parse_ack(payload)
        if ack is None:
            self.health.count("uplink", "bad-ack")
            return
        outbox = self.outbox
        watermark = ack.seq
        hub_top = max(watermark, ack.top or 0)
        if hub_top >= MAX_SEQ:
            self.health.count("uplink", "impossible-ack")
            log.warning("ack %d is beyond any seq a device can assign: ignored", hub_top)
            return
        # what this outbox holds unacked: renumbered events all follow the last rebase
        held = (max(outbox.acked, self._rebased_above) + 1, outbox.last_seq)
        conflict = any(lo <= held[1] and hi >= held[0] for lo, hi in ack.conflicts) or (
            # once one check matched, this process and the hub agree on whose seqs these are:
            # later reuse shows up in "conflicts" (one read, not one per ack)
            ack.check is not None and not self._seqs_agree and await self._check_differs(*ack.check)
        )
        if hub_top > outbox.last_seq or conflict:
            # the hub holds seqs of this device that this outbox never assigned (or assigned
            # to other events): the file was lost, replaced, or restarted from a clock that is
            # behind. Never delete on such an ack; continue the seqs after the hub's.
            self.health.count("uplink", "seqs-rebased")
            self._rebased_above = max(hub_top, outbox.last_seq)
            await outbox.rebase(hub_top)
            self._published_hi = 0  # none of the renumbered events has been published yet
            self._proof.forget()
            self._resend = True
            self._wake.set()
            return
        self._hub_watermark = watermark
        if watermark < outbox.acked and self._resync_announced != outbox.acked:
            # the hub lost what it had acked: account for those seqs instead of waiting forever
            self._resync_announced = outbox.acked
            log.warning(
                "hub watermark %d is below the %d it acked before: announcing the gap",
                watermark,
                outbox.acked,
            )
            await outbox.announce_acked_earlier(watermark + 1, outbox.acked)
        if ack.got is not None:
            self._proving = True
            self._proof.got(ack.got)
        if self._proving:
            # believed only as far as the hub has shown that the seqs hold this device's own
            # events: after a lost file another incarnation's may hold some of them. Short of
            # the watermark is common (a notice sent ahead, another hub's batch): not counted
            believed = min(watermark, self._proof.reach(outbox.acked))
        elif "online" not in self._hubs.values():
            # no hub has said on this connection that it is online (or every one said it is
            # offline): no hub sent this, it deletes nothing. A hub's acks reach the agent
            # before its will does, and it subscribes before its birth
            believed = outbox.acked
            self.health.count("uplink", "ack-without-hub")
        else:
            # a hub that names nothing: believed as far as this device has published since a
            # hub was listening (a forged or stale retained ack deletes nothing unsent, nor what
            # went to a broker no hub was subscribed to)
            believed = min(watermark, max(self._published_hi, outbox.acked))
            if believed < watermark:
                self.health.count("uplink", "ack-beyond-published")
        outbox.note_ack(believed)
        self._wake.set()

    async def _check_differs(self, seq: int, event_id: str) -> bool:
        """Whether this outbox holds an unacked event ``seq`` whose id is not ``event_id``."""
        if seq <= max(self.outbox.acked, self._rebased_above) or seq > self.outbox.last_seq:
            return False
        rows = await self.outbox.read_seqs([seq])
        if not rows:
            return False
        held = _body_id(rows[0][1])
        if held is not None and held == event_id:
            self._seqs_agree = True
        return held is not None and held != event_id

    async def _send(self, client: aiomqtt.Client) -> None:
        events_topic = topics.events(self.fleet, self.device)
        cursor = self.outbox.acked
        inflight: deque[_InFlight] = deque()
        notices_sent: set[int] = set()
        max_body = self.cfg.batch_max_bytes - BATCH_OVERHEAD
        while True:
            acked = self.outbox.acked
            if self._resend:
                # a (re)connect, a hub that came online, or renumbered seqs: start over
                self._resend = False
                inflight.clear()
                notices_sent.clear()
                cursor = acked
            cursor = max(cursor, acked)
            while inflight and inflight[0].last_seq <= acked:
                inflight.popleft()
            now = self._mono()
            if inflight and now - inflight[0].sent_at > self.cfg.ack_timeout:
                log.info(
                    "no ack for seq %d within %.0fs: resending", acked + 1, self.cfg.ack_timeout
                )
                self.resends += 1
                inflight.clear()
                notices_sent.clear()
                cursor = acked
            # notices (evictions, alarms) go ahead of the window: the hub's watermark may wait
            # on seqs only they account for, and they are few and small
            ahead = [n for n in self.outbox.notices_after(cursor) if n not in notices_sent]
            if ahead:
                rows = await self.outbox.read_seqs(ahead[:NOTICE_BATCH])
                notices_sent.update(ahead[:NOTICE_BATCH])
                if rows:
                    await self._publish(client, events_topic, rows, max_body)
                    continue
            # with batches in flight, wait for half a batch before sending another: small
            # batches each cost the hub a commit, so latency and throughput both suffer
            linger = bool(inflight) and self.outbox.estimate_bytes_after(cursor) < max_body // 2
            self._wake.clear()
            # nothing above the cursor: no read (one database round trip saved per wake-up)
            waiting = self.outbox.last_seq > cursor
            if waiting and len(inflight) < self.cfg.window and not linger:
                rows = await self.outbox.read_after(cursor, max_bytes=max_body)
                if rows:
                    await self._publish(client, events_topic, rows, max_body, after=cursor)
                    inflight.append(_InFlight(rows[-1][0], self._mono()))
                    cursor = rows[-1][0]
                    continue
            wait = 1.0
            if inflight:
                wait = max(0.01, min(wait, inflight[0].sent_at + self.cfg.ack_timeout - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        rows: list[tuple[int, bytes]],
        max_body: int,
        *,
        after: int | None = None,
    ) -> None:
        """Publish rows as one batch (several when notices exceed one); note what was sent.

        ``after``: the rows are the window's, every held event after that seq (the ack proof
        records them; notices sent ahead prove nothing about the seqs below them)."""
        start = 0
        size = 0
        for i, (_, body) in enumerate(rows):
            if i > start and size + len(body) + 1 > max_body:
                after = await self._publish_one(client, topic, rows[start:i], after)
                start, size = i, 0
            size += len(body) + 1
        if start < len(rows):
            await self._publish_one(client, topic, rows[start:], after)

    async def _publish_one(
        self,
        client: aiomqtt.Client,
        topic: str,
        rows: list[tuple[int, bytes]],
        after: int | None,
    ) -> int | None:
        hi = max(seq for seq, _ in rows)
        payload = encode_batch([body for _, body in rows])
        # recorded before publishing: the ack may come before the PUBACK. A publish that fails
        # ends the connection, and the next one starts its record anew
        if after is not None:
            self._proof.sent(after, rows[0][0], hi, batch_digest(payload))
        self._published_hi = max(self._published_hi, hi)
        await client.publish(topic, payload, qos=1)
        self.published_batches += 1
        return hi if after is not None else None
