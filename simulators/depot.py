"""Depot simulator: a seeded shift at a station's docks, with the truth of what the station reports.

A depot has ``docks`` dock doors; ``routes`` routes (one van each) are served at them, several
routes per dock over the shift, one after the other in plan order. Each van backs in, is
identified or not, has its parcels walked past the door, and leaves. On the way:

- **misload**: a parcel of another route is walked onto this van (its label is read: the station
  must flag it); ``corrected`` of them are taken off again before the van leaves and loaded at
  their own dock while their own van is still there (verified there);
- **unreadable**: a parcel of the route is loaded but its label is never read;
- **unknown**: a parcel on no route of the plan is walked on and read;
- **left behind**: a parcel of the route is never brought to the dock;
- **duplicates**: one label read several times in one pass (camera and handheld, frame after
  frame), and a corrected parcel read again as it is carried back out;
- a van may come back to its dock for a second route (``reuse``), and two identified vans may
  come to a dock the other way round from the plan (``out_of_order``);
- the van is identified by a vehicle-code scan (``VEH:<id>`` or the plain id) or a command in
  ``vehicle_id`` of the departures, and not at all in the others (the station infers it);
- the van leaves by door closed and bay free, by a ``GATEOUT`` scan (``gateout_scan``: the bay
  sensor did not see this van), or by both (``gateout_both``: one gate-out all the same); a
  ``gateout_command`` share of those GATEOUT signals are a gate-out command (``kind: gateout``).

Parcels are plain carrier codes or GS1 SSCCs; an SSCC label reads as ``(00)…``, ``]C100…``,
``<GS>00…``, ``00…`` (a camera's GS1-128) or with a postcode after it, and the plan lists either
the SSCC or the element string, so the station must name a parcel by its SSCC. Every parcel has
one fate (loaded and read, loaded unread, left behind, misloaded); a misloaded parcel's label is
always readable.

Outputs of ``write_shift``: ``plan.json`` (DESIGN §8 load plan), ``input.jsonl`` (the input of
``edge-agent load replay``, in time order, door and bay as clean state changes), ``edges.json``
(the same door and bay changes as raw contact edges with bounce, per dock, for the sensor path)
and ``truth.json`` (what happened and what the station should report; ``simulators.station_score``
scores a station's events against it). The truth is written from the simulated story, not from
any engine: nothing here imports ``edge_agent.station``.

Command line::

    python -m simulators.depot generate --out DIR [--docks 4 --routes 8 --parcels 40
        --misload 0.03 --unreadable 0.01 --unknown 0.01 --left-behind 0.02 --seed N]
    python -m simulators.depot score --truth DIR/truth.json EVENTS.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edge_agent.scan.gs1 import check_digit
from edge_agent.wire.envelope import format_ts

__all__ = [
    "START",
    "Departure",
    "Misload",
    "Obs",
    "Parcel",
    "Shift",
    "ShiftParams",
    "main",
    "simulate_shift",
    "write_shift",
]

START = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
"""The default start of a shift (early morning: vans are loaded before their rounds)."""

Fate = Literal["loaded", "unread", "left_behind", "misloaded"]
GateoutBy = Literal["sensors", "scan", "both"]
VehicleBy = Literal["scan", "plain", "command", "late-scan", "none"]

GS = "\x1d"

# Timing of a departure, in milliseconds (ranges drawn uniformly).
_DOOR_AFTER_BAY = (4_000, 20_000)
_VEHICLE_AFTER_DOOR = (2_000, 15_000)
_FIRST_ITEM_AFTER = (5_000, 15_000)
_ITEM_GAP = (3_000, 12_000)
_CORRECTION_SLACK = 50_000  # corrections may land up to this long after the last item
_CLOSE_AFTER_LAST = (60_000, 120_000)  # > the slack: a van leaves after its corrections
_SECOND_SIGNAL = (2_000, 30_000)  # door vs bay, scan vs sensors
_NEXT_VAN_GAP = (30_000, 300_000)
_TAKE_OFF = (5_000, 60_000)  # a misload taken off after its red light
_WALK = (20_000, 60_000)  # carrying a corrected parcel to its own dock
_DUPLICATE_GAP = (40, 700)
_BOUNCE_US = 20_000


@dataclass(frozen=True)
class ShiftParams:
    """Everything a shift is drawn from; the same params give the same shift."""

    docks: int = 4
    routes: int = 8
    parcels: int = 40  # per route, on average (each route 75..125 % of it)
    misload: float = 0.03  # of planned parcels, walked onto another route's van
    unreadable: float = 0.01  # of planned parcels, loaded but never read
    unknown: float = 0.01  # per carried parcel, an extra parcel on no route
    left_behind: float = 0.02  # of planned parcels, never brought
    corrected: float = 0.5  # of misloads, taken off and loaded at their dock (when there is time)
    duplicates: float = 0.2  # of reads, read again 1..3 times within the pass
    vehicle_id: float = 0.85  # of departures, the van is identified
    vehicle_command: float = 0.1  # of identified departures, by a command, not a scan
    late_vehicle: float = 0.15  # of scan-identified departures, the code read after some parcels
    reuse: float = 0.25  # of later routes at a dock, loaded onto the van of its previous route
    out_of_order: float = 0.1  # of a dock's next two routes, served the other way round
    gateout_scan: float = 0.2  # of departures, gate-out by a GATEOUT scan only
    gateout_both: float = 0.1  # of departures, GATEOUT scan and door + bay
    gateout_command: float = 0.2  # of those GATEOUT signals, a gate-out command, not a scan
    bounce: bool = True  # contact bounce in edges.json
    seed: int = 1
    station: str = "depot-1"
    start: datetime = START

    def __post_init__(self) -> None:
        for name in ("docks", "routes", "parcels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        # every float field is a rate
        rates = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)]
        for name in rates:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: a rate between 0 and 1, got {value}")
        if self.misload + self.unreadable + self.left_behind > 1.0:
            raise ValueError("misload + unreadable + left_behind: more than every parcel")
        if self.gateout_scan + self.gateout_both > 1.0:
            raise ValueError("gateout_scan + gateout_both: more than every departure")
        if self.start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")


@dataclass(frozen=True)
class Parcel:
    """A parcel: ``key`` is the name the station gives it (the SSCC for a GS1 label)."""

    key: str
    gs1: bool
    plan_text: str  # how the load plan lists it


@dataclass(frozen=True)
class Obs:
    """One line of ``load replay`` input; ``t`` in ms since the shift's start."""

    t: int
    kind: Literal["scan", "door", "bay", "vehicle", "gateout"]
    dock: str
    value: str = ""  # the scan's text, the door's or bay's state, the vehicle

    def to_json(self, start: datetime) -> dict[str, Any]:
        """The replay input object of DESIGN §8."""
        out: dict[str, Any] = {
            "t": format_ts(start + timedelta(milliseconds=self.t)),
            "kind": self.kind,
            "dock": self.dock,
        }
        if self.kind == "scan":
            out["text"] = self.value
        elif self.kind in ("door", "bay"):
            out["state"] = self.value
        elif self.kind == "vehicle":
            out["vehicle"] = self.value
        return out


