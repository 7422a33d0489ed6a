"""The edge agent's configuration: YAML, validated by pydantic, every key documented in README.

Minimal file (DESIGN §4)::

    device: {id: van-042, fleet: acme}
    broker: {url: "mqtt://127.0.0.1:1883"}
    outbox: {path: /var/lib/edge-agent/outbox.db}
    api: {listen: "127.0.0.1:8080"}

The local API on any address but loopback needs a bearer token (``api.token_file``, which
``edge-agent provision`` writes, or ``api.token``): without one the file is refused at
``api.listen``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent.gnss.config import GnssConfig
from edge_agent.platform.ratelimit import parse_rate
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
    "Rate",
    "RateConfig",
    "TlsConfig",
    "UplinkConfig",
    "is_loopback_host",
    "load_agent_config",
    "parse_listen",
    "token_problem",
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


Rate = Annotated[float, BeforeValidator(parse_rate)]
"""Requests per second, written ``"50/s"``, ``"10/min"``, ``"600/h"`` or as a number."""

BEARER_RE = r"^[A-Za-z0-9\-._~+/]+=*$"
"""RFC 6750's b64token: what may follow ``Authorization: Bearer``."""
TOKEN_MIN = 16
TOKEN_MAX = 512


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token (never quoting it: it is a secret), or None."""
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        return f"must be {TOKEN_MIN} to {TOKEN_MAX} characters (it has {len(token)})"
    if re.fullmatch(BEARER_RE, token) is None:
        return "may hold only letters, digits and -._~+/ (then = padding), as RFC 6750 says"
    return None


def is_loopback_host(host: str) -> bool:
    """Whether a listen host is reachable from this machine only (127.0.0.0/8, ::1,
    ``localhost``); a name, ``0.0.0.0`` or ``::`` is not."""
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name may resolve to anything: not loopback
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class RateConfig(_Section):
    per_client: Rate = 50.0
    burst: int = Field(default=200, ge=1)
    failed_auth: Rate = 10 / 60
    failed_auth_burst: int = Field(default=10, ge=1)
    clients: int = Field(default=1024, ge=1, le=1_000_000)
    limit_loopback: bool = False


class ApiConfig(_Section):
    token_file: Path | None = None
    token: SecretStr | None = None
    """A secret: hidden in reprs and dumps, masked by ``edge-agent config``, never quoted in an
    error message."""
    listen: str = "127.0.0.1:8080"
    max_body: ByteSize = 4 * 1024 * 1024
    max_batch: int = Field(default=10_000, ge=1)
    rate: RateConfig = RateConfig()

    @field_validator("token")
    @classmethod
    def _token(cls, token: SecretStr | None) -> SecretStr | None:
        problem = None if token is None else token_problem(token.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return token

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str, info: ValidationInfo) -> str:
        host, _ = parse_listen(listen)
        # token_file and token are declared first, so they are known here: the error is then
        # located at api.listen, the key that asks for a token
        token_file, token = info.data.get("token_file"), info.data.get("token")
        if token_file is not None and token is not None:
            raise ValueError("api.token_file and api.token: give one of them, not both")
        if not is_loopback_host(host) and token_file is None and token is None:
            raise ValueError(
                f"{host} is not a loopback address: the API on a network needs a bearer token,"
                " api.token_file (what edge-agent provision writes) or api.token"
            )
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
