"""The signal pattern: which lines are on when, for each cue."""

from __future__ import annotations

import itertools

import pytest

from edge_agent.station.signal import OFF, Levels, SignalPattern


def schedule(p: SignalPattern, t: float) -> list[tuple[float, Levels]]:
    """Walk the pattern from ``t`` with next_change, as a driver does."""
    out = [(t, p.levels_at(t))]
    while (nxt := p.next_change(t)) is not None:
        t = nxt
        out.append((t, p.levels_at(t)))
        assert len(out) < 100
    return out


def test_green_is_steady_for_its_hold_then_off() -> None:
    p = SignalPattern(green_hold_s=2.0, red_hold_s=5.0)
    assert p.levels_at(0.0) == OFF and p.next_change(0.0) is None
    assert p.cue("green", 10.0)
    assert schedule(p, 10.0) == [(10.0, Levels(green=True)), (12.0, OFF)]
    assert p.levels_at(11.999) == Levels(green=True)
    assert p.levels_at(9.0) == OFF


def test_red_is_steady_with_three_beeps_of_150_ms() -> None:
    p = SignalPattern(green_hold_s=2.0, red_hold_s=5.0)
    p.cue("red", 100.0)
    got = schedule(p, 100.0)
    beep, quiet = Levels(red=True, buzzer=True), Levels(red=True)
    expected = [
        (100.0, beep),
        (100.15, quiet),
        (100.3, beep),
        (100.45, quiet),
        (100.6, beep),
        (100.75, quiet),
        (105.0, OFF),
    ]
    assert [lv for _, lv in got] == [lv for _, lv in expected]
    assert [t for t, _ in got] == pytest.approx([t for t, _ in expected])
    on_time = sum(b[0] - a[0] for a, b in itertools.pairwise(got) if a[1].buzzer)
    assert on_time == pytest.approx(0.45)


def test_beeps_are_cut_by_a_short_red_and_joined_without_a_gap() -> None:
    short = SignalPattern(red_hold_s=0.4)
    short.cue("red", 0.0)
    got = schedule(short, 0.0)
    assert got[-1] == (0.4, OFF)
    assert [lv.buzzer for _, lv in got] == [True, False, True, False]
    assert got[2][0] == pytest.approx(0.3) and got[3][0] == pytest.approx(0.4)

    solid = SignalPattern(red_hold_s=2.0, gap_s=0.0)
    solid.cue("red", 0.0)
    got = schedule(solid, 0.0)
    # one long beep: next_change skips the instants where nothing changes
    assert got == [
        (0.0, Levels(red=True, buzzer=True)),
        (pytest.approx(0.45), Levels(red=True)),
        (2.0, OFF),
    ]


def test_off_clears_at_once_and_red_replaces_green() -> None:
    p = SignalPattern()
    p.cue("green", 0.0)
    p.cue("off", 0.5)
    assert p.levels_at(0.5) == OFF and p.next_change(0.5) is None
    p.cue("green", 1.0)
    p.cue("red", 1.2)
    assert p.levels_at(1.2) == Levels(red=True, buzzer=True)
    p.cue("off", 2.0)
    assert p.levels_at(2.0) == OFF


def test_green_under_a_red_is_dropped_but_not_after_it() -> None:
    p = SignalPattern(green_hold_s=2.0, red_hold_s=5.0)
    p.cue("red", 0.0)
    assert not p.cue("green", 1.0)  # the misload stays visible
    assert p.levels_at(1.0).red and p.color == "red"
    assert p.cue("green", 5.0)  # the red is over
    assert p.levels_at(5.0) == Levels(green=True)
    p.cue("red", 6.0)
    assert p.cue("red", 6.5)  # a second misload restarts the red and its beeps
    assert p.levels_at(6.5).buzzer and p.levels_at(11.4).red and not p.levels_at(11.5).red


def test_bad_parameters_and_colours() -> None:
    with pytest.raises(ValueError, match="positive"):
        SignalPattern(green_hold_s=0.0)
    with pytest.raises(ValueError, match="unknown signal colour"):
        SignalPattern().cue("blue", 0.0)  # type: ignore[arg-type]
