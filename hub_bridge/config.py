"""The hub bridge's configuration (DESIGN §4)::

broker: {url: "mqtt://127.0.0.1:1883"}
timeline: {url: "sqlite:///var/lib/hub-bridge/timeline.db"}
api: {listen: "127.0.0.1:8090"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.platform.settings import BrokerConfig, parse_listen
from edge_agent.platform.units import ByteSize, Duration
from edge_agent.platform.yamlconf import load_model
from hub_bridge.commands import COMMAND_NAMES, CommandLimits
from hub_bridge.timeline import TimelineLimits

__all__ = ["HubConfig", "load_hub_config"]


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
            raise ValueError("PostgreSQL timelines are not implemented yet: use sqlite:///PATH")
        raise ValueError(f"{url!r}: the scheme must be sqlite://")

    @property
    def path(self) -> Path:
        """The SQLite file of the timeline."""
        return Path(sqlite_path_of(self.url))


def sqlite_path_of(url: str) -> str:
    """``sqlite:///var/x.db`` → ``/var/x.db``; ``sqlite:///./x.db`` → ``./x.db``."""
    rest = url[len("sqlite://") :]
    if rest.startswith("/./"):
        return rest[1:]
    return rest


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


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HubConfig(_Section):
    """The whole hub configuration."""

    broker: BrokerConfig = BrokerConfig()
    timeline: TimelineConfig = TimelineConfig()
    api: ApiConfig = ApiConfig()
    ingest: IngestConfig = IngestConfig()
    commands: CommandsConfig = CommandsConfig()
    log: LogConfig = LogConfig()
    hub_id: str = Field(default="hub", pattern=r"^[A-Za-z0-9_-]{1,64}$")


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate a hub configuration file (raises ConfigError)."""
    return load_model(HubConfig, path)
