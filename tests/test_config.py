"""Configuration files: the contract minimum, units, and errors as file:line: key: message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import load_agent_config
from edge_agent.platform.units import parse_bytes, parse_distance, parse_duration
from edge_agent.platform.yamlconf import ConfigError
from hub_bridge.config import load_hub_config

MINIMAL = """\
# edge agent
device: {id: van-042, fleet: acme}
broker: {url: "mqtt://127.0.0.1:1883"}
outbox: {path: /var/lib/edge-agent/outbox.db}
api: {listen: "127.0.0.1:8080"}
"""


def test_the_contract_minimum_loads(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(MINIMAL)
    cfg = load_agent_config(f)
    assert cfg.device.id == "van-042"
    assert cfg.broker.port == 1883
    assert cfg.outbox.max_bytes == 256 * 1024 * 1024
    hub = tmp_path / "hub.yaml"
    hub.write_text(
        'broker: {url: "mqtt://127.0.0.1:1883"}\n'
        'timeline: {url: "sqlite:///var/lib/hub-bridge/timeline.db"}\n'
        'api: {listen: "127.0.0.1:8090"}\n'
    )
    assert str(load_hub_config(hub).timeline.path) == "/var/lib/hub-bridge/timeline.db"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (MINIMAL.replace("van-042", "Van 42"), ":2: device.id:"),
        (MINIMAL + "outbox2: {}\n", ":6: outbox2: unknown key"),
        (MINIMAL.replace("mqtt://", "http://"), ":3: broker.url:"),
        (MINIMAL + "uplink:\n  ack_timeout: 5 parsecs\n", ":7: uplink.ack_timeout:"),
        ("device: {id: v, fleet: f\n", ":2: YAML: expected ',' or '}'"),
        ("- a list\n", ":1: the top level"),
        (MINIMAL.replace("outbox: {path: /var/lib/edge-agent/outbox.db}\n", ""), "outbox:"),
    ],
)
def test_errors_point_at_file_line_and_key(tmp_path: Path, text: str, where: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(f)
    assert str(info.value).startswith(str(f))
    assert where in str(info.value)


def test_config_command_masks_secrets_and_exits_2_on_errors(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(
        MINIMAL.replace(
            'broker: {url: "mqtt://127.0.0.1:1883"}',
            'broker: {url: "mqtts://b:8883", password: hunter2}',
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "--config", str(f)],
        capture_output=True,
        text=True,
        check=True,
    )
    effective = json.loads(out.stdout)
    assert effective["broker"]["password"] == "***"
    assert "hunter2" not in out.stdout
    f.write_text(MINIMAL + "bogus: 1\n")
    bad = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "--config", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"{f}:6: bogus: unknown key"


def test_units() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300
    assert parse_duration(12) == 12
    assert parse_bytes("64MiB") == 64 * 1024 * 1024
    assert parse_bytes("2kB") == 2000
    assert parse_distance("0.5km") == 500
    for bad in ("5 parsecs", "-3s", "", True, [1]):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_duration(bad)