@dataclass
class Misload:
    """A parcel of ``expected_route`` walked onto the van of ``route`` at ``dock``."""

    parcel: str
    route: str
    vehicle: str
    dock: str
    expected_route: str
    expected_vehicle: str
    expected_dock: str
    t: int = 0
    corrected_at: int | None = None  # when it was read at its own dock


@dataclass
class Departure:
    """One van's stay at a dock, from backing in to leaving."""

    route: str
    vehicle: str
    dock: str
    parcels: list[Parcel]
    vehicle_by: VehicleBy
    gateout_by: GateoutBy
    arrive: int = 0
    load_start: int = 0
    load_end: int = 0
    gateout: int = 0  # the first signal that ends the stay for the station
    last_signal: int = 0
    out_of_order: bool = False  # came before a route planned earlier at its dock
    fates: dict[str, Fate] = field(default_factory=dict)
    unknowns: list[str] = field(default_factory=list)
    misloads_in: list[Misload] = field(default_factory=list)


@dataclass
class Shift:
    """A simulated shift: its plan, the station's input, the raw sensor edges and the truth."""

    params: ShiftParams
    departures: list[Departure]
    observations: list[Obs]
    misloads: list[Misload]
    plan: dict[str, Any] = field(default_factory=dict)
    edges: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    def input_lines(self) -> list[str]:
        """``input.jsonl``: one replay input object per line, in time order."""
        return [
            json.dumps(o.to_json(self.params.start), ensure_ascii=False) + "\n"
            for o in self.observations
        ]


