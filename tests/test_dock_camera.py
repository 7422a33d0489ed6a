"""Dock cameras: several labels per frame through the real camera loop (ScanService, a folder of
PNGs written by the dock camera simulator, ``decode: every``, ``deliver`` collecting reads);
one read per label per pass, a second pass after the window, frames dropped by the mailbox;
``decode_all`` against ``decode``; the simulator's scene and truth.

The dedup window is wall-clock time in the service; here it runs on the frames' own clock (the
number of the frame being decoded over the recording's fps, written into a corner pixel of each
frame by the source), so a loaded machine cannot stretch a pass into two: what is tested is the
loop's logic, not this machine's speed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.clock import Clock
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import MemorySink
from edge_agent.scan.camera import FolderSource, FrameSource
from edge_agent.scan.config import CameraConfig, ScanConfig
from edge_agent.scan.engine import DecodeEngine, DecodeResult
from edge_agent.scan.events import Read
from edge_agent.scan.service import ScanService
from simulators.camera import Impairments, Label, blank_belt, finish_frame, render_label
from simulators.dock_camera import main as dock_main
from simulators.dock_camera import plan_dock, render_dock, write_dock_frames

Frame = npt.NDArray[np.uint8]
FPS = 15.0
WINDOW_S = 2.0  # a pass crosses the frame in 12 frames (0.8 s): within the window
REPASS_GAP = 45  # frames (3 s) between a label's two passes: longer than the window


def tag(frame: Frame, index: int) -> Frame:
    """Writes the frame's number into its top-left pixel (the belt there holds no label)."""
    frame[0, 0, 0], frame[0, 0, 1] = index % 256, index // 256
    return frame


def tag_of(frame: Frame) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


class FrameClock:
    """The dedup's clock: the time of the frame being decoded."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TaggedFolder:
    """FolderSource that numbers its frames; ``lockstep`` gives the next frame only once the
    previous one was decoded (no drops), else frames come as fast as they are read."""

    def __init__(self, folder: Path, decoded: threading.Semaphore | None) -> None:
        self.inner = FolderSource(folder)
        self.decoded = decoded
        self.index = 0

    def read(self) -> Frame | None:
        if self.decoded is not None:
            self.decoded.acquire()
        frame = self.inner.read()
        if frame is None:
            return None
        self.index += 1
        return tag(frame, self.index - 1)

    def close(self) -> None:
        self.inner.close()


class RecordingEngine(DecodeEngine):
    """The real engine; it sets the frame clock, notes which frames and which method ran."""

    def __init__(
        self, clock: FrameClock, decoded: threading.Semaphore | None, budget_s: float
    ) -> None:
        super().__init__(budget_s=budget_s)
        self.clock = clock
        self.decoded = decoded
        self.frames: list[int] = []
        self.calls: Counter[str] = Counter()

    def _note(self, frame: Frame, method: str) -> None:
        self.frames.append(tag_of(frame))
        self.calls[method] += 1
        self.clock.now = tag_of(frame) / FPS

    def decode_all(self, image: Frame) -> DecodeResult:
        self._note(image, "decode_all")
        try:
            return super().decode_all(image)
        finally:
            if self.decoded is not None:
                self.decoded.release()

    def decode(self, image: Frame) -> DecodeResult:
        self._note(image, "decode")
        try:
            return super().decode(image)
        finally:
            if self.decoded is not None:
                self.decoded.release()


async def run_dock(
    folder: Path, *, lockstep: bool, decode: str | None = "every"
) -> tuple[list[tuple[int, Read]], RecordingEngine, HealthRegistry, ScanService]:
    """The folder through the camera loop; returns (frame number, read) per delivered read."""
    cam: dict[str, Any] = {"id": "dock-1", "source": str(folder)}
    if decode is not None:
        cam["decode"] = decode
    cfg = ScanConfig.model_validate({"dedup_window": f"{WINDOW_S}s", "cameras": [cam]})
    decoded = threading.Semaphore(1) if lockstep else None
    frame_clock = FrameClock()
    delivered: list[tuple[int, Read]] = []

    async def deliver(read: Read) -> None:
        delivered.append((round(frame_clock.now * FPS), read))

    def source(c: CameraConfig) -> FrameSource:
        return TaggedFolder(Path(c.source), decoded)

    health = HealthRegistry()
    clock = Clock("system")
    sink = MemorySink(clock)
    svc = ScanService(
        cfg, sink, health, clock, monotonic=frame_clock, source_factory=source, deliver=deliver
    )
    # every: a generous budget, as the region passes are bounded by region_share anyway;
    # first: the usual one, or frames without a label would run every fallback pass
    engine = RecordingEngine(frame_clock, decoded, 1.0 if decode == "every" else 0.08)
    svc.engine = engine
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.wait_for(svc.ended["dock-1"].wait(), 120)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.events == []  # with deliver, reads go to the station, not out as scan events
    return delivered, engine, health, svc


def check_passes(
    truth: dict[str, Any], delivered: list[tuple[int, Read]], decoded: set[int]
) -> Counter[str]:
    """Every delivered read belongs to one pass of its label (no false read), no pass gives
    two, and every pass readable in a decoded frame gives one. Returns reads per text."""
    passes = truth["labels"]
    per_pass: Counter[int] = Counter()
    for frame, read in delivered:
        assert read.source == "dock-1" and read.position is not None and len(read.position) == 4
        owners = [
            i
            for i, p in enumerate(passes)
            if p["text"] == read.text and p["first_frame"] <= frame <= p["last_frame"]
        ]
        assert len(owners) == 1, f"{read.text!r} at frame {frame}: not in one pass of it"
        assert read.symbology == passes[owners[0]]["format"]
        per_pass[owners[0]] += 1
    for i, p in enumerate(passes):
        seen = decoded & set(p["readable_frames"])
        assert per_pass[i] == (1 if seen else per_pass[i]), f"pass {i} ({p['text']}): {per_pass[i]}"
        assert per_pass[i] <= 1, f"pass {i} ({p['text']}) read {per_pass[i]} times"
    return Counter(read.text for _, read in delivered)


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A conveyor recording: 10 parcels, up to 6 in view, 2 of them passing a second time."""
    folder = tmp_path_factory.mktemp("dock") / "frames"
    scene = plan_dock(10, max_in_view=6, density=0.6, repasses=2, repass_gap=REPASS_GAP, seed=4)
    truth = json.loads(write_dock_frames(folder, scene, fps=FPS, seed=4).read_text())
    return folder, truth


