"""Configuration of the agent's `scan:` section (filled in by the scan work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ScanConfig"]


class ScanConfig(BaseModel):
    """The `scan:` section; absent means the agent runs without scan."""

    model_config = ConfigDict(extra="forbid")
