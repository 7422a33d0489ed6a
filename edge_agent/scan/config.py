"""Configuration of the agent's ``scan:`` section.

Example (defaults shown; ``cameras`` and ``scanners`` may each be empty)::

    scan:
      dedup_window: 3s            # the same code again within this (sliding) is one scan
      budget: 80ms                # decode time per camera frame before passes are given up
      cameras:
        - id: dock-1
          source: /dev/video0     # or 0, rtsp://..., http://..., a video file, a folder of images
          fps: 0                  # pace a file/folder replay at this rate (0: as fast as read)
          loop: false             # replay a file/folder forever
          reconnect_max: 30s      # reopen backoff cap after a failure
          decode: first           # first: the codes of the first pass that finds any (a van
                                  # camera, one label at a time); every: every code in the
                                  # frame (a dock door: several labels in view at once)
      scanners:
        - id: hand-1
          kind: serial            # serial (a serial path, serial:// or socket://host:port) or
                                  # evdev (every path is then a keyboard)
          source: /dev/ttyACM0    # evdev: /dev/input/by-id/...-event-kbd or evdev://...
          baud: 9600
          prefix: ""              # stripped from every code when present
          suffix: "\\r"           # ends a code (the scanner's terminator)
          grab: true              # evdev: exclusive grab, keys never reach a console
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.drivers.url import DeviceKind, parse_device_url
from edge_agent.platform.units import Duration

__all__ = ["SCANNER_KINDS", "CameraConfig", "ScanConfig", "ScannerConfig"]

SCANNER_KINDS: tuple[DeviceKind, ...] = ("serial", "socket", "evdev")
"""The device URLs a text scanner may be (``edge_agent.drivers.url``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Section):
    """One camera: an OpenCV capture source."""

    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1)
    fps: float = Field(default=0.0, ge=0)
    loop: bool = False
    reconnect_max: Duration = 30.0
    decode: Literal["first", "every"] = "first"


class ScannerConfig(_Section):
    """One text-producing scanner: serial/socket byte source or an evdev keyboard wedge."""

    id: str = Field(min_length=1, max_length=128)
    kind: Literal["serial", "evdev"] = "serial"
    source: str = Field(min_length=1)
    baud: int = Field(default=9600, gt=0)
    prefix: str = ""
    suffix: str = "\r"
    grab: bool = True
    reconnect_max: Duration = 30.0

    @field_validator("suffix")
    @classmethod
    def _suffix_not_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("suffix must not be empty: it is what ends a code")
        return v

    @model_validator(mode="after")
    def _source_is_a_scanner(self) -> ScannerConfig:
        # the device URL is checked here so a bad one is a config error with its line
        parse_device_url(self.source, allowed=SCANNER_KINDS, path_kind=self.kind)
        return self


class ScanConfig(_Section):
    """The ``scan:`` section; absent means the agent runs without scan."""

    dedup_window: Duration = 3.0
    budget: Duration = 0.08
    cameras: list[CameraConfig] = Field(default_factory=list)
    scanners: list[ScannerConfig] = Field(default_factory=list)