async def test_every_readable_label_once_per_pass_and_a_second_pass_after_the_window(
    conveyor: tuple[Path, dict[str, Any]],
) -> None:
    folder, truth = conveyor
    passes = truth["labels"]
    assert max(_in_view_counts(truth)) >= 4  # several labels in a frame, really
    repassed = {p["text"] for p in passes if p["pass"] == 1}
    assert len(repassed) == 2
    readable_twice = {t for t in repassed if all(p["readable"] for p in passes if p["text"] == t)}
    assert readable_twice, "the scene should have a label readable in both of its passes"

    delivered, engine, health, svc = await run_dock(folder, lockstep=True)

    assert engine.frames == list(range(truth["frames"]))  # lockstep: every frame decoded
    assert health.counters("scan:dock-1").get("dropped_frames", 0) == 0
    per_text = check_passes(truth, delivered, set(engine.frames))
    assert {t for t, n in per_text.items() if n == 2} >= readable_twice
    readable = {p["text"] for p in passes if p["readable"]}
    assert readable <= set(per_text)
    assert health.counters("scan:dock-1")["duplicates"] > len(readable)  # frame after frame
    assert engine.calls == Counter({"decode_all": truth["frames"]})
    assert svc.emitted == len(delivered)


async def test_frames_dropped_by_the_mailbox_still_one_read_per_pass(
    conveyor: tuple[Path, dict[str, Any]],
) -> None:
    folder, truth = conveyor
    delivered, engine, health, svc = await run_dock(folder, lockstep=False)

    dropped = health.counters("scan:dock-1").get("dropped_frames", 0)
    assert dropped > 0  # the folder is read faster than frames decode: the newest wins
    assert svc.frames_decoded + dropped == truth["frames"]
    assert engine.frames == sorted(engine.frames)  # never an older frame after a newer one
    per_text = check_passes(truth, delivered, set(engine.frames))
    assert sum(per_text.values()) == len(delivered) > 0


async def test_a_camera_without_decode_every_keeps_the_first_pass_decode(
    conveyor: tuple[Path, dict[str, Any]],
) -> None:
    folder, truth = conveyor
    assert CameraConfig(id="c", source="/dev/video0").decode == "first"
    delivered, engine, _, _ = await run_dock(folder, lockstep=True, decode=None)
    assert engine.calls == Counter({"decode": truth["frames"]})
    assert {read.text for _, read in delivered} <= {p["text"] for p in truth["labels"]}


def _in_view_counts(truth: dict[str, Any]) -> list[int]:
    counts = [0] * truth["frames"]
    for p in truth["labels"]:
        for f in range(p["first_frame"], p["last_frame"] + 1):
            counts[f] += 1
    return counts


