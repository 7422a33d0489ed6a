"""The station agent's benchmarks of issue 9: scan to signal, and the agent's RSS and CPU; prints
one JSON object.

    python benchmarks/bench_station.py [latency] [agent] [--misloads 500] [--frames 60]
        [--idle 30] [--load 60] [--rates 1,5]

latency  Scan to signal (misload), in one process pinned to one core: a ``StationService`` on a
         real outbox (a SQLite file in a temp dir) and its state files, its docks' scanners on TCP
         sockets (``simulators.dock_devices.DeviceServer``, read by the real scanner driver), and
         its signal lines on the gpiod stand-in (``tests/gpiod_standin.py``), subclassed here to
         stamp each write. Background: 4 docks loading, a read every 50-150 ms on each, 5 % of
         them misloads, a van per 150 parcels (vehicle code, parcels, GATEOUT), from a plan of
         the whole shift. A probe dock gets a misload (a parcel of another route) every
         100-250 ms once its red light is off again. Measured from the moment the read is
         handed to the station (``StationService.on_read``, stamped by a subclass) and from the
         moment its bytes were sent on the scanner's socket, to the moment the stand-in's red
         line is written ACTIVE; the loading docks' own misloads are measured too when their
         red was off. Signals hold red 100 ms (the default is 5 s) so that each misload is a
         fresh write.
         Then the same from a camera: dock frames of the dock camera simulator (1280x720,
         labels on a conveyor, motion blur) through the station's own camera loop (the real
         ``ScanService`` with ``decode: every``, reader thread, mailbox, decode in a worker
         thread). The camera device is a frame queue standing in for V4L2 (the one name patched:
         ``edge_agent.scan.service._open_camera``): it gives a frame with no label every 1/fps s,
         and for a probe the four frames from the first in which a new label is readable (the
         simulator's truth); measured from the moment that first frame is handed to the loop.
         ``decode_all`` dominates: its time is reported separately.

agent    A real station agent subprocess (``python -m edge_agent run``, ``device.role:
         station``), 4 docks each with a TFmini distance sensor over its bay and a handheld
         scanner (``simulators.dock_devices.DockDevices`` on sockets), a private mosquitto and a
         hub subprocess draining its outbox; its load plan (48 routes of 150 parcels: a shift)
         sent on ``cmd/loadplan`` and acknowledged. RSS (VmRSS, VmHWM) and CPU (utime + stime)
         from /proc over an idle window and over loading windows: vans back in (the distance
         sensor sees them), their vehicle code and parcels are scanned at ``rate`` parcels/s per
         dock (5 % misloads), and after 20 s each pulls out (bay free: gate-out by the
         sensors) and the next backs in. Peer in the same run: a van agent (the same
         configuration without the station), idle.

Rates: a crew walking parcels into a van loads one every few seconds; an extendable conveyor
feeding a crew about one a second. 1 parcel/s per dock is the busy end of manual loading;
5 parcels/s per dock is a sorter line feeding the door.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import aiomqtt
import numpy as np
import numpy.typing as npt
from gpiod.line import Value

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.clock import Clock  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from edge_agent.platform.health import HealthRegistry  # noqa: E402
from edge_agent.recorder import OutboxSink  # noqa: E402
from edge_agent.scan import service as scan_service  # noqa: E402
from edge_agent.scan.camera import FrameSource  # noqa: E402
from edge_agent.scan.events import Read  # noqa: E402
from edge_agent.scan.gs1 import check_digit  # noqa: E402
from edge_agent.station.config import StationConfig  # noqa: E402
from edge_agent.station.plan import parcel_key  # noqa: E402
from edge_agent.station.service import StationService  # noqa: E402
from edge_agent.wire import topics  # noqa: E402
from simulators.broker import Mosquitto, free_port  # noqa: E402
from simulators.dock_camera import plan_dock, readable_in, render_dock  # noqa: E402
from simulators.dock_devices import DeviceServer, DockDevices  # noqa: E402
from tests.gpiod_standin import FakeGpiod, FakeRequest  # noqa: E402

Frame = npt.NDArray[np.uint8]

LOADING_DOCKS = ("d1", "d2", "d3", "d4")
PROBE_DOCK = "d0"
CAMERA_DOCK = "d5"
CAMERA_SOURCE = "bench-camera"
YARD_DOCK = "d9"  # a dock of the plan with no devices here: the misloaded parcels' own
PARCELS_PER_ROUTE = 150
MISLOAD = 0.05
RED_HOLD = "100ms"
WAIT_RED_S = 3.0


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def pcts(values_ns: list[int]) -> dict[str, Any]:
    """p50/p90/p99/max in ms of durations in ns (nearest-rank percentiles)."""
    if not values_ns:
        return {"n": 0}
    ms = sorted(v / 1e6 for v in values_ns)

    def rank(p: float) -> float:
        return round(ms[min(len(ms) - 1, max(0, int(p * len(ms) + 0.999999) - 1))], 2)

    return {
        "n": len(ms),
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": round(ms[-1], 2),
    }


# --------------------------------------------------------------------------------- the plan


class Parcels:
    """SSCCs, never the same twice (a GS1 label reads ``]C100`` + SSCC on a handheld)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def sscc(self) -> str:
        """A new SSCC (18 digits with its check digit)."""
        while True:
            body = "0" + "".join(self.rng.choices("0123456789", k=16))
            key = body + str(check_digit(body))
            if key not in self.seen:
                self.seen.add(key)
                return key


