"""One GNSS pipeline: the live service and the replays run the same code, filters included."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.clock import Clock
from edge_agent.gnss.config import GnssConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.pipeline import GnssPipeline
from edge_agent.gnss.replay import fixes_from_bytes, replay_main
from edge_agent.gnss.service import GnssService
from edge_agent.platform.health import HealthRegistry
from edge_agent.wire.envelope import format_ts
from simulators.nmea_out import fix_to_nmea
from tests.harness import Running
from tests.test_gnss_service import DEADLINE, RecordingSink

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def fix(s: int, north_m: float, **kw: object) -> Fix:
    base = Fix(T0 + timedelta(seconds=s), 52.0 + north_m / 111_195.0, 4.0, mode=3, hdop=1.0)
    return replace(base, speed_mps=5.0, track_deg=0.0, **kw)  # type: ignore[arg-type]


def log_bytes() -> bytes:
    fixes = [fix(s, 5.0 * s) for s in range(12)]
    fixes[3] = replace(fixes[3], lat=0.0, lon=0.0)  # a receiver before its first fix
    fixes[6] = replace(fixes[6], hdop=45.0)  # a poor one
    fixes[9] = replace(fixes[9], lat=fixes[9].lat + 0.05)  # multipath: 5 km off for 1 s
    return "".join(line for f in fixes for line in fix_to_nmea(f)).encode()


async def test_the_service_keeps_and_reports_what_the_pipeline_does(tmp_path: Path) -> None:
    log = tmp_path / "drive.nmea"
    log.write_bytes(log_bytes())
    cfg = GnssConfig.model_validate({"source": f"file://{log}", "report": {"moving_interval": 3}})
    sink = RecordingSink()
    health = HealthRegistry()
    svc = GnssService(cfg, sink, health, Clock("auto", synced=lambda: False, has_rtc=False))
    kept: list[Fix] = []
    svc.add_listener(kept.append)
    async with Running(svc, check_still_running=True):
        await asyncio.wait_for(svc.ended.wait(), DEADLINE)

    pipeline = GnssPipeline(cfg.filter, cfg.report)
    outcomes = [*pipeline.feed(log_bytes()), *pipeline.end()]
    assert kept == [o.fix for o in outcomes if o.kept]
    assert [e["ts"] for e in sink.events] == [format_ts(o.fix.time) for o in outcomes if o.report]
    dropped = {o.dropped for o in outcomes} - {None}
    assert dropped == {"null_island", "hdop", "jump"}
    counters = health.counters("gnss")
    assert counters["dropped_null_island"] == counters["dropped_hdop"] == 1
    # the replay runs the same filters (by the log's time: the jump is re-anchored at once)
    replayed = list(fixes_from_bytes([log_bytes()]))
    assert len(replayed) == len(outcomes) - 2
    assert all(f.lat != 0.0 and f.hdop != 45.0 for f in replayed)


def test_the_replay_command_prints_only_the_fixes_the_agent_trusts(tmp_path: Path) -> None:
    log = tmp_path / "drive.nmea"
    log.write_bytes(log_bytes())
    out = io.StringIO()
    assert replay_main(str(log), out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 10 and all(r["lat"] != 0.0 for r in rows)


def test_ages_are_judged_by_the_clock_given() -> None:
    now = T0 + timedelta(minutes=10)
    pipeline = GnssPipeline(clock=lambda: now)
    assert pipeline.push_fix(fix(0, 0.0)).dropped == "too_old"
    assert pipeline.push_fix(fix(600, 0.0)).report == "first"
    no_clock = GnssPipeline()
    assert no_clock.push_fix(fix(0, 0.0)).kept
