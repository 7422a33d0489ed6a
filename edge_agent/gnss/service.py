"""The GNSS service: a device (``edge_agent.drivers``) → ``GnssPipeline`` → outbox.

The pipeline (parser → fix assembly → filters → adaptive reporting) is the one the replays run;
this module is its I/O: it reads the source URL's driver, feeds the pipeline, publishes kept
fixes and emits the pings. ``GnssService(config, sink, health, clock).run()`` runs until
cancelled and never raises on device trouble: an unopenable or unplugged device, a dropped
connection or a receiver at a baud rate nobody configured is logged once (as a health
transition, ``drivers.supervise``), and the source is reopened after a capped exponential
backoff with full jitter.

Health of component ``gnss`` (``HealthRegistry``):

- ``ok``: fixes are kept; the detail carries ``gnss_offset_s`` (system clock minus GNSS time)
  for ``device.health``;
- ``no_fix``: sentences arrive but no fix was kept for ``watchdog`` seconds;
- ``lost``: no sentence for ``watchdog`` seconds (a serial receiver silent three times that
  long is reopened, which re-detects its baud rate);
- ``disconnected``: the source cannot be opened or read;
- ``idle`` (with ``ended``): a ``file://`` replay reached its end.

Counters: the parser's rejects (``bad_checksum``, ``garbage_bytes`` ...), ``dropped_<reason>``
per filter reason, ``reported_<reason>`` per ping reason, ``emit_failed``.

Every kept fix (not only the reported pings) goes to ``subscribe()`` iterators and
``add_listener()`` callbacks, for the trips engine; ``latest`` is the last kept fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_agent.clock import Clock
from edge_agent.drivers.base import ByteSource, SourceError
from edge_agent.drivers.gpsd import GpsdSource
from edge_agent.drivers.sources import make_byte_source
from edge_agent.drivers.supervise import Attempt, supervise
from edge_agent.drivers.url import DeviceUrl
from edge_agent.gnss.baud import BaudProbe, complete_sentence, epoch_key
from edge_agent.gnss.config import GnssConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.pipeline import GnssPipeline, Outcome
from edge_agent.platform.health import HealthRegistry
from edge_agent.sink import EventSink

__all__ = ["COMPONENT", "FixSubscription", "GnssService", "make_source"]

log = logging.getLogger(__name__)

COMPONENT = "gnss"
_TICK = 0.5  # how often a quiet source is checked (watchdog, flushing a pending epoch)
_STATUS_EVERY = 1.0


def make_source(spec: DeviceUrl, config: GnssConfig) -> ByteSource:
    """The byte source of a GNSS URL: NMEA baud detection, receiver init, epoch pacing."""
    return make_byte_source(
        spec,
        bauds=config.bauds,
        probe=BaudProbe,
        init=[complete_sentence(x) for x in config.init],
        epoch_key=epoch_key,
    )


class FixSubscription:
    """An async iterator over kept fixes; a slow reader loses the oldest ones, never blocks."""

    def __init__(self, owner: GnssService, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[Fix] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _put(self, fix: Fix) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(fix)

    def __aiter__(self) -> FixSubscription:
        return self

    async def __anext__(self) -> Fix:
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving fixes."""
        self._owner._subscriptions.discard(self)

    def __enter__(self) -> FixSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GnssService:
    """Reads a GNSS source and turns its fixes into ``gnss.fix`` events (module docstring)."""

    def __init__(
        self,
        config: GnssConfig,
        sink: EventSink,
        health: HealthRegistry,
        clock: Clock,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        source_factory: Callable[[DeviceUrl], ByteSource] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.health = health
        self.clock = clock
        self.spec = config.spec
        self.pipeline = GnssPipeline(
            config.filter,
            config.report,
            clock=self._trusted_now,
            max_sentence=config.max_sentence,
            require_checksum=config.require_checksum,
            comments=self.spec.kind == "file",
        )
        self.latest: Fix | None = None
        self.kept = 0
        self._mono = monotonic
        self._rand = rand
        self._factory = source_factory or (lambda spec: make_source(spec, config))
        self._listeners: list[Callable[[Fix], None]] = []
        self._subscriptions: set[FixSubscription] = set()
        self._last_sentence = 0.0
        self._last_kept = 0.0
        self._status_at = float("-inf")
        self._counted: dict[str, int] = {}
        self._connected_at = 0.0
        self.ended = asyncio.Event()

    def _trusted_now(self) -> datetime | None:
        # Age is judged only against a synchronised system clock: a clock carried forward
        # from earlier fixes would judge a fix against itself.
        now, source = self.clock.now()
        return now if source == "ntp" else None

    # -- consumers -----------------------------------------------------------------------

    def subscribe(self, maxsize: int = 256) -> FixSubscription:
        """Every kept fix from now on, as an async iterator (close it when done)."""
        sub = FixSubscription(self, maxsize)
        self._subscriptions.add(sub)
        return sub

    def add_listener(self, callback: Callable[[Fix], None]) -> Callable[[], None]:
        """Call ``callback(fix)`` for every kept fix; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the source until cancelled, reopening it after device errors."""
        await supervise(
            self._session,
            health=self.health,
            component=COMPONENT,
            name=self.spec.describe(),
            cap=self.config.reconnect_max,
            rand=self._rand,
        )
        await asyncio.Event().wait()  # a replay that ended: idle until cancelled

    async def _session(self, attempt: Attempt) -> None:
        """One open-read-close of the source; returns only when a file replay ended."""
        self.pipeline.restart()
        if self.spec.kind == "gpsd":
            await self._gpsd_session(attempt)
            return
        source = self._factory(self.spec)
        await source.open()
        self._set_state("connected", source=source.name)
        self._connected_at = self._last_sentence = self._mono()
        pipeline = self.pipeline
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
                # that lands as the read completes, and the agent would never stop
                data: bytes | None = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK):
                        data = await source.read()
                if data == b"":
                    await self._handle(pipeline.flush())
                    self._count_parser()
                    self._set_state("idle", source=source.name, ended=True, fixes=self.kept)
                    self.ended.set()
                    return
                if data:
                    sentences = pipeline.parser.stats.sentences
                    outcomes = pipeline.feed(data)
                    if pipeline.parser.stats.sentences != sentences:
                        attempt.productive = True
                        self._last_sentence = self._mono()
                    await self._handle(outcomes)
                else:
                    await self._handle(pipeline.flush())
                self._count_parser()
                self._watch(source.name)
        finally:
            source.close()

    async def _gpsd_session(self, attempt: Attempt) -> None:
        source = GpsdSource(self.spec.host, self.spec.port)
        await source.open()
        try:
            self._set_state("connected", source=source.name)
            self._connected_at = self._last_sentence = self._mono()
            while True:
                report = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK):
                        report = await source.read()
                if report is not None:
                    attempt.productive = True
                    self._last_sentence = self._mono()
                    outcome = self.pipeline.push_report(report)
                    if outcome is not None:
                        await self._handle([outcome])
                self._watch(source.name)
        finally:
            source.close()

    # -- per fix ---------------------------------------------------------------------------

    async def process(self, fix: Fix) -> str | None:
        """Filter, publish and maybe report one assembled fix; returns the drop reason."""
        outcome = self.pipeline.push_fix(fix)
        await self._handle([outcome])
        return outcome.dropped

    async def _handle(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.dropped is not None:
                self.health.count(COMPONENT, f"dropped_{outcome.dropped}")
            else:
                await self._kept(outcome.fix, outcome.report)

    async def _kept(self, fix: Fix, report: str | None) -> None:
        self.clock.observe_gnss(fix.time)
        self.latest = fix
        self.kept += 1
        self._last_kept = self._mono()
        for callback in list(self._listeners):
            try:
                callback(fix)
            except Exception:
                log.exception("gnss: a fix listener failed")
        for sub in list(self._subscriptions):
            sub._put(fix)
        if report is None:
            return
        self.health.count(COMPONENT, f"reported_{report}")
        try:
            await self.sink.emit("gnss.fix", fix.event_data(), ts=fix.time, clock="gnss")
        except Exception as exc:
            # The outbox refuses low-value events when full (DESIGN §3.4): count, go on.
            self.health.count(COMPONENT, "emit_failed")
            self._set_state("ok", emit_error=str(exc))

    # -- health ----------------------------------------------------------------------------

    def _set_state(self, state: str, **detail: Any) -> None:
        self.health.set_state(COMPONENT, state, **detail)

    def _watch(self, name: str) -> None:
        now = self._mono()
        watchdog = self.config.watchdog
        if now - self._status_at < min(_STATUS_EVERY, watchdog / 2):
            return
        self._status_at = now
        silent = now - self._last_sentence
        if silent >= watchdog:
            self._set_state("lost", source=name, silent_s=round(silent, 1))
            if self.spec.kind == "serial" and silent >= 3 * watchdog:
                raise SourceError(name, f"silent for {silent:.0f}s, reopening")
            return
        detail: dict[str, Any] = {"source": name, "fixes": self.kept}
        offset = self.clock.gnss_offset_s()
        if offset is not None:
            detail["gnss_offset_s"] = round(offset, 3)
        if self.latest is not None and now - self._last_kept < watchdog:
            detail["last_fix"] = self.latest.time.isoformat()
            self._set_state("ok", **detail)
        elif now - max(self._last_kept, self._connected_at) >= watchdog:
            self._set_state("no_fix", **detail)

    def _count_parser(self) -> None:
        for key, value in self.pipeline.parser.stats.as_dict().items():
            if key == "sentences":
                continue
            delta = value - self._counted.get(key, 0)
            if delta:
                self.health.count(COMPONENT, key, delta)
                self._counted[key] = value
