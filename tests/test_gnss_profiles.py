"""GNSS receiver profiles: every shipped profile loads, every sentence is checksummed right and
is what the service writes to a real pty; a device file composes one by name."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_agent.clock import Clock
from edge_agent.config import load_agent_config
from edge_agent.drivers.serialport import SerialSource
from edge_agent.gnss import profiles as profiles_module
from edge_agent.gnss.baud import STANDARD_BAUDS
from edge_agent.gnss.config import GnssConfig
from edge_agent.gnss.profiles import ReceiverProfile, load_profile, profile_names, profiles
from edge_agent.gnss.service import GnssService, make_source
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.yamlconf import ConfigError, load_model
from edge_agent.recorder import MemorySink
from simulators.gnss import Driver, GnssSimulator, PtyPort, Waypoint, run_simulation
from tests.harness import Running

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ROOT / "edge_agent" / "gnss" / "profiles"
FIRMWARE = ROOT / "firmware_configs" / "gnss"
VAN = ROOT / "firmware_configs" / "van-gateway.yaml"
ROUTE = [Waypoint(52.3731, 4.8922), Waypoint(52.3600, 4.8852)]
NAMES = sorted(p.stem for p in PACKAGED.glob("*.yaml"))
PREFIX = {"UBX/PUBX": "$PUBX,", "PMTK": "$PMTK", "SiRF NMEA": "$PSRF"}
DEADLINE = 15.0


def nmea_xor(body: str) -> str:
    """The checksum computed here, apart from the project's parser."""
    return f"{reduce(lambda acc, ch: acc ^ ord(ch), body, 0):02X}"


def all_sentences(p: ReceiverProfile) -> list[str]:
    return [c.sentence for c in (*p.init, *p.extra)]


def fields(sentence: str) -> list[str]:
    return sentence[1 : sentence.index("*")].split(",")


