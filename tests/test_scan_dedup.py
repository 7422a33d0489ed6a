"""Dedup of sightings, with the time passed in (a fake clock)."""

from __future__ import annotations

import pytest

from edge_agent.scan.dedup import Deduper


def test_consecutive_frames_are_one_scan_and_a_later_rescan_is_new() -> None:
    d = Deduper(window_s=2.0)
    frames = [0.0, 0.1, 0.2, 1.5, 3.0, 4.9]  # in sight the whole time: gaps under the window
    assert [d.is_new("cam", "QRCode", "A", t) for t in frames] == [True] + [False] * 5
    assert d.is_new("cam", "QRCode", "A", 7.0)  # out of sight for 2.1 s: scanned again
    assert d.suppressed == 5


def test_window_edges() -> None:
    d = Deduper(window_s=1.0)
    assert d.is_new("s", "Code128", "X", 10.0)
    assert not d.is_new("s", "Code128", "X", 11.0)  # exactly the window: still the same scan
    assert d.is_new("s", "Code128", "X", 12.001)


def test_other_code_symbology_or_source_is_its_own_scan() -> None:
    d = Deduper(window_s=5.0)
    assert d.is_new("cam", "QRCode", "A", 0.0)
    assert d.is_new("cam", "QRCode", "B", 0.1)
    assert d.is_new("cam", "DataMatrix", "A", 0.2)
    assert d.is_new("hand", "QRCode", "A", 0.3)
    assert not d.is_new("cam", "QRCode", "A", 0.4)


def test_zero_window_only_merges_the_same_instant_and_negative_is_refused() -> None:
    d = Deduper(window_s=0.0)
    assert d.is_new("s", "c", "t", 1.0)
    assert not d.is_new("s", "c", "t", 1.0)
    assert d.is_new("s", "c", "t", 1.001)
    with pytest.raises(ValueError, match="dedup window"):
        Deduper(window_s=-1)


def test_forgetting_old_codes_keeps_memory_bounded_and_behaviour_unchanged() -> None:
    d = Deduper(window_s=1.0)
    for i in range(10_000):
        assert d.is_new("cam", "QRCode", str(i), i * 0.01)
    assert len(d._last) <= 4097
    assert not d.is_new("cam", "QRCode", "9999", 100.0)
