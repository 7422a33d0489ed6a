"""The spine in one process, driven from synchronous code: a real outbox, uplink, local API, hub
bridge and timeline, all in one asyncio loop on a background thread, against a real mosquitto.

For ``tests/test_spine_stateful.py``: hypothesis' state machine rules are synchronous, so every
action here is a plain method that runs its coroutine in the rig's loop
(``run_coroutine_threadsafe(...).result(timeout)``). Clients speak real HTTP to the agent's API
and real MQTT to the broker; the hub's timeline is read with its own read-only SQLite connection,
as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.api import build_app
from edge_agent.clock import Clock
from edge_agent.config import BrokerConfig, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.uplink import Uplink
from edge_agent.wire import topics
from edge_agent.wire.limits import batch_body_limit
from hub_bridge.bridge import HubBridge
from hub_bridge.config import HubConfig
from hub_bridge.timeline import Timeline
from simulators.broker import Mosquitto

__all__ = ["DEVICE", "FLEET", "Limits", "Rig", "TimelineRow"]

FLEET = "acme"
DEVICE = "van-9"
STOP_S = 10.0
"""How long a cancelled uplink may take to end (it says offline first, within 2 s)."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """Small sizes and short timers, so that thinning, refusals and resends happen in seconds."""

    max_bytes: int = 4000
    reserve_bytes: int = 2000
    batch_max_bytes: int = 4096
    window: int = 2
    ack_timeout: float = 1.0
    backoff_max: float = 0.5
    max_batch: int = 50


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One stored event of the rig's device."""

    seq: int
    id: str
    type: str
    data: dict[str, Any]


