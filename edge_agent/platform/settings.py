"""Settings the agent and the hub share: the broker (URL, TLS, credentials, keepalive) and
listen addresses. Part of the platform layer: the hub reads these without the agent's domains."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from edge_agent.platform.redact import redact_url
from edge_agent.platform.units import Duration

__all__ = ["BrokerConfig", "TlsConfig", "parse_listen"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Section):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class BrokerConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive: Duration = 30.0
    session_expiry: Duration = 7 * 86400.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        shown = redact_url(url)  # the message is printed: never with the password
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"{shown!r}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"{shown!r}: no host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"{shown!r}: bad port") from None
        return url

    @property
    def host(self) -> str:
        """The broker's host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): the keys when set, else the URL's userinfo (percent-decoded)."""
        parts = urlsplit(self.url)
        username = self.username if self.username is not None else _unquote(parts.username)
        password = self.password if self.password is not None else _unquote(parts.password)
        return username, password

    @property
    def use_tls(self) -> bool:
        """TLS is selected by ``mqtts://`` (or a ``tls:`` section)."""
        return urlsplit(self.url).scheme in ("mqtts", "ssl") or self.tls is not None

    @property
    def port(self) -> int:
        """The port of the URL, or 8883 for TLS and 1883 otherwise."""
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)


def _unquote(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``; ``"[::1]:8080"`` works too."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)
