"""Dock camera simulator: labels moving through a dock door, several in view at once, each
crossing the frame over several frames with motion blur along its motion, and the truth.

Two kinds of motion:

- ``conveyor``: parcels ride lanes of a belt left to right at one speed, spaced by a gap;
- ``walk``: a person carries parcels across the door, either way, each at its own pace with a
  step's bob; one parcel per lane at a time (people do not walk through each other).

Labels are drawn by ``simulators.camera.render_label`` (Code 128 / GS1-128, QR, DataMatrix),
turned on the parcel (linear codes lie along the lane within a few degrees, so they fit it; 2D
codes at any angle), tilted by the camera's perspective, smeared by ``cv2.filter2D`` with a line
kernel along the motion (its length is the distance moved during the exposure), then the
camera's glare, focus blur and noise (``Impairments``) go over the whole frame.

Readable, as the truth says it: a label is *readable in a frame* when it is wholly in view and
a plain ``zxingcpp.read_barcodes`` call (all formats, its default options) on the crop of the
frame around the label (its bounding box plus a 12-pixel margin) returns the label's exact text;
it is *rendered readable* when it is readable in at least one frame of its pass. The crop keeps
other labels out of the reference read, so what it measures is whether this label's pixels
carry its code, not how a decoder copes with a crowded frame (which is what is being tested).

``truth.json`` beside the frames: ``{"frames", "size", "motion", "fps", "labels": [...]}``, one
entry per pass of a label: ``text``, ``format``, ``gs1``, ``pass`` (0 for the first pass of this
text, 1 for the second...), ``first_frame``/``last_frame`` (in view, partly or wholly),
``frames_in_view`` (their count), ``readable_frames`` (list) and ``readable`` (bool).

Run it::

    python -m simulators.dock_camera --out /tmp/dock-door --parcels 20 --max-in-view 6
    python -m simulators.dock_camera --out /tmp/walk --motion walk --parcels 8 --repasses 2

then point a camera at it: ``{id: dock-1, source: /tmp/dock-door, fps: 15, decode: every}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

from simulators.camera import (
    Frame,
    Impairments,
    Label,
    blank_belt,
    finish_frame,
    make_labels,
    motion_kernel,
    render_label,
)

__all__ = [
    "DOCK_IMPAIRMENTS",
    "DockScene",
    "DockTrack",
    "Motion",
    "TrackView",
    "plan_dock",
    "readable_in",
    "render_dock",
    "scene_truth",
    "write_dock_frames",
]

Motion = Literal["conveyor", "walk"]
_LANE_PX = 240  # lane height: a Code 128 label at 2-pixel modules is about 150 pixels tall
_MARGIN = 12  # around a label's bounding box when cropping it for the reference read
_GAP_PX = 40  # least belt between two parcels of a conveyor lane
DOCK_IMPAIRMENTS = Impairments(blur=0.8, tilt=0.06, glare=0.3, noise=5.0)
"""A dock camera's usual impairments (focus blur, tilt, glare, noise)."""


@dataclass(frozen=True, slots=True)
class DockTrack:
    """One pass of a label through the door: where it is at each frame."""

    label: Label  # first_frame/last_frame: the frames it is (partly) in view
    start: tuple[float, float]  # its centre at frame ``label.first_frame``, in pixels
    velocity: tuple[float, float]  # pixels per frame
    angle: float  # in-plane rotation of the label, degrees
    module_px: int  # module size as drawn, before perspective
    tilt: tuple[tuple[float, float], ...]  # perspective: corner offsets, fraction of size
    bob: float = 0.0  # a walker's vertical bob, pixels
    pass_no: int = 0  # 0 for this text's first pass, 1 for its second...

    def centre(self, frame: int) -> tuple[float, float]:
        """The label's centre at ``frame``."""
        k = frame - self.label.first_frame
        x = self.start[0] + self.velocity[0] * k
        y = self.start[1] + self.velocity[1] * k + self.bob * math.sin(k * math.pi / 2)
        return x, y

    @property
    def speed(self) -> float:
        """Pixels per frame."""
        return math.hypot(*self.velocity)

    @property
    def heading(self) -> float:
        """The direction of motion, degrees (0: +x)."""
        return math.degrees(math.atan2(self.velocity[1], self.velocity[0]))