class _Ids:
    """Parcel names: GS1 SSCCs and carrier codes, never the same twice in a shift."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.parcels: dict[str, Parcel] = {}

    def parcel(self, *, in_plan: bool) -> Parcel:
        rng = self.rng
        while True:
            if rng.random() < 0.6:
                body = "0" + "".join(rng.choices(string.digits, k=16))
                key, gs1 = body + str(check_digit(body)), True
            else:
                key = "PK" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=9))
                gs1 = False
            if key not in self.parcels:
                break
        plan_text = f"(00){key}" if gs1 and in_plan and rng.random() < 0.3 else key
        self.parcels[key] = p = Parcel(key, gs1, plan_text)
        return p

    def label(self, key: str) -> str:
        """What one read of the parcel's label gives (the form varies with the reader)."""
        rng = self.rng
        p = self.parcels[key]
        if not p.gs1:
            # a keyboard wedge may leave a line end, a handheld a space: the station strips them
            return p.key if rng.random() < 0.95 else rng.choice((" ", "", "\t")) + p.key + "\r\n"
        form = rng.randrange(6)
        if form == 0:
            return f"(00){p.key}"
        if form == 5:
            return f"00{p.key}"  # a GS1-128 label as a camera decodes it: no AIM prefix
        if form == 1:
            return f"]C100{p.key}"
        if form == 2:
            return f"{GS}00{p.key}"
        postcode = "".join(rng.choices(string.digits, k=5))
        if form == 3:
            return f"]C100{p.key}420{postcode}"
        return f"(00){p.key}(420){postcode}"


class _Stream:
    """The observations, one per millisecond: the replay's order is the time order, no ties.

    A time already taken moves on by a millisecond; the time an observation really got is
    returned, so the truth is written from the stream as the station will read it.
    """

    def __init__(self) -> None:
        self.obs: list[Obs] = []
        self.used: set[int] = set()

    def add(
        self,
        t: int,
        kind: Literal["scan", "door", "bay", "vehicle", "gateout"],
        dock: str,
        value: str = "",
    ) -> int:
        while t in self.used:
            t += 1
        self.used.add(t)
        self.obs.append(Obs(t, kind, dock, value))
        return t

    def ordered(self) -> list[Obs]:
        return sorted(self.obs, key=lambda o: o.t)


def _u(rng: random.Random, span: tuple[int, int]) -> int:
    return rng.randint(span[0], span[1])


