"""Credentials never leak (issue 8): the redactor, and every way out of a real agent.

The unit tests pin the redactor and the health registry; the end-to-end test runs a real agent
with a password in every URL of its configuration and reads everything it prints, reports, sends
to the hub and logs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import BrokerConfig
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.redact import RedactingFilter, redact_data, redact_text, redact_url
from simulators.broker import Mosquitto, free_port
from tests.harness import ROOT, Proc, get, wait_for, write_agent_config, write_hub_config

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://user:s3cr3t@broker:1883", "mqtt://user:***@broker:1883"),
        ("mqtts://user:p@ss/w0rd@broker", "mqtts://user:***@broker"),  # "@" and "/" inside
        ("rtsp://admin:pw@cam.local/stream1?fps=5", "rtsp://admin:***@cam.local/stream1?fps=5"),
        ("gpsd://u:p@10.0.0.1:2947", "gpsd://u:***@10.0.0.1:2947"),
        ("socket://host:1?password=x&baud=9600", "socket://host:1?password=***&baud=9600"),
        ("http://cam/x?Token=a;api_key=b#frag", "http://cam/x?Token=***;api_key=***#frag"),
        ("http://cam/x?auth=&rate=2", "http://cam/x?auth=&rate=2"),  # empty: nothing to hide
        ("mqtt://user@broker", "mqtt://user@broker"),  # a user name alone is not a secret
        ("serial:///dev/ttyUSB0?baud=9600", "serial:///dev/ttyUSB0?baud=9600"),
        ("/dev/video0", "/dev/video0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # redacting twice changes nothing more


def test_redact_text_finds_urls_inside_messages_and_reprs() -> None:
    text = "rtsp://a:pw1@cam/x: cannot open; error=ConnectionError('mqtt://u:pw2@h:1883 refused')"
    out = redact_text(text)
    assert "pw1" not in out and "pw2" not in out
    assert "rtsp://a:***@cam/x: cannot open" in out and "mqtt://u:***@h:1883 refused" in out


def test_redact_data_masks_secret_keys_and_urls_in_nested_data() -> None:
    data = {
        "broker": {"url": "mqtt://u:pw@h", "password": "pw", "keepalive": 30},
        "l": ["x://a:pw@b"],
    }
    out = redact_data(data)
    assert "pw" not in json.dumps(out).replace("***", "")
    assert out["broker"]["keepalive"] == 30
    assert redact_data(data, mask_keys=False)["broker"]["password"] == "pw"


@given(st.text(max_size=200))
def test_redaction_is_total_and_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def test_log_filter_redacts_messages_args_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test-secrets-filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("camera %s failed", f"rtsp://u:{SECRET}@cam/1")
        try:
            raise ConnectionError(f"mqtt://u:{SECRET}@h refused")
        except ConnectionError:
            logger.exception("broker down")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert all(SECRET not in r for r in records), records
    assert "rtsp://u:***@cam/1" in records[0] and "mqtt://u:***@h refused" in records[1]


def test_health_registry_redacts_every_detail_string(caplog: pytest.LogCaptureFixture) -> None:
    health = HealthRegistry()
    with caplog.at_level(logging.INFO, logger="edge_agent.platform.health"):
        health.set_state("broker", "disconnected", url=f"mqtt://u:{SECRET}@h", password=SECRET)
        health.set_state("cam", "disconnected", error=f"rtsp://a:{SECRET}@c/1: no frame")
        health.set_state("gps", "ok", nested={"sources": [f"gpsd://u:{SECRET}@h:2947"]})
    snap = json.dumps(health.snapshot())
    assert SECRET not in snap and SECRET not in caplog.text
    assert "mqtt://u:***@h" in snap and "rtsp://a:***@c/1: no frame" in snap


def test_config_printer_hides_every_credential(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        json.dumps(
            {
                "device": {"id": "van-1", "fleet": "acme"},
                "broker": {"url": f"mqtt://user:{SECRET}@127.0.0.1:1883", "password": SECRET},
                "outbox": {"path": str(tmp_path / "o.db")},
                "gnss": {"source": f"gpsd://user:{SECRET}@127.0.0.1:2947"},
                "scan": {
                    "cameras": [
                        {"id": "c1", "source": f"rtsp://admin:{SECRET}@cam/1?token={SECRET}"}
                    ]
                },
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert SECRET not in out
    dump = json.loads(out)
    assert dump["broker"]["url"] == "mqtt://user:***@127.0.0.1:1883"
    assert dump["scan"]["cameras"][0]["source"] == "rtsp://admin:***@cam/1?token=***"


def test_hub_config_printer_hides_credentials(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.yaml"
    url = f"mqtt://hub:{SECRET}@127.0.0.1:1883"
    cfg.write_text(json.dumps({"broker": {"url": url, "password": SECRET}}))
    out = subprocess.run(
        [sys.executable, "-m", "hub_bridge", "config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert SECRET not in out
    dump = json.loads(out)
    assert dump["broker"]["url"] == "mqtt://hub:***@127.0.0.1:1883"
    assert dump["ingest"]["dead_letter_max_rows"] == 10_000  # the limits are shown too


def test_config_errors_do_not_print_credentials(tmp_path: Path) -> None:
    for section in (
        {"broker": {"url": f"http://user:{SECRET}@h:1883"}},  # bad scheme
        {"gnss": {"source": f"socket://user:{SECRET}@h:1?password={SECRET}"}},  # unknown param
        {"gnss": {"source": f"ftp://user:{SECRET}@h"}},  # unknown source
    ):
        cfg = tmp_path / "bad.yaml"
        base = {"device": {"id": "van-1", "fleet": "acme"}, "outbox": {"path": "o.db"}}
        cfg.write_text(json.dumps({**base, **section}))
        run = subprocess.run(
            [sys.executable, "-m", "edge_agent", "config", "--config", str(cfg)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert run.returncode == 2, run.stderr
        assert SECRET not in run.stderr and "***" in run.stderr, run.stderr


def test_a_running_agent_leaks_no_credential(tmp_path: Path, broker: Mosquitto) -> None:
    """Passwords in the broker URL, broker.password, the GNSS source and a camera URL: none of
    them in /v1/health, the device.health event stored at the hub, or the agent's log."""
    dead = free_port()  # nothing listens: the GNSS source and the camera fail, and say so
    url = broker.url.replace("mqtt://", f"mqtt://user:{SECRET}@")
    cfg = write_agent_config(
        tmp_path,
        url,
        broker={"password": SECRET, "username": "user"},
        health={"interval": "1s"},
        gnss={"source": f"socket://gps:{SECRET}@127.0.0.1:{dead}", "reconnect_max": "1s"},
        scan={
            "cameras": [
                {
                    "id": "cam-1",
                    "source": f"rtsp://admin:{SECRET}@127.0.0.1:{dead}/s?token={SECRET}",
                    "reconnect_max": "1s",
                }
            ]
        },
    )
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    db = tmp_path / "timeline.db"

    def health_events() -> list[str]:
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return [b for (b,) in con.execute("SELECT body FROM events WHERE type='device.health'")]
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    try:
        port = agent.api_port or 0
        # the broker connected (through the URL with credentials), the camera and GNSS failed
        wait_for(
            lambda: (
                get(port, "/v1/health")["components"].get("broker", {}).get("state") == "connected"
                and "cam-1" in json.dumps(get(port, "/v1/health")["components"])
                and "gnss" in get(port, "/v1/health")["components"]
            ),
            30,
            "broker connected and the camera and GNSS reporting",
        )
        wait_for(lambda: len(health_events()) >= 2, 30, "device.health events at the hub")
        health = json.dumps(get(port, "/v1/health"))
        assert SECRET not in health
        assert "***" in health  # the URLs are there, masked
        for body in health_events():
            assert SECRET not in body
    finally:
        agent.stop()
        hub.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "cam-1" in log or "scan" in log  # the failures were logged...
    assert SECRET not in log  # ...without the password


def test_broker_credentials_come_from_the_keys_else_from_the_url() -> None:
    assert BrokerConfig(url="mqtt://u%40x:p%3Aw@h").credentials == ("u@x", "p:w")
    keys = BrokerConfig(url="mqtt://u:p@h", username="k", password="kp")
    assert keys.credentials == ("k", "kp")
    assert BrokerConfig(url="mqtt://h").credentials == (None, None)


def test_a_path_to_a_secret_is_shown_the_secret_is_not() -> None:
    from edge_agent.platform.yamlconf import mask_secrets

    shown = mask_secrets(
        {"api": {"token_file": "/etc/edge-agent/api-token", "token": "t" * 20}, "key_dir": "/k"}
    )
    assert shown == {
        "api": {"token_file": "/etc/edge-agent/api-token", "token": "***"},
        "key_dir": "/k",
    }
