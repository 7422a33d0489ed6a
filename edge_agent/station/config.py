"""Configuration of the agent's ``station:`` section (``device.role: station``, DESIGN §8).

Example (defaults shown; every dock needs an ``id``, everything else is optional)::

    station:
      plan: null                # a load plan file, used until one arrives on cmd/loadplan
      state_dir: null           # where the plan and the engine state are kept (default: the
                                # outbox's folder)
      gateout_codes: [GATEOUT]  # scanned at a dock: the vehicle there leaves (also GATEOUT:<dock>)
      vehicle_prefix: "VEH:"    # a scanned code with this prefix names the vehicle at the dock
      dedup_window: 3s          # the same code again within this (sliding) is one read
      budget: 80ms              # decode time per camera frame
      docks:
        - id: dock-1
          door: gpio:///dev/gpiochip0?line=17&bias=pull_up   # active (high) = open; or null
          bay: gpio:///dev/gpiochip0?line=22                  # a contact, active = occupied, or
          # bay: {source: /dev/ttyAMA1, protocol: tfmini,     # a distance sensor on any byte
          #       occupied_below: 2.0m, free_above: 2.5m,     # source (serial, socket://, file://)
          #       hold: 1s, stale_after: 5s}
          settle: 50ms          # a contact's level must hold this long (debounce)
          unstable_after: 2s    # chattering this long is reported unstable (a door half open)
          cameras: []           # scan CameraConfig entries ({id, source, fps, ...})
          scanners: []          # scan ScannerConfig entries ({id, source, kind, ...})
          signal:               # or null
            green: gpio:///dev/gpiochip0?line=23&direction=output
            red: gpio:///dev/gpiochip0?line=24&direction=output
            buzzer: null        # a third output line, or null
            green_hold: 2s
            red_hold: 5s

Device URLs are checked when the file loads, so a bad one is a configuration error with its
line: contacts are GPIO inputs with ``edge=both`` (the default), signal lines GPIO outputs
(``direction=output``), a distance sensor any byte source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from edge_agent.drivers.url import DeviceKind, DeviceUrl, parse_device_url
from edge_agent.platform.units import Distance, Duration
from edge_agent.scan.config import CameraConfig, ScannerConfig
from edge_agent.wire.envelope import IDENT_RE

__all__ = [
    "CONTACT_KINDS",
    "DISTANCE_KINDS",
    "DistanceBayConfig",
    "DockConfig",
    "SignalConfig",
    "StationConfig",
    "contact_url",
    "output_url",
]


CONTACT_KINDS: tuple[DeviceKind, ...] = ("gpio",)
DISTANCE_KINDS: tuple[DeviceKind, ...] = ("serial", "socket", "file")
"""The byte sources a distance sensor may be (``edge_agent.drivers.sources``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def contact_url(url: str) -> DeviceUrl:
    """A door or bay contact's URL: a GPIO input line seeing both edges (ValueError if not)."""
    spec = parse_device_url(url, allowed=CONTACT_KINDS)
    if spec.output:
        raise ValueError(f"{url!r}: a contact is an input line, not direction=output")
    if spec.edge != "both":
        raise ValueError(f"{url!r}: a contact needs edge=both (opening and closing)")
    return spec


def output_url(url: str) -> DeviceUrl:
    """A signal line's URL: a GPIO output line (ValueError if not)."""
    spec = parse_device_url(url, allowed=CONTACT_KINDS)
    if not spec.output:
        raise ValueError(f"{url!r}: a signal line is an output (add direction=output)")
    return spec


class DistanceBayConfig(_Section):
    """A bay watched by a serial distance sensor (``edge_agent.station.distance``)."""

    source: str = Field(min_length=1)
    protocol: Literal["tfmini", "a02yyuw", "maxbotix"]
    occupied_below: Distance = 2.0
    free_above: Distance = 2.5
    hold: Duration = 1.0
    stale_after: Duration = 5.0

    @field_validator("source")
    @classmethod
    def _byte_source(cls, v: str) -> str:
        parse_device_url(v, allowed=DISTANCE_KINDS)
        return v

    @field_validator("stale_after")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be above 0")
        return v

    @model_validator(mode="after")
    def _band(self) -> DistanceBayConfig:
        if self.occupied_below <= 0:
            raise ValueError("occupied_below must be above 0")
        if self.free_above <= self.occupied_below:
            raise ValueError(
                f"free_above ({self.free_above:g} m) must be above occupied_below "
                f"({self.occupied_below:g} m): the band between them is the hysteresis"
            )
        return self


def _bay_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "union[contact]"
    if isinstance(value, dict | DistanceBayConfig):
        return "union[distance]"
    return None


# The tags are named as pydantic names its own union members ("union[...]"), which
# yamlconf leaves out of an error's key path: an error inside a distance bay then points at its
# own key and line (docks.1.bay.free_above), not at the tag.
BayConfig = Annotated[
    Annotated[str, Tag("union[contact]")] | Annotated[DistanceBayConfig, Tag("union[distance]")],
    Discriminator(
        _bay_kind,
        custom_error_type="bay_kind",
        custom_error_message="a bay is a GPIO contact URL or {source, protocol, ...}",
    ),
]


class SignalConfig(_Section):
    """A dock's stack light (green, red) and buzzer, as GPIO output lines."""

    green: str
    red: str
    buzzer: str | None = None
    green_hold: Duration = 2.0
    red_hold: Duration = 5.0

    @field_validator("green", "red", "buzzer")
    @classmethod
    def _output(cls, v: str | None) -> str | None:
        if v is not None:
            output_url(v)
        return v

    @field_validator("green_hold", "red_hold")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be above 0")
        return v

    def urls(self) -> list[str]:
        """The lines' URLs: green, red, then the buzzer's when there is one."""
        return [self.green, self.red] + ([self.buzzer] if self.buzzer else [])


class DockConfig(_Section):
    """One dock: its door and bay sensors, cameras, scanners and signal."""

    id: str = Field(pattern=IDENT_RE)
    door: str | None = None
    bay: BayConfig | None = None
    settle: Duration = 0.05
    unstable_after: Duration = 2.0
    cameras: list[CameraConfig] = Field(default_factory=list)
    scanners: list[ScannerConfig] = Field(default_factory=list)
    signal: SignalConfig | None = None

    @field_validator("door")
    @classmethod
    def _door(cls, v: str | None) -> str | None:
        if v is not None:
            contact_url(v)
        return v

    @field_validator("bay")
    @classmethod
    def _bay(cls, v: str | DistanceBayConfig | None) -> str | DistanceBayConfig | None:
        if isinstance(v, str):
            contact_url(v)
        return v

    @model_validator(mode="after")
    def _times(self) -> DockConfig:
        if self.unstable_after <= self.settle:
            raise ValueError(
                f"unstable_after ({self.unstable_after:g}s) must be above settle ({self.settle:g}s)"
            )
        return self

    def contact_lines(self) -> dict[str, DeviceUrl]:
        """The dock's GPIO contacts by part (``door``, ``bay``)."""
        out: dict[str, DeviceUrl] = {}
        if self.door is not None:
            out["door"] = contact_url(self.door)
        if isinstance(self.bay, str):
            out["bay"] = contact_url(self.bay)
        return out


class StationConfig(_Section):
    """The ``station:`` section; absent means the agent runs no station."""

    plan: Path | None = None
    state_dir: Path | None = None
    gateout_codes: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: ["GATEOUT"]
    )
    vehicle_prefix: str = Field(default="VEH:", min_length=1, max_length=64)
    dedup_window: Duration = 3.0
    budget: Duration = 0.08
    docks: list[DockConfig] = Field(min_length=1)

    @field_validator("docks")
    @classmethod
    def _unique(cls, docks: list[DockConfig]) -> list[DockConfig]:
        seen: dict[str, str] = {}
        for i, dock in enumerate(docks):
            where = f"docks[{i}]"
            if dock.id in seen:
                raise ValueError(f"{where}.id: dock {dock.id!r} is also {seen[dock.id]}")
            seen[dock.id] = where
        devices: dict[str, str] = {}
        for i, dock in enumerate(docks):
            for part in ("cameras", "scanners"):
                for j, device in enumerate(getattr(dock, part)):
                    where = f"docks[{i}].{part}[{j}]"
                    if device.id in devices:
                        raise ValueError(
                            f"{where}.id: {device.id!r} is also {devices[device.id]} "
                            "(camera and scanner ids name a read's dock: one dock each)"
                        )
                    devices[device.id] = where
        # two parts on one line (or one sensor port) would read each other's edges
        taken: dict[str, str] = {}
        for i, dock in enumerate(docks):
            used = {part: spec.describe() for part, spec in dock.contact_lines().items()}
            if isinstance(dock.bay, DistanceBayConfig):
                used["bay.source"] = parse_device_url(dock.bay.source).describe()
            if dock.signal is not None:
                names = ("signal.green", "signal.red", "signal.buzzer")
                for name, url in zip(names, dock.signal.urls(), strict=False):
                    used[name] = output_url(url).describe()
            for part, device in used.items():
                where = f"docks[{i}].{part}"
                if device in taken:
                    raise ValueError(f"{where}: {device} is also {taken[device]}")
                taken[device] = where
        return docks

    @field_validator("gateout_codes")
    @classmethod
    def _codes(cls, codes: list[str]) -> list[str]:
        if len(set(codes)) != len(codes):
            raise ValueError("a code is listed twice")
        return codes

    @model_validator(mode="after")
    def _prefix_is_no_gateout(self) -> StationConfig:
        for code in self.gateout_codes:
            if code.startswith(self.vehicle_prefix):
                raise ValueError(
                    f"gateout_codes: {code!r} starts with vehicle_prefix {self.vehicle_prefix!r}"
                )
        return self