def simulate_shift(params: ShiftParams = ShiftParams()) -> Shift:
    """Simulate one shift (pure: the same ``params`` give the same shift, byte for byte)."""
    rng = random.Random(params.seed)
    ids = _Ids(rng)
    docks = [f"dock-{i + 1}" for i in range(params.docks)]
    # routes are numbered in plan order, and plan order is each dock's serving order but where
    # two identified vans come the other way round: the station infers an unidentified van as
    # the dock's next route in plan order
    deps: list[Departure] = []
    for i in range(params.routes):
        d = _departure(rng, ids, params, i, docks[i % params.docks])
        if i >= params.docks and rng.random() < params.reuse:
            # the van that left this dock last comes back for a second round
            d.vehicle = deps[i - params.docks].vehicle
        deps.append(d)
    misloads = _draw_fates(rng, ids, params, deps)
    items = {d.route: _items(rng, d) for d in deps}
    stream = _Stream()
    for dock in docks:
        # the sensors' first reading at start: door closed, bay empty
        stream.add(0, "door", dock, "closed")
        stream.add(0, "bay", dock, "free")
    for dock in docks:
        t = _u(rng, (1_000, 120_000))
        for d in _serving_order(rng, params, [d for d in deps if d.dock == dock]):
            t = _schedule(rng, params, ids, d, items[d.route], t, stream)
    _corrections(rng, ids, params, misloads, {d.route: d for d in deps}, stream)
    _duplicates(rng, params, stream)
    obs = stream.ordered()
    shift = Shift(params, deps, obs, misloads)
    shift.plan = {
        "station": params.station,
        "routes": [
            {
                "route": d.route,
                "vehicle": d.vehicle,
                "dock": d.dock,
                "parcels": [p.plan_text for p in d.parcels],
            }
            for d in deps
        ],
    }
    shift.edges = _edges(rng, params, docks, obs)
    shift.truth = _truth(params, deps, misloads)
    return shift


def _serving_order(
    rng: random.Random, params: ShiftParams, queue: list[Departure]
) -> list[Departure]:
    """A dock's routes in the order their vans come: plan order, but for some pairs of vans
    that are both identified before loading starts (the station cannot tell them apart else)."""
    early = ("scan", "plain", "command")
    out = list(queue)
    k = 0
    while k + 1 < len(out):
        a, b = out[k], out[k + 1]
        if (
            a.vehicle_by in early
            and b.vehicle_by in early
            and a.vehicle != b.vehicle
            and rng.random() < params.out_of_order
        ):
            out[k], out[k + 1] = b, a
            b.out_of_order = True
            k += 2
        else:
            k += 1
    return out


def _departure(rng: random.Random, ids: _Ids, params: ShiftParams, i: int, dock: str) -> Departure:
    lo, hi = max(1, round(params.parcels * 0.75)), max(1, round(params.parcels * 1.25))
    n = rng.randint(lo, hi)
    vehicle_by: VehicleBy = "none"
    if rng.random() < params.vehicle_id:
        if rng.random() < params.vehicle_command:
            vehicle_by = "command"
        elif rng.random() < params.late_vehicle:
            vehicle_by = "late-scan"
        else:
            vehicle_by = "scan" if rng.random() < 0.7 else "plain"
    u = rng.random()
    gateout_by: GateoutBy = "sensors"
    if u < params.gateout_scan:
        gateout_by = "scan"
    elif u < params.gateout_scan + params.gateout_both:
        gateout_by = "both"
    return Departure(
        route=f"r-{i + 1:02d}",
        vehicle=f"van-{i + 1:02d}",
        dock=dock,
        parcels=[ids.parcel(in_plan=True) for _ in range(n)],
        vehicle_by=vehicle_by,
        gateout_by=gateout_by,
    )


def _draw_fates(
    rng: random.Random, ids: _Ids, params: ShiftParams, deps: list[Departure]
) -> list[Misload]:
    misloads: list[Misload] = []
    for d in deps:
        others = [o for o in deps if o is not d]
        carried = 0
        for p in d.parcels:
            u = rng.random()
            fate: Fate = "loaded"
            if u < params.misload:
                if others:
                    fate = "misloaded"
                    onto = rng.choice(others)
                    m = Misload(
                        p.key, onto.route, onto.vehicle, onto.dock, d.route, d.vehicle, d.dock
                    )
                    onto.misloads_in.append(m)
                    misloads.append(m)
            elif u < params.misload + params.unreadable:
                fate = "unread"
            elif u < params.misload + params.unreadable + params.left_behind:
                fate = "left_behind"
            d.fates[p.key] = fate
            carried += fate in ("loaded", "unread")
        d.unknowns = [
            ids.parcel(in_plan=False).key
            for _ in range(max(carried, 1))
            if rng.random() < params.unknown
        ]
    return misloads