def test_the_shipped_set() -> None:
    # The vendors issue 13 asks for, each with at least one part.
    assert profile_names() == NAMES
    assert {profiles()[n].vendor for n in NAMES} >= {"u-blox", "Quectel", "MediaTek", "SiRF (CSR)"}
    assert {"ublox-m8", "ublox-m9", "quectel-l76", "quectel-l80", "mediatek-mt3339"} <= set(NAMES)
    assert "sirf-star4" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_profile_loads_and_validates(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.bauds[0] == p.baud
    assert set(p.bauds) <= set(STANDARD_BAUDS) | {p.baud}
    assert p.baud_source and p.rate_source
    assert p.init
    for command in (*p.init, *p.extra):
        assert command.source.strip() and command.does.strip()
        assert command.sentence.startswith(PREFIX[p.protocol])


@pytest.mark.parametrize("name", NAMES)
def test_every_checksum_recomputed(name: str) -> None:
    for sentence in all_sentences(load_profile(name)):
        body, _, given = sentence[1:].rpartition("*")
        assert sentence.isascii()
        assert given == nmea_xor(body), sentence


@pytest.mark.parametrize("name", NAMES)
def test_init_sets_the_rate_and_keeps_what_the_assembler_needs(name: str) -> None:
    p = load_profile(name)
    init = [fields(s) for s in p.init_sentences]
    if p.protocol == "PMTK":
        (interval,) = (f[1] for f in init if f[0] == "PMTK220")
        assert int(interval) == round(1000 / p.rate_hz)
        (divisors,) = (f[1:] for f in init if f[0] == "PMTK314")
        assert len(divisors) == 19
        gll, rmc, vtg, gga, gsa = (int(x) for x in divisors[:5])
        assert (rmc, gga, gsa) == (1, 1, 1)
        assert (gll, vtg) == (0, 0)
    elif p.protocol == "SiRF NMEA":
        period = {f[1]: int(f[3]) for f in init if f[0] == "PSRF103" and f[2] == "00"}
        assert period["00"] == period["04"] == round(1 / p.rate_hz)  # GGA, RMC
        assert period["01"] == period["05"] == 0  # GLL, VTG off
        assert all(f[4] == "01" for f in init)  # checksums on
    else:
        # u-blox: PUBX,40 only (no binary init); the rate is the receiver's 1 Hz default.
        assert p.rate_hz == 1.0
        rates = {f[2]: f[3:8] for f in init if f[:2] == ["PUBX", "40"]}
        assert len(rates) == len(init)
        assert rates["GGA"] == rates["RMC"] == ["1"] * 5
        assert rates["GLL"] == rates["VTG"] == ["0"] * 5


def test_firmware_configs_holds_the_same_files() -> None:
    assert sorted(p.stem for p in FIRMWARE.glob("*.yaml")) == NAMES
    for name in NAMES:
        ours = (FIRMWARE / f"{name}.yaml").read_bytes()
        assert ours == (PACKAGED / f"{name}.yaml").read_bytes()


# -- bad profiles ---------------------------------------------------------------------------


def profile_text(**override: str) -> str:
    base = {
        "name": "x",
        "vendor": "MediaTek",
        "parts": "[MT3339]",
        "protocol": "PMTK",
        "baud": "9600",
        "baud_source": "'a datasheet, UART'",
        "bauds": "[9600, 4800]",
        "rate_hz": "1",
        "rate_source": "'a protocol spec, PMTK220'",
        "init": "[{sentence: '$PMTK220,1000*1F', does: rate, source: 'a protocol spec, PMTK220'}]",
    }
    base.update(override)
    return "".join(f"{k}: {v}\n" for k, v in base.items())


def test_a_good_profile_text_loads() -> None:
    assert load_model(ReceiverProfile, "x.yaml", profile_text()).init_sentences == [
        "$PMTK220,1000*1F"
    ]


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        (
            {"init": "[{sentence: '$PMTK220,1000*1E', does: rate, source: 'a spec, PMTK220'}]"},
            "init.0.sentence",
            "checksum is 1E, the sentence needs 1F",
        ),
        (
            {"init": "[{sentence: '$PMTK220,1000', does: rate, source: 'a spec, PMTK220'}]"},
            "init.0.sentence",
            "not '$BODY*HH'",
        ),
        ({"bauds": "[4800, 9600]"}, "", "must start with the default baud 9600"),
        ({"bauds": "[9600, 9600]"}, "bauds", "tried twice"),
        ({"protocol": "UBX"}, "protocol", "Input should be"),
        ({"rate_hz": "0"}, "rate_hz", "greater than 0"),
        ({"init": "[]"}, "init", "at least 1"),
        ({"name": "Ublox M8"}, "name", "lower-case words"),
    ],
)
def test_a_bad_profile_is_a_config_error(override: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_model(ReceiverProfile, "x.yaml", profile_text(**override))
    assert err.value.key == key
    assert message in err.value.message


def test_the_loader_checks_the_name_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mtk.yaml").write_text(profile_text(name="other"), encoding="utf-8")
    monkeypatch.setattr(profiles_module, "_folder", lambda: tmp_path)
    profiles.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"mtk\.yaml: name: 'other' is not the file's 'mtk'"):
            profiles()
        (tmp_path / "mtk.yaml").write_text(profile_text(name="mtk"), encoding="utf-8")
        (tmp_path / "README.md").write_text("not a profile", encoding="utf-8")
        profiles.cache_clear()
        assert profile_names() == ["mtk"]
    finally:
        monkeypatch.undo()
        profiles.cache_clear()
    assert profile_names() == NAMES


# -- composition ------------------------------------------------------------------------------


def test_no_profile_keeps_the_defaults() -> None:
    c = GnssConfig.model_validate({"source": "/dev/ttyACM0"})
    assert c.profile is None
    assert c.bauds == list(STANDARD_BAUDS)
    assert c.init == []


@pytest.mark.parametrize("name", NAMES)
def test_the_profile_fills_bauds_and_init(name: str) -> None:
    p = load_profile(name)
    c = GnssConfig.model_validate({"source": "/dev/ttyACM0", "profile": name})
    assert c.bauds == p.bauds
    assert c.init == [cmd.sentence for cmd in p.init]
    # What the serial driver gets: the profile's trial order, the sentences with CRLF.
    src = make_source(c.spec, c)
    assert isinstance(src, SerialSource)
    assert src.bauds == p.bauds
    assert src.init == [f"{cmd.sentence}\r\n".encode() for cmd in p.init]


