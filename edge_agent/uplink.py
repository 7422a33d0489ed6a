"""The uplink: publishes the outbox to the hub over MQTT and applies the hub's ack watermark.

Delivery is at-least-once and the outbox is the only source of truth (DESIGN §3.2):

- events go out in seq order, packed into batches of at most 256 KiB, with up to ``window``
  batches published but not yet covered by the hub's ack watermark;
- an event is deleted only when the watermark (``lm/v1/{fleet}/{device}/ack``, retained) covers
  it, never on the broker's PUBACK: a broker restarted without persistence, a crashed hub, a
  partition lose nothing;
- after a reconnect, or when the oldest batch in flight has waited ``ack_timeout`` for the
  watermark, everything above the watermark is sent again (the hub de-duplicates);
- reconnects use capped exponential backoff with full jitter; the broker state is reported to the
  health registry once per transition;
- a birth message (retained) announces the agent on the state topic; the MQTT will and a clean
  shutdown announce it offline;
- a watermark below what this outbox already had acked means the hub lost its store: the seqs in
  between are announced as ``outbox.evicted`` (reason ``acked-earlier``) so the hub's gap
  detection does not wait for them forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from edge_agent import topics
from edge_agent.backoff import backoff_delay
from edge_agent.config import BrokerConfig, UplinkConfig
from edge_agent.envelope import encode_batch
from edge_agent.health import HealthRegistry
from edge_agent.mqtt import make_client
from edge_agent.outbox import Outbox

__all__ = ["Uplink", "parse_ack"]

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], Awaitable[None]]

_BATCH_OVERHEAD = len(b'{"events":[]}')


def parse_ack(payload: bytes) -> int | None:
    """The watermark of an ack payload ``{"seq": N}``, or None if it is not one."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    return seq


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
        # one event for everything the sender waits on: an ack, a commit, a reconnect
        self._wake = asyncio.Event()
        outbox.commit_listeners.append(self._wake.set)
        self._hub_watermark: int | None = None
        self._resync_announced = -1
        self.published_batches = 0
        self.resends = 0
        self._client: aiomqtt.Client | None = None

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
            client = make_client(
                self.broker,
                f"edge-{self.fleet}-{self.device}",
                will=will,
                max_inflight=max(20, self.cfg.window * 2),
            )
            try:
                async with client:
                    attempt = 0
                    self._client = client
                    self.health.set_state("broker", "connected", url=self.broker.url)
                    try:
                        await self._serve(client, state_topic)
                    finally:
                        self._client = None
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            # a clean stop: the broker sends the will only on a lost connection
                            with contextlib.suppress(Exception):
                                await asyncio.shield(self._say_offline(client, state_topic))
            except aiomqtt.MqttError as exc:
                self.health.set_state("broker", "disconnected", error=str(exc))
            delay = backoff_delay(attempt, cap=self.cfg.backoff_max)
            attempt += 1
            await asyncio.sleep(delay)

    async def _say_offline(self, client: aiomqtt.Client, state_topic: str) -> None:
        payload = {"state": "offline", "reason": "shutdown", "ts": round(time.time(), 3)}
        await asyncio.wait_for(
            client.publish(state_topic, json.dumps(payload), qos=1, retain=True), 2
        )

    async def _serve(self, client: aiomqtt.Client, state_topic: str) -> None:
        await client.subscribe(topics.ack(self.fleet, self.device), qos=1)
        await client.subscribe(topics.cmd(self.fleet, self.device, "+"), qos=1)
        birth = {**self.birth, "state": "online", "ts": round(time.time(), 3)}
        await client.publish(state_topic, json.dumps(birth), qos=1, retain=True)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client), name="uplink-receive")
                tg.create_task(self._send(client), name="uplink-send")
        except ExceptionGroup as group:
            # a lost connection fails both tasks: surface one MqttError to the reconnect loop
            lost = group.subgroup(lambda e: isinstance(e, aiomqtt.MqttError))
            if lost is None:
                raise
            first: BaseException = lost
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic = topics.ack(self.fleet, self.device)
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic == ack_topic:
                await self._on_ack(payload)
            elif self.on_command is not None:
                try:
                    name = topics.parse(topic).name or ""
                    await self.on_command(name, payload)
                except Exception:
                    log.exception("command on %s failed", topic)
                    self.health.count("uplink", "command-failed")

    async def _on_ack(self, payload: bytes) -> None:
        watermark = parse_ack(payload)
        if watermark is None:
            self.health.count("uplink", "bad-ack")
            return
        self._hub_watermark = watermark
        if watermark < self.outbox.acked and self._resync_announced != self.outbox.acked:
            # the hub lost what it had acked: account for those seqs instead of waiting forever
            self._resync_announced = self.outbox.acked
            log.warning(
                "hub watermark %d is below the %d it acked before: announcing the gap",
                watermark,
                self.outbox.acked,
            )
            await self.outbox.announce_acked_earlier(watermark + 1, self.outbox.acked)
        self.outbox.note_ack(watermark)
        self._wake.set()

    async def _send(self, client: aiomqtt.Client) -> None:
        events_topic = topics.events(self.fleet, self.device)
        cursor = self.outbox.acked  # after a (re)connect, resend everything not acked
        inflight: deque[_InFlight] = deque()
        max_body = self.cfg.batch_max_bytes - _BATCH_OVERHEAD
        while True:
            acked = self.outbox.acked
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
                cursor = acked
            # with batches in flight, wait for half a batch before sending another: small
            # batches each cost the hub a commit, so latency and throughput both suffer
            linger = bool(inflight) and self.outbox.estimate_bytes_after(cursor) < max_body // 2
            self._wake.clear()
            # nothing above the cursor: no read (one database round trip saved per wake-up)
            waiting = self.outbox.last_seq > cursor
            if waiting and len(inflight) < self.cfg.window and not linger:
                rows = await self.outbox.read_after(cursor, max_bytes=max_body)
                if rows:
                    payload = encode_batch([body for _, body in rows])
                    await client.publish(events_topic, payload, qos=1)
                    self.published_batches += 1
                    inflight.append(_InFlight(rows[-1][0], self._mono()))
                    cursor = rows[-1][0]
                    continue
            wait = 1.0
            if inflight:
                wait = max(0.01, min(wait, inflight[0].sent_at + self.cfg.ack_timeout - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
