"""The hub bridge service: MQTT in, timeline store, ack watermarks out.

Subscribes to every device's events (optionally through a shared-subscription group, so N hub
instances split the load: ``$share/{group}/lm/v1/+/+/events``) and state topics. For each events
message: check it (``ingest.check_events``), store what is valid in one transaction, dead-letter
the rest with the reason, and publish the device's ack watermark, retained. The ack is published
after every batch, even when it did not move, so a device whose broker lost the retained ack
learns it again from its resends. On every (re)connect all known watermarks are published again
(by a hub alone: not by one of N instances on a share group, whose list would be stale).

A message is PUBACKed to the broker only once it was handled (its batch committed, or dead-
lettered, or the store found unwritable), in the order received: a hub killed mid-batch gets
what it had not finished again from its persistent session when it reconnects with the same
``hub_id``. Mosquitto (2.0) does not hand a dead member's unacknowledged messages of a shared
subscription to another member; what a hub that never returns held is resent by the devices,
which keep every event until an ack watermark covers it (DESIGN §3.2).

The hub announces itself like Sparkplug's primary host (DESIGN §2): once subscribed it publishes
``{"state": "online", "ts"}`` retained on ``lm/v1/_hub/{hub_id}/state``; its MQTT will says
``offline`` when the connection is lost, and a clean stop publishes ``offline`` itself. Agents
resend what is unacked as soon as a hub comes online, instead of waiting for their ack timeout.

Commands to devices (``hub_bridge/commands.py``, ``hub-bridge send``) are kept in the timeline
store until answered. A sender task publishes each one when it is due (QoS 1, not retained): at
once when queued (the API wakes it), again when the device's birth arrives (a retained birth is
delivered again on every reconnect of the hub, so a restarted hub sends what is unanswered), and
again after a capped backoff while unanswered; never to a device known to be offline. Answers
come on ``lm/v1/+/+/cmd-ack``: the topic is the device's identity, so an answer naming another
device's command, or an unknown one, is counted and ignored; a malformed one is a dead letter.

Nothing a device sends can stop the hub or fill its disk: every failure of one message is
recorded (bounded: see ``Timeline``) and the loop goes on. A state message larger than
``ingest.max_state_bytes`` is dead-lettered, not stored. Dead-letter warnings are logged the
first time a (topic, reason) is seen, and at most ``_LOG_BURST`` per ``_LOG_WINDOW`` seconds
(the rest are summed up in one line): a flood must not fill the log either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt

from edge_agent.platform.backoff import backoff_delay
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.mqtt import make_client
from edge_agent.platform.redact import redact_url
from edge_agent.wire import topics
from edge_agent.wire.envelope import EnvelopeError
from edge_agent.wire.limits import ACK_MAX_GOT, ACK_MAX_RANGES
from edge_agent.wire.seqs import seq_ranges
from hub_bridge.ack_order import AckOrder, LocalAckOrder, open_ack_order
from hub_bridge.commands import CommandAckError, CommandLimits, parse_command_ack, resend_delay
from hub_bridge.config import HubConfig
from hub_bridge.ingest import batch_proof, check_events
from hub_bridge.store import StoreUnavailable, TimelineStore
from hub_bridge.timeline import Batch, StoreResult

__all__ = ["HubBridge"]

log = logging.getLogger(__name__)

_LOG_WINDOW = 60.0
_LOG_BURST = 20
GROUP_MAX = 16
"""Most queued messages committed in one transaction."""

_HUB_PREFIX = f"{topics.PREFIX}/_hub/"

_UNWRITABLE = (StoreUnavailable, sqlite3.OperationalError)
"""The store cannot be written just now (database down, disk full, locked too long): nothing is
acked, devices keep their events and resend them; not a fault of the message."""

COMMAND_BURST = 100
"""Most due commands read and published in one go (the rest follow at once)."""
_COMMAND_IDLE_S = 300.0
"""Longest sleep of the sender: it also deletes finished commands past their retention."""
_COMMAND_RETRY_S = 5.0
"""Wait after the store failed under the sender."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _LogBudget:
    """At most ``burst`` lines per ``window`` seconds; says how many it held back."""

    def __init__(self, burst: int = _LOG_BURST, window: float = _LOG_WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._start = -window
        self._used = 0
        self._held = 0

    def allow(self, now: float) -> bool:
        """Whether one more line may be logged at ``now`` (monotonic seconds)."""
        if now - self._start >= self.window:
            if self._held:
                log.warning(
                    "%d more dead letters in the last %.0fs (not logged)",
                    self._held,
                    now - self._start,
                )
            self._start, self._used, self._held = now, 0, 0
        if self._used < self.burst:
            self._used += 1
            return True
        self._held += 1
        return False


class HubBridge:
    """Runs until cancelled: connect, ingest, acknowledge, reconnect."""

    def __init__(
        self,
        config: HubConfig,
        timeline: TimelineStore,
        health: HealthRegistry,
        command_limits: CommandLimits | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_stored = on_stored
        """Called after a commit that stored events (the delivery projection looks at once)."""
        self.command_limits = command_limits or CommandLimits()
        self.timeline = timeline
        self.health = health
        self.batches = 0
        self.subscribed = asyncio.Event()
        """Set once the first subscriptions are in place (the hub is ready for devices)."""
        self.state_topic = topics.hub_state(config.hub_id)
        self._log_budget = _LogBudget()
        self._commands_due = asyncio.Event()
        self._ack_order: AckOrder = LocalAckOrder()
        self._received: asyncio.Queue[aiomqtt.Message] | None = None

    def commands_changed(self) -> None:
        """A command was queued (by the API): publish what is due now."""
        self._commands_due.set()

    @property
    def backlog(self) -> int:
        """Messages received and not yet stored: the projector gives way while there are."""
        return 0 if self._received is None else self._received.qsize()

    def _events_filter(self) -> str:
        base = f"{topics.PREFIX}/+/+/events"
        group = self.config.ingest.share_group
        return f"$share/{group}/{base}" if group else base

    def _hub_state(self, state: str, **extra: Any) -> str:
        return json.dumps({"state": state, "ts": round(time.time(), 3), **extra})

    async def run(self) -> None:
        """Serve forever, reconnecting with backoff; returns only when cancelled."""
        # N instances on a share group take turns to publish a device's ack (ack_order.py)
        self._ack_order = await open_ack_order(
            self.config.timeline.url, bool(self.config.ingest.share_group)
        )
        try:
            await self._run()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._ack_order.close())

    async def _run(self) -> None:
        attempt = 0
        while True:
            # the will is made per connection: its ts says when this connection began
            will = aiomqtt.Will(
                self.state_topic, self._hub_state("offline", reason="lost"), qos=1, retain=True
            )
            client = make_client(
                self.config.broker, f"hub-{self.config.hub_id}", will=will, max_inflight=100
            )
            # PUBACK after the message is handled, not on receipt (see _serve)
            client._client.manual_ack_set(True)
            try:
                async with client:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # stopped while connecting
                        raise asyncio.CancelledError
                    attempt = 0
                    self.health.set_state(
                        "broker", "connected", url=redact_url(self.config.broker.url)
                    )
                    try:
                        await self._serve(client)
                    finally:
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            # a clean stop: the broker sends the will only on a lost connection
                            with contextlib.suppress(Exception):
                                await asyncio.shield(self._say_offline(client))
            except aiomqtt.MqttError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # lost while stopping: the stop must not be swallowed by the reconnect loop
                    raise asyncio.CancelledError from exc
                self.health.set_state("broker", "disconnected", error=str(exc))
            await asyncio.sleep(backoff_delay(attempt, cap=30.0))
            attempt += 1

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self._events_filter(), qos=1)
        await client.subscribe(f"{topics.PREFIX}/+/+/state", qos=1)
        # not shared between hub instances: recording an answer twice keeps the first
        await client.subscribe(f"{topics.PREFIX}/+/+/cmd-ack", qos=1)
        if not self.config.ingest.share_group:
            # one hub: what it read is what is current. Not with N instances on a share group:
            # the others move watermarks on while this list is published, and a device would
            # see its ack go back (and take it for a hub that lost what it had acked). There
            # the acks come with the next batch, and every agent resends at our birth below.
            for fleet, device, wm in await self.timeline.watermarks():
                await self._publish_ack(client, fleet, device, wm)
        # online only once subscribed: an agent resending at once must find us listening
        await client.publish(self.state_topic, self._hub_state("online"), qos=1, retain=True)
        self.subscribed.set()
        # messages that queued up while a batch was being stored are committed together
        queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._received = queue

        async def pump() -> None:
            async for message in client.messages:
                queue.put_nowait(message)

        reader = asyncio.create_task(pump(), name="hub-receive")
        sender = asyncio.create_task(self._send_commands(client), name="hub-commands")
        nxt: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(queue.get())
                await asyncio.wait((nxt, reader, sender), return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    # the connection ended: its MqttError goes to run()
                    (reader if reader.done() else sender).result()
                    raise aiomqtt.MqttError("the hub's message stream ended")
                group = [nxt.result()]
                while not queue.empty() and len(group) < GROUP_MAX:
                    group.append(queue.get_nowait())
                await self._handle_group(client, group)
                # only now, committed or dead-lettered, does the broker hear that they arrived
                # (in the order they came, as MQTT wants): a hub killed before this gets them
                # again from its session when it comes back with its hub_id
                for message in group:
                    if message.qos > 0:
                        client._client.ack(message.mid, message.qos)
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()  # a stop while waiting: no pending get is left behind
            for task in (reader, sender):
                task.cancel()
            await asyncio.wait([reader, sender])
            for task in (reader, sender):  # every child's end is read: none "never retrieved"
                if not task.cancelled():
                    task.exception()

    async def _send_commands(self, client: aiomqtt.Client) -> None:
        """Publish every command when it is due; sleep until the next one is, or until woken
        (a command queued, a device's birth). Runs until the connection ends (its MqttError)."""
        limits = self.command_limits
        next_prune = 0.0
        while True:
            self._commands_due.clear()
            now = time.time()
            wait = _COMMAND_IDLE_S
            try:
                if now >= next_prune:
                    await self.timeline.prune_commands(limits, now)
                    next_prune = now + _COMMAND_IDLE_S
                due = await self.timeline.due_commands(now, COMMAND_BURST)
                for cmd in due:
                    topic = topics.cmd(cmd.fleet, cmd.device, cmd.name)
                    await client.publish(topic, cmd.payload, qos=1, retain=False)
                    sent = time.time()
                    delay = resend_delay(cmd.sent_count + 1, limits)
                    await self.timeline.command_sent(cmd.id, sent, sent + delay)
                    self.health.count("commands", "resent" if cmd.sent_count else "sent")
                if len(due) == COMMAND_BURST:
                    continue  # more are due: no sleep
                nxt = await self.timeline.next_command_due()
                if nxt is not None:
                    wait = min(wait, max(nxt - time.time(), 0.0))
            except aiomqtt.MqttError:
                raise  # the connection ended: run() reconnects
            except (sqlite3.Error, StoreUnavailable) as exc:
                # the store failing must not end the connection: try again a little later
                self.health.count("commands", "store-failed")
                log.warning("commands: the store failed: %s", str(exc)[:200])
                wait = _COMMAND_RETRY_S
            except Exception:  # a bug here must not stop ingest: log it, try again later
                self.health.count("commands", "internal-error")
                log.exception("commands: sending failed")
                wait = _COMMAND_RETRY_S
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._commands_due.wait()

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        payload = self._hub_state("offline", reason="shutdown")
        await asyncio.wait_for(client.publish(self.state_topic, payload, qos=1, retain=True), 2)

    async def _publish_ack(
        self,
        client: aiomqtt.Client,
        fleet: str,
        device: str,
        wm: int,
        conflicts: Sequence[int] = (),
        ack: dict[str, Any] | None = None,
        got: Sequence[tuple[int, int, str]] = (),
    ) -> None:
        """Publish a device's ack: ``ack`` as the store made it with the batch, else asked; in
        this instance's turn for the device, and the watermark current then (a later commit by
        another instance may have moved it on: its ack is the one to publish). ``got`` names the
        messages just stored (``Batch.proof``)."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                current = await stack.enter_async_context(self._ack_order.turn(fleet, device))
            except Exception as exc:  # no turn (its database is down): no ack now, devices
                # resend what is unacked and get it with a later batch
                self.health.count("ingest", "ack-deferred")
                log.debug("ack of %s/%s deferred: %s", fleet, device, exc)
                return
            if current is not None and current > wm:
                wm, ack = current, None
            await self._publish_ack_now(client, fleet, device, wm, conflicts, ack, got)

    async def _publish_ack_now(
        self,
        client: aiomqtt.Client,
        fleet: str,
        device: str,
        wm: int,
        conflicts: Sequence[int],
        ack: dict[str, Any] | None,
        got: Sequence[tuple[int, int, str]] = (),
    ) -> None:
        ack = dict(ack) if ack is not None else await self.timeline.ack_payload(fleet, device, wm)
        ranges = seq_ranges(sorted(set(conflicts)))
        if ranges:
            # the device sent seqs the timeline holds with other events: tell it, so it
            # renumbers instead of taking this watermark as covering them (bounded list)
            ack["conflicts"] = [list(r) for r in ranges[:ACK_MAX_RANGES]]
        # always there, empty or not: a device that has seen it believes only what it names
        # (the watermark says the hub holds some event at each seq, "got" that they are the
        # device's own). Empty when conflicts were cut: the device must not miss one of them.
        ack["got"] = [list(p) for p in got[-ACK_MAX_GOT:]] if len(ranges) <= ACK_MAX_RANGES else []
        payload = json.dumps(ack)
        await client.publish(topics.ack(fleet, device), payload, qos=1, retain=True)

    async def _handle_group(self, client: aiomqtt.Client, group: list[aiomqtt.Message]) -> None:
        """Events messages of a group are checked one by one and stored in one transaction,
        then each device gets one ack; anything else, or a failure, goes message by message."""
        if len(group) == 1:
            await self._handle(client, group[0])
            return
        prepared: list[tuple[str, bytes, topics.TopicName, Batch]] = []
        events_messages: list[aiomqtt.Message] = []
        try:
            for message in group:
                topic = str(message.topic)
                payload = message.payload if isinstance(message.payload, bytes) else b""
                name = self._events_name(topic)
                if name is None:
                    await self._handle(client, message)
                    continue
                events_messages.append(message)
                batch = await self._prepare(topic, name, payload)
                if batch is not None:
                    prepared.append((topic, payload, name, batch))
            results = await self.timeline.store_many([b for *_, b in prepared])
        except aiomqtt.MqttError:
            raise
        except Exception:  # the group could not be stored as one: each message on its own, with
            # the single-message handling (a store that cannot be written acks nothing)
            log.debug("a group of %d messages: storing them one by one", len(group))
            for message in events_messages:
                await self._handle(client, message)
            return
        if self.health.state("timeline") == "unwritable":
            self.health.set_state("timeline", "ok")
        acks: dict[tuple[str, str], tuple[StoreResult, list[int], list[tuple[int, int, str]]]] = {}
        for (topic, payload, name, batch), result in zip(prepared, results, strict=True):
            await self._after_store(topic, payload, result)
            key = (name.fleet, name.device)
            conflicts, got = (acks[key][1], acks[key][2]) if key in acks else ([], [])
            if batch.proof is not None:
                got.append(batch.proof)
            acks[key] = (result, conflicts + list(result.conflict_seqs), got)  # the last ack
        # every device's ack at once: each waits for its PUBACK, none waits for another's
        await asyncio.gather(
            *(
                self._publish_ack(client, fleet, device, r.watermark, conflicts, r.ack, got)
                for (fleet, device), (r, conflicts, got) in acks.items()
            )
        )

    @staticmethod
    def _events_name(topic: str) -> topics.TopicName | None:
        if topic.startswith(_HUB_PREFIX):
            return None
        try:
            name = topics.parse(topic)
        except EnvelopeError:
            return None
        return name if name.kind == "events" else None

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if topic.startswith(_HUB_PREFIX):
            return  # hub instances' own state (ours too) matches lm/v1/+/+/state: not a device
        try:
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
                elif name.kind == "cmd-ack":
                    await self._on_cmd_ack(topic, name, payload)
            except (aiomqtt.MqttError, *_UNWRITABLE):
                raise
            except Exception as exc:  # one bad message must never stop the hub
                log.exception("message on %s failed", topic)
                self.health.count("ingest", "internal-error")
                with contextlib.suppress(Exception):  # recording it must not stop the hub either
                    await self._dead(topic, f"internal error: {exc!r}", payload)
        except _UNWRITABLE as exc:
            # the store cannot be written (full disk, I/O error, locked too long): nothing is
            # acked, so every device keeps its events and resends them; the hub goes on and
            # takes them as soon as the store accepts writes again
            self.health.count("timeline", "write-failed")
            self.health.set_state("timeline", "unwritable", error=str(exc)[:200])  # logs once
            return
        if self.health.state("timeline") == "unwritable":
            self.health.set_state("timeline", "ok")

    async def _dead(self, topic: str, reason: str, payload: bytes) -> None:
        self.health.count("ingest", "dead-letter")
        seen = await self.timeline.dead_letter(topic, reason, payload)
        if seen == 1 and self._log_budget.allow(time.monotonic()):
            log.warning("dead letter on %.200s: %.300s", topic, reason)

    async def _on_events(
        self, client: aiomqtt.Client, topic: str, name: topics.TopicName, payload: bytes
    ) -> None:
        batch = await self._prepare(topic, name, payload)
        if batch is None:
            return
        result = (await self.timeline.store_many([batch]))[0]
        await self._after_store(topic, payload, result)
        await self._publish_ack(
            client,
            name.fleet,
            name.device,
            result.watermark,
            result.conflict_seqs,
            result.ack,
            [batch.proof] if batch.proof is not None else [],
        )

    async def _prepare(self, topic: str, name: topics.TopicName, payload: bytes) -> Batch | None:
        """Check one events message; dead-letter what is refused; the batch to store, if any."""
        check = check_events(
            name,
            payload,
            time.time(),
            max_bytes=self.config.ingest.max_batch_bytes,
            future_tolerance_s=self.config.ingest.future_tolerance,
        )
        if check.dead_letter is not None:
            await self._dead(topic, check.dead_letter, payload)
            return None
        seen = await self.timeline.rejected_before(
            name.fleet, name.device, [r.seq for r in check.rejects if r.seq is not None][:500]
        )
        for reject in check.rejects:
            if reject.seq is not None and reject.seq in seen:
                continue  # the device resent what was rejected: recorded once is enough
            await self._dead(topic, reject.reason, json.dumps(reject.raw, default=str).encode())
        rejected = tuple(r.seq for r in check.rejects if r.seq is not None)
        return Batch(
            name.fleet,
            name.device,
            check.events,
            check.flags,
            rejected,
            check.bodies,
            batch_proof(check, payload),
        )

    async def _after_store(self, topic: str, payload: bytes, result: StoreResult) -> None:
        if result.conflicts:
            await self._dead(
                topic, f"{result.conflicts} event(s) reuse a seq stored with another id", payload
            )
        self.batches += 1
        if result.stored and self.on_stored is not None:
            self.on_stored()
        self.health.count("ingest", "stored", result.stored)
        self.health.count("ingest", "duplicates", result.duplicates)

    async def _on_state(self, topic: str, name: topics.TopicName, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        limit = self.config.ingest.max_state_bytes
        if len(payload) > limit:
            await self._dead(topic, f"state: oversize: {len(payload)} bytes > {limit}", payload)
            return
        try:
            text = payload.decode("utf-8")
            doc: Any = json.loads(text, parse_constant=_reject_constant)
        except UnicodeDecodeError:
            await self._dead(topic, "state: not UTF-8", payload)
            return
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting
            await self._dead(topic, "state: not JSON", payload)
            return
        state = doc.get("state") if isinstance(doc, dict) else None
        if state not in ("online", "offline"):
            await self._dead(topic, 'state: "state" must be "online" or "offline"', payload)
            return
        if await self.timeline.set_state(name.fleet, name.device, state, text):
            log.info("%s/%s is %s", name.fleet, name.device, state)
        # a birth: whatever the device missed while away (or before a restart) goes now
        if state == "online" and await self.timeline.commands_due_now(
            name.fleet, name.device, time.time()
        ):
            self._commands_due.set()

    async def _on_cmd_ack(self, topic: str, name: topics.TopicName, payload: bytes) -> None:
        try:
            ack = parse_command_ack(payload)
        except CommandAckError as exc:
            self.health.count("commands", "ack-invalid")
            await self._dead(topic, f"cmd-ack: {exc}", payload)
            return
        outcome = await self.timeline.ack_command(
            name.fleet, name.device, ack.id, ack.ok, ack.error
        )
        self.health.count("commands", f"ack-{outcome}")
        where = f"{name.fleet}/{name.device}"
        if outcome == "recorded":
            if ack.ok:
                log.info("%s applied command %s", where, ack.id)
            else:
                log.warning("%s refused command %s: %.300s", where, ack.id, ack.error)
        elif outcome == "wrong-device" and self._log_budget.allow(time.monotonic()):
            # the topic is the device's identity: naming another device's command is a forgery
            log.warning("%s answered command %s of another device: ignored", where, ack.id)
