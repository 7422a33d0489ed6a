"""Configuration of the agent's `gnss:` section (filled in by the gnss work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["GnssConfig"]


class GnssConfig(BaseModel):
    """The `gnss:` section; absent means the agent runs without gnss."""

    model_config = ConfigDict(extra="forbid")