@dataclass
class Route:
    """One route of the plan."""

    route: str
    vehicle: str
    dock: str
    parcels: list[str]

    def as_plan(self) -> dict[str, Any]:
        """The route in a DESIGN §8 load plan."""
        return {
            "route": self.route,
            "vehicle": self.vehicle,
            "dock": self.dock,
            "parcels": self.parcels,
        }


def shift_routes(
    ids: Parcels, docks: tuple[str, ...], per_dock: int, parcels: int
) -> dict[str, list[Route]]:
    """``per_dock`` routes of ``parcels`` parcels at each dock, in plan order per dock."""
    return {
        dock: [
            Route(
                f"{dock}-r{k:02d}",
                f"van-{dock}-{k:02d}",
                dock,
                [ids.sscc() for _ in range(parcels)],
            )
            for k in range(per_dock)
        ]
        for dock in docks
    }


def plan_of(routes: list[Route]) -> dict[str, Any]:
    """A load plan (interleaved by dock, as a shift's plan lists its departures)."""
    return {"station": "depot-bench", "routes": [r.as_plan() for r in routes]}


def interleave(by_dock: dict[str, list[Route]]) -> list[Route]:
    """Routes in departure order: the first van of every dock, then the second..."""
    out: list[Route] = []
    longest = max((len(v) for v in by_dock.values()), default=0)
    for k in range(longest):
        out.extend(rs[k] for rs in by_dock.values() if k < len(rs))
    return out


# ------------------------------------------------------------------ 1. scan to signal (misload)


class TimedRequest(FakeRequest):
    """The stand-in's line request, calling ``hook(request, ns)`` once a line is set ACTIVE."""

    hook: Callable[[TimedRequest, int], None] | None = None

    def set_value(self, line: Any, value: Value) -> None:
        super().set_value(line, value)
        if value == Value.ACTIVE and self.hook is not None:
            self.hook(self, time.monotonic_ns())


class TimedGpiod(FakeGpiod):
    """The stand-in chip, handing out ``TimedRequest``s."""

    def __init__(self, hook: Callable[[TimedRequest, int], None]) -> None:
        super().__init__()
        self.hook = hook

    def request_lines(
        self,
        path: str,
        config: dict[Any, Any],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[Any, Value] | None = None,
    ) -> FakeRequest:
        request = TimedRequest(path, consumer, config, value=self.value)
        request.hook = self.hook
        self.requests.append(request)
        return request


class BenchStation(StationService):
    """The station service, stamping the moment each read is handed to it."""

    handed: dict[str, int]
    decode_ms: dict[str, float]

    async def on_read(self, read: Read) -> None:
        """Stamp, then hand the read on."""
        self.handed[read.text] = time.monotonic_ns()
        if read.decode_ms is not None:
            self.decode_ms[read.text] = read.decode_ms
        await super().on_read(read)