_ItemKind = Literal["own", "unread", "foreign", "unknown"]


def _items(rng: random.Random, d: Departure) -> list[tuple[_ItemKind, str, Misload | None]]:
    """What is walked onto the van, in the order it passes the door: (kind, parcel, misload)."""
    out: list[tuple[_ItemKind, str, Misload | None]] = []
    for p in d.parcels:
        if d.fates[p.key] == "loaded":
            out.append(("own", p.key, None))
        elif d.fates[p.key] == "unread":
            out.append(("unread", p.key, None))
    out += [("foreign", m.parcel, m) for m in d.misloads_in]
    out += [("unknown", key, None) for key in d.unknowns]
    rng.shuffle(out)
    return out


def _schedule(
    rng: random.Random,
    params: ShiftParams,
    ids: _Ids,
    d: Departure,
    items: list[tuple[_ItemKind, str, Misload | None]],
    t: int,
    s: _Stream,
) -> int:
    """One van's stay at its dock from ``t``; returns when the dock is free for the next van."""
    d.arrive = t
    if d.gateout_by != "scan":
        d.arrive = s.add(t, "bay", d.dock, "occupied")
    t += _u(rng, _DOOR_AFTER_BAY)
    s.add(t, "door", d.dock, "open")
    t += _u(rng, _VEHICLE_AFTER_DOOR)
    late_after = rng.randint(1, 3) if d.vehicle_by == "late-scan" else -1
    if d.vehicle_by in ("scan", "plain", "command"):
        _vehicle(s, t, d)
    t += _u(rng, _FIRST_ITEM_AFTER)
    d.load_start = t
    for k, (kind, key, m) in enumerate(items):
        if k == late_after:
            _vehicle(s, t, d)
            t += _u(rng, (1_000, 4_000))
        if kind == "foreign":
            assert m is not None
            m.t = s.add(t, "scan", d.dock, ids.label(key))
        elif kind != "unread":
            s.add(t, "scan", d.dock, ids.label(key))
        t += _u(rng, _ITEM_GAP)
    if late_after >= len(items):
        _vehicle(s, t, d)  # fewer items than the late code was to follow
        t += _u(rng, (1_000, 4_000))
    d.load_end = t
    t += _u(rng, _CLOSE_AFTER_LAST)
    second = t + _u(rng, _SECOND_SIGNAL)
    door_first = rng.random() < 0.5
    door_t = s.add(t if door_first else second, "door", d.dock, "closed")
    if d.gateout_by == "scan":
        # the bay sensor did not see this van: the GATEOUT code is what ends its stay
        scan_t = _gateout(rng, params, s, second if door_first else t, d.dock)
        d.gateout, d.last_signal = scan_t, max(scan_t, door_t)
        return d.last_signal + _u(rng, _NEXT_VAN_GAP)
    bay_t = s.add(second if door_first else t, "bay", d.dock, "free")
    d.gateout = d.last_signal = max(door_t, bay_t)
    if d.gateout_by == "both":
        # the code read just before the van went (after any correction: t - 5 s is past the
        # slack), or just after the sensors saw it go
        before = rng.random() < 0.5
        scan_t = t - _u(rng, (1_000, 5_000)) if before else d.gateout + _u(rng, (500, 5_000))
        scan_t = _gateout(rng, params, s, scan_t, d.dock)
        d.gateout, d.last_signal = min(scan_t, d.gateout), max(scan_t, d.last_signal)
    return d.last_signal + _u(rng, _NEXT_VAN_GAP)


