"""The ``station:`` section: defaults, units, device URLs and cross-checks, errors with lines."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import BaseModel, ConfigDict

from edge_agent.platform.yamlconf import ConfigError, load_model
from edge_agent.station.config import DistanceBayConfig, DockConfig, StationConfig

CHIP = "gpio:///dev/gpiochip0"


class Root(BaseModel):
    """The agent's file with only the station section (the lead adds it to AgentConfig)."""

    model_config = ConfigDict(extra="forbid")
    station: StationConfig


def load(text: str) -> StationConfig:
    return load_model(Root, "station.yaml", textwrap.dedent(text)).station


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value


FULL = f"""\
station:
  plan: /etc/edge-agent/plan.json
  gateout_codes: [GATEOUT, LEAVE]
  vehicle_prefix: "VAN:"
  dedup_window: 2s
  budget: 60ms
  docks:
    - id: dock-1
      door: "{CHIP}?line=17&bias=pull_up"
      bay: "{CHIP}?line=22"
      settle: 30ms
      cameras: [{{id: cam-1, source: /dev/video0}}]
      scanners: [{{id: hand-1, source: /dev/ttyACM0}}]
      signal:
        green: "{CHIP}?line=23&direction=output"
        red: "{CHIP}?line=24&direction=output"
        buzzer: "{CHIP}?line=25&direction=output"
        red_hold: 3s
    - id: dock-2
      bay:
        source: serial:///dev/ttyAMA1?baud=115200
        protocol: tfmini
        occupied_below: 180cm
        free_above: 2.2m
        hold: 500ms
"""


def test_a_full_section_with_units() -> None:
    # "180cm" is not a unit the agent knows: the message names the key and the line
    err = error(FULL)
    assert err.line == 23 and err.key == "station.docks.1.bay.occupied_below"
    assert "unknown unit 'cm'" in err.message

    cfg = load(FULL.replace("180cm", "1.8m"))
    assert cfg.gateout_codes == ["GATEOUT", "LEAVE"] and cfg.vehicle_prefix == "VAN:"
    assert cfg.dedup_window == 2.0 and cfg.budget == pytest.approx(0.06)
    one, two = cfg.docks
    assert one.settle == pytest.approx(0.03) and one.unstable_after == 2.0
    assert isinstance(one.bay, str) and one.bay.endswith("line=22")
    assert set(one.contact_lines()) == {"door", "bay"}
    assert one.contact_lines()["door"].bias == "pull_up"
    assert one.signal is not None and one.signal.red_hold == 3.0 and one.signal.green_hold == 2.0
    assert len(one.signal.urls()) == 3
    assert [c.id for c in one.cameras] == ["cam-1"] and [s.id for s in one.scanners] == ["hand-1"]
    assert isinstance(two.bay, DistanceBayConfig)
    assert (two.bay.occupied_below, two.bay.free_above, two.bay.hold) == (1.8, 2.2, 0.5)
    assert two.bay.stale_after == 5.0 and two.door is None and two.signal is None
    assert two.contact_lines() == {}


def test_defaults() -> None:
    cfg = load("station:\n  docks: [{id: d1}]\n")
    assert cfg.plan is None and cfg.state_dir is None
    assert cfg.gateout_codes == ["GATEOUT"] and cfg.vehicle_prefix == "VEH:"
    assert cfg.dedup_window == 3.0 and cfg.budget == pytest.approx(0.08)
    (dock,) = cfg.docks
    assert dock.door is None and dock.bay is None and dock.signal is None
    assert dock.settle == pytest.approx(0.05)
    bay = DistanceBayConfig(source="socket://127.0.0.1:4001", protocol="a02yyuw")
    assert (bay.occupied_below, bay.free_above, bay.hold, bay.stale_after) == (2.0, 2.5, 1.0, 5.0)


