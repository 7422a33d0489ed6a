"""The decode engine: barcodes in one image, with zxing-cpp first, ZBar second and
preprocessing passes when those find nothing, all bounded by a time budget per frame.

Pass order (the first pass that yields a code ends the frame):

1. ``fast``: zxing-cpp with its global-histogram binarizer, restricted to the formats parcel
   labels carry (Code 128 / GS1-128, QR, DataMatrix, PDF417, MaxiCode, EAN/UPC): on a 720p
   frame about a fifth of a plain call, and it reads an evenly lit label;
2. ``zxing``: zxing-cpp on the grey image, as a plain call would (all formats, the local
   binarizer that copes with glare and shadow; rotation by quarter turns and downscaling are
   zxing-cpp's own; inversion is left to a later pass);
3. ``unsharp``: an unsharp mask, for motion and focus blur (bars bleed into each other);
4. ``zbar``: ZBar on the grey image (reads some damaged 1D codes zxing-cpp misses; after
   ``unsharp``, which costs a third less on a camera frame and reads blurred GS1-128 with its
   FNC1, which ZBar cannot report);
5. ``upscale``: 2x (cubic), for codes whose modules are one or two pixels wide;
6. ``contrast``: CLAHE, local contrast normalisation for glare and shadow;
7. ``threshold``: adaptive (local mean) threshold;
8. ``invert``: light-on-dark codes;
9. ``rotate±N``: small rotations, since zxing-cpp's 1D readers only scan rows and columns;
10. ``downscale``: half size, for very large, noisy codes.

ZBar only looks at the unprocessed image: on sharpened or thresholded images it misreads 1D
codes with a valid check digit (seen on the corpus), and a false read is worse than none.
Positions are reported in the coordinates of the image given, whatever pass found them.

Every code in a frame (``DecodeEngine.decode_all``, dock cameras: several labels in view at
once) is a different order, since stopping at the first pass that finds a code would leave the
other labels of the frame unread:

1. ``fast`` and ``labels`` on the whole frame, their codes united by (format, text):
   ``labels`` is zxing-cpp with its local binarizer restricted to the label formats, which
   reads what a plain call reads on a dock frame at about half its cost (the formats it leaves
   out are most of a plain call's time); ``fast`` adds, for a sixth of a plain call, the odd
   evenly lit label the local binarizer misses;
2. the regions of the frame that look like a code (dense edges: Sobel magnitude averaged over
   8x8 cells, thresholded) and that no code found so far explains, wholly inside the frame:
   each is cropped (with a margin) and given, breadth first over the regions, ``region`` (a
   plain zxing-cpp call on the crop: all formats, and the local binarizer sized to the label,
   which reads labels the whole-frame call misses under glare), then ``unsharp``, ``zbar``,
   ``upscale``, ``contrast``, ``threshold`` and small rotations, while the budget allows and
   for at most ``region_share`` times what the whole-frame passes took (a bound that follows
   the machine's speed). A region at the frame's edge (a label coming in or going out) gets
   the plain call only. A frame whose labels were all read costs the two whole-frame passes
   and the region search (about a millisecond).

The budget is a bound, not a check between passes: the engine keeps a running estimate (EWMA)
of each pass's cost per megapixel on this machine, and a pass whose estimate does not fit in
what is left of the budget is skipped (a cheaper later one may still fit). Only the first pass
always runs; what it costs on this frame, next to its usual cost, scales the estimates of the
passes after it (pure noise costs zxing-cpp several times an empty belt). A pass not yet
measured is estimated from the plain pass's (or the first pass's) measured cost and a table of
relative costs; a skipped pass's estimate drifts back toward that prior, so one slow frame (a
busy machine) does not rule a pass out for good.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

__all__ = [
    "Code",
    "DecodeEngine",
    "DecodeResult",
    "ImageError",
    "code_regions",
    "load_image",
    "to_grey",
]

GreyImage = npt.NDArray[np.uint8]
Point = tuple[int, int]

# ZBar's symbology names -> zxing-cpp's, so both engines report one vocabulary.
_ZBAR_FORMATS = {
    "CODE128": "Code128",
    "CODE39": "Code39",
    "CODE93": "Code93",
    "EAN13": "EAN13",
    "EAN8": "EAN8",
    "UPCA": "UPCA",
    "UPCE": "UPCE",
    "I25": "ITF",
    "CODABAR": "Codabar",
    "QRCODE": "QRCode",
    "PDF417": "PDF417",
}
# AIM symbology identifiers that mark GS1 content (ISO/IEC 15424).
GS1_SYMBOLOGY_IDS = frozenset({"]C1", "]e0", "]d2", "]Q3", "]J1", "]Q5"})


_WEBP_MIN = 32
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors are ours to report


class ImageError(ValueError):
    """An image file that cannot be read or decoded as an image."""


@dataclass(frozen=True, slots=True)
class Code:
    """One barcode found in an image."""

    format: str  # zxing-cpp's format name: "Code128", "QRCode", "DataMatrix", "EAN13", ...
    text: str  # the content as encoded (GS1 separators as ASCII GS, no "(01)" decoration)
    position: tuple[
        Point, Point, Point, Point
    ]  # corners: top-left, top-right, bottom-right, bottom-left
    engine: str  # "zxing" or "zbar"
    pass_name: str
    symbology_id: str = ""  # AIM identifier, e.g. "]C1" for GS1-128, "" when unknown
    gs1: bool = False  # the content is a GS1 element string


@dataclass(slots=True)
class DecodeResult:
    """The codes of one image, with what it cost."""

    codes: list[Code]
    passes: list[str] = field(default_factory=list)  # the passes that ran, in order
    elapsed_s: float = 0.0
    out_of_time: bool = False  # passes were left untried because the budget was spent


def load_image(path: str) -> GreyImage:
    """Read an image file as 8-bit grey; ``ImageError`` naming the file and what is wrong."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw.size == 0:
        raise ImageError(f"{path}: empty file")
    if raw.size < _WEBP_MIN and raw[:4].tobytes() == b"RIFF" and raw[8:12].tobytes() == b"WEBP":
        # OpenCV wants 32 bytes of WebP header; a 1-pixel lossless WebP is complete in 30.
        raw = np.concatenate([raw, np.zeros(_WEBP_MIN - raw.size, dtype=np.uint8)])
    image = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image ({raw.size} bytes; truncated or garbage?)")
    return np.ascontiguousarray(image, dtype=np.uint8)