def test_keys_the_file_sets_win() -> None:
    c = GnssConfig.model_validate(
        {"source": "/dev/ttyUSB0", "profile": "sirf-star4", "bauds": [38400], "init": []}
    )
    assert (c.bauds, c.init) == ([38400], [])
    own = ["$PSRF103,03,00,00,01"]
    c = GnssConfig.model_validate({"source": "/dev/ttyUSB0", "profile": "sirf-star4", "init": own})
    assert c.init == own
    assert c.bauds == load_profile("sirf-star4").bauds
    # A dump validates back to the same configuration (edge-agent config, cmd/config).
    again = GnssConfig.model_validate(c.model_dump())
    assert again == c


def test_a_fixed_baud_in_the_url_still_gets_the_init() -> None:
    c = GnssConfig.model_validate(
        {"source": "serial:///dev/ttyUSB0?baud=38400", "profile": "ublox-m9"}
    )
    src = make_source(c.spec, c)
    assert isinstance(src, SerialSource)
    assert src.baud == 38400
    assert len(src.init) == len(load_profile("ublox-m9").init)


def test_unknown_profile_in_a_device_file(tmp_path: Path) -> None:
    text = VAN.read_text(encoding="utf-8")
    head, _, _ = text.partition("gnss:")
    path = tmp_path / "van.yaml"
    path.write_text(head + "gnss:\n  source: /dev/ttyACM0\n  profile: ublox-m7\n", "utf-8")
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    e = err.value
    assert e.key == "gnss.profile"
    assert e.line == head.count("\n") + 3
    assert "unknown receiver profile 'ublox-m7'" in e.message
    for name in NAMES:
        assert name in e.message


def test_a_known_profile_in_a_device_file(tmp_path: Path) -> None:
    text = VAN.read_text(encoding="utf-8")
    head, _, _ = text.partition("gnss:")
    path = tmp_path / "van.yaml"
    path.write_text(head + "gnss: {profile: quectel-l80, source: /dev/ttyS0}\n", "utf-8")
    cfg = load_agent_config(path)
    assert cfg.gnss is not None
    assert cfg.gnss.init == load_profile("quectel-l80").init_sentences


def test_a_profile_name_of_the_wrong_type() -> None:
    with pytest.raises(ValidationError, match="valid string"):
        GnssConfig.model_validate({"source": "/dev/ttyACM0", "profile": ["ublox-m8"]})


# -- the real service on a pty ---------------------------------------------------------------


async def until(condition: object, what: str) -> None:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("name", NAMES)
async def test_the_service_writes_the_profile_to_the_receiver(tmp_path: Path, name: str) -> None:
    p = load_profile(name)
    # The receiver talks at the part's default rate: the first one the profile's order tries.
    port = PtyPort(tmp_path / "ttyGNSS", baud=p.baud)
    port.open()
    sim = GnssSimulator(Driver(ROUTE), rate_hz=10.0, start=datetime.now(UTC), seed=5)
    sim_task = asyncio.create_task(run_simulation(sim, port))
    expected = b"".join(s.encode("ascii") + b"\r\n" for s in all_sentences(p)[: len(p.init)])
    clock = Clock("system")
    config = GnssConfig.model_validate(
        {"source": str(port.path), "profile": name, "watchdog": "2s", "reconnect_max": "0.3s"}
    )
    svc = GnssService(config, MemorySink(clock), HealthRegistry(), clock)
    try:
        async with Running(svc, check_still_running=True):
            with svc.subscribe() as sub:
                async with asyncio.timeout(DEADLINE):
                    await anext(sub)  # the receiver was found and gives fixes
                await until(lambda: len(port.received) >= len(expected), "the init sentences")
                assert port.port_baud() == p.baud
    finally:
        sim_task.cancel()
        port.close()
    assert bytes(port.received) == expected
