"""The GNSS service: source → parser → fix assembly → filters → adaptive reporting → outbox.

``GnssService(config, sink, health, clock).run()`` runs until cancelled and never raises on
device trouble: an unopenable or unplugged device, a dropped connection or a receiver at a
baud rate nobody configured is logged once (as a health transition), and the source is
reopened after a capped exponential backoff with full jitter.

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
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_agent.clock import Clock
from edge_agent.gnss.assembler import FixAssembler
from edge_agent.gnss.config import GnssConfig
from edge_agent.gnss.filters import AdaptiveReporter, FixFilter
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.gpsd_json import WATCH_COMMAND, fix_from_report
from edge_agent.gnss.nmea import NmeaStreamParser
from edge_agent.gnss.source_url import SourceSpec
from edge_agent.gnss.sources import ByteSource, SourceError, make_source
from edge_agent.platform.backoff import backoff_delay
from edge_agent.platform.health import HealthRegistry
from edge_agent.sink import EventSink

__all__ = ["COMPONENT", "FixSubscription", "GnssService"]

log = logging.getLogger(__name__)

COMPONENT = "gnss"
_TICK = 0.5  # how often a quiet source is checked (watchdog, flushing a pending epoch)
_STATUS_EVERY = 1.0


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
        source_factory: Callable[[SourceSpec], ByteSource] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.health = health
        self.clock = clock
        self.spec = config.spec
        self.filter = FixFilter(config.filter)
        self.reporter = AdaptiveReporter(config.report)
        self.latest: Fix | None = None
        self.kept = 0
        self._mono = monotonic
        self._rand = rand
        self._factory = source_factory or (
            lambda spec: make_source(spec, bauds=config.bauds, init=config.init)
        )
        self._listeners: list[Callable[[Fix], None]] = []
        self._subscriptions: set[FixSubscription] = set()
        self._last_sentence = 0.0
        self._last_kept = 0.0
        self._status_at = float("-inf")
        self._counted: dict[str, int] = {}
        self._productive = False
        self._connected_at = 0.0
        self.ended = asyncio.Event()

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
        attempt = 0
        while True:
            self._productive = False
            try:
                await self._session()
            except SourceError as exc:
                self._set_state("disconnected", source=self.spec.describe(), error=str(exc))
            except (OSError, ValueError, RuntimeError) as exc:
                # Not expected from a source, but a device must never take the agent down.
                log.exception("gnss: unexpected error from %s", self.spec.describe())
                self._set_state("disconnected", source=self.spec.describe(), error=repr(exc))
            if self.spec.kind == "file" and self.ended.is_set():
                await asyncio.Event().wait()  # a replay that ended: idle until cancelled
            # A source that delivered sentences before failing is retried promptly.
            attempt = 0 if self._productive else attempt + 1
            delay = backoff_delay(
                max(0, attempt - 1), cap=self.config.reconnect_max, rand=self._rand
            )
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One open-read-close of the source (``_productive``: it delivered sentences)."""
        if self.spec.kind == "gpsd":
            await self._gpsd_session()
            return
        source = self._factory(self.spec)
        await source.open()
        self._set_state("connected", source=source.name)
        self._connected_at = self._mono()
        parser = NmeaStreamParser(
            max_length=self.config.max_sentence,
            require_checksum=self.config.require_checksum,
            comments=self.spec.kind == "file",
        )
        assembler = FixAssembler()
        self._counted = {}
        self._last_sentence = self._mono()
        try:
            while True:
                try:
                    data: bytes | None = await asyncio.wait_for(source.read(), _TICK)
                except TimeoutError:
                    data = None
                if data == b"":
                    for fix in assembler.flush():
                        await self.process(fix)
                    self._count_parser(parser)
                    self._set_state("idle", source=source.name, ended=True, fixes=self.kept)
                    self.ended.set()
                    return
                if data:
                    sentences = parser.feed(data)
                    if sentences:
                        self._productive = True
                        self._last_sentence = self._mono()
                    for sentence in sentences:
                        for fix in assembler.push(sentence):
                            await self.process(fix)
                else:
                    # Quiet: the epoch in progress is complete as far as anyone will know.
                    for fix in assembler.flush():
                        await self.process(fix)
                self._count_parser(parser)
                self._watch(source.name)
        finally:
            source.close()

    async def _gpsd_session(self) -> None:
        spec = self.spec
        name = spec.describe()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(spec.host, spec.port), 5.0
            )
        except (OSError, TimeoutError) as exc:
            raise SourceError(name, f"cannot connect: {exc or 'timeout'}") from exc
        last_time: datetime | None = None
        self._last_sentence = self._mono()
        try:
            writer.write(WATCH_COMMAND)
            await writer.drain()
            self._set_state("connected", source=name)
            self._connected_at = self._mono()
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), _TICK)
                except TimeoutError:
                    line = None
                except (OSError, ValueError) as exc:
                    raise SourceError(name, f"read failed: {exc}") from exc
                if line == b"":
                    raise SourceError(name, "gpsd closed the connection")
                if line:
                    self._productive = True
                    self._last_sentence = self._mono()
                    fix = fix_from_report(line)
                    # gpsd may report one epoch more than once: keep the first.
                    if fix is not None and fix.time != last_time:
                        last_time = fix.time
                        await self.process(fix)
                self._watch(name)
        finally:
            writer.close()

    # -- per fix ---------------------------------------------------------------------------

    async def process(self, fix: Fix) -> str | None:
        """Filter, publish and maybe report one assembled fix; returns the drop reason."""
        now, source = self.clock.now()
        # Age is judged only against a synchronised system clock: a clock carried forward
        # from earlier fixes would judge a fix against itself.
        reason = self.filter.check(fix, now if source == "ntp" else None)
        if reason is not None:
            self.health.count(COMPONENT, f"dropped_{reason}")
            return reason
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
        why = self.reporter.step(fix)
        if why is not None:
            self.health.count(COMPONENT, f"reported_{why}")
            try:
                await self.sink.emit("gnss.fix", fix.event_data(), ts=fix.time, clock="gnss")
            except Exception as exc:
                # The outbox refuses low-value events when full (DESIGN §3.4): count, go on.
                self.health.count(COMPONENT, "emit_failed")
                self._set_state("ok", emit_error=str(exc))
        return None

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

    def _count_parser(self, parser: NmeaStreamParser) -> None:
        for key, value in parser.stats.as_dict().items():
            if key == "sentences":
                continue
            delta = value - self._counted.get(key, 0)
            if delta:
                self.health.count(COMPONENT, key, delta)
                self._counted[key] = value