def to_grey(image: npt.NDArray[np.uint8]) -> GreyImage:
    """A BGR (OpenCV order), BGRA or grey frame as one contiguous grey plane."""
    if image.ndim == 2:
        return image if image.flags.c_contiguous else np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # type: ignore[return-value]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)  # type: ignore[return-value]
    raise ImageError(f"unsupported image shape {image.shape}")


# A pass: grey image -> (image to decode, 2x3 affine from that image back to the original).
_Prepared = tuple[GreyImage, npt.NDArray[np.float64] | None]
_Prep = Callable[[GreyImage], _Prepared]


def _scale(factor: float) -> _Prep:
    def prep(g: GreyImage) -> _Prepared:
        interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
        out = cv2.resize(g, None, fx=factor, fy=factor, interpolation=interp)
        back = np.array([[1 / factor, 0, 0], [0, 1 / factor, 0]], dtype=np.float64)
        return out, back  # type: ignore[return-value]

    return prep


def _unsharp(g: GreyImage) -> _Prepared:
    blurred = cv2.GaussianBlur(g, (0, 0), 2.0)
    return cv2.addWeighted(g, 2.5, blurred, -1.5, 0), None  # type: ignore[return-value]


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def _contrast(g: GreyImage) -> _Prepared:
    return _CLAHE.apply(g), None  # type: ignore[return-value]


