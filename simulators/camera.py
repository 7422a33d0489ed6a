"""Camera simulator: parcel labels (Code 128, GS1-128, QR, DataMatrix) rendered into camera
frames with perspective, blur, glare and sensor noise, written as an image folder or a video.

Each label stays in view for a run of frames (a parcel passing a dock camera), then an empty
belt for a few frames. ``truth.json`` beside the output lists every label with its frames,
format and exact text, for scoring. Labels are drawn with zxing-cpp's writer.

Run it::

    python -m simulators.camera --out /tmp/dock-frames --labels 8 --frames-per-label 10
    python -m simulators.camera --out /tmp/dock.avi --size 1280x720 --blur 1.5 --glare 0.5

then point the agent at ``scan: {cameras: [{id: dock-1, source: /tmp/dock-frames, fps: 15}]}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

__all__ = [
    "Impairments",
    "Label",
    "blank_belt",
    "finish_frame",
    "make_labels",
    "motion_kernel",
    "render_frame",
    "render_label",
    "write_frames",
]

Frame = npt.NDArray[np.uint8]
_FORMATS = {
    "Code128": zxingcpp.BarcodeFormat.Code128,
    "QRCode": zxingcpp.BarcodeFormat.QRCode,
    "DataMatrix": zxingcpp.BarcodeFormat.DataMatrix,
}


@dataclass(frozen=True, slots=True)
class Label:
    """One label in the simulation and the frames it is in view."""

    format: str  # "Code128", "QRCode" or "DataMatrix"
    text: str  # what a decoder must read (GS1: with GS separators, as zxing-cpp reports)
    gs1: str | None  # the GS1 element string in "(AI)value" form, when the label is GS1
    first_frame: int
    last_frame: int


@dataclass(frozen=True, slots=True)
class Impairments:
    """How bad the camera is; 0 everywhere renders a clean, square-on label."""

    blur: float = 1.0  # Gaussian sigma, pixels
    tilt: float = 0.12  # perspective: corner displacement as a fraction of label size
    glare: float = 0.35  # peak of the specular highlight, fraction of full white
    noise: float = 6.0  # sensor noise sigma, grey levels


def _sscc(rng: random.Random) -> str:
    body = "1" + "".join(rng.choice("0123456789") for _ in range(16))
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def make_labels(count: int, frames_per_label: int, gap: int, seed: int) -> list[Label]:
    """A mix of GS1-128 SSCC labels, carrier Code 128, QR and DataMatrix labels."""
    rng = random.Random(seed)
    labels = []
    frame = gap
    for i in range(count):
        kind = i % 4
        gs1 = None
        if kind == 0:
            sscc = _sscc(rng)
            postcode = f"{rng.randrange(10000, 99999)}"
            gs1 = f"(00){sscc}(420){postcode}"
            fmt, text = "Code128", f"00{sscc}420{postcode}"
        elif kind == 1:
            fmt, text = "Code128", f"JD{rng.randrange(10**13, 10**14)}"
        elif kind == 2:
            fmt, text = "QRCode", f"https://track.example/p/{rng.randrange(10**9, 10**10)}"
        else:
            fmt, text = "DataMatrix", f"PKG-{rng.randrange(10**8, 10**9)}-{i}"
        labels.append(Label(fmt, text, gs1, frame, frame + frames_per_label - 1))
        frame += frames_per_label + gap
    return labels


def render_label(label: Label, module_px: int) -> Frame:
    """The label alone: black code on white paper with a quiet zone."""
    content = label.gs1 if label.gs1 is not None else label.text
    options = {"gs1": True} if label.gs1 is not None else {}
    barcode = zxingcpp.create_barcode(content, _FORMATS[label.format], **options)
    code = np.asarray(barcode.to_image(scale=module_px), dtype=np.uint8)
    if label.format == "Code128":
        code = cv2.resize(code, (code.shape[1], max(code.shape[0], 60 * module_px)))  # type: ignore[assignment]
    pad = 8 * module_px
    return cv2.copyMakeBorder(code, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)  # type: ignore[return-value]


def blank_belt(size: tuple[int, int], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """An empty grey belt of ``size`` (w, h) as float grey levels, with its coarse texture."""
    w, h = size
    belt: npt.NDArray[np.float32] = np.full((h, w), 90, dtype=np.float32)
    belt += rng.normal(0, 4, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return belt


def motion_kernel(length_px: float, angle_deg: float) -> npt.NDArray[np.float32]:
    """A normalised line kernel for ``cv2.filter2D``: motion blur of ``length_px`` pixels along
    ``angle_deg`` (0: along +x, 90: along +y, image coordinates)."""
    length = max(1.0, float(length_px))
    size = int(np.ceil(length)) | 1  # odd, so the kernel has a centre pixel
    kernel = np.zeros((size, size), dtype=np.float32)
    c, half = size // 2, (length - 1) / 2
    dx, dy = np.cos(np.radians(angle_deg)) * half, np.sin(np.radians(angle_deg)) * half
    s = 16  # cv2.line's fixed-point sub-pixel endpoints: 4 fractional bits
    p0 = (round((c - dx) * s), round((c - dy) * s))
    p1 = (round((c + dx) * s), round((c + dy) * s))
    cv2.line(kernel, p0, p1, 1.0, 1, cv2.LINE_AA, shift=4)
    if kernel.sum() <= 0:
        kernel[c, c] = 1.0
    return kernel / kernel.sum()  # type: ignore[no-any-return]


def finish_frame(
    belt: npt.NDArray[np.float32], imp: Impairments, rng: np.random.Generator
) -> Frame:
    """The camera's own impairments over a composed scene (glare, focus blur, sensor noise),
    as a BGR frame."""
    h, w = belt.shape
    if imp.glare > 0:
        gx, gy = rng.uniform(0, w), rng.uniform(0, h)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        radius = 0.15 * min(w, h)
        belt = belt + 255 * imp.glare * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2))
    if imp.blur > 0:
        belt = cv2.GaussianBlur(belt, (0, 0), imp.blur)  # type: ignore[assignment]
    if imp.noise > 0:
        belt = belt + rng.normal(0, imp.noise, belt.shape).astype(np.float32)
    grey = np.clip(belt, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)  # type: ignore[return-value]


def render_frame(
    label: Label | None, size: tuple[int, int], imp: Impairments, rng: np.random.Generator
) -> Frame:
    """One BGR camera frame of ``size`` (w, h): the label somewhere on a grey belt."""
    w, h = size
    belt = blank_belt(size, rng)
    if label is not None:
        module = 3 if label.format == "Code128" else 5
        paper = render_label(label, module).astype(np.float32) * 0.9 + 10
        ph, pw = paper.shape
        scale = min(0.8 * w / pw, 0.8 * h / ph, 1.0)
        ph, pw = int(ph * scale), int(pw * scale)
        x0 = int(rng.integers(0, w - pw + 1))
        y0 = int(rng.integers(0, h - ph + 1))
        sw, sh = paper.shape[1], paper.shape[0]
        src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], dtype=np.float32)
        dst = np.array([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]], np.float32)
        jitter = rng.uniform(-imp.tilt, imp.tilt, (4, 2)) * np.array([pw, ph])
        dst = (dst + jitter).astype(np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(paper, m, (w, h), borderValue=-1.0)
        belt = np.where(warped >= 0, warped, belt)
    return finish_frame(belt, imp, rng)


def write_frames(
    out: Path,
    labels: list[Label],
    *,
    size: tuple[int, int] = (1280, 720),
    imp: Impairments | None = None,
    gap: int = 3,
    fps: float = 15.0,
    seed: int = 1,
) -> Path:
    """Render every frame to ``out`` (a folder, or a video file by its suffix); returns the
    path of ``truth.json``."""
    imp = imp or Impairments()
    rng = np.random.default_rng(seed)
    total = (labels[-1].last_frame + gap + 1) if labels else gap
    video = out.suffix.lower() in {".avi", ".mp4", ".mkv"}
    writer = None
    if video:
        out.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter.fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(str(out), fourcc, fps, size)
        if not writer.isOpened():
            raise OSError(f"{out}: OpenCV cannot write this video format")
    else:
        out.mkdir(parents=True, exist_ok=True)
    by_frame = {f: lab for lab in labels for f in range(lab.first_frame, lab.last_frame + 1)}
    for i in range(total):
        frame = render_frame(by_frame.get(i), size, imp, rng)
        if writer is not None:
            writer.write(frame)
        else:
            cv2.imwrite(str(out / f"frame-{i:05d}.png"), frame)
    if writer is not None:
        writer.release()
    truth = (out.parent / f"{out.stem}.truth.json") if video else out / "truth.json"
    truth.write_text(json.dumps({"frames": total, "labels": [asdict(x) for x in labels]}, indent=1))
    return truth


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.camera``: write a simulated camera recording."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="a folder, or FILE.avi / FILE.mp4")
    p.add_argument("--labels", type=int, default=8)
    p.add_argument("--frames-per-label", type=int, default=10)
    p.add_argument("--gap", type=int, default=3, help="empty frames between labels")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--blur", type=float, default=1.0)
    p.add_argument("--tilt", type=float, default=0.12)
    p.add_argument("--glare", type=float, default=0.35)
    p.add_argument("--noise", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {a.size!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    labels = make_labels(a.labels, a.frames_per_label, a.gap, a.seed)
    truth = write_frames(
        a.out,
        labels,
        size=(w, h),
        imp=Impairments(a.blur, a.tilt, a.glare, a.noise),
        gap=a.gap,
        fps=a.fps,
        seed=a.seed,
    )
    print(json.dumps({"out": str(a.out), "truth": str(truth), "labels": len(labels)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
