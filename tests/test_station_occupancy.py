"""Bay occupancy: hysteresis, hold and a stale sensor, with a fake clock."""

from __future__ import annotations

import pytest

from edge_agent.station.occupancy import BayChange, BayFresh, BayReport, BayStale, Occupancy

BELOW, ABOVE, HOLD, STALE = 2.0, 2.5, 1.0, 5.0


def bay() -> Occupancy:
    return Occupancy(BELOW, ABOVE, HOLD, STALE)


def feed(occ: Occupancy, readings: list[tuple[float, float]]) -> list[BayReport]:
    """Readings (t, metres), polling at each deadline the bay asks for before a reading."""
    out: list[BayReport] = []
    for t, metres in readings:
        while (d := occ.next_deadline()) is not None and d <= t:
            out += occ.poll(d)
        out += occ.reading(metres, t)
    return out


def every(start: float, stop: float, metres: float, step: float = 0.1) -> list[tuple[float, float]]:
    n = round((stop - start) / step)
    return [(start + i * step, metres) for i in range(n + 1)]


def test_occupied_after_the_hold_dated_from_the_first_reading() -> None:
    occ = bay()
    occ.watch(0.0)
    reports = feed(occ, every(0.0, 2.0, 3.5))
    assert reports == [BayChange(0.0, False)]  # the first state is reported too
    reports = feed(occ, every(3.0, 3.9, 1.2))
    assert reports == []  # not held long enough yet
    reports = feed(occ, every(4.0, 5.0, 1.2))
    assert reports == [BayChange(3.0, True)]
    assert occ.occupied is True


def test_a_short_dip_or_spike_is_no_change() -> None:
    occ = bay()
    feed(occ, every(0.0, 2.0, 3.5))
    # someone walks under the sensor for half a second
    assert feed(occ, every(2.1, 2.6, 1.0) + every(2.7, 6.0, 3.5)) == []
    assert occ.occupied is False


def test_the_band_between_thresholds_keeps_the_state_and_breaks_a_run() -> None:
    occ = bay()
    feed(occ, every(0.0, 2.0, 1.0))
    assert occ.occupied is True
    # the van's edge at the threshold: readings hover in the band, the bay stays occupied
    assert feed(occ, every(2.1, 10.0, 2.2)) == []
    assert occ.occupied is True
    # free needs readings above free_above for the whole hold, a band reading restarts it
    readings = [*every(10.1, 10.8, 3.0), (10.9, 2.3), *every(11.0, 11.9, 3.0)]
    assert feed(occ, readings) == []
    assert feed(occ, [(12.0, 3.0)]) == [BayChange(11.0, False)]


def test_flapping_at_one_threshold_does_not_flap_the_bay() -> None:
    occ = bay()
    feed(occ, every(0.0, 2.0, 3.0))
    flaps = [(2.0 + i * 0.1, 1.9 if i % 2 else 2.1) for i in range(200)]
    assert feed(occ, flaps) == []
    assert occ.occupied is False


def test_a_silent_sensor_is_stale_once_and_invents_no_change() -> None:
    occ = bay()
    occ.watch(0.0)
    feed(occ, every(0.0, 2.0, 1.0))
    assert occ.occupied is True
    assert occ.next_deadline() == pytest.approx(2.0 + STALE)
    assert occ.poll(6.9) == []
    assert occ.poll(7.0) == [BayStale(2.0 + STALE)]  # the same sum as the deadline
    assert occ.poll(100.0) == []  # once
    assert occ.next_deadline() is None
    assert occ.occupied is True  # silence says nothing about the van
    # readings come back: fresh once, and the state follows the readings with its hold
    reports = feed(occ, every(200.0, 201.0, 3.0))
    assert reports == [BayFresh(200.0), BayChange(200.0, False)]


def test_a_sensor_that_never_speaks_is_stale_from_when_it_was_opened() -> None:
    occ = bay()
    assert occ.next_deadline() is None  # not watched yet
    occ.watch(10.0)
    assert occ.poll(14.9) == []
    assert occ.poll(15.0) == [BayStale(15.0)]
    occ.watch(20.0)  # reopened while stale: still stale until a reading
    assert occ.stale and occ.poll(40.0) == []


def test_a_run_broken_by_a_stale_spell_starts_again() -> None:
    occ = bay()
    feed(occ, every(0.0, 2.0, 3.0))
    feed(occ, [(2.1, 1.0)])  # a run of occupied starts ...
    assert occ.poll(7.1) == [BayStale(2.1 + STALE)]
    # ... and after the silence the hold counts from the next reading
    assert feed(occ, [(8.0, 1.0)]) == [BayFresh(8.0)]
    assert feed(occ, [(8.5, 1.0)]) == []
    assert feed(occ, [(9.0, 1.0)]) == [BayChange(8.0, True)]


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="occupied_below < free_above"):
        Occupancy(2.5, 2.0, 1.0, 5.0)
    with pytest.raises(ValueError, match="stale_after_s"):
        Occupancy(2.0, 2.5, 1.0, 0.0)