def test_decode_all_reads_what_the_first_pass_decode_stops_short_of() -> None:
    """One label in full light, two in a shadow: the fast pass (one global threshold) reads
    the first only, and ``decode`` stops there; ``decode_all`` reads all three."""
    rng = np.random.default_rng(1)
    belt = blank_belt((1280, 720), rng)
    labels = [
        (Label("Code128", "JD10000000000001", None, 0, 0), (60, 60), 2, (10, 235)),
        (Label("QRCode", "https://track.example/p/42", None, 0, 0), (700, 80), 4, (50, 110)),
        (Label("DataMatrix", "PKG-12345-6", None, 0, 0), (300, 420), 4, (50, 110)),
    ]
    for label, (x, y), module, (ink, paper) in labels:
        drawn = render_label(label, module).astype(np.float32) / 255
        h, w = drawn.shape
        belt[y : y + h, x : x + w] = ink + drawn * (paper - ink)
    frame = finish_frame(belt, Impairments(blur=0.6, tilt=0, glare=0, noise=3), rng)

    engine = DecodeEngine(budget_s=1.0)
    first = engine.decode(frame)
    every = engine.decode_all(frame)
    assert first.passes == ["fast"] and [c.text for c in first.codes] == [labels[0][0].text]
    assert {c.text for c in every.codes} == {lab.text for lab, *_ in labels}
    assert {(c.format, c.text) for c in first.codes} <= {(c.format, c.text) for c in every.codes}
    for c in every.codes:  # positions in the frame's coordinates, around where it was drawn
        (x, y), _, *_ = next(v for v in labels if v[0].text == c.text)[1:]
        xs = [p[0] for p in c.position]
        ys = [p[1] for p in c.position]
        assert x <= min(xs) and y <= min(ys) and max(xs) < x + 700 and max(ys) < y + 300


def test_decode_all_covers_decode_on_simulated_dock_frames() -> None:
    scene = plan_dock(8, max_in_view=6, density=0.6, seed=9)
    engine = DecodeEngine(budget_s=1.0)
    checked = 0
    for f, frame, views in render_dock(scene, seed=9):
        if f % 3 or not views:
            continue
        first = {(c.format, c.text) for c in engine.decode(frame).codes}
        every = {(c.format, c.text) for c in engine.decode_all(frame).codes}
        assert first <= every, f"frame {f}"
        assert every <= {(t.label.format, t.label.text) for t in scene.tracks}
        checked += len(every) > len(first)
    assert checked > 0  # decode_all found more than decode on some frame


def test_no_label_no_code_and_garbage_frames_are_refused_clearly() -> None:
    rng = np.random.default_rng(3)
    engine = DecodeEngine(budget_s=0.2)
    empty = finish_frame(blank_belt((1280, 720), rng), Impairments(), rng)
    noise = rng.integers(0, 256, (720, 1280), dtype=np.uint8)
    assert engine.decode_all(empty).codes == []
    assert engine.decode_all(noise).codes == []
    with pytest.raises(ValueError, match="unsupported image shape"):
        engine.decode_all(np.zeros((4, 4, 2), dtype=np.uint8))


def test_scene_plan_keeps_its_limits_and_truth_says_what_readable_means(tmp_path: Path) -> None:
    scene = plan_dock(12, max_in_view=3, density=1.0, repasses=1, repass_gap=20, seed=2)
    counts = [
        sum(t.label.first_frame <= f <= t.label.last_frame for t in scene.tracks)
        for f in range(scene.frames)
    ]
    assert max(counts) == 3
    second = [t for t in scene.tracks if t.pass_no == 1]
    (first,) = [t for t in scene.tracks if t.pass_no == 0 and t.label.text == second[0].label.text]
    assert second[0].label.first_frame > first.label.last_frame + 20
    with pytest.raises(ValueError, match="max_in_view"):
        plan_dock(3, max_in_view=0)

    out = tmp_path / "walk"
    assert dock_main(["--out", str(out), "--motion", "walk", "--parcels", "3", "--seed", "5"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["motion"] == "walk" and len(truth["labels"]) == 3
    assert len(list(out.glob("frame-*.png"))) == truth["frames"]
    for p in truth["labels"]:
        assert p["frames_in_view"] == p["last_frame"] - p["first_frame"] + 1
        assert p["readable"] == bool(p["readable_frames"])
        assert set(p["readable_frames"]) <= set(range(p["first_frame"], p["last_frame"] + 1))
    assert any(p["readable"] for p in truth["labels"])