@dataclass(frozen=True, slots=True)
class DockScene:
    """A planned recording: its tracks, frame count and camera."""

    tracks: list[DockTrack]
    frames: int
    size: tuple[int, int] = (1280, 720)
    motion: Motion = "conveyor"
    imp: Impairments = DOCK_IMPAIRMENTS
    motion_blur: float = 0.012  # exposure as a fraction of the frame period: blur = speed * this


@dataclass(frozen=True, slots=True)
class TrackView:
    """Where one track is in one rendered frame."""

    track: int  # index in the scene's tracks
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of its quadrilateral (clipped to the frame)
    whole: bool  # wholly inside the frame


def _paper(label: Label, module_px: int) -> npt.NDArray[np.float32]:
    return render_label(label, module_px).astype(np.float32) * 0.9 + 10


def _module_px(label: Label) -> int:
    return 2 if label.format == "Code128" else 3


def _quad(track: DockTrack, paper_shape: tuple[int, int], frame: int) -> npt.NDArray[np.float32]:
    """The label's corners in the frame (TL, TR, BR, BL)."""
    ph, pw = paper_shape
    cx, cy = track.centre(frame)
    corners = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])
    corners = corners + np.array(track.tilt) * np.array([pw, ph])
    a = math.radians(track.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    out: npt.NDArray[np.float32] = (corners @ rot.T + np.array([cx, cy])).astype(np.float32)
    return out


def _extent(label: Label, angle: float) -> tuple[float, float]:
    """Width and height of the label's rotated box, for planning lanes."""
    ph, pw = render_label(label, _module_px(label)).shape
    a = math.radians(angle)
    return (
        abs(pw * math.cos(a)) + abs(ph * math.sin(a)),
        abs(pw * math.sin(a)) + abs(ph * math.cos(a)),
    )


def plan_dock(
    parcels: int,
    *,
    size: tuple[int, int] = (1280, 720),
    motion: Motion = "conveyor",
    max_in_view: int = 6,
    frames_to_cross: int = 12,
    density: float = 0.35,
    repasses: int = 0,
    repass_gap: int = 30,
    imp: Impairments | None = None,
    motion_blur: float = 0.012,
    seed: int = 1,
) -> DockScene:
    """Plan a recording: ``parcels`` labels (the camera simulator's mix of GS1-128, Code 128,
    QR and DataMatrix) cross the frame; at most ``max_in_view`` are in view at once.

    ``frames_to_cross``: frames a label takes from entering to leaving at the nominal speed
    (a walker is slower: 1.5 to 3 times that); ``density``: the chance per frame that a free
    lane takes the next parcel; ``repasses``: that many of the first parcels pass a second time,
    at least ``repass_gap`` frames after their first pass left the frame.
    """
    if parcels < 0 or not 1 <= max_in_view <= 12 or frames_to_cross < 2:
        raise ValueError("parcels >= 0, 1 <= max_in_view <= 12 and frames_to_cross >= 2")
    if not 0 < density <= 1 or not 0 <= repasses <= parcels:
        raise ValueError("0 < density <= 1 and 0 <= repasses <= parcels")
    imp = imp or DOCK_IMPAIRMENTS
    rng = random.Random(seed)
    w, h = size
    lanes = max(1, h // _LANE_PX)
    lane_y = [(i + 0.5) * h / lanes for i in range(lanes)]
    labels = make_labels(parcels, 1, 0, seed)
    queue: list[tuple[int, Label, int]] = [(0, lab, 0) for lab in labels]  # (not before, ., pass)
    tracks: list[DockTrack] = []
    lane_free_at = [0.0] * lanes  # frame at which a lane can take the next parcel
    frame = 0
    while queue:
        for lane in rng.sample(range(lanes), lanes):
            ready = [q for q in queue if q[0] <= frame]
            if not ready or frame < lane_free_at[lane] or rng.random() > density:
                continue
            in_view = sum(t.label.first_frame <= frame <= t.label.last_frame for t in tracks)
            if in_view >= max_in_view:
                break
            _, label, pass_no = ready[0]
            queue.remove(ready[0])
            linear = label.format == "Code128"
            angle = rng.uniform(-5, 5) + (rng.choice((0, 180)) if linear else rng.uniform(0, 360))
            bw, bh = _extent(label, angle)
            if motion == "conveyor":
                speed, direction, bob = (w + bw) / frames_to_cross, 1.0, 0.0
            else:
                speed = (w + bw) / (frames_to_cross * rng.uniform(1.5, 3.0))
                direction, bob = rng.choice((1.0, -1.0)), rng.uniform(2.0, 8.0)
            y = lane_y[lane] + rng.uniform(-1, 1) * max(0.0, (h / lanes - bh) / 2 - bob)
            y = min(max(y, bh / 2 + bob + 1), h - bh / 2 - bob - 1)  # wholly in view vertically
            x = -bw / 2 + 1 if direction > 0 else w + bw / 2 - 1  # just entering
            last = frame + math.ceil((w + bw - 2) / speed) - 1
            tilt = tuple(
                (rng.uniform(-1, 1) * imp.tilt, rng.uniform(-1, 1) * imp.tilt) for _ in range(4)
            )
            lab = dataclasses.replace(label, first_frame=frame, last_frame=last)
            tracks.append(
                DockTrack(
                    lab,
                    (x, y),
                    (direction * speed, 0.0),
                    angle,
                    _module_px(label),
                    tilt,
                    bob,
                    pass_no,
                )
            )
            if motion == "conveyor":  # the next parcel once this one is a gap into the frame
                lane_free_at[lane] = frame + (bw + _GAP_PX) / speed
            else:
                lane_free_at[lane] = last + 1
            if pass_no == 0 and labels.index(label) < repasses:
                queue.append((last + 1 + repass_gap, label, 1))
        frame += 1
    total = max((t.label.last_frame for t in tracks), default=0) + 3
    return DockScene(tracks, total, size, motion, imp, motion_blur)


def render_dock(scene: DockScene, *, seed: int = 1) -> Iterator[tuple[int, Frame, list[TrackView]]]:
    """Every frame of ``scene`` in order, with where each track in view is."""
    rng = np.random.default_rng(seed)
    papers: dict[int, npt.NDArray[np.float32]] = {}
    for f in range(scene.frames):
        belt = blank_belt(scene.size, rng)
        views: list[TrackView] = []
        for i, track in enumerate(scene.tracks):
            if not track.label.first_frame <= f <= track.label.last_frame:
                papers.pop(i, None)  # a pass is over (or not begun): its drawing is not kept
                continue
            paper = papers.setdefault(i, _paper(track.label, track.module_px))
            quad = _quad(track, (paper.shape[0], paper.shape[1]), f)
            view = _composite(belt, paper, quad, track, scene.motion_blur, i)
            if view is not None:
                views.append(view)
        yield f, finish_frame(belt, scene.imp, rng), views


def _composite(
    belt: npt.NDArray[np.float32],
    paper: npt.NDArray[np.float32],
    quad: npt.NDArray[np.float32],
    track: DockTrack,
    exposure: float,
    index: int,
) -> TrackView | None:
    """Draw ``paper`` at ``quad`` onto ``belt`` (in place), smeared along the motion."""
    h, w = belt.shape
    blur = track.speed * exposure
    pad = math.ceil(blur) + 2
    x0 = max(0, math.floor(quad[:, 0].min()) - pad)
    y0 = max(0, math.floor(quad[:, 1].min()) - pad)
    x1 = min(w, math.ceil(quad[:, 0].max()) + pad)
    y1 = min(h, math.ceil(quad[:, 1].max()) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    ph, pw = paper.shape
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, quad - np.array([x0, y0], dtype=np.float32))
    size = (x1 - x0, y1 - y0)
    ink = cv2.warpPerspective(paper, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    alpha = cv2.warpPerspective(
        np.ones_like(paper), m, size, flags=cv2.INTER_LINEAR, borderValue=0.0
    )
    if blur > 1.0:  # the label moved this far while the shutter was open
        kernel = motion_kernel(blur, track.heading)
        ink = cv2.filter2D(ink, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    region = belt[y0:y1, x0:x1]
    region *= 1 - alpha
    region += ink  # ink was warped with its coverage: premultiplied
    whole = bool(quad[:, 0].min() >= 0 and quad[:, 1].min() >= 0) and bool(
        quad[:, 0].max() < w and quad[:, 1].max() < h
    )
    box = (
        max(0, int(quad[:, 0].min())),
        max(0, int(quad[:, 1].min())),
        min(w, math.ceil(quad[:, 0].max())),
        min(h, math.ceil(quad[:, 1].max())),
    )
    return TrackView(index, box, whole)


def readable_in(frame: Frame, view: TrackView, label: Label) -> bool:
    """The reference read (module docstring): the label wholly in view and a plain zxing-cpp
    call on its crop returns its text."""
    if not view.whole:
        return False
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = view.box
    crop = frame[
        max(0, y0 - _MARGIN) : min(h, y1 + _MARGIN), max(0, x0 - _MARGIN) : min(w, x1 + _MARGIN)
    ]
    found = zxingcpp.read_barcodes(np.ascontiguousarray(crop), text_mode=zxingcpp.TextMode.Plain)
    return any(r.text == label.text for r in found)


def write_dock_frames(out: Path, scene: DockScene, *, fps: float = 15.0, seed: int = 1) -> Path:
    """Render ``scene`` as ``frame-NNNNN.png`` files in the folder ``out`` with ``truth.json``
    (module docstring); returns the truth's path."""
    out.mkdir(parents=True, exist_ok=True)
    readable: dict[int, list[int]] = {i: [] for i in range(len(scene.tracks))}
    for f, frame, views in render_dock(scene, seed=seed):
        cv2.imwrite(str(out / f"frame-{f:05d}.png"), frame)
        for v in views:
            if readable_in(frame, v, scene.tracks[v.track].label):
                readable[v.track].append(f)
    truth = out / "truth.json"
    truth.write_text(json.dumps(scene_truth(scene, readable, fps), indent=1))
    return truth


def scene_truth(
    scene: DockScene, readable: dict[int, list[int]], fps: float = 15.0
) -> dict[str, Any]:
    """The truth of ``scene`` as ``truth.json`` holds it, given each track's readable frames."""
    labels = []
    for i, t in enumerate(scene.tracks):
        lab = t.label
        labels.append(
            {
                "text": lab.text,
                "format": lab.format,
                "gs1": lab.gs1,
                "pass": t.pass_no,
                "first_frame": lab.first_frame,
                "last_frame": lab.last_frame,
                "frames_in_view": lab.last_frame - lab.first_frame + 1,
                "readable_frames": readable.get(i, []),
                "readable": bool(readable.get(i)),
            }
        )
    return {
        "frames": scene.frames,
        "size": list(scene.size),
        "motion": scene.motion,
        "fps": fps,
        "labels": labels,
    }


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w < 320 or h < _LANE_PX:
        raise ValueError(f"at least 320x{_LANE_PX}")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.dock_camera``: write a simulated dock door recording."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="a folder for the frames and truth")
    p.add_argument("--parcels", type=int, default=20)
    p.add_argument("--motion", choices=("conveyor", "walk"), default="conveyor")
    p.add_argument("--max-in-view", type=int, default=6)
    p.add_argument("--frames-to-cross", type=int, default=12)
    p.add_argument("--density", type=float, default=0.35, help="chance a free lane takes a parcel")
    p.add_argument("--repasses", type=int, default=0, help="parcels that pass a second time")
    p.add_argument("--repass-gap", type=int, default=30, help="frames between two passes")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--exposure", type=float, default=0.012, help="fraction of a frame period")
    p.add_argument("--blur", type=float, default=0.8)
    p.add_argument("--tilt", type=float, default=0.06)
    p.add_argument("--glare", type=float, default=0.3)
    p.add_argument("--noise", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    try:
        size = _size(a.size)
    except ValueError as exc:
        p.error(f"--size {a.size!r}: expected WIDTHxHEIGHT, {exc}")
    try:
        scene = plan_dock(
            a.parcels,
            size=size,
            motion=a.motion,
            max_in_view=a.max_in_view,
            frames_to_cross=a.frames_to_cross,
            density=a.density,
            repasses=a.repasses,
            repass_gap=a.repass_gap,
            imp=Impairments(a.blur, a.tilt, a.glare, a.noise),
            motion_blur=a.exposure,
            seed=a.seed,
        )
    except ValueError as exc:
        p.error(str(exc))
    truth_path = write_dock_frames(a.out, scene, fps=a.fps, seed=a.seed)
    truth = json.loads(truth_path.read_text())
    readable = sum(lab["readable"] for lab in truth["labels"])
    print(
        json.dumps(
            {
                "out": str(a.out),
                "truth": str(truth_path),
                "frames": truth["frames"],
                "passes": len(truth["labels"]),
                "readable": readable,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