class RedLines:
    """Which line offset is which dock's red; a future per dock waiting for its red write."""

    def __init__(self) -> None:
        self.red_of: dict[int, str] = {}
        self.waiting: dict[str, asyncio.Future[int]] = {}
        self.requests: dict[str, TimedRequest] = {}

    def hook(self, request: TimedRequest, ns: int) -> None:
        """Called from the station's consumer (on the event loop) at each ACTIVE write."""
        for offset in request.offsets:
            dock = self.red_of.get(offset)
            if dock is None:
                continue
            self.requests[dock] = request
            fut = self.waiting.pop(dock, None)
            if fut is not None and not fut.done():
                fut.set_result(ns)

    def is_red(self, dock: str) -> bool:
        """Whether the dock's red line is on now."""
        request = self.requests.get(dock)
        return request is not None and request.value == Value.ACTIVE

    def arm(self, dock: str) -> asyncio.Future[int] | None:
        """A future for the dock's next red write, or None when its red is on (a misload now
        would write nothing) or a misload is already waiting there."""
        if self.is_red(dock) or dock in self.waiting:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[dock] = fut
        return fut

    def disarm(self, dock: str) -> None:
        """Forget a wait that timed out."""
        self.waiting.pop(dock, None)


async def poll_until(cond: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait until ``cond()`` holds (checked every 10 ms; TimeoutError after ``limit_s``)."""
    async with asyncio.timeout(limit_s):
        while True:
            if cond():
                return
            await asyncio.sleep(0.01)


def gpio(line: int) -> str:
    """An output line of the stand-in chip."""
    return f"gpio:///dev/gpiochip0?line={line}&direction=output"


@dataclass
class CameraProbe:
    """Frames showing a new label, from the first in which it is readable."""

    frames: list[Frame]
    text: str
    handed_ns: int | None = None


class QueueCamera:
    """A camera device standing in for V4L2: a frame every 1/fps s, a probe's frames when one is
    queued, else a frame with no label; nothing until ``active`` is set (``read`` is called on
    the scan service's reader thread)."""

    def __init__(self, fillers: list[Frame], fps: float) -> None:
        self.fillers = fillers
        self.period = 1.0 / fps
        self.active = threading.Event()
        self.closed = threading.Event()
        self.probes: queue.Queue[CameraProbe] = queue.Queue()
        self._showing: list[Frame] = []
        self._probe: CameraProbe | None = None
        self._due = 0.0
        self._n = 0

    def read(self) -> Frame | None:
        """The next frame (FrameSource), paced at the camera's rate."""
        while not self.active.is_set():
            if self.closed.is_set():
                return None
            self.active.wait(0.2)
        now = time.monotonic()
        self._due = max(self._due + self.period, now)
        time.sleep(self._due - now)
        if not self._showing:
            try:
                self._probe = self.probes.get_nowait()
                self._showing = list(self._probe.frames)
            except queue.Empty:
                self._probe = None
        if self._showing:
            frame = self._showing.pop(0)
            if self._probe is not None and self._probe.handed_ns is None:
                self._probe.handed_ns = time.monotonic_ns()
            return frame
        self._n += 1
        return self.fillers[self._n % len(self.fillers)]

    def showing(self) -> bool:
        """Whether a probe's frames are queued or still being given."""
        return bool(self._showing) or not self.probes.empty()

    def close(self) -> None:
        """Nothing to release."""


def camera_probes(count: int) -> tuple[list[CameraProbe], list[Frame]]:
    """Probes (one per label, four frames from its first readable one) and frames with no label,
    from conveyor recordings of the dock camera simulator."""
    probes: list[CameraProbe] = []
    fillers: list[Frame] = []
    shown: set[str] = set()
    seed = 0
    while len(probes) < count and seed < 50:
        seed += 1
        scene = plan_dock(24, motion="conveyor", density=0.5, seed=seed)
        frames: list[Frame] = []
        in_view: list[set[str]] = []
        first: dict[int, int] = {}
        for f, frame, views in render_dock(scene, seed=seed):
            frames.append(frame)
            in_view.append({scene.tracks[v.track].label.text for v in views})
            if not views:
                fillers.append(frame)
            for v in views:
                if v.track not in first and readable_in(frame, v, scene.tracks[v.track].label):
                    first[v.track] = f
        for track, f in sorted(first.items(), key=lambda kv: kv[1]):
            text = scene.tracks[track].label.text
            if text in shown:  # in view in an earlier probe's frames: not new any more
                continue
            shown.update(*in_view[f : f + 4])
            probes.append(CameraProbe(frames[f : f + 4], text))
    if not fillers:
        raise RuntimeError("no frame without a label in the recordings")
    return probes[:count], fillers


@dataclass
class Samples:
    """Measured latencies (ns)."""

    from_read: list[int] = field(default_factory=list)
    from_source: list[int] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    missed: int = 0
    ambiguous: int = 0


async def bench_latency(misloads: int, frames: int, camera_fps: float) -> dict[str, Any]:
    """Part 1 (module docstring)."""
    rng = random.Random(9)
    print(f"latency: rendering {frames} camera probes", file=sys.stderr)
    probes, fillers = camera_probes(frames)
    ids = Parcels(rng)
    duration = misloads * 0.3 + frames * 1.0 + 30
    per_dock = int(duration / (PARCELS_PER_ROUTE * 0.1 + 0.5)) + 2
    loading = shift_routes(ids, LOADING_DOCKS, per_dock, PARCELS_PER_ROUTE)
    probe_route = Route(
        f"{PROBE_DOCK}-r00", "van-probe", PROBE_DOCK, [ids.sscc() for _ in range(40)]
    )
    cam_route = Route(f"{CAMERA_DOCK}-r00", "van-cam", CAMERA_DOCK, [ids.sscc() for _ in range(40)])
    yard = Route("yard-r00", "van-yard", YARD_DOCK, [ids.sscc() for _ in range(misloads + 50)])
    cam_yard = Route(
        "yard-r01", "van-yard-2", YARD_DOCK, sorted({parcel_key(p.text) for p in probes})
    )
    routes = [probe_route, cam_route, *interleave(loading), yard, cam_yard]
    plan = plan_of(routes)
    plan_parcels = sum(len(r.parcels) for r in routes)

    red = RedLines()
    chip = TimedGpiod(red.hook)
    servers = {d: DeviceServer() for d in (PROBE_DOCK, *LOADING_DOCKS)}
    docks: list[dict[str, Any]] = []
    for i, dock in enumerate((PROBE_DOCK, *LOADING_DOCKS, CAMERA_DOCK)):
        base = 100 + 3 * i
        red.red_of[base + 1] = dock
        cfg: dict[str, Any] = {
            "id": dock,
            "signal": {
                "green": gpio(base),
                "red": gpio(base + 1),
                "buzzer": gpio(base + 2),
                "red_hold": RED_HOLD,
                "green_hold": "1s",
            },
        }
        if dock in servers:
            cfg["scanners"] = [{"id": f"{dock}-hand", "source": servers[dock].url}]
        else:
            cfg["cameras"] = [{"id": f"{dock}-cam", "source": CAMERA_SOURCE, "decode": "every"}]
        docks.append(cfg)

    camera = QueueCamera(fillers, camera_fps)
    # the scan service opens its cameras by this name: the frame queue stands in for the device
    original_open = scan_service._open_camera

    def open_camera(cam: Any) -> FrameSource:
        return camera if cam.source == CAMERA_SOURCE else original_open(cam)

    scan_service._open_camera = open_camera

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        outbox = await Outbox.open(work / "outbox.db", "bench", "depot-bench")
        clock = Clock("system")
        config = StationConfig.model_validate({"docks": docks, "state_dir": str(work / "station")})
        station = BenchStation(
            config, OutboxSink(outbox, clock), HealthRegistry(), clock, gpiod=cast(ModuleType, chip)
        )
        station.handed = {}
        station.decode_ms = {}
        for server in servers.values():
            await server.start()
        task = asyncio.create_task(station.run())
        try:
            async with asyncio.timeout(30):
                for server in servers.values():
                    await server.connected.wait()
                await poll_until(lambda: len(chip.live()) == 3 * len(docks))
            await station.on_loadplan(json.dumps({**plan, "id": "plan-1"}).encode())
            await asyncio.wait_for(station.idle(), 30)

            stop = asyncio.Event()
            background = Samples()
            pending: set[asyncio.Task[None]] = set()

            async def measure(
                dock: str, text: str, sent: int, fut: asyncio.Future[int], into: Samples
            ) -> None:
                try:
                    t_red = await asyncio.wait_for(fut, WAIT_RED_S)
                except TimeoutError:
                    red.disarm(dock)
                    into.missed += 1
                    return
                handed = station.handed.get(text)
                if handed is None or not sent <= handed <= t_red:
                    into.ambiguous += 1  # the red came from a read still in flight before this one
                    return
                into.from_read.append(t_red - handed)
                into.from_source.append(t_red - sent)

            others = {
                dock: [p for d2, rs in loading.items() if d2 != dock for r in rs for p in r.parcels]
                for dock in LOADING_DOCKS
            }
            reads = {"n": 0}

            async def load_dock(dock: str) -> None:
                server = servers[dock]
                lr = random.Random(dock)
                for route in loading[dock]:
                    await server.send(f"VEH:{route.vehicle}\r".encode())
                    for planned in route.parcels:
                        await asyncio.sleep(lr.uniform(0.05, 0.15))
                        if stop.is_set():
                            return
                        fut = None
                        parcel = planned
                        if lr.random() < MISLOAD:
                            parcel = lr.choice(others[dock])
                            fut = red.arm(dock)
                        sent = time.monotonic_ns()
                        await server.send(f"]C100{parcel}\r".encode())
                        reads["n"] += 1
                        if fut is not None:
                            t = asyncio.create_task(
                                measure(dock, f"00{parcel}", sent, fut, background)
                            )
                            pending.add(t)
                            t.add_done_callback(pending.discard)
                    await server.send(b"GATEOUT\r")
                    await asyncio.sleep(0.5)

            loaders = [asyncio.create_task(load_dock(dock)) for dock in LOADING_DOCKS]
            await asyncio.sleep(3.0)  # the docks are loading
            print(f"latency: {misloads} scanner misloads", file=sys.stderr)
            t_start = time.monotonic()
            reads0 = reads["n"]
            scanner = Samples()
            probe_server = servers[PROBE_DOCK]
            for parcel in yard.parcels[:misloads]:
                await asyncio.sleep(rng.uniform(0.1, 0.25))
                await poll_until(lambda: not red.is_red(PROBE_DOCK))
                fut = red.arm(PROBE_DOCK)
                assert fut is not None
                sent = time.monotonic_ns()
                await probe_server.send(f"]C100{parcel}\r".encode())
                await measure(PROBE_DOCK, f"00{parcel}", sent, fut, scanner)
            scanner_s = time.monotonic() - t_start
            scanner_reads = reads["n"] - reads0

            print(f"latency: {len(probes)} camera probes at {camera_fps:g} fps", file=sys.stderr)
            cam = Samples()
            camera.active.set()
            await asyncio.sleep(2.0)  # the camera loop is decoding frames with no label
            for probe in probes:
                # the last probe's frames shown (their other labels read) and the red off
                await poll_until(lambda: not camera.showing())
                await asyncio.sleep(rng.uniform(0.3, 0.6))
                await poll_until(lambda: not red.is_red(CAMERA_DOCK))
                fut = red.arm(CAMERA_DOCK)
                assert fut is not None
                camera.probes.put(probe)
                try:
                    t_red = await asyncio.wait_for(fut, WAIT_RED_S)
                except TimeoutError:
                    red.disarm(CAMERA_DOCK)
                    cam.missed += 1
                    continue
                if probe.handed_ns is None or t_red < probe.handed_ns:
                    cam.ambiguous += 1  # a label of the frames before turned the red on
                    continue
                cam.from_source.append(t_red - probe.handed_ns)
                # the read that turned the red on: the first handed to the station after the frame
                firsts = [
                    (station.handed[t], t)
                    for t in station.handed
                    if t in station.decode_ms and station.handed[t] >= probe.handed_ns
                ]
                if firsts:
                    handed, text = min(firsts)
                    cam.from_read.append(t_red - handed)
                    cam.decode_ms.append(station.decode_ms[text])
            camera.active.clear()
            stop.set()
            await asyncio.gather(*loaders)
            await asyncio.gather(*pending)
            await asyncio.wait_for(station.idle(), 30)
            state_kb = (work / "station" / "station-state.json").stat().st_size / 1024
            stats = await outbox.stats()
        finally:
            camera.closed.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            scan_service._open_camera = original_open
            for server in servers.values():
                await server.close()
            await outbox.close()

    return {
        "cores": 1,
        "background": {
            "loading_docks": len(LOADING_DOCKS),
            "read_every_ms": [50, 150],
            "misload_share": MISLOAD,
            "reads_per_s": round(scanner_reads / scanner_s, 1),
            "plan_routes": len(routes),
            "plan_parcels": plan_parcels,
        },
        "scanner": {
            "misloads": len(scanner.from_read),
            "missed": scanner.missed,
            "on_read_to_red_ms": pcts(scanner.from_read),
            "socket_to_red_ms": pcts(scanner.from_source),
            "loading_docks_misloads_on_read_to_red_ms": pcts(background.from_read),
            "loading_docks_missed": background.missed,
            "loading_docks_ambiguous": background.ambiguous,
        },
        "camera": {
            "frame": "1280x720",
            "fps": camera_fps,
            "probes": len(probes),
            "missed": cam.missed,
            "ambiguous": cam.ambiguous,
            "frame_to_red_ms": pcts(cam.from_source),
            "decode_all_ms": pcts([round(ms * 1e6) for ms in cam.decode_ms]),
            "on_read_to_red_ms": pcts(cam.from_read),
        },
        "red_hold_ms": 100,
        "state_file_kb_at_end": round(state_kb, 1),
        "outbox_events_at_end": stats.depth,
        "target_p99_ms": 200,
    }


# ----------------------------------------------------------------------------- 2. the agent


def proc_usage(pid: int) -> dict[str, float]:
    """CPU seconds used (utime + stime), VmRSS and VmHWM (MiB) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out = {"cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


IMPORTS = (
    "edge_agent.runtime",
    "edge_agent.station.service",
    "edge_agent.scan.scanners",
    "edge_agent.scan.service",
)
RSS_PROBE = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
out = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    out[name] = rss()
print(json.dumps(out))
"""


def rss_by_import() -> dict[str, float]:
    """RSS of a fresh interpreter after importing each of ``IMPORTS`` in turn (where the
    station's memory goes: the modules a station with scanners only loads)."""
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, *IMPORTS],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(done.stdout))


