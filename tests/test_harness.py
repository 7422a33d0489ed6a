"""The end-to-end harness itself: a service whose port was taken between ``free_port`` and
its bind (the test workers run in parallel) is started again on another port, and a service
that exits at start is reaped (a process object left behind fails a later test with a
ResourceWarning)."""

from __future__ import annotations

import gc
import json
import socket
import warnings
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from tests.harness import Proc, write_hub_config


def test_a_port_taken_before_the_bind_is_replaced(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_hub_config(tmp_path, broker.url)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        cfg = json.loads(config.read_text())
        cfg["api"]["listen"] = f"127.0.0.1:{taken}"
        config.write_text(json.dumps(cfg))
        hub = Proc("hub_bridge", config, tmp_path / "hub.log")
        try:
            hub.start()
            assert hub.api_port is not None and hub.api_port != taken
            assert "address already in use" in (tmp_path / "hub.log").read_text()
        finally:
            hub.stop()


def test_a_service_that_exits_at_start_is_reaped(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_hub_config(tmp_path, broker.url, timeline=tmp_path / "no" / "such" / "t.db")
    cfg = json.loads(config.read_text())
    cfg["timeline"]["url"] = "nosuch://x"  # refused at start: the process exits
    config.write_text(json.dumps(cfg))
    hub = Proc("hub_bridge", config, tmp_path / "hub.log")
    with pytest.raises(AssertionError, match="exited"):
        hub.start()
    assert hub.proc is not None and hub.proc.returncode is not None
    assert hub.proc.stdout is not None and hub.proc.stdout.closed
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        hub.proc = None
        gc.collect()


def test_a_reload_right_after_start_never_ends_the_broker() -> None:
    """Mosquitto listens before it handles SIGHUP: ``start`` returns only once it says it is
    running. Signalled as soon as the port answered (polled every millisecond), 4 brokers in 100
    died here; ``start`` polls every 20 ms, so without the wait this fails only now and then."""
    for _ in range(20):
        with Mosquitto() as broker:
            broker.reload()
            assert broker.proc is not None and broker.proc.poll() is None, broker.log[-500:]
