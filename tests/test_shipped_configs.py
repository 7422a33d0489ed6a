"""The example device files in firmware_configs/ stay valid as the schema evolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_agent_config
from hub_bridge.config import load_hub_config

CONFIGS = Path(__file__).resolve().parent.parent / "firmware_configs"


@pytest.mark.parametrize("name", ["van-gateway.yaml", "station.yaml"])
def test_agent_profiles_load(name: str) -> None:
    cfg = load_agent_config(CONFIGS / name)
    assert cfg.device.id


def test_hub_profile_loads() -> None:
    assert load_hub_config(CONFIGS / "hub.yaml").timeline.path.name == "timeline.db"