class Service:
    """``python -m MODULE run`` on a config written into ``work``; ready once it prints so."""

    def __init__(self, module: str, work: Path, name: str, cfg: dict[str, Any]) -> None:
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(cfg))
        self.name = name
        with (work / f"{name}.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, "run", "--config", str(path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=ROOT,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} did not start; see {work / (name + '.log')}")
        self.api_port = json.loads(line).get("api_port")

    def stop(self) -> None:
        """Terminate and wait."""
        self.proc.terminate()
        self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def agent_config(
    work: Path, broker_url: str, device: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """An agent's configuration on temp files."""
    return {
        "device": device,
        "broker": {"url": broker_url},
        "outbox": {"path": str(work / f"{device['id']}.outbox.db")},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "uplink": {"ack_timeout": "5s", "backoff_max": "1s"},
        "log": {"level": "WARNING"},
        **extra,
    }


def get_json(port: int, path: str) -> Any:
    """GET a local API."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


class Window:
    """CPU and RSS of processes over a window of time."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.start = {name: proc_usage(pid) for name, pid in pids.items()}

    def end(self) -> dict[str, dict[str, float]]:
        """Per process: CPU % of one core over the window, VmRSS and VmHWM now."""
        elapsed = time.monotonic() - self.t0
        out = {}
        for name, pid in self.pids.items():
            now = proc_usage(pid)
            out[name] = {
                "seconds": round(elapsed, 1),
                "cpu_pct": round(100 * (now["cpu_s"] - self.start[name]["cpu_s"]) / elapsed, 2),
                "rss_mb": round(now["VmRSS"], 1),
                "hwm_mb": round(now["VmHWM"], 1),
            }
        return out


async def bench_agent(
    idle_s: float, load_s: float, rates: list[float], tfmini_hz: float
) -> dict[str, Any]:
    """Part 2 (module docstring)."""
    rng = random.Random(7)
    ids = Parcels(rng)
    routes = shift_routes(ids, LOADING_DOCKS, 12, PARCELS_PER_ROUTE)
    plan = plan_of(interleave(routes))
    van_s = 20.0
    result: dict[str, Any] = {
        "docks": len(LOADING_DOCKS),
        "tfmini_hz": tfmini_hz,
        "plan_routes": len(plan["routes"]),
        "plan_parcels": sum(len(r["parcels"]) for r in plan["routes"]),
        "van_at_dock_s": van_s,
        "misload_share": MISLOAD,
    }
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        broker = Mosquitto()
        broker.start()
        devices = [DockDevices(dock, rate=tfmini_hz) for dock in LOADING_DOCKS]
        for dev in devices:
            await dev.start()
        services: list[Service] = []
        try:
            hub_cfg = {
                "broker": {"url": broker.url},
                "timeline": {"url": f"sqlite:///{work / 'timeline.db'}"},
                "api": {"listen": f"127.0.0.1:{free_port()}"},
                "log": {"level": "WARNING"},
            }
            hub = await asyncio.to_thread(Service, "hub_bridge", work, "hub", hub_cfg)
            services.append(hub)
            device = {"id": "depot-bench", "fleet": "bench", "role": "station"}
            station_cfg = agent_config(
                work, broker.url, device, station={"docks": [dev.station_dock() for dev in devices]}
            )
            station = await asyncio.to_thread(Service, "edge_agent", work, "station", station_cfg)
            services.append(station)
            van_cfg = agent_config(work, broker.url, {"id": "van-bench", "fleet": "bench"})
            van = await asyncio.to_thread(Service, "edge_agent", work, "van", van_cfg)
            services.append(van)
            async with asyncio.timeout(60):
                for dev in devices:
                    await dev.wait_connected()
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.subscribe(topics.cmd_ack("bench", "depot-bench"), qos=1)
                await client.subscribe(topics.state("bench", "depot-bench"), qos=1)
                async with asyncio.timeout(60):
                    async for msg in client.messages:
                        if json.loads(bytes(msg.payload)).get("state") == "online":
                            break
                payload = json.dumps({**plan, "id": "plan-1"})
                await client.publish(topics.cmd("bench", "depot-bench", "loadplan"), payload, qos=1)
                async with asyncio.timeout(60):
                    async for msg in client.messages:
                        ack = json.loads(bytes(msg.payload))
                        if ack.get("id") == "plan-1":
                            break
                if ack != {"id": "plan-1", "ok": True}:
                    raise RuntimeError(f"the load plan was refused: {ack}")
            await asyncio.sleep(5.0)  # the plan kept on disk, the first health events sent
            pids = {"station": station.proc.pid, "van": van.proc.pid}

            print(f"agent: idle {idle_s:g} s", file=sys.stderr)
            window = Window(pids)
            await asyncio.sleep(idle_s)
            result["idle"] = window.end()

            queues = {dock: list(rs) for dock, rs in routes.items()}
            others = {
                dock: [p for d2, rs in routes.items() if d2 != dock for r in rs for p in r.parcels]
                for dock in LOADING_DOCKS
            }
            scanned = {"parcels": 0, "misloads": 0, "vans": 0}

            async def dock_loop(dev: DockDevices, rate: float, until: float) -> None:
                lr = random.Random(dev.dock + str(rate))
                loop = asyncio.get_running_loop()
                while loop.time() < until and queues[dev.dock]:
                    route = queues[dev.dock].pop(0)
                    dev.arrive()
                    await asyncio.sleep(1.5)  # the bay's hold time
                    await dev.scan(f"VEH:{route.vehicle}")
                    scanned["vans"] += 1
                    leave = loop.time() + van_s
                    for planned in route.parcels:
                        # scans at random moments, ``rate`` a second on average
                        await asyncio.sleep(lr.expovariate(rate))
                        if loop.time() >= min(leave, until):
                            break
                        parcel = planned
                        if lr.random() < MISLOAD:
                            parcel = lr.choice(others[dev.dock])
                            scanned["misloads"] += 1
                        await dev.scan(f"]C100{parcel}")
                        scanned["parcels"] += 1
                    dev.leave()
                    await asyncio.sleep(2.0)  # bay free: the gate-out; the next van backs in

            for rate in rates:
                print(
                    f"agent: loading at {rate:g} parcel/s per dock for {load_s:g} s",
                    file=sys.stderr,
                )
                for key in scanned:
                    scanned[key] = 0
                window = Window({"station": station.proc.pid})
                until = asyncio.get_running_loop().time() + load_s
                await asyncio.gather(*(dock_loop(dev, rate, until) for dev in devices))
                usage = window.end()["station"]
                result[f"loading_{rate:g}_per_s_per_dock"] = {
                    **usage,
                    **scanned,
                    "parcels_per_s": round(scanned["parcels"] / usage["seconds"], 2),
                }
            # every event reached the hub: the outbox drained
            deadline = time.monotonic() + 60
            depth = None
            while time.monotonic() < deadline:
                depth = get_json(station.api_port, "/v1/health")["queue"]["depth"]
                if depth == 0:
                    break
                await asyncio.sleep(0.5)
            result["outbox_depth_after"] = depth
            kinds: dict[str, int] = {}
            after = 0
            while True:
                page = get_json(
                    hub.api_port, f"/v1/events?device=depot-bench&after_seq={after}&limit=10000"
                )
                for ev in page:
                    kinds[ev["type"]] = kinds.get(ev["type"], 0) + 1
                if len(page) < 10000:
                    break
                after = page[-1]["seq"]
            result["hub_events"] = dict(sorted(kinds.items()))
            result["station_after"] = proc_usage(station.proc.pid)
            state = work / "station-state.json"  # state_dir: the outbox's folder
            result["state_file_kb_after"] = round(state.stat().st_size / 1024, 1)
        finally:
            for svc in reversed(services):
                svc.stop()
            for dev in devices:
                await dev.close()
            broker.stop()
    result["rss_by_import_mb"] = rss_by_import()
    result["target_rss_mb"] = 80
    result["target_cpu_pct_loading"] = 10
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("parts", nargs="*", help="latency, agent (default: both)")
    p.add_argument("--misloads", type=int, default=500)
    p.add_argument("--frames", type=int, default=60, help="camera probes")
    p.add_argument("--camera-fps", type=float, default=10.0)
    p.add_argument("--idle", type=float, default=30.0, help="seconds")
    p.add_argument("--load", type=float, default=60.0, help="seconds per rate")
    p.add_argument("--rates", default="1,5", help="parcels/s per dock, comma separated")
    p.add_argument("--tfmini-hz", type=float, default=10.0)
    a = p.parse_args()
    parts = a.parts or ["latency", "agent"]
    if set(parts) - {"latency", "agent"}:
        p.error(f"unknown part in {parts}: latency or agent")
    out: dict[str, Any] = {"machine": machine()}
    if "latency" in parts:
        cores = os.sched_getaffinity(0)
        # one core for the station, its event loop, threads and the load that feeds it
        os.sched_setaffinity(0, {sorted(cores)[0]})
        try:
            out["scan_to_signal"] = asyncio.run(bench_latency(a.misloads, a.frames, a.camera_fps))
        finally:
            os.sched_setaffinity(0, cores)
    if "agent" in parts:
        rates = [float(r) for r in a.rates.split(",")]
        out["agent"] = asyncio.run(bench_agent(a.idle, a.load, rates, a.tfmini_hz))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
