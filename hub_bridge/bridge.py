"""The hub bridge service: MQTT in, timeline store, ack watermarks out.

Subscribes to every device's events (optionally through a shared-subscription group, so N hub
instances split the load: ``$share/{group}/lm/v1/+/+/events``) and state topics. For each events
message: check it (``ingest.check_events``), store what is valid in one transaction, dead-letter
the rest with the reason, and publish the device's ack watermark, retained. The ack is published
after every batch, even when it did not move, so a device whose broker lost the retained ack
learns it again from its resends. On every (re)connect all known watermarks are published again.

Nothing a device sends can stop the hub: every failure of one message is recorded and the loop
goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiomqtt

from edge_agent import topics
from edge_agent.backoff import backoff_delay
from edge_agent.envelope import EnvelopeError
from edge_agent.health import HealthRegistry
from edge_agent.mqtt import make_client
from hub_bridge.config import HubConfig
from hub_bridge.ingest import check_events
from hub_bridge.timeline import Timeline

__all__ = ["HubBridge"]

log = logging.getLogger(__name__)


class HubBridge:
    """Runs until cancelled: connect, ingest, acknowledge, reconnect."""

    def __init__(self, config: HubConfig, timeline: Timeline, health: HealthRegistry) -> None:
        self.config = config
        self.timeline = timeline
        self.health = health
        self.batches = 0
        self.subscribed = asyncio.Event()
        """Set once the first subscriptions are in place (the hub is ready for devices)."""

    def _events_filter(self) -> str:
        base = f"{topics.PREFIX}/+/+/events"
        group = self.config.ingest.share_group
        return f"$share/{group}/{base}" if group else base

    async def run(self) -> None:
        """Serve forever, reconnecting with backoff; returns only when cancelled."""
        attempt = 0
        while True:
            client = make_client(self.config.broker, f"hub-{self.config.hub_id}", max_inflight=100)
            try:
                async with client:
                    attempt = 0
                    self.health.set_state("broker", "connected", url=self.config.broker.url)
                    await client.subscribe(self._events_filter(), qos=1)
                    await client.subscribe(f"{topics.PREFIX}/+/+/state", qos=1)
                    for fleet, device, wm in await self.timeline.watermarks():
                        await self._publish_ack(client, fleet, device, wm)
                    self.subscribed.set()
                    async for message in client.messages:
                        await self._handle(client, message)
            except aiomqtt.MqttError as exc:
                self.health.set_state("broker", "disconnected", error=str(exc))
            await asyncio.sleep(backoff_delay(attempt, cap=30.0))
            attempt += 1

    async def _publish_ack(self, client: aiomqtt.Client, fleet: str, device: str, wm: int) -> None:
        payload = json.dumps({"seq": wm})
        await client.publish(topics.ack(fleet, device), payload, qos=1, retain=True)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            name = topics.parse(topic)
        except EnvelopeError as exc:
            await self._dead(topic, str(exc), payload)
            return
        try:
            if name.kind == "events":
                await self._on_events(client, topic, name, payload)
            elif name.kind == "state":
                await self._on_state(topic, name, payload)
        except aiomqtt.MqttError:
            raise
        except Exception as exc:  # one bad message must never stop the hub
            log.exception("message on %s failed", topic)
            self.health.count("ingest", "internal-error")
            await self._dead(topic, f"internal error: {exc!r}", payload)

    async def _dead(self, topic: str, reason: str, payload: bytes) -> None:
        self.health.count("ingest", "dead-letter")
        log.warning("dead letter on %s: %s", topic, reason)
        await self.timeline.dead_letter(
            topic, reason, payload, self.config.ingest.dead_letter_keep_bytes
        )

    async def _on_events(
        self, client: aiomqtt.Client, topic: str, name: topics.TopicName, payload: bytes
    ) -> None:
        check = check_events(
            name,
            payload,
            time.time(),
            max_bytes=self.config.ingest.max_batch_bytes,
            future_tolerance_s=self.config.ingest.future_tolerance,
        )
        if check.dead_letter is not None:
            await self._dead(topic, check.dead_letter, payload)
            return
        seen = await self.timeline.rejected_before(
            name.fleet, name.device, [r.seq for r in check.rejects if r.seq is not None][:500]
        )
        for reject in check.rejects:
            if reject.seq is not None and reject.seq in seen:
                continue  # the device resent what was rejected: recorded once is enough
            await self._dead(topic, reject.reason, json.dumps(reject.raw, default=str).encode())
        result = await self.timeline.store(
            name.fleet,
            name.device,
            check.events,
            check.flags,
            rejected_seqs=[r.seq for r in check.rejects if r.seq is not None],
        )
        if result.conflicts:
            await self._dead(
                topic, f"{result.conflicts} event(s) reuse a seq stored with another id", payload
            )
        self.batches += 1
        self.health.count("ingest", "stored", result.stored)
        self.health.count("ingest", "duplicates", result.duplicates)
        await self._publish_ack(client, name.fleet, name.device, result.watermark)

    async def _on_state(self, topic: str, name: topics.TopicName, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            doc: Any = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            await self._dead(topic, "state: not JSON", payload)
            return
        state = doc.get("state") if isinstance(doc, dict) else None
        if state not in ("online", "offline"):
            await self._dead(topic, 'state: "state" must be "online" or "offline"', payload)
            return
        if await self.timeline.set_state(name.fleet, name.device, state, payload.decode()):
            log.info("%s/%s is %s", name.fleet, name.device, state)
