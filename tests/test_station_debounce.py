"""The contact debouncer with a fake clock: every time is given, none is read."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.station.debounce import (
    ContactChange,
    ContactReport,
    ContactSettled,
    ContactUnstable,
    Debouncer,
)

SETTLE, UNSTABLE = 0.05, 2.0


def run(deb: Debouncer, edges: list[tuple[bool, float]], until: float) -> list[ContactReport]:
    """Feed edges, polling at every deadline the debouncer asks for, as a driver does."""
    out: list[ContactReport] = []
    for level, t in edges:
        while (d := deb.next_deadline()) is not None and d < t:
            out += deb.poll(d)
        out += deb.edge(level, t)
    while (d := deb.next_deadline()) is not None and d <= until:
        out += deb.poll(d)
    return out


def started(level: bool = False, t: float = 0.0) -> Debouncer:
    deb = Debouncer(SETTLE, UNSTABLE)
    assert deb.start(level, t) == []
    assert deb.poll(t + SETTLE) == [ContactChange(t, level)]  # the first level is a change
    return deb


def test_the_first_level_is_reported_once_it_held() -> None:
    deb = Debouncer(SETTLE, UNSTABLE)
    deb.start(True, 10.0)
    assert deb.next_deadline() == pytest.approx(10.0 + SETTLE)
    assert deb.poll(10.01) == []
    assert deb.poll(10.0 + SETTLE) == [ContactChange(10.0, True)]
    assert deb.stable is True
    assert deb.next_deadline() is None
    assert deb.poll(99.0) == []


def test_contact_bounce_gives_one_change_at_the_first_edge() -> None:
    deb = started(False)
    bounce = [(True, 5.000), (False, 5.002), (True, 5.003), (False, 5.006), (True, 5.009)]
    reports = run(deb, bounce, until=6.0)
    assert reports == [ContactChange(5.000, True)]
    # and closing again, with its own bounce
    back = [(False, 7.0), (True, 7.001), (False, 7.004)]
    assert run(deb, back, until=8.0) == [ContactChange(7.0, False)]


def test_a_glitch_that_returns_to_the_stable_level_is_no_change() -> None:
    deb = started(False)
    assert run(deb, [(True, 3.0), (False, 3.004)], until=4.0) == []
    assert deb.stable is False


def test_the_change_is_known_at_an_edge_even_without_a_poll() -> None:
    deb = started(False)
    deb.edge(True, 1.0)
    # no poll in between (a busy loop): the next edge tells the level held long enough
    assert deb.edge(False, 1.5) == [ContactChange(1.0, True)]
    assert deb.poll(1.5 + SETTLE) == [ContactChange(1.5, False)]


def test_a_door_left_half_open_is_unstable_once_then_settles() -> None:
    deb = started(False)
    chatter = [(i % 2 == 0, 20.0 + i * 0.02) for i in range(500)]  # 10 s of chatter every 20 ms
    reports = run(deb, chatter, until=40.0)
    unstable = [r for r in reports if isinstance(r, ContactUnstable)]
    assert unstable == [ContactUnstable(20.0 + UNSTABLE)]
    last_t = chatter[-1][1]
    # the last edge (i = 499) went to False, the stable level: settled, no change
    assert reports[-1] == ContactSettled(last_t + SETTLE)  # the deadline's own sum
    assert not any(isinstance(r, ContactChange) for r in reports)
    assert not deb.unstable

    # chatter that ends open: the change is dated by the last edge, not the chatter's start
    chatter = [(i % 2 == 1, 50.0 + i * 0.02) for i in range(300)]
    reports = run(deb, chatter, until=60.0)
    assert [type(r) for r in reports] == [ContactUnstable, ContactSettled, ContactChange]
    assert reports[-1] == ContactChange(chatter[-1][1], True)

    # a second half-open spell is reported again (once per spell)
    chatter = [(i % 2 == 0, 70.0 + i * 0.02) for i in range(300)]
    reports = run(deb, chatter, until=80.0)
    assert sum(isinstance(r, ContactUnstable) for r in reports) == 1


def test_unstable_is_reported_by_a_poll_while_edges_keep_coming() -> None:
    deb = started(False)
    deb.edge(True, 1.0)
    deb.edge(False, 1.04)
    assert deb.next_deadline() == pytest.approx(1.04 + SETTLE)
    for i in range(1, 100):
        deb.edge(i % 2 == 0, 1.04 + i * 0.03)
    # edges every 30 ms for 3 s: the unstable report came with the edge past 2 s
    assert deb.unstable
    assert deb.poll(1.04 + 99 * 0.03 + 0.01) == []  # no second report


def test_edges_out_of_order_never_run_time_backwards() -> None:
    deb = started(False)
    deb.edge(True, 5.0)
    deb.edge(False, 4.0)  # clamped to 5.0
    assert deb.next_deadline() == pytest.approx(5.0 + SETTLE)


def test_a_reopen_confirms_the_known_level_silently_and_reports_a_new_one() -> None:
    deb = started(True)
    assert run(deb, [(True, 30.0)], until=31.0) == []  # start() after a reopen, same level
    assert run(deb, [(False, 40.0)], until=41.0) == [ContactChange(40.0, False)]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unstable_after_s"):
        Debouncer(0.1, 0.05)
    with pytest.raises(ValueError, match="settle_s"):
        Debouncer(-1.0, 1.0)


def test_an_edge_storm_does_not_grow_memory() -> None:
    deb = started(False)
    t = 1.0

    def storm(n: int) -> None:
        nonlocal t
        for i in range(n):
            t += 0.001
            deb.edge(i % 2 == 0, t)

    storm(1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        storm(200_000)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096
    assert deb.unstable  # it did notice the storm


@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=0.2)), min_size=0, max_size=60
    )
)
def test_reports_alternate_and_follow_the_last_level(steps: list[tuple[bool, float]]) -> None:
    deb = started(False)
    t = 1.0
    edges = []
    for level, gap in steps:
        t += gap
        edges.append((level, t))
    reports = run(deb, edges, until=t + 10.0)
    changes = [r for r in reports if isinstance(r, ContactChange)]
    levels = [False] + [c.level for c in changes]
    assert all(a != b for a, b in itertools.pairwise(levels))  # no repeats
    assert deb.stable == (edges[-1][0] if edges else False)  # it ends at the last level
    times = [c.t for c in changes]
    assert times == sorted(times)
    kinds = [type(r) for r in reports if not isinstance(r, ContactChange)]
    for a, b in itertools.pairwise(kinds):
        assert a != b  # unstable and settled alternate: each spell reported once