class Rig:
    """An agent (outbox + API + uplink) and a hub (timeline + bridge) around one broker.

    Every method is synchronous. ``on_rebase`` receives the outbox's (seq, id) pairs after every
    renumbering (``Outbox._rebase``: the uplink renumbers unacked events when the hub proves their
    seqs are taken), so a model can follow where an event went.
    """

    def __init__(self, root: Path, broker: Mosquitto, limits: Limits | None = None) -> None:
        self.root = root
        self.broker = broker
        self.limits = limits or Limits()
        self.outbox_path = root / "outbox.db"
        self.timeline_path = root / "timeline.db"
        self.on_rebase: Callable[[list[tuple[int, str]]], None] | None = None
        self.rebasing = 0
        """Renumberings committed or under way whose seqs ``on_rebase`` has not been told yet."""
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.health: HealthRegistry | None = None
        self._uplink_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.api_port = 0
        self.timeline: Timeline | None = None
        self.hub: HubBridge | None = None
        self._hub_task: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self.loop_errors: list[str] = []
        """What the loop reported as unhandled (a task or future whose exception nobody
        retrieved, a failing callback): each is a defect of whoever made it."""
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ro: sqlite3.Connection | None = None

    # -- the loop ----------------------------------------------------------------------------

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        where = context.get("future") or context.get("task") or context.get("handle")
        if isinstance(exc, OSError) and exc.errno == errno.EBADF and "add_writer" in repr(where):
            # paho asks (from its thread) to watch a socket that aiomqtt closed meanwhile, when
            # the broker dies during a publish: third-party noise, nothing is lost or left open
            loop.default_exception_handler(context)
            return
        self.loop_errors.append(f"{context.get('message')}: {exc!r} ({where!r:.200})")
        loop.default_exception_handler(context)

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run a coroutine in the rig's loop and return its result (or raise its error)."""

        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def close(self) -> None:
        """Stop everything (agent, hub) and the loop; the broker is the caller's.

        Every part is stopped even when another fails to (a run that failed may leave a part
        hanging); the first error is raised at the end."""
        errors: list[BaseException] = []
        for stop in (self._close_agent, self._close_hub):
            try:
                stop()
            except BaseException as exc:
                errors.append(exc)
        try:
            self.run(self._cancel_rest(), timeout=15)
        finally:
            if self._ro is not None:
                self._ro.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        if errors:
            raise errors[0]

    def _close_agent(self) -> None:
        if self.outbox is not None:
            self.stop_agent(crash=False)

    def _close_hub(self) -> None:
        if self._hub_task is not None:
            self.stop_hub()
        if self.timeline is not None:
            self.run(self.timeline.close())
            self.timeline = None

    async def _cancel_rest(self) -> None:
        # whatever a failed stop left behind ends here, before the loop closes under it
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        outbox = self.outbox
        if outbox is not None:  # left open by a stop that failed
            await outbox._disconnect()
        if self.timeline is not None:
            await self.timeline.close()
            self.timeline = None

    # -- the agent ---------------------------------------------------------------------------

    @property
    def agent_up(self) -> bool:
        """Whether the agent (outbox, API, uplink) runs."""
        return self.outbox is not None

    def start_agent(self) -> None:
        """Open the outbox on its file, serve the API on a free port, start the uplink."""
        assert self.outbox is None
        self.run(self._start_agent())

    async def _start_agent(self) -> None:
        lim = self.limits
        outbox = await Outbox.open(
            self.outbox_path,
            FLEET,
            DEVICE,
            max_bytes=lim.max_bytes,
            reserve_bytes=lim.reserve_bytes,
            max_event_bytes=batch_body_limit(lim.batch_max_bytes),
            disk_reserve_bytes=64 * 1024,
        )
        original = outbox._rebase

        async def rebase_spy(above: int) -> int:
            # a spy on the real method, not a stand-in: the model learns the new seqs. It wraps
            # the renumbering inside its shielded task, so it reports even when the uplink is
            # cancelled meanwhile (a lost connection), right after the commit. The API may answer
            # a POST with a moved seq before the seqs are read back: ``wait_rebases`` lets the
            # model wait for that
            self.rebasing += 1
            try:
                last = await original(above)
                if self.on_rebase is not None:
                    # read from the file on a connection of its own: the agent may be closing
                    # its outbox meanwhile (a clean stop), and the file it keeps holds these seqs
                    self.on_rebase(self._seqs_in_file())
                return last
            finally:
                self.rebasing -= 1

        outbox._rebase = rebase_spy  # type: ignore[method-assign]
        health = HealthRegistry()
        app = build_app(
            outbox,
            Clock("system"),
            health,
            device={"fleet": FLEET, "device": DEVICE},
            max_batch=lim.max_batch,
            body_timeout=10.0,
            idle_timeout=10.0,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port is only here
        self.api_port = int(sockets[0].getsockname()[1])
        uplink = Uplink(
            BrokerConfig(url=self.broker.url, keepalive=5.0),
            UplinkConfig(
                batch_max_bytes=lim.batch_max_bytes,
                window=lim.window,
                ack_timeout=lim.ack_timeout,
                backoff_max=lim.backoff_max,
            ),
            outbox,
            health,
            fleet=FLEET,
            device=DEVICE,
            birth={"boot": round(time.time(), 3), "sw": "spine-rig"},
        )
        self.outbox, self.health, self.uplink, self._runner = outbox, health, uplink, runner
        self._uplink_task = asyncio.create_task(uplink.run(), name="rig-uplink")

    def stop_agent(self, *, crash: bool) -> None:
        """Stop the agent. ``crash``: the outbox is abandoned (no last commit, no ack applied,
        connections dropped) as a SIGKILL would leave it; else it closes cleanly."""
        assert self.outbox is not None
        self.run(self._stop_agent(crash))

    async def _stop_agent(self, crash: bool) -> None:
        outbox = self.outbox
        assert outbox is not None
        task, self._uplink_task = self._uplink_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=STOP_S)
            if not task.done():
                # a stop that never finishes: a van switched off must stop within seconds
                frames = "; ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack())
                self._uplink_task = task
                raise AssertionError(
                    f"the uplink did not stop within {STOP_S:.0f}s of being cancelled"
                    f" (cancelling={task.cancelling()}, at {frames})"
                )
            if not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"the uplink died: {task.exception()!r}")
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if crash:
            # what a kill leaves: committed transactions only. The outbox's own private parts
            # are reached on purpose: there is no public way to drop an object without closing
            if outbox._ack_flush is not None:
                outbox._ack_flush.cancel()
            if outbox._writer is not None:
                outbox._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await outbox._writer
            await outbox._disconnect()
        else:
            await outbox.close()
        self.outbox = self.uplink = self.health = None

    def uplink_alive(self) -> str | None:
        """None while the uplink task runs; else why it ended (it must never end by itself)."""
        task = self._uplink_task
        if task is None or not task.done():
            return None
        if task.cancelled():
            return "cancelled"
        return repr(task.exception())

    def lose_outbox(self, *, keep_seq_floor: bool) -> None:
        """Delete the outbox file (and its WAL), and the seq floor file unless kept."""
        assert self.outbox is None, "stop the agent first"
        for suffix in ("", "-wal", "-shm", ".reserve"):
            Path(f"{self.outbox_path}{suffix}").unlink(missing_ok=True)
        if not keep_seq_floor:
            Path(f"{self.outbox_path}.seq").unlink(missing_ok=True)

    def _seqs_in_file(self) -> list[tuple[int, str]]:
        """The (seq, id) pairs the outbox file holds now (committed: WAL readers see them)."""
        try:
            con = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            return []  # the file is gone (lost): its fate is the model's
        try:
            rows = con.execute("SELECT seq, id FROM events ORDER BY seq").fetchall()
        except sqlite3.Error:
            return []
        finally:
            con.close()
        return [(int(seq), str(eid)) for seq, eid in rows]

    def wait_rebases(self, timeout: float = 5.0) -> None:
        """Wait until every renumbering under way has reported its seqs (``on_rebase``)."""
        deadline = time.monotonic() + timeout
        while self.rebasing > 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def post(self, body: bytes | Any, timeout: float = 20.0) -> tuple[int, Any]:
        """POST to the agent's ``/v1/events`` (bytes as they are, anything else as JSON)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/v1/events",
            data=raw,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode(errors="replace")

    def agent_view(self) -> tuple[int, int, int]:
        """(last seq, acked watermark, depth) of the running outbox."""
        outbox = self.outbox
        assert outbox is not None
        stats = self.run(outbox.stats())
        return stats.last_seq, stats.acked, stats.depth

    def outbox_after(self, seq: int) -> dict[int, tuple[str, str]]:
        """(type, id) of the events above ``seq`` still in the outbox, by seq."""
        outbox = self.outbox
        assert outbox is not None
        rows = self.run(outbox.read_after(seq, max_bytes=1 << 30, max_events=1_000_000))
        out: dict[int, tuple[str, str]] = {}
        for s, body in rows:
            env = json.loads(body)
            out[s] = (str(env["type"]), str(env["id"]))
        return out

    # -- the hub -----------------------------------------------------------------------------

    @property
    def hub_up(self) -> bool:
        """Whether the hub bridge task runs."""
        return self._hub_task is not None

    def start_hub(self, *, new_timeline: bool = False) -> None:
        """Start the hub bridge; ``new_timeline`` closes the store and opens it again first."""
        assert self._hub_task is None
        self.run(self._start_hub(new_timeline))

    async def _start_hub(self, new_timeline: bool) -> None:
        if new_timeline and self.timeline is not None:
            await self.timeline.close()
            self.timeline = None
        if self.timeline is None:
            self.timeline = await Timeline.open(self.timeline_path)
        config = HubConfig(broker=BrokerConfig(url=self.broker.url, keepalive=5.0), hub_id="hub-t")
        self.hub = HubBridge(config, self.timeline, HealthRegistry())
        self._hub_task = asyncio.create_task(self.hub.run(), name="rig-hub")

    def stop_hub(self) -> None:
        """Cancel the hub bridge task (the timeline stays open)."""
        assert self._hub_task is not None
        self.run(self._stop_hub())

    async def _stop_hub(self) -> None:
        task = self._hub_task
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._hub_task = self.hub = None

    def hub_alive(self) -> str | None:
        """None while the hub task runs; else why it ended (it must never end by itself)."""
        task = self._hub_task
        if task is None or not task.done():
            return None
        if task.cancelled():
            return "cancelled"
        return repr(task.exception())

    def _timeline_db(self) -> sqlite3.Connection:
        if self._ro is None:
            self._ro = sqlite3.connect(f"file:{self.timeline_path}?mode=ro", uri=True, timeout=10)
        return self._ro

    def timeline_rows(self) -> list[TimelineRow]:
        """Every stored event of the device, in seq order."""
        if not self.timeline_path.exists():
            return []
        rows = self._timeline_db().execute(
            "SELECT seq, id, type, body FROM events WHERE fleet=? AND device=? ORDER BY seq",
            (FLEET, DEVICE),
        )
        return [TimelineRow(int(s), str(i), str(t), json.loads(b)["data"]) for s, i, t, b in rows]

    def accounted(self) -> list[tuple[int, int, str]]:
        """The seq ranges the hub counts as given up (evicted, corrupt, rejected, duplicate)."""
        if not self.timeline_path.exists():
            return []
        rows = self._timeline_db().execute(
            "SELECT lo, hi, reason FROM accounted WHERE fleet=? AND device=? ORDER BY lo",
            (FLEET, DEVICE),
        )
        return [(int(lo), int(hi), str(r)) for lo, hi, r in rows]

    def watermark(self) -> int:
        """The hub's stored watermark of the device (0 when it is unknown)."""
        if not self.timeline_path.exists():
            return 0
        row = (
            self._timeline_db()
            .execute("SELECT watermark FROM devices WHERE fleet=? AND device=?", (FLEET, DEVICE))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def dead_letters(self) -> list[str]:
        """The reasons of the hub's dead letters."""
        if not self.timeline_path.exists():
            return []
        return [str(r[0]) for r in self._timeline_db().execute("SELECT reason FROM dead_letters")]

    # -- another MQTT client -----------------------------------------------------------------

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained QoS 1 message as some other client would (a forger, a stale hub)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    def ack_topic(self) -> str:
        """The device's ack topic."""
        return topics.ack(FLEET, DEVICE)
