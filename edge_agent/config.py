"""The edge agent's configuration: YAML, validated by pydantic, every key documented in README.

Minimal file (DESIGN §4)::

    device: {id: van-042, fleet: acme}
    broker: {url: "mqtt://127.0.0.1:1883"}
    outbox: {path: /var/lib/edge-agent/outbox.db}
    api: {listen: "127.0.0.1:8080"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.gnss.config import GnssConfig
from edge_agent.platform.settings import BrokerConfig, TlsConfig, parse_listen
from edge_agent.platform.units import ByteSize, Duration
from edge_agent.platform.yamlconf import load_model
from edge_agent.scan.config import ScanConfig
from edge_agent.station.config import StationConfig
from edge_agent.trips.config import TripsConfig
from edge_agent.wire.envelope import IDENT_RE

__all__ = [
    "AgentConfig",
    "ApiConfig",
    "BrokerConfig",
    "DeviceConfig",
    "OutboxConfig",
    "TlsConfig",
    "UplinkConfig",
    "load_agent_config",
    "parse_listen",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(_Section):
    id: str = Field(pattern=IDENT_RE)
    fleet: str = Field(pattern=IDENT_RE)
    role: Literal["van", "station"] = "van"


class OutboxConfig(_Section):
    path: Path
    max_bytes: ByteSize = 256 * 1024 * 1024
    reserve_bytes: ByteSize | None = None
    id_retention: Duration = 7 * 86400.0
    disk_reserve: ByteSize = 4 * 1024 * 1024
    """A spare file next to the outbox, given up when the disk fills so acks can be applied."""

    @property
    def effective_reserve(self) -> int:
        """Room above the cap kept for high-value events (default a quarter of the cap)."""
        return self.max_bytes // 4 if self.reserve_bytes is None else self.reserve_bytes


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8080"
    max_body: ByteSize = 4 * 1024 * 1024
    max_batch: int = Field(default=10_000, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        parse_listen(listen)
        return listen


class UplinkConfig(_Section):
    batch_max_bytes: ByteSize = 256 * 1024
    window: int = Field(default=8, ge=1, le=1024)
    ack_timeout: Duration = 30.0
    backoff_max: Duration = 60.0

    @field_validator("batch_max_bytes")
    @classmethod
    def _max(cls, v: int) -> int:
        if not 1024 <= v <= 256 * 1024:
            raise ValueError("must be between 1KiB and 256KiB (the contract's batch limit)")
        return v


class ClockConfig(_Section):
    policy: Literal["auto", "system"] = "auto"


class HealthConfig(_Section):
    interval: Duration = 300.0


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AgentConfig(_Section):
    """The whole agent configuration."""

    device: DeviceConfig
    broker: BrokerConfig = BrokerConfig()
    outbox: OutboxConfig
    api: ApiConfig = ApiConfig()
    uplink: UplinkConfig = UplinkConfig()
    clock: ClockConfig = ClockConfig()
    health: HealthConfig = HealthConfig()
    log: LogConfig = LogConfig()
    gnss: GnssConfig | None = None
    scan: ScanConfig | None = None
    trips: TripsConfig | None = None
    station: StationConfig | None = None

    @model_validator(mode="after")
    def _role_fits(self) -> AgentConfig:
        # a station's docks on a van (or trips on a station) is a wrong file, not a wish
        if self.station is not None and self.device.role != "station":
            raise ValueError("station: only for device.role: station")
        if self.device.role == "station" and self.trips is not None:
            raise ValueError("trips: a station has no trips (device.role is station)")
        return self


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent configuration file (raises ConfigError)."""
    return load_model(AgentConfig, path)