def _vehicle(s: _Stream, t: int, d: Departure) -> None:
    if d.vehicle_by == "command":
        s.add(t, "vehicle", d.dock, d.vehicle)
    elif d.vehicle_by == "plain":
        s.add(t, "scan", d.dock, d.vehicle)
    else:
        s.add(t, "scan", d.dock, f"VEH:{d.vehicle}")


def _gateout(rng: random.Random, params: ShiftParams, s: _Stream, t: int, dock: str) -> int:
    if rng.random() < params.gateout_command:
        return s.add(t, "gateout", dock)
    return s.add(t, "scan", dock, "GATEOUT" if rng.random() < 0.6 else f"GATEOUT:{dock}")


def _corrections(
    rng: random.Random,
    ids: _Ids,
    params: ShiftParams,
    misloads: list[Misload],
    by_route: dict[str, Departure],
    s: _Stream,
) -> None:
    """Misloads taken off the wrong van and loaded at their own dock, where there is time."""
    for m in misloads:
        if rng.random() >= params.corrected:
            continue
        wrong, right = by_route[m.route], by_route[m.expected_route]
        # the dock went red at once: taken off soon, and before the wrong van leaves (it leaves
        # well after load_end + 30 s)
        off = min(m.t + _u(rng, _TAKE_OFF), max(m.t + 1_000, wrong.load_end + 30_000))
        lo = max(off + _u(rng, _WALK), right.load_start)
        hi = right.load_end + _CORRECTION_SLACK
        if lo > hi:
            continue  # its own van has gone: it stays misloaded
        if rng.random() < 0.5:
            # read again as it is carried out of the wrong van: the same stay, no new event
            s.add(off, "scan", m.dock, ids.label(m.parcel))
        m.corrected_at = s.add(rng.randint(lo, hi), "scan", m.expected_dock, ids.label(m.parcel))


def _duplicates(rng: random.Random, params: ShiftParams, s: _Stream) -> None:
    """The same label read again within its pass (frame after frame, or camera and handheld)."""
    for o in list(s.obs):
        if o.kind == "scan" and rng.random() < params.duplicates:
            t = o.t
            for _ in range(rng.randint(1, 3)):
                t = s.add(t + _u(rng, _DUPLICATE_GAP), "scan", o.dock, o.value)


def _edges(
    rng: random.Random, params: ShiftParams, docks: list[str], obs: list[Obs]
) -> dict[str, Any]:
    """The door and bay changes of ``obs`` as raw contact edges, with bounce.

    Level 1 is the active state (door open, bay occupied). A change at ``t`` is a first edge at
    ``t`` to the new level and, with bounce, an even number of extra edges within 20 ms after it
    (so the line settles at the new level); ``input.jsonl`` stamps the change with its first edge.
    """
    per: dict[str, dict[str, Any]] = {
        dock: {"initial": {}, "door": [], "bay": []} for dock in docks
    }
    active = {"door": "open", "bay": "occupied"}
    level: dict[tuple[str, str], int] = {}
    for o in obs:
        if o.kind not in ("door", "bay"):
            continue
        new = int(o.value == active[o.kind])
        key = (o.dock, o.kind)
        if key not in level:
            per[o.dock]["initial"][o.kind] = new
            level[key] = new
            continue
        if level[key] == new:
            continue
        level[key] = new
        edges: list[list[float | int]] = per[o.dock][o.kind]
        t_us = o.t * 1_000
        edges.append([t_us / 1e6, new])
        if params.bounce:
            n = rng.choice((0, 2, 2, 4, 6))
            offsets = sorted(rng.sample(range(200, _BOUNCE_US), n))
            for k, off in enumerate(offsets):
                edges.append([(t_us + off) / 1e6, new if k % 2 else 1 - new])
    return {
        "start": format_ts(params.start),
        "time": "seconds since start",
        "active": active,
        "bounce_s": _BOUNCE_US / 1e6,
        "docks": per,
    }


