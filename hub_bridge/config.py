"""The hub bridge's configuration (DESIGN §4)::

broker: {url: "mqtt://127.0.0.1:1883"}
timeline: {url: "sqlite:///var/lib/hub-bridge/timeline.db"}
api: {listen: "127.0.0.1:8090"}
pki: {dir: /var/lib/hub-bridge/pki, broker_url: "mqtts://hub.example:8883",
      hub_api_url: "http://hub.example:8090", cert_validity: 825d}
tenants: {tokens: [{name: ops, fleets: all, rights: [read, commands],
                    token_file: /etc/hub-bridge/ops.token}]}
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.platform.settings import BrokerConfig, parse_listen
from edge_agent.platform.units import ByteSize, Duration
from edge_agent.platform.yamlconf import load_model
from hub_bridge.backends import sqlite_path_of
from hub_bridge.commands import COMMAND_NAMES, CommandLimits
from hub_bridge.delivery.projector import DeliveryConfig
from hub_bridge.tenants import TenantsConfig, check_listen
from hub_bridge.timeline import TimelineLimits

__all__ = ["HubConfig", "PkiConfig", "PkiSettings", "load_hub_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimelineConfig(_Section):
    url: str = "sqlite:///var/lib/hub-bridge/timeline.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if not sqlite_path_of(url):
                raise ValueError(f"{url!r}: no file path (sqlite:///path/to/timeline.db)")
            return url
        if scheme in ("postgresql", "postgres"):
            parts = urlsplit(url)
            if not parts.hostname and "host=" not in parts.query:
                raise ValueError(f"{url!r}: no host (postgresql://user@host:5432/dbname)")
            return url
        raise ValueError(f"{url!r}: the scheme must be sqlite:// or postgresql://")

    @property
    def is_sqlite(self) -> bool:
        """Whether the timeline is an SQLite file (one hub on one machine)."""
        return urlsplit(self.url).scheme == "sqlite"

    @property
    def path(self) -> Path:
        """The SQLite file of the timeline (only for a ``sqlite://`` URL)."""
        if not self.is_sqlite:
            raise ValueError(f"{self.url!r} is not an SQLite file")
        return Path(sqlite_path_of(self.url))


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8090"

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        parse_listen(listen)
        return listen


class IngestConfig(_Section):
    max_batch_bytes: ByteSize = 256 * 1024
    future_tolerance: Duration = 600.0
    dead_letter_keep_bytes: ByteSize = Field(default=1024, le=256 * 1024)
    """The sample of a rejected payload that is kept."""
    dead_letter_max_rows: int = Field(default=10_000, ge=1, le=10_000_000)
    """Distinct dead letters kept (per topic and reason); the least recently seen go first."""
    max_state_bytes: ByteSize = Field(default=8 * 1024, ge=64, le=256 * 1024)
    """A larger state message is dead-lettered, not stored."""
    state_history: int = Field(default=100, ge=1, le=100_000)
    """State transitions kept per device."""
    share_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @property
    def limits(self) -> TimelineLimits:
        """What the timeline keeps besides the timeline (dead letters, state history)."""
        return TimelineLimits(
            dead_letter_keep_bytes=self.dead_letter_keep_bytes,
            dead_letter_max_rows=self.dead_letter_max_rows,
            state_history=self.state_history,
        )


class CommandsConfig(_Section):
    """How commands to devices (``hub-bridge send``) are kept and resent."""

    resend: Duration = Field(default=30.0, gt=0)
    resend_max: Duration = Field(default=900.0, gt=0)
    max_per_device: int = Field(default=100, ge=len(COMMAND_NAMES), le=100_000)
    retention: Duration = Field(default=7 * 86400.0, gt=0)

    @property
    def limits(self) -> CommandLimits:
        """The queue's limits."""
        return CommandLimits(
            max_per_device=self.max_per_device,
            retention_s=self.retention,
            resend_s=self.resend,
            resend_max_s=max(self.resend, self.resend_max),
        )


@dataclass(frozen=True, slots=True)
class PkiSettings:
    """What the provisioning endpoint needs, resolved from the configuration."""

    dir: Path
    broker_url: str
    """What devices are told to connect to."""
    hub_api_url: str
    """The hub API as a device reaches it (in claim texts)."""
    cert_validity_days: float


class PkiConfig(_Section):
    """The fleet CA's folder and what provisioned devices are told (``hub-bridge ca init``,
    ``claim create``, ``POST /v1/provision``)."""

    dir: Path = Path("/var/lib/hub-bridge/pki")
    broker_url: str | None = None
    """The broker URL handed to devices; by default ``mqtts://`` on ``broker.url``'s host
    (port 8883, or ``broker.url``'s own when that is ``mqtts://`` already)."""
    hub_api_url: str | None = None
    """The hub API URL devices use; by default ``http://`` on ``api.listen`` (a wildcard
    address gives this machine's host name)."""
    cert_validity: Duration = Field(default=825 * 86400.0, ge=3600.0, le=36500 * 86400.0)

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("mqtts", "ssl") or not parts.hostname:
            raise ValueError(f"{url!r}: devices connect over TLS: mqtts://host[:port]")
        if parts.username or parts.password:
            raise ValueError(f"{url!r}: devices authenticate with their certificate, no password")
        return url

    @field_validator("hub_api_url")
    @classmethod
    def _api(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError(f"{url!r}: must be http(s)://host[:port] (no #)")
        return url.rstrip("/")

    def settings(self, broker: BrokerConfig, api: ApiConfig) -> PkiSettings:
        """The effective values, the defaults derived from the broker and API sections."""
        broker_url = self.broker_url
        if broker_url is None:
            port = broker.port if broker.use_tls else 8883
            broker_url = f"mqtts://{_url_host(broker.host)}:{port}"
        hub_api_url = self.hub_api_url
        if hub_api_url is None:
            host, port = parse_listen(api.listen)
            if host in ("", "0.0.0.0", "::"):
                host = socket.gethostname()
            hub_api_url = f"http://{_url_host(host)}:{port}"
        return PkiSettings(self.dir, broker_url, hub_api_url, self.cert_validity / 86400.0)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HubConfig(_Section):
    """The whole hub configuration."""

    broker: BrokerConfig = BrokerConfig()
    timeline: TimelineConfig = TimelineConfig()
    api: ApiConfig = ApiConfig()
    ingest: IngestConfig = IngestConfig()
    commands: CommandsConfig = CommandsConfig()
    pki: PkiConfig = PkiConfig()
    log: LogConfig = LogConfig()
    tenants: TenantsConfig = TenantsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    hub_id: str = Field(default="hub", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @model_validator(mode="after")
    def _api_open_on_loopback_only(self) -> HubConfig:
        check_listen(parse_listen(self.api.listen)[0], self.tenants)
        return self

    def pki_settings(self) -> PkiSettings:
        """The provisioning settings with their defaults resolved."""
        return self.pki.settings(self.broker, self.api)


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate a hub configuration file (raises ConfigError)."""
    return load_model(HubConfig, path)
