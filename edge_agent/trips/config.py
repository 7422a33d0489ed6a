"""Configuration of the agent's `trips:` section (filled in by the trips work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["TripsConfig"]


class TripsConfig(BaseModel):
    """The `trips:` section; absent means the agent runs without trips."""

    model_config = ConfigDict(extra="forbid")