def _truth(params: ShiftParams, deps: list[Departure], misloads: list[Misload]) -> dict[str, Any]:
    def ts(t: int) -> str:
        return format_ts(params.start + timedelta(milliseconds=t))

    corrected = {m.parcel: m for m in misloads if m.corrected_at is not None}
    verified: list[dict[str, str]] = []
    missing: dict[str, list[dict[str, str]]] = {}
    departures: list[dict[str, Any]] = []
    for d in deps:
        ok = [p.key for p in d.parcels if d.fates[p.key] == "loaded" or p.key in corrected]
        verified += [
            {"parcel": k, "route": d.route, "vehicle": d.vehicle, "dock": d.dock} for k in ok
        ]
        why = {"unread": "unread", "left_behind": "left_behind", "misloaded": "misloaded"}
        gone = sorted(
            (p.key, why[d.fates[p.key]])
            for p in d.parcels
            if d.fates[p.key] != "loaded" and p.key not in corrected
        )
        if gone:
            missing[d.route] = [{"parcel": k, "why": w} for k, w in gone]
        # a misload counts against the van that leaves with it, or that leaves before it is
        # verified at its own dock
        onto = [m for m in d.misloads_in if m.corrected_at is None or m.corrected_at > d.gateout]
        taken_off = [m.parcel for m in d.misloads_in if m.corrected_at is not None]
        departures.append(
            {
                "route": d.route,
                "vehicle": d.vehicle,
                "dock": d.dock,
                "arrive": ts(d.arrive),
                "gateout_at": ts(d.gateout),
                "vehicle_by": d.vehicle_by,
                "gateout_by": d.gateout_by,
                "out_of_order": d.out_of_order,
                "expected": len(d.parcels),
                "verified": len(ok),
                "misloaded": len(onto),
                "missing": [k for k, _ in gone],
                "physical": {
                    "loaded_read": sorted(p.key for p in d.parcels if d.fates[p.key] == "loaded"),
                    "loaded_unread": sorted(p.key for p in d.parcels if d.fates[p.key] == "unread"),
                    "foreign_on_board": sorted(
                        m.parcel for m in d.misloads_in if m.corrected_at is None
                    ),
                    "foreign_taken_off": sorted(taken_off),
                    "unknown_on_board": sorted(d.unknowns),
                    "left_behind": sorted(
                        p.key for p in d.parcels if d.fates[p.key] == "left_behind"
                    ),
                    "misloaded_elsewhere": sorted(
                        p.key for p in d.parcels if d.fates[p.key] == "misloaded"
                    ),
                },
            }
        )
    return {
        "station": params.station,
        "params": _params_json(params),
        "departures": departures,
        "misloads": [
            {
                "parcel": m.parcel,
                "dock": m.dock,
                "vehicle": m.vehicle,
                "route": m.route,
                "expected_route": m.expected_route,
                "expected_vehicle": m.expected_vehicle,
                "expected_dock": m.expected_dock,
                "at": ts(m.t),
                "corrected_at": None if m.corrected_at is None else ts(m.corrected_at),
            }
            for m in sorted(misloads, key=lambda m: m.t)
        ],
        "corrected": sorted(corrected),
        "unknowns": [
            {"parcel": k, "dock": d.dock, "vehicle": d.vehicle, "route": d.route}
            for d in deps
            for k in d.unknowns
        ],
        "missing": missing,
        "verified": verified,
    }


def _params_json(params: ShiftParams) -> dict[str, Any]:
    out = asdict(params)
    out["start"] = format_ts(params.start)
    return out