def _threshold(g: GreyImage) -> _Prepared:
    block = max(15, (min(g.shape) // 16) | 1)
    out = cv2.adaptiveThreshold(g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, 5)
    return out, None  # type: ignore[return-value]


def _invert(g: GreyImage) -> _Prepared:
    return cv2.bitwise_not(g), None  # type: ignore[return-value]


def _rotate(degrees: float) -> _Prep:
    def prep(g: GreyImage) -> _Prepared:
        h, w = g.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        out = cv2.warpAffine(g, m, (nw, nh), borderMode=cv2.BORDER_REPLICATE)
        return out, cv2.invertAffineTransform(m)  # type: ignore[return-value]

    return prep


@dataclass(frozen=True, slots=True)
class _Pass:
    name: str
    prep: _Prep
    when: Callable[[GreyImage], bool] = lambda g: True


_PASSES: tuple[_Pass, ...] = (
    _Pass("unsharp", _unsharp),
    _Pass("upscale", _scale(2.0), lambda g: max(g.shape) <= 800),  # 2x of 720p costs 4 passes
    _Pass("contrast", _contrast),
    _Pass("threshold", _threshold),
    _Pass("invert", _invert),
    _Pass("rotate+15", _rotate(15)),
    _Pass("rotate-15", _rotate(-15)),
    _Pass("rotate+30", _rotate(30)),
    _Pass("rotate-30", _rotate(-30)),
    _Pass("rotate+45", _rotate(45)),
    _Pass("downscale", _scale(0.5), lambda g: min(g.shape) >= 400),
)


def _map_points(
    points: Sequence[tuple[float, float]], back: npt.NDArray[np.float64] | None
) -> tuple[Point, Point, Point, Point]:
    if back is not None:
        pts = np.array(points, dtype=np.float64)
        points = [(float(x), float(y)) for x, y in pts @ back[:, :2].T + back[:, 2]]
    p = [(round(x), round(y)) for x, y in points]
    return (p[0], p[1], p[2], p[3])


_F = zxingcpp.BarcodeFormat
# What parcel labels carry (issue 4): the fast pass looks for these only.
LABEL_FORMATS = zxingcpp.BarcodeFormats(
    [
        _F.Code128,
        _F.QRCode,
        _F.DataMatrix,
        _F.PDF417,
        _F.MaxiCode,
        _F.EAN13,
        _F.EAN8,
        _F.UPCA,
        _F.UPCE,
    ]
)


def _zxing(
    image: GreyImage,
    pass_name: str,
    back: npt.NDArray[np.float64] | None,
    *,
    invert: bool,
    fast: bool = False,
    labels: bool = False,
) -> list[Code]:
    codes = []
    if labels:
        results = zxingcpp.read_barcodes(
            image, formats=LABEL_FORMATS, try_invert=False, text_mode=zxingcpp.TextMode.Plain
        )
    elif fast:
        results = zxingcpp.read_barcodes(
            image,
            formats=LABEL_FORMATS,
            try_invert=False,
            binarizer=zxingcpp.Binarizer.GlobalHistogram,
            text_mode=zxingcpp.TextMode.Plain,
        )
    else:
        results = zxingcpp.read_barcodes(
            image, try_invert=invert, text_mode=zxingcpp.TextMode.Plain
        )
    for r in results:
        pos = r.position
        corners = [
            (pos.top_left.x, pos.top_left.y),
            (pos.top_right.x, pos.top_right.y),
            (pos.bottom_right.x, pos.bottom_right.y),
            (pos.bottom_left.x, pos.bottom_left.y),
        ]
        sid = r.symbology_identifier
        codes.append(
            Code(
                format=r.format.name,
                text=r.text,
                position=_map_points(corners, back),
                engine="zxing",
                pass_name=pass_name,
                symbology_id=sid,
                gs1=sid in GS1_SYMBOLOGY_IDS or r.content_type == zxingcpp.ContentType.GS1,
            )
        )
    return codes


def _zbar(image: GreyImage) -> list[Code]:
    from pyzbar import pyzbar  # loads libzbar: only once a frame needs it

    codes = []
    symbols = [pyzbar.ZBarSymbol[name] for name in _ZBAR_FORMATS if not name.startswith("DATABAR")]
    for r in pyzbar.decode(image, symbols=symbols):
        try:
            text = r.data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # ZBar guesses encodings badly; a mangled text is not a read
        if not text:
            continue
        poly = [(float(p.x), float(p.y)) for p in r.polygon]
        if len(poly) < 4:
            left, top, width, height = r.rect
            poly = [
                (left, top),
                (left + width, top),
                (left + width, top + height),
                (left, top + height),
            ]
        xs = [p[0] for p in poly]
        ys = [p[1] for p in poly]
        corners = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
        fmt = _ZBAR_FORMATS.get(r.type, r.type)
        codes.append(Code(fmt, text, _map_points(corners, None), "zbar", "zbar"))
    return codes


# Cost of each pass relative to the plain ``zxing`` pass, measured on 1280x720 frames with
# and without labels (x86, zxing-cpp 3.1, ZBar 0.23): only the prior for a pass the engine
# has not timed yet; the engine's own measurements replace it after one run.
_RELATIVE_COST = {
    "fast": 0.15,
    "labels": 0.5,
    "region": 1.0,
    "zxing": 1.0,
    "zbar": 2.6,
    "unsharp": 2.6,
    "upscale": 4.5,
    "contrast": 2.3,
    "threshold": 2.3,
    "invert": 1.0,
    "rotate+15": 1.2,
    "rotate-15": 1.2,
    "rotate+30": 1.5,
    "rotate-30": 1.5,
    "rotate+45": 1.7,
    "downscale": 0.2,
}
_REGION = "region:"  # prefix of the cost estimates of passes on crops (their own, as a crop's
# fixed overheads make its cost per megapixel higher than a whole frame's)
_EWMA_ALPHA = 0.3  # weight of the newest measurement
_DRIFT = 0.1  # how far a skipped pass's estimate moves back toward its prior per frame


class DecodeEngine:
    """Decodes every barcode in a frame within ``budget_s`` seconds of passes (module doc).

    The first pass always runs; a later pass runs only when its estimated cost fits in what
    is left of the budget, so a frame costs the budget at most (give or take the estimate's
    error) unless the first pass alone exceeds it. ``use_zbar=False`` leaves ZBar out.
    ``decode_all``'s passes on regions spend at most ``region_share`` times what its
    whole-frame passes took (and never more than the budget).
    """

    def __init__(
        self,
        budget_s: float = 0.25,
        *,
        use_zbar: bool = True,
        region_share: float = 1.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.budget_s = budget_s
        self.use_zbar = use_zbar
        self.region_share = region_share
        self._timer = timer
        self._cost_per_mp: dict[str, float] = {}  # EWMA of seconds per megapixel, by pass

    def estimate_s(self, pass_name: str, pixels: int) -> float:
        """The expected cost in seconds of ``pass_name`` on an image of ``pixels`` pixels."""
        mp = pixels / 1e6
        known = self._cost_per_mp.get(pass_name)
        if known is not None:
            return known * mp
        return self._prior_per_mp(pass_name) * mp

    def _prior_per_mp(self, pass_name: str) -> float:
        # The plain pass is the better yardstick: the fast pass's share of it varies with
        # the content (a fifth on a 720p label, a third on a small frame).
        for ref in ("zxing", "fast"):
            measured = self._cost_per_mp.get(ref)
            if measured is not None:
                # a pass on a crop costs per megapixel about what it costs on a whole frame
                rel = _RELATIVE_COST.get(pass_name.removeprefix(_REGION), 5.0)
                return measured * rel / _RELATIVE_COST[ref]
        return 0.0

    def _learn(self, pass_name: str, seconds: float, pixels: int) -> None:
        per_mp = seconds / max(pixels / 1e6, 1e-6)
        old = self._cost_per_mp.get(pass_name)
        self._cost_per_mp[pass_name] = per_mp if old is None else old + _EWMA_ALPHA * (per_mp - old)

    def _skipped(self, pass_name: str) -> None:
        old = self._cost_per_mp.get(pass_name)
        if old is not None:
            self._cost_per_mp[pass_name] = old + _DRIFT * (self._prior_per_mp(pass_name) - old)

    def decode(self, image: npt.NDArray[np.uint8]) -> DecodeResult:
        """The codes in ``image`` (BGR or grey), from the first pass that finds any."""
        start = self._timer()
        grey = to_grey(image)
        pixels = int(grey.shape[0] * grey.shape[1])
        result = DecodeResult(codes=[])

        def finish(codes: list[Code]) -> DecodeResult:
            result.codes = _unique(codes)
            result.elapsed_s = self._timer() - start
            return result

        passes: list[tuple[str, Callable[[], list[Code]]]] = [
            ("fast", lambda: _zxing(grey, "fast", None, invert=False, fast=True)),
            ("zxing", lambda: _zxing(grey, "zxing", None, invert=False)),
        ]
        for p in _PASSES:
            if p.when(grey):
                passes.append((p.name, _pass_runner(p, grey)))
            if p.name == "unsharp" and self.use_zbar:
                passes.append(("zbar", lambda: _zbar(grey)))
        # How much dearer than usual this frame's content is (pure noise costs zxing-cpp
        # several times an empty belt): the first pass measures it for the passes after it.
        content = 1.0
        for i, (name, run) in enumerate(passes):
            t0 = self._timer()
            if i > 0 and t0 - start + content * self.estimate_s(name, pixels) > self.budget_s:
                result.out_of_time = True
                self._skipped(name)
                continue
            result.passes.append(name)
            usual = self.estimate_s(name, pixels)
            codes = run()
            cost = self._timer() - t0
            if i == 0:
                content = max(1.0, cost / usual) if usual > 0 else 1.0
                self._learn(name, cost, pixels)
            else:
                self._learn(name, cost / content, pixels)
            if codes:
                return finish(codes)
        return finish([])

    def decode_all(self, image: npt.NDArray[np.uint8]) -> DecodeResult:
        """Every code in ``image`` (BGR or grey): the whole-frame passes united, then the
        fallback passes on the regions that look like a code and where none was found, while
        the budget allows (module docstring). ``passes`` lists each pass once, in the order
        first run; ``out_of_time`` says a region or pass was left untried."""
        start = self._timer()
        grey = to_grey(image)
        pixels = int(grey.shape[0] * grey.shape[1])
        result = DecodeResult(codes=[])
        found: list[Code] = []
        whole: list[tuple[str, Callable[[], list[Code]]]] = [
            ("fast", lambda: _zxing(grey, "fast", None, invert=False, fast=True)),
            ("labels", lambda: _zxing(grey, "labels", None, invert=False, labels=True)),
        ]
        content = 1.0
        for i, (name, run) in enumerate(whole):
            t0 = self._timer()
            if i > 0 and t0 - start + content * self.estimate_s(name, pixels) > self.budget_s:
                result.out_of_time = True
                self._skipped(name)
                continue
            result.passes.append(name)
            usual = self.estimate_s(name, pixels)
            found.extend(run())
            cost = self._timer() - t0
            if i == 0:
                content = max(1.0, cost / usual) if usual > 0 else 1.0
                self._learn(name, cost, pixels)
            else:
                self._learn(name, cost / content, pixels)
        regions = [r for r in code_regions(grey) if not _explained(r, found)]
        h, w = grey.shape
        # The regions may take what the whole frame took, times region_share, within the
        # budget: a bound that follows this machine's speed, so a frame with an unreadable
        # label costs a known multiple of a plain call wherever it runs.
        now = self._timer()
        left = min(self.budget_s - (now - start), self.region_share * (now - start))
        deadline = now + left
        skipped: set[str] = set()
        for name, prep in self._region_passes():
            key = _REGION + name
            for region in list(regions):
                x0, y0, x1, y1 = region
                if name != "region" and (x0 == 0 or y0 == 0 or x1 == w or y1 == h):
                    continue  # a label cut by the frame's edge gets one look; wholly in view later
                crop = np.ascontiguousarray(grey[y0:y1, x0:x1])
                crop_px = int(crop.shape[0] * crop.shape[1])
                t0 = self._timer()
                if t0 + content * self.estimate_s(key, crop_px) > deadline:
                    result.out_of_time = True
                    if key not in skipped:
                        skipped.add(key)
                        self._skipped(key)
                    continue
                if name not in result.passes:
                    result.passes.append(name)
                codes = _shifted(prep(crop), x0, y0)
                self._learn(key, (self._timer() - t0) / content, crop_px)
                if codes:
                    found.extend(codes)
                    regions.remove(region)
            if not regions:
                break
        result.codes = _unique(found)
        result.elapsed_s = self._timer() - start
        return result

    def _region_passes(self) -> list[tuple[str, Callable[[GreyImage], list[Code]]]]:
        passes: list[tuple[str, Callable[[GreyImage], list[Code]]]] = [
            ("region", lambda g: _zxing(g, "region", None, invert=False)),
        ]
        for p in _PASSES:
            if p.name in _REGION_PASSES:
                passes.append((p.name, _crop_runner(p)))
            if p.name == "unsharp" and self.use_zbar:
                passes.append(("zbar", _zbar))
        return passes


# The fallback passes a code-like region gets, after the plain call on its crop (invert and
# downscale are left out: labels are dark on light, and a crop is small already).
_REGION_PASSES = frozenset(
    {
        "unsharp",
        "upscale",
        "contrast",
        "threshold",
        "rotate+15",
        "rotate-15",
        "rotate+30",
        "rotate-30",
    }
)
_CELL = 8  # pixels per cell of the edge-density map
_EDGE_LEVEL = 40  # mean edge strength of a cell that is part of a code (grey levels, 0..255)
_REGION_MARGIN = 16  # pixels around a region's cells when cropping it: the quiet zone
_MAX_REGIONS = 16


def code_regions(grey: GreyImage) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` of ``grey`` that look like a code: cells of dense strong edges
    (bars and modules), joined; not larger than a quarter of the frame; at most 16: those
    clear of the frame's edge first (a label cut by the edge is read in a later frame), the
    largest first."""
    h, w = grey.shape
    if h < 4 * _CELL or w < 4 * _CELL:
        return []
    gx = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3))
    cells = cv2.resize(cv2.max(gx, gy), (w // _CELL, h // _CELL), interpolation=cv2.INTER_AREA)
    _, mask = cv2.threshold(cells, _EDGE_LEVEL, 255, cv2.THRESH_BINARY)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = []
    ch, cw = mask.shape
    for i in range(1, count):
        cx, cy, bw, bh, area = (int(v) for v in stats[i])
        if area < 4:
            continue  # a speck
        if bw * bh * 4 > cw * ch:
            continue  # a quarter of the frame is texture or noise, not a label
        x0 = max(0, cx * _CELL - _REGION_MARGIN)
        y0 = max(0, cy * _CELL - _REGION_MARGIN)
        x1 = min(w, (cx + bw) * _CELL + _REGION_MARGIN)
        y1 = min(h, (cy + bh) * _CELL + _REGION_MARGIN)
        edge = cx == 0 or cy == 0 or cx + bw >= cw or cy + bh >= ch
        boxes.append((edge, -area, (x0, y0, x1, y1)))
    boxes.sort(key=lambda b: b[:2])
    return [b for _, _, b in boxes[:_MAX_REGIONS]]


def _explained(region: tuple[int, int, int, int], codes: list[Code]) -> bool:
    """A region is explained when the codes found centred in it cover a quarter of it (a region
    holding two labels of which one was read is not)."""
    x0, y0, x1, y1 = region
    covered = 0.0
    for c in codes:
        pts = np.array(c.position, dtype=np.float32)
        cx, cy = pts.mean(axis=0)
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            covered += abs(float(cv2.contourArea(pts)))
    return covered * 4 >= (x1 - x0) * (y1 - y0)


def _shifted(codes: list[Code], dx: int, dy: int) -> list[Code]:
    """Codes found on a crop, with positions in the frame's coordinates."""
    out = []
    for c in codes:
        (a, b, cc, d) = ((x + dx, y + dy) for x, y in c.position)
        out.append(dataclasses.replace(c, position=(a, b, cc, d)))
    return out


def _crop_runner(p: _Pass) -> Callable[[GreyImage], list[Code]]:
    def run(crop: GreyImage) -> list[Code]:
        image, back = p.prep(crop)
        return _zxing(np.ascontiguousarray(image), p.name, back, invert=False)

    return run


def _pass_runner(p: _Pass, grey: GreyImage) -> Callable[[], list[Code]]:
    def run() -> list[Code]:
        image, back = p.prep(grey)
        return _zxing(np.ascontiguousarray(image), p.name, back, invert=False)

    return run


def _unique(codes: list[Code]) -> list[Code]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in _plausible(codes):
        if (c.format, c.text) not in seen:
            seen.add((c.format, c.text))
            out.append(c)
    return out


_LINEAR = frozenset(
    {"Code128", "Code39", "Code93", "Codabar", "EAN8", "EAN13", "UPCA", "UPCE", "ITF", "DataBar"}
)


def _thickness(c: Code) -> tuple[float, float]:
    """(across, along) the bars of a linear code's quadrilateral, in pixels."""
    (x0, y0), (x1, y1), _, (x3, y3) = c.position
    along = float(np.hypot(x1 - x0, y1 - y0))
    across = float(np.hypot(x3 - x0, y3 - y0))
    return across, along


def _plausible(codes: list[Code]) -> list[Code]:
    """Drops sliver reads: a linear code seen on a band a few pixels thin, next to a
    well-supported read of the same kind (zxing-cpp misreads the edge of an EAN-13 this way
    on the corpus, with a valid check digit)."""
    linear = [c for c in codes if c.format in _LINEAR]
    if len(linear) < 2:
        return codes
    best = max(_thickness(c)[0] for c in linear)

    def sliver(c: Code) -> bool:
        across, along = _thickness(c)
        return across < max(4.0, 0.03 * along) and best >= 4 * max(across, 1.0)

    return [c for c in codes if c.format not in _LINEAR or not sliver(c)]
