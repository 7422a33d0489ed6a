"""The scan service: cameras and text scanners → dedup → ``scan`` events in the outbox.

``ScanService(config, sink, health, clock).run()`` runs every configured camera and scanner
until cancelled and never raises on device trouble: a failure is logged once (a health
transition of component ``scan:<id>``) and the device reopened after a capped, jittered backoff.

Each camera has a reader thread that puts frames into a ``FrameMailbox`` (newest frame only,
drops counted as ``dropped_frames``) and a decode loop that runs the engine in a worker thread,
so the agent's event loop stays responsive while frames decode. A camera with ``decode: every``
(a dock door) reads every code of each frame (``DecodeEngine.decode_all``), not only the first
pass's.

Every read, from a camera or a scanner, goes through one sliding dedup window per (source,
symbology, text): a label seen in frame after frame is one read for as long as it is seen
again within the window, i.e. one read per pass in front of the camera; once it has been out
of sight for longer than the window, its next sighting is a new pass. Frames the mailbox drops
only lengthen the gaps between sightings, so a pass stays one read while the window is longer
than the time between two decoded frames in which the label is seen. A new read becomes a
``scan`` event, or, when the service was given ``deliver`` (the station), is handed to it
instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from edge_agent.clock import Clock
from edge_agent.outbox import OutboxError
from edge_agent.platform.backoff import backoff_delay
from edge_agent.platform.health import HealthRegistry
from edge_agent.scan.config import CameraConfig, ScanConfig
from edge_agent.scan.dedup import Deduper
from edge_agent.scan.events import Read, scan_event
from edge_agent.scan.scanners import run_scanner
from edge_agent.sink import EventSink

if TYPE_CHECKING:
    # OpenCV and numpy come with these: loaded only when a camera runs (a station with
    # handhelds only stays about 25 MB smaller)
    from edge_agent.scan.camera import CameraError, FrameMailbox, FrameSource
    from edge_agent.scan.engine import DecodeEngine

__all__ = ["ScanService"]

log = logging.getLogger(__name__)
_TAKE_WAIT = 0.5


class ScanService:
    """Runs the configured cameras and scanners (module docstring)."""

    def __init__(
        self,
        config: ScanConfig,
        sink: EventSink,
        health: HealthRegistry,
        clock: Clock,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        source_factory: Callable[[CameraConfig], FrameSource] | None = None,
        deliver: Callable[[Read], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.health = health
        self.clock = clock
        self._engine: DecodeEngine | None = None
        self.dedup = Deduper(config.dedup_window)
        self.emitted = 0
        self.frames_decoded = 0
        self._mono = monotonic
        self._factory = source_factory or _open_camera
        self.ended: dict[str, asyncio.Event] = {c.id: asyncio.Event() for c in config.cameras}
        self._deliver = deliver

    async def run(self) -> None:
        """Run every camera and scanner until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for cam in self.config.cameras:
                tg.create_task(self._run_camera(cam), name=f"scan:{cam.id}")
            for scanner in self.config.scanners:
                tg.create_task(
                    run_scanner(scanner, self.submit, self.health), name=f"scan:{scanner.id}"
                )

    async def submit(self, read: Read) -> bool:
        """Dedup one read; a new one is emitted as a ``scan`` event, or handed to ``deliver``
        when the service has one. True if it was new and taken."""
        if not self.dedup.is_new(read.source, read.symbology, read.text, self._mono()):
            self.health.count(f"scan:{read.source}", "duplicates")
            return False
        if self._deliver is not None:
            try:
                await self._deliver(read)
            except Exception:  # the consumer's fault must not stop the camera or scanner
                self.health.count(f"scan:{read.source}", "deliver_failed")
                log.exception("read from %s not delivered", read.source)
                return False
            self.emitted += 1
            return True
        data, ref = scan_event(read)
        try:
            await self.sink.emit("scan", data, ref=ref)
        except (OutboxError, ValueError) as exc:
            self.health.count(f"scan:{read.source}", f"emit_failed:{type(exc).__name__}")
            log.warning("scan from %s not recorded: %s", read.source, exc)
            return False
        self.emitted += 1
        return True

    # -- cameras ---------------------------------------------------------------------------

    @property
    def engine(self) -> DecodeEngine:
        """The decode engine, made when a camera first needs it."""
        if self._engine is None:
            from edge_agent.scan.engine import DecodeEngine

            self._engine = DecodeEngine(budget_s=self.config.budget)
        return self._engine

    @engine.setter
    def engine(self, engine: DecodeEngine) -> None:
        self._engine = engine

    async def _run_camera(self, cam: CameraConfig) -> None:
        from edge_agent.scan.camera import CameraError

        component = f"scan:{cam.id}"
        attempt = 0
        while True:
            try:
                productive = await self._camera_session(cam, component)
                self.health.set_state(component, "idle", ended=True)
                self.ended[cam.id].set()
                return
            except CameraError as exc:
                productive = False
                self.health.set_state(component, "disconnected", error=str(exc))
            attempt = 0 if productive else attempt + 1
            await asyncio.sleep(backoff_delay(attempt, cap=cam.reconnect_max))

    async def _camera_session(self, cam: CameraConfig, component: str) -> bool:
        from edge_agent.scan.camera import FrameMailbox

        source = await asyncio.to_thread(self._factory, cam)
        self.health.set_state(component, "ok", source=cam.source)
        mailbox = FrameMailbox()
        stop = threading.Event()
        failure: list[CameraError] = []
        reader = threading.Thread(
            target=_read_frames,
            args=(source, mailbox, stop, failure, cam.fps),
            name=f"camera-{cam.id}",
            daemon=True,
        )
        reader.start()
        dropped_counted = 0
        decode = self.engine.decode_all if cam.decode == "every" else self.engine.decode
        try:
            while True:
                item = await asyncio.to_thread(mailbox.take, _TAKE_WAIT)
                if mailbox.dropped > dropped_counted:
                    self.health.count(
                        component, "dropped_frames", mailbox.dropped - dropped_counted
                    )
                    dropped_counted = mailbox.dropped
                if item is None:
                    if mailbox.closed:
                        break
                    continue
                _, frame = item
                result = await asyncio.to_thread(decode, frame)
                self.frames_decoded += 1
                if result.out_of_time:
                    self.health.count(component, "budget_spent")
                for code in result.codes:
                    await self.submit(
                        Read(
                            text=code.text,
                            symbology=code.format,
                            source=cam.id,
                            gs1=code.gs1,
                            decode_ms=result.elapsed_s * 1000,
                            position=code.position,
                        )
                    )
        finally:
            stop.set()
            await asyncio.to_thread(reader.join, 5.0)
        if failure:
            raise failure[0]
        return True


def _open_camera(cam: CameraConfig) -> FrameSource:
    from edge_agent.scan.camera import open_source

    return open_source(cam.source, loop=cam.loop)


def _read_frames(
    source: FrameSource,
    mailbox: FrameMailbox,
    stop: threading.Event,
    failure: list[CameraError],
    fps: float,
) -> None:
    """Reader thread: frames into the mailbox as the source gives them (paced at ``fps``)."""
    from edge_agent.scan.camera import CameraError

    period = 1.0 / fps if fps > 0 else 0.0
    due = time.monotonic()
    try:
        while not stop.is_set():
            frame = source.read()
            if frame is None:
                break
            if period:
                due += period
                if stop.wait(max(0.0, due - time.monotonic())):
                    break
            mailbox.put(frame)
    except CameraError as exc:
        failure.append(exc)
    except Exception as exc:  # OpenCV raises cv2.error on broken streams: a device failure
        failure.append(CameraError(f"camera read failed: {exc}"))
    finally:
        source.close()
        mailbox.close()