def write_shift(out_dir: str | Path, shift: Shift | ShiftParams = ShiftParams()) -> Shift:
    """Write ``plan.json``, ``input.jsonl``, ``edges.json`` and ``truth.json`` of a shift.

    ``shift`` is a simulated shift or the params to simulate one with; the shift is returned.
    """
    if isinstance(shift, ShiftParams):
        shift = simulate_shift(shift)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(shift.plan, indent=1) + "\n")
    with (out / "input.jsonl").open("w", encoding="utf-8", newline="") as f:
        f.writelines(shift.input_lines())
    (out / "edges.json").write_text(json.dumps(shift.edges) + "\n")
    (out / "truth.json").write_text(json.dumps(shift.truth, indent=1) + "\n")
    return shift


def _cmd_generate(args: argparse.Namespace) -> int:
    params = ShiftParams(
        docks=args.docks,
        routes=args.routes,
        parcels=args.parcels,
        misload=args.misload,
        unreadable=args.unreadable,
        unknown=args.unknown,
        left_behind=args.left_behind,
        corrected=args.corrected,
        duplicates=args.duplicates,
        vehicle_id=args.vehicle_id,
        reuse=args.reuse,
        gateout_scan=args.gateout_scan,
        gateout_both=args.gateout_both,
        seed=args.seed,
        station=args.station,
        start=datetime.fromisoformat(args.start).astimezone(UTC) if args.start else START,
    )
    shift = write_shift(args.out, params)
    t = shift.truth
    print(
        json.dumps(
            {
                "out": str(args.out),
                "departures": len(t["departures"]),
                "parcels": sum(d["expected"] for d in t["departures"]),
                "observations": len(shift.observations),
                "misloads": len(t["misloads"]),
                "corrected": len(t["corrected"]),
                "unknowns": len(t["unknowns"]),
                "missing": sum(len(v) for v in t["missing"].values()),
            }
        )
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from simulators.station_score import read_events, score_shift

    try:
        truth = json.loads(Path(args.truth).read_text())
        text = sys.stdin.read() if args.events == "-" else Path(args.events).read_text()
        events = read_events(text, device=args.device)
    except (OSError, ValueError) as exc:
        print(f"simulators.depot score: {exc}", file=sys.stderr)
        return 2
    result = score_shift(truth, events)
    print(json.dumps(result.summary()))
    return 0 if result.ok else 1


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a rate between 0 and 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.depot``."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.depot", description=(__doc__ or "").splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="simulate a shift: plan, replay input, edges, truth")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--docks", type=int, default=4)
    g.add_argument("--routes", type=int, default=8)
    g.add_argument("--parcels", type=int, default=40, help="per route, on average")
    g.add_argument("--misload", type=_rate, default=0.03)
    g.add_argument("--unreadable", type=_rate, default=0.01)
    g.add_argument("--unknown", type=_rate, default=0.01)
    g.add_argument("--left-behind", type=_rate, default=0.02)
    g.add_argument("--corrected", type=_rate, default=0.5, help="of misloads")
    g.add_argument("--duplicates", type=_rate, default=0.2, help="of reads")
    g.add_argument("--vehicle-id", type=_rate, default=0.85, help="of departures")
    g.add_argument("--reuse", type=_rate, default=0.25, help="of later routes at a dock")
    g.add_argument("--gateout-scan", type=_rate, default=0.2, help="of departures")
    g.add_argument("--gateout-both", type=_rate, default=0.1, help="of departures")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--station", default="depot-1")
    g.add_argument("--start", help="ISO time of the shift's start")
    g.set_defaults(func=_cmd_generate)
    s = sub.add_parser("score", help="score a station's events against a shift's truth")
    s.add_argument("--truth", required=True, help="the shift's truth.json")
    s.add_argument("events", help="`edge-agent load replay` output or `hub-bridge events`, or -")
    s.add_argument("--device", help="hub export: only this device's events")
    s.set_defaults(func=_cmd_score)
    args = p.parse_args(argv)
    try:
        code: int = args.func(args)
    except ValueError as exc:
        print(f"simulators.depot {args.cmd}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
