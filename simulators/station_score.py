"""Scoring a station's events against a simulated shift's truth (``simulators.depot``).

The events are plain JSON objects with ``type`` and ``data``: the lines ``edge-agent load
replay`` prints (``{type, ts, data}``) or the envelopes ``hub-bridge events`` exports; anything
but ``load.*`` is ignored. Per category the score counts what the truth expects, what the events
found of it and what they reported beyond it (wrong or repeated):

- ``misload``: (parcel, dock, vehicle, expected route, vehicle and dock) per misload;
- ``unknown``: (parcel, dock, vehicle) per parcel on no route;
- ``missing``: (route, vehicle, parcel) per parcel a departing van leaves without, from the
  ``load.missing`` events (also broken down by why: left behind, loaded unread, misloaded
  elsewhere);
- ``gateout``: one ``load.gateout`` per departure (route, vehicle, dock), whose counts and
  missing list must be the truth's (``wrong`` counts those that differ);
- ``verified``: (parcel, route, vehicle, dock) once each.

A score is ``ok`` when every category found all it expected and nothing extra, and no gate-out
is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Category", "StationScore", "read_events", "score_shift"]

_SHOW = 20  # how many problems a summary lists


@dataclass
class Category:
    """What one category expected, found and got beyond it."""

    expected: int = 0
    found: int = 0
    extra: int = 0
    wrong: int = 0

    @property
    def ok(self) -> bool:
        """Everything expected found, nothing extra, nothing wrong."""
        return self.found == self.expected and self.extra == 0 and self.wrong == 0

    def summary(self) -> dict[str, int]:
        """The counts as JSON data (``wrong`` only where it can be non-zero)."""
        out = {"found": self.found, "expected": self.expected, "extra": self.extra}
        if self.wrong:
            out["wrong"] = self.wrong
        return out


@dataclass
class StationScore:
    """A shift's score: per category, the missing parcels by why, and the problems found."""

    categories: dict[str, Category] = field(default_factory=dict)
    missing_by_why: dict[str, Category] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every misload, unknown and missing parcel caught, nothing more, one right gate-out
        per departure, every verified parcel verified once."""
        return all(c.ok for c in self.categories.values())

    def summary(self) -> dict[str, Any]:
        """The score as JSON data."""
        out: dict[str, Any] = {"ok": self.ok}
        out.update({name: c.summary() for name, c in self.categories.items()})
        out["missing_by_why"] = {
            why: {"found": c.found, "expected": c.expected}
            for why, c in sorted(self.missing_by_why.items())
        }
        out["problems"] = self.problems[:_SHOW]
        if len(self.problems) > _SHOW:
            out["more_problems"] = len(self.problems) - _SHOW
        return out


def read_events(text: str, *, device: str | None = None) -> list[dict[str, Any]]:
    """Events from JSON lines: ``load replay`` output or a ``hub-bridge events`` export.

    Blank lines are skipped; a line that is not a JSON object with a string ``type`` and an object
    ``data`` raises ``ValueError`` naming its line. With ``device``, envelopes of other devices
    are left out (lines that name no device are kept).
    """
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"events line {n}: not JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(ev, dict):
            raise ValueError(f"events line {n}: not a JSON object")
        if not isinstance(ev.get("type"), str):
            raise ValueError(f"events line {n}: no string 'type'")
        if not isinstance(ev.get("data"), dict):
            raise ValueError(f"events line {n}: no object 'data'")
        if device is not None and ev.get("device", device) != device:
            continue
        out.append(ev)
    return out


def _match(
    name: str,
    expected: Iterable[tuple[Any, ...]],
    reported: Iterable[tuple[Any, ...]],
    problems: list[str],
) -> tuple[Category, set[tuple[Any, ...]]]:
    want = set(expected)
    cat = Category(expected=len(want))
    seen: set[tuple[Any, ...]] = set()
    for key in reported:
        if key in want and key not in seen:
            seen.add(key)
            cat.found += 1
        else:
            cat.extra += 1
            problems.append(f"{name}: {'repeated' if key in seen else 'not in truth'} {key}")
    problems += [f"{name}: not reported {key}" for key in sorted(want - seen, key=str)]
    return cat, seen


def _data(events: Iterable[Mapping[str, Any]], type_: str) -> list[Mapping[str, Any]]:
    return [ev["data"] for ev in events if ev.get("type") == type_]


def score_shift(truth: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> StationScore:
    """Score a station's events (``type`` and ``data`` each) against a shift's ``truth.json``."""
    events = list(events)
    sc = StationScore()
    p = sc.problems
    deps = {(d["route"], d["vehicle"], d["dock"]): d for d in truth["departures"]}
    vehicle_of = {d["route"]: d["vehicle"] for d in truth["departures"]}

    mis_keys = ("parcel", "dock", "vehicle", "expected_route", "expected_vehicle", "expected_dock")
    sc.categories["misload"], _ = _match(
        "misload",
        (tuple(m[k] for k in mis_keys) for m in truth["misloads"]),
        (tuple(d.get(k) for k in mis_keys) for d in _data(events, "load.misload")),
        p,
    )
    unk_keys = ("parcel", "dock", "vehicle")
    sc.categories["unknown"], _ = _match(
        "unknown",
        (tuple(u[k] for k in unk_keys) for u in truth["unknowns"]),
        (tuple(d.get(k) for k in unk_keys) for d in _data(events, "load.unknown")),
        p,
    )
    why = {
        (route, vehicle_of[route], m["parcel"]): m["why"]
        for route, ms in truth["missing"].items()
        for m in ms
    }
    sc.categories["missing"], seen = _match(
        "missing",
        why,
        (
            (d.get("route"), d.get("vehicle"), parcel)
            for d in _data(events, "load.missing")
            for parcel in d.get("parcels") or ()
        ),
        p,
    )
    for key, w in why.items():
        c = sc.missing_by_why.setdefault(w, Category())
        c.expected += 1
        c.found += key in seen

    gate = Category(expected=len(deps))
    got: set[tuple[str, str, str]] = set()
    for d in _data(events, "load.gateout"):
        key = (d.get("route"), d.get("vehicle"), d.get("dock"))
        dep = deps.get(key)
        if dep is None or key in got:
            gate.extra += 1
            p.append(f"gateout: {'repeated' if dep else 'not in truth'} {key}")
            continue
        got.add(key)
        gate.found += 1
        diff = {
            f: (d.get(f), dep[f])
            for f in ("expected", "verified", "misloaded", "missing")
            if d.get(f) != dep[f]
        }
        if diff:
            gate.wrong += 1
            p.append(f"gateout: {key} differs (reported, truth): {diff}")
    p += [f"gateout: none for {key}" for key in deps if key not in got]
    sc.categories["gateout"] = gate

    ver_keys = ("parcel", "route", "vehicle", "dock")
    sc.categories["verified"], _ = _match(
        "verified",
        (tuple(v[k] for k in ver_keys) for v in truth["verified"]),
        (tuple(d.get(k) for k in ver_keys) for d in _data(events, "load.verified")),
        p,
    )
    return sc
