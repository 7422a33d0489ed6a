"""Fix filters and adaptive reporting, driven by fix times and a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.gnss.config import FilterConfig, ReportConfig
from edge_agent.gnss.filters import AdaptiveReporter, FixFilter
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.geo import angle_between, distance_m

T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
# One degree of latitude is about 111.2 km: 1e-4 degrees is about 11 m.
M_PER_DEG = 111_195.0


def fix_at(
    seconds: float,
    north_m: float = 0.0,
    *,
    speed: float | None = 0.0,
    track: float | None = None,
    **kw: object,
) -> Fix:
    base = Fix(
        time=T0 + timedelta(seconds=seconds),
        lat=52.0 + north_m / M_PER_DEG,
        lon=4.0,
        mode=3,
        speed_mps=speed,
        track_deg=track,
        hdop=1.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class FakeClock:
    """Stands in for the wall clock: the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def test_geometry() -> None:
    assert distance_m(52.0, 4.0, 52.0, 4.0) == 0.0
    assert distance_m(52.0, 4.0, 53.0, 4.0) == pytest.approx(M_PER_DEG, rel=1e-3)
    assert angle_between(350.0, 10.0) == pytest.approx(20.0)
    assert angle_between(10.0, 190.0) == pytest.approx(180.0)


def test_each_drop_reason_is_counted() -> None:
    f = FixFilter(FilterConfig(max_hdop=5.0, max_speed_mps=50.0, jump_reset_after=5))
    clock = FakeClock(T0)
    assert f.check(fix_at(0), clock.now) is None
    cases = [
        (replace(fix_at(1), mode=1), "invalid"),
        (replace(fix_at(1), lat=91.0), "invalid"),
        (replace(fix_at(1), lat=float("nan")), "invalid"),
        (replace(fix_at(1), lat=0.0, lon=0.0), "null_island"),
        (replace(fix_at(1), hdop=9.9), "hdop"),
        (fix_at(-120), "too_old"),
        (fix_at(60), "in_future"),
        (fix_at(0), "duplicate"),
        (fix_at(-1), "out_of_order"),
        (fix_at(1, north_m=500), "jump"),
    ]
    for fx, reason in cases:
        assert f.check(fx, clock.now) == reason, reason
    assert f.check(fix_at(1, north_m=10), clock.tick(1)) is None
    assert f.counts == {
        "invalid": 3,
        "null_island": 1,
        "hdop": 1,
        "too_old": 1,
        "in_future": 1,
        "duplicate": 1,
        "out_of_order": 1,
        "jump": 1,
    }


def test_age_checks_follow_the_clock_and_are_skipped_without_one() -> None:
    f = FixFilter(FilterConfig(max_age=30.0, max_ahead=5.0))
    clock = FakeClock(T0 + timedelta(seconds=31))
    assert f.check(fix_at(0), clock.now) == "too_old"
    assert f.check(fix_at(0), None) is None  # no trustworthy clock: not judged by age
    clock.tick(-31 - 6)  # the clock is now 6 s behind the next fix
    assert f.check(fix_at(1), clock.now) == "in_future"
    assert f.check(fix_at(1), clock.tick(2)) is None


def test_filters_can_be_disabled() -> None:
    f = FixFilter(FilterConfig(max_hdop=None, drop_null_island=False))
    assert f.check(replace(fix_at(0), hdop=99.0, lat=0.0, lon=0.0)) is None


def test_multipath_jump_is_dropped_and_the_track_goes_on() -> None:
    f = FixFilter(FilterConfig(max_speed_mps=50.0, jump_reset_after=3))
    kept = [f.check(fix_at(t, north_m=10 * t)) for t in range(5)]
    assert kept == [None] * 5
    assert f.check(fix_at(5, north_m=900)) == "jump"  # multipath: 850 m in 1 s
    assert f.check(fix_at(6, north_m=60)) is None  # back on the road
    assert f.counts["jump"] == 1
    assert f.reanchored == 0


