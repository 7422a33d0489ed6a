"""Configuration of the agent's ``gnss:`` section.

Example (only ``source`` is required; the defaults are shown)::

    gnss:
      source: /dev/ttyACM0        # or serial:///dev/ttyUSB0?baud=9600, socket://host:port,
                                  # gpsd://host:2947, file://log.nmea?rate=10 (DESIGN §4)
      profile: null               # a receiver profile (ublox-m8, quectel-l76 ...,
                                  # edge_agent.gnss.profiles): its bauds and init unless set here
      bauds: [9600, 4800, 38400, 115200, 57600, 19200]   # autodetect trial order
      init: []                    # sentences written to a serial receiver after opening it
                                  # (a receiver profile; "*hh" is added when missing)
      watchdog: 5s                # no sentence for this long: health "lost"
      reconnect_max: 30s          # reopen backoff cap (capped exponential, full jitter)
      require_checksum: false     # refuse sentences without "*hh"
      filter:
        max_hdop: 20              # worse horizontal dilution: dropped (null: no limit)
        max_speed_mps: 70         # implied speed between fixes above this: a jump, dropped
        jump_reset_after: 3       # ... unless this many in a row agree (the last one was wrong)
        max_age: 30s              # a fix older than the clock by this: dropped
        max_ahead: 5s             # a fix ahead of the clock by this: dropped
        drop_null_island: true    # lat 0, lon 0: dropped
      report:
        moving_interval: 10s      # a ping at least this often when moving ...
        stopped_interval: 5m      # ... and when stopped
        heading_change_deg: 30    # plus one when the track turns this much ...
        distance: 250m            # ... or the van is this far from the last ping
        moving_speed_mps: 1.5     # moving at or above; stopped below half of it
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.drivers.url import DeviceKind, DeviceUrl, parse_device_url
from edge_agent.gnss.baud import STANDARD_BAUDS
from edge_agent.gnss.nmea import DEFAULT_MAX_LENGTH
from edge_agent.gnss.profiles import load_profile
from edge_agent.platform.units import Distance, Duration

__all__ = ["SOURCE_KINDS", "FilterConfig", "GnssConfig", "ReportConfig", "parse_source_url"]

SOURCE_KINDS: tuple[DeviceKind, ...] = ("serial", "socket", "gpsd", "file")
"""The device URLs a GNSS source may be (DESIGN §4)."""


def parse_source_url(url: str) -> DeviceUrl:
    """A GNSS source URL parsed by the driver layer (ValueError names what is wrong)."""
    return parse_device_url(url, allowed=SOURCE_KINDS)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterConfig(_Section):
    """Which fixes are dropped before reporting (each drop counted by reason)."""

    max_hdop: float | None = Field(default=20.0, gt=0)
    max_speed_mps: float = Field(default=70.0, gt=0)
    jump_reset_after: int = Field(default=3, ge=1)
    max_age: Duration = 30.0
    max_ahead: Duration = 5.0
    drop_null_island: bool = True


class ReportConfig(_Section):
    """Adaptive reporting: which filtered fixes become ``gnss.fix`` pings."""

    moving_interval: Duration = 10.0
    stopped_interval: Duration = 300.0
    heading_change_deg: float = Field(default=30.0, gt=0, le=180)
    distance: Distance = 250.0
    moving_speed_mps: float = Field(default=1.5, gt=0)


class GnssConfig(_Section):
    """The ``gnss:`` section; absent means the agent runs without gnss."""

    source: str
    profile: str | None = None
    bauds: list[int] = Field(default_factory=lambda: list(STANDARD_BAUDS), min_length=1)
    init: list[str] = Field(default_factory=list)
    watchdog: Duration = 5.0
    reconnect_max: Duration = 30.0
    require_checksum: bool = False
    max_sentence: int = Field(default=DEFAULT_MAX_LENGTH, ge=82, le=4096)
    filter: FilterConfig = FilterConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        parse_source_url(source)
        return source

    @field_validator("profile")
    @classmethod
    def _profile(cls, name: str | None) -> str | None:
        if name is not None:
            load_profile(name)  # ValueError naming the known profiles
        return name

    @model_validator(mode="after")
    def _compose(self) -> GnssConfig:
        # The profile fills what the file leaves out; a key the file sets (even to []) wins.
        if self.profile is not None:
            profile = load_profile(self.profile)
            if "bauds" not in self.model_fields_set:
                self.bauds = list(profile.bauds)
            if "init" not in self.model_fields_set:
                self.init = profile.init_sentences
        return self

    @field_validator("bauds")
    @classmethod
    def _bauds(cls, bauds: list[int]) -> list[int]:
        for b in bauds:
            if not 300 <= b <= 4_000_000:
                raise ValueError(f"{b} is not a serial baud rate")
        return bauds

    @field_validator("init")
    @classmethod
    def _init(cls, init: list[str]) -> list[str]:
        for line in init:
            if not line.startswith("$") or not line.isascii() or len(line) > 200:
                raise ValueError(f"{line!r}: an init sentence starts with '$' and is ASCII")
        return init

    @field_validator("watchdog", "reconnect_max")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0s")
        return v

    @property
    def spec(self) -> DeviceUrl:
        """The parsed source URL."""
        return parse_source_url(self.source)
