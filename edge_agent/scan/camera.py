"""Camera frames through OpenCV, and the newest-frame mailbox of the frame loop.

``open_source`` opens a V4L2 device (``/dev/video0`` or an index), an RTSP/HTTP stream, a
video file or a folder of images; ``FrameMailbox`` holds only the newest frame, so decoding
never falls behind a camera: a frame not yet taken when a newer one arrives is dropped and
counted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.platform.redact import redact_url

__all__ = [
    "CameraError",
    "FolderSource",
    "FrameMailbox",
    "FrameSource",
    "VideoSource",
    "open_source",
]

Frame = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm"})


class CameraError(OSError):
    """A camera source that cannot be opened or read."""


class FrameSource(Protocol):
    """Blocking frame reads (called from a reader thread)."""

    def read(self) -> Frame | None:
        """The next frame; None at the end of a file or folder; CameraError on failure."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


class FolderSource:
    """The image files of a folder, in name order (replays and tests)."""

    def __init__(self, folder: Path, *, loop: bool = False) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraError(f"{folder}: no image files")
        self.loop = loop
        self._next = 0
        self.unreadable = 0

    def read(self) -> Frame | None:
        """The next readable image; unreadable files are skipped and counted."""
        while True:
            if self._next >= len(self.files):
                if not self.loop:
                    return None
                self._next = 0
            path = self.files[self._next]
            self._next += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return frame  # type: ignore[return-value]
            self.unreadable += 1
            if self.unreadable > 10 * len(self.files):
                raise CameraError(f"{path.parent}: no readable image")

    def close(self) -> None:
        """Nothing to release."""


class VideoSource:
    """An OpenCV ``VideoCapture``: device, stream or video file."""

    def __init__(self, source: str, *, loop: bool = False) -> None:
        target: int | str = int(source) if source.isdigit() else source
        self.source = source
        self.is_file = Path(source).is_file()
        self.loop = loop and self.is_file
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise CameraError(f"{redact_url(source)}: cannot open camera or video")

    def read(self) -> Frame | None:
        """The next frame; None at the end of a video file; CameraError when a device fails."""
        ok, frame = self.cap.read()
        if ok and frame is not None:
            return frame  # type: ignore[return-value]
        if self.is_file:
            if self.loop and self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                ok, frame = self.cap.read()
                if ok and frame is not None:
                    return frame  # type: ignore[return-value]
            return None
        raise CameraError(
            f"{redact_url(self.source)}: no frame (device unplugged or stream dropped?)"
        )

    def close(self) -> None:
        """Release the capture."""
        self.cap.release()


def open_source(source: str, *, loop: bool = False) -> FrameSource:
    """A frame source for a camera URL, device, video file or image folder."""
    path = Path(source)
    if path.is_dir():
        return FolderSource(path, loop=loop)
    if "://" not in source and not source.isdigit() and not path.exists():
        raise CameraError(f"{redact_url(source)}: no such device, file or folder")
    return VideoSource(source, loop=loop)


class FrameMailbox:
    """One slot holding the newest frame; thread-safe. ``put`` drops (and counts) a stale one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: tuple[int, Frame] | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        """Offer a new frame; a frame still waiting is stale and dropped."""
        with self._cond:
            self.received += 1
            if self._frame is not None:
                self.dropped += 1
            self._frame = (self.received, frame)
            self._cond.notify()

    def close(self) -> None:
        """No more frames: a waiting ``take`` returns None once the slot is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether the producer has finished."""
        return self._closed

    def take(self, timeout: float) -> tuple[int, Frame] | None:
        """The newest frame and its number, waiting up to ``timeout`` s; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            item, self._frame = self._frame, None
            return item