def test_a_wrong_anchor_is_replaced_when_later_fixes_agree() -> None:
    f = FixFilter(FilterConfig(max_speed_mps=50.0, jump_reset_after=3))
    assert f.check(fix_at(0, north_m=5000)) is None  # first fix was far off (cold start)
    assert f.check(fix_at(1, north_m=0)) == "jump"
    assert f.check(fix_at(2, north_m=10)) == "jump"
    assert f.check(fix_at(3, north_m=20)) is None  # three agreeing fixes: re-anchored
    assert f.reanchored == 1
    assert f.check(fix_at(4, north_m=30)) is None
    # Jumps that disagree with each other never re-anchor.
    g = FixFilter(FilterConfig(max_speed_mps=50.0, jump_reset_after=3))
    assert g.check(fix_at(0)) is None
    assert [g.check(fix_at(t, north_m=(-1) ** t * 3000)) for t in range(1, 6)] == ["jump"] * 5


def report_cfg(**kw: float) -> ReportConfig:
    base = {
        "moving_interval": 10.0,
        "stopped_interval": 300.0,
        "heading_change_deg": 30.0,
        "distance": 250.0,
        "moving_speed_mps": 2.0,
    }
    base.update(kw)
    return ReportConfig.model_validate(base)


def test_stopped_van_pings_every_stopped_interval() -> None:
    r = AdaptiveReporter(report_cfg())
    reasons = [r.step(fix_at(t, speed=0.0)) for t in range(3600)]
    reported = [t for t, why in enumerate(reasons) if why]
    assert reported == list(range(0, 3600, 300))
    assert reasons[0] == "first"
    assert r.counts == {"first": 1, "interval": 11}


def test_moving_van_pings_every_moving_interval_and_on_start_and_stop() -> None:
    r = AdaptiveReporter(report_cfg(distance=10_000.0))
    reasons: dict[int, str] = {}
    for t in range(120):
        moving = 10 <= t < 100
        speed = 15.0 if moving else 0.0
        north = 15.0 * (min(max(t, 10), 100) - 10)
        why = r.step(fix_at(t, north, speed=speed, track=0.0 if moving else None))
        if why:
            reasons[t] = why
    assert reasons[0] == "first"
    assert reasons[10] == "started"
    assert [t for t, w in reasons.items() if w == "interval"] == list(range(20, 100, 10))
    assert reasons[100] == "stopped"
    assert len(reasons) == 1 + 1 + 8 + 1


def test_heading_change_and_distance_trigger_pings() -> None:
    r = AdaptiveReporter(report_cfg(moving_interval=1000.0, distance=100.0))
    assert r.step(fix_at(0, 0, speed=10.0, track=0.0)) == "first"
    assert r.step(fix_at(1, 10, speed=10.0, track=20.0)) is None  # 20 degrees: not yet
    assert r.step(fix_at(2, 20, speed=10.0, track=45.0)) == "heading"
    assert r.step(fix_at(3, 30, speed=10.0, track=50.0)) is None
    assert r.step(fix_at(12, 125, speed=10.0, track=50.0)) == "distance"  # 105 m from the last


def test_unknown_speed_is_derived_from_positions() -> None:
    r = AdaptiveReporter(report_cfg())
    assert r.step(fix_at(0, 0, speed=None)) == "first"
    assert r.step(fix_at(1, 20, speed=None)) == "started"  # 20 m in 1 s
    assert r.moving


def test_a_day_at_1hz_is_not_86400_pings() -> None:
    """A working day: parked, driving in legs with turns, parked; a 1 Hz receiver."""
    r = AdaptiveReporter(report_cfg())
    pings = 0
    north = 0.0
    for t in range(86_400):
        driving = 8 * 3600 <= t < 17 * 3600 and (t // 600) % 2 == 0
        speed = 12.0 if driving else 0.0
        north += speed
        track = ((t // 120) * 40.0) % 360.0 if driving else None
        if r.step(fix_at(t, north, speed=speed, track=track)):
            pings += 1
    assert 500 < pings < 6000