@pytest.mark.parametrize(
    ("dock", "line", "key", "message"),
    [
        ("{id: Dock 1}", 3, "station.docks.0.id", "should match pattern"),
        ("{id: d1, door: /dev/ttyUSB0}", 3, "station.docks.0.door", "a serial device cannot"),
        (
            f'{{id: d1, door: "{CHIP}?line=3&direction=output"}}',
            3,
            "station.docks.0.door",
            "a contact is an input line",
        ),
        (
            f'{{id: d1, door: "{CHIP}?line=3&edge=rising"}}',
            3,
            "station.docks.0.door",
            "needs edge=both",
        ),
        (
            f'{{id: d1, bay: "{CHIP}?line=3&direction=output"}}',
            3,
            "station.docks.0.bay",
            "a contact is an input line",
        ),
        ("{id: d1, bay: 5}", 3, "station.docks.0.bay", "a GPIO contact URL or"),
        (
            "{id: d1, bay: {source: gpsd://localhost, protocol: tfmini}}",
            3,
            "station.docks.0.bay.source",
            "a gpsd device cannot be used here",
        ),
        (
            "{id: d1, bay: {source: /dev/ttyS0, protocol: lidar}}",
            3,
            "station.docks.0.bay.protocol",
            "'tfmini', 'a02yyuw' or 'maxbotix'",
        ),
        (
            "{id: d1, bay: {source: /dev/ttyS0, protocol: tfmini, free_above: 1.5}}",
            3,
            "station.docks.0.bay",
            "free_above (1.5 m) must be above occupied_below (2 m)",
        ),
        (
            "{id: d1, bay: {source: /dev/ttyS0, protocol: tfmini, range: 3}}",
            3,
            "station.docks.0.bay.range",
            "unknown key",
        ),
        (
            f'{{id: d1, signal: {{green: "{CHIP}?line=5", red: "{CHIP}?line=6"}}}}',
            3,
            "station.docks.0.signal.green",
            "a signal line is an output (add direction=output)",
        ),
        ("{id: d1, signal: {red: x}}", 3, "station.docks.0.signal.green", "required key"),
        ("{id: d1, settle: 3s}", 3, "station.docks.0", "unstable_after (2s) must be above"),
        ("{id: d1, colour: red}", 3, "station.docks.0.colour", "unknown key"),
    ],
)
def test_bad_docks_name_the_key_and_line(dock: str, line: int, key: str, message: str) -> None:
    err = error(f"station:\n  docks:\n    - {dock}\n")
    assert err.key == key
    assert err.line == line
    assert message in err.message
    assert str(err).startswith(f"station.yaml:{line}: {key}: ")


def test_cross_checks_across_docks() -> None:
    err = error("station:\n  docks:\n    - {id: d1}\n    - {id: d2}\n    - {id: d1}\n")
    assert err.key == "station.docks" and err.line == 2
    assert "docks[2].id: dock 'd1' is also docks[0]" in err.message

    err = error(
        "station:\n  docks:\n"
        "    - {id: d1, cameras: [{id: cam, source: /dev/video0}]}\n"
        "    - {id: d2, scanners: [{id: cam, source: /dev/ttyACM0}]}\n"
    )
    assert "docks[1].scanners[0].id: 'cam' is also docks[0].cameras[0]" in err.message

    err = error(
        "station:\n  docks:\n"
        f'    - {{id: d1, door: "{CHIP}?line=4"}}\n'
        f'    - {{id: d2, signal: {{green: "{CHIP}?line=4&direction=output", '
        f'red: "{CHIP}?line=5&direction=output"}}}}\n'
    )
    assert "docks[1].signal.green: gpio:/dev/gpiochip0:4 is also docks[0].door" in err.message

    err = error(
        "station:\n  docks:\n"
        "    - {id: d1, bay: {source: /dev/ttyS0, protocol: tfmini}}\n"
        "    - {id: d2, bay: {source: 'serial:///dev/ttyS0', protocol: tfmini}}\n"
    )
    assert "docks[1].bay.source: serial:/dev/ttyS0 is also docks[0].bay.source" in err.message


def test_station_level_errors() -> None:
    err = error("station:\n  docks: []\n")
    assert err.key == "station.docks" and "at least 1" in err.message
    err = error("station:\n  vehicle_prefix: ''\n  docks: [{id: d1}]\n")
    assert err.key == "station.vehicle_prefix" and err.line == 2
    err = error("station:\n  gateout_codes: [OUT, OUT]\n  docks: [{id: d1}]\n")
    assert err.key == "station.gateout_codes" and "listed twice" in err.message
    err = error("station:\n  gateout_codes: ['VEH:OUT']\n  docks: [{id: d1}]\n")
    assert err.key == "station" and "starts with vehicle_prefix" in err.message
    err = error("station:\n  budget: soon\n  docks: [{id: d1}]\n")
    assert err.key == "station.budget" and err.line == 2


def test_models_validate_outside_yaml_too() -> None:
    dock = DockConfig.model_validate({"id": "d-9", "door": f"{CHIP}?line=1&active_low=true"})
    assert dock.contact_lines()["door"].active_low is True
    with pytest.raises(ValueError, match="needs edge=both"):
        DockConfig.model_validate({"id": "d-9", "bay": f"{CHIP}?line=1&edge=falling"})
