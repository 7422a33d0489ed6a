"""``edge-agent load replay --plan PLAN INPUT``: the load engine over recorded observations.

The same engine as the station agent, over one JSON object per line (DESIGN §8)::

    {"t": ISO, "kind": "scan", "dock": D, "text": TEXT}
    {"t": ISO, "kind": "door", "dock": D, "state": "open"|"closed"}
    {"t": ISO, "kind": "bay", "dock": D, "state": "occupied"|"free"}
    {"t": ISO, "kind": "vehicle", "dock": D, "vehicle": V}
    {"t": ISO, "kind": "gateout", "dock": D}

``t`` is ISO 8601 with a zone offset (``Z`` or ``+hh:mm``); fields not listed are ignored; blank
lines are skipped. It prints one JSON object per event, ``{"type", "ts", "data"}``, in the order
the engine derives them. A line it cannot use (not JSON, too long or too deep, not an object,
an unknown kind, a missing field, a bad time, a wrong type) is reported on stderr with its line
number and what is wrong, and skipped; the run goes on. Lines older than one before them are
processed in file order, as the live agent would take them, and counted in one message at the
end. Exit status: 2 for an unreadable or invalid plan or an unreadable input, 1 when any line
was bad, else 0.

Errors::

    LineError (ValueError)    a line that is not an observation; ``path`` (may be empty), ``reason``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, TextIO

from edge_agent.station.engine import (
    BayObs,
    DoorObs,
    GateOutObs,
    LoadEngine,
    LoadParams,
    Observation,
    ScanObs,
    StationEvent,
    VehicleObs,
)
from edge_agent.station.plan import MAX_ID, LoadPlan, PlanError, load_plan_file
from edge_agent.wire import jsonbounds

__all__ = [
    "KINDS",
    "MAX_LINE_BYTES",
    "LineError",
    "ReplayStats",
    "numbered_lines",
    "parse_line",
    "parse_observation",
    "replay_events",
    "replay_main",
]

EXIT_BAD_LINES = 1
EXIT_UNUSABLE = 2
MAX_LINE_BYTES = 64 * 1024
"""Longest input line (a label's text is at most 8 KiB on the wire): longer ones are refused."""

LINE_MAX_DEPTH = 4
KINDS = ("scan", "door", "bay", "vehicle", "gateout")
_STATES = {"door": {"open": True, "closed": False}, "bay": {"occupied": True, "free": False}}
_SHOWN = 60


class LineError(ValueError):
    """An input line that is not an observation: ``path`` names the field, ``reason`` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= _SHOWN else f"{r[: _SHOWN - 3]}..."


def _field(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise LineError(key, "missing")
    return obj[key]


def _string(obj: dict[str, Any], key: str, *, name: bool = True) -> str:
    v = _field(obj, key)
    if not isinstance(v, str):
        raise LineError(key, f"must be a string, not {type(v).__name__}")
    if name and not 1 <= len(v) <= MAX_ID:
        raise LineError(key, f"must be 1 to {MAX_ID} characters, not {len(v)}")
    return v


def _time(obj: dict[str, Any]) -> datetime:
    v = _field(obj, "t")
    if not isinstance(v, str):
        raise LineError("t", f"must be an ISO 8601 time string, not {type(v).__name__}")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise LineError("t", f"{_show(v)} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise LineError("t", f"{_show(v)} has no zone offset (add Z or +hh:mm)")
    try:
        return t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
        raise LineError("t", f"{_show(v)} is out of range in UTC") from None


def parse_observation(obj: Any) -> Observation:
    """The observation a decoded input line describes; LineError naming the field if none."""
    if not isinstance(obj, dict):
        raise LineError("", f"must be a JSON object, not {type(obj).__name__}")
    kind = _field(obj, "kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise LineError("kind", f"unknown kind {_show(kind)} (one of {', '.join(KINDS)})")
    t = _time(obj)
    dock = _string(obj, "dock")
    if kind == "scan":
        return ScanObs(t, dock, _string(obj, "text", name=False))
    if kind == "vehicle":
        return VehicleObs(t, dock, _string(obj, "vehicle"))
    if kind == "gateout":
        return GateOutObs(t, dock)
    state = _field(obj, "state")
    states = _STATES[kind]
    if not isinstance(state, str) or state not in states:
        raise LineError("state", f"{_show(state)} is not one of {', '.join(states)}")
    if kind == "door":
        return DoorObs(t, dock, states[state])
    return BayObs(t, dock, states[state])


def parse_line(line: bytes | str) -> Observation:
    """Decode one input line (bounded JSON) and read its observation; LineError if it is none."""
    try:
        obj = jsonbounds.loads(line)
        jsonbounds.check(obj, LINE_MAX_DEPTH)
    except jsonbounds.JsonBoundsError as exc:
        # one line is one JSON text: "at line 1 column 9" would read as the input's line 1
        raise LineError(exc.path, exc.reason.replace(" at line 1 column ", " at column ")) from None
    return parse_observation(obj)


def numbered_lines(
    stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | None]]:
    """``(number, line)`` from 1; ``line`` is None for a line longer than ``max_bytes``, which
    is read past without being held whole."""
    n = 0
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(max_bytes + 1)
            yield n, None
        else:
            yield n, line


@dataclass(slots=True)
class ReplayStats:
    """What a replay went through."""

    lines: int = 0
    observations: int = 0
    bad: int = 0
    out_of_order: int = 0
    first_out_of_order: int | None = None  # its line number


def replay_events(
    plan: LoadPlan | None,
    lines: Iterable[tuple[int, bytes | None]],
    params: LoadParams | None = None,
    *,
    on_bad: Callable[[int, str], None] | None = None,
    stats: ReplayStats | None = None,
) -> Iterator[StationEvent]:
    """The events of numbered input lines under ``plan``, in the order the engine derives them.

    Bad lines are skipped after ``on_bad(number, message)``; ``stats`` (if given) is updated.
    """
    st = stats if stats is not None else ReplayStats()
    engine = LoadEngine(plan, params)
    state = engine.new_state()
    latest: datetime | None = None
    for n, raw in lines:
        st.lines = n
        if raw is not None and not raw.strip():
            continue
        try:
            if raw is None:
                raise LineError("", f"longer than {MAX_LINE_BYTES} bytes")
            obs = parse_line(raw)
        except LineError as exc:
            st.bad += 1
            if on_bad is not None:
                on_bad(n, str(exc))
            continue
        st.observations += 1
        if latest is not None and obs.t < latest:
            st.out_of_order += 1
            if st.first_out_of_order is None:
                st.first_out_of_order = n
        else:
            latest = obs.t
        state, result = engine.step(state, obs)
        yield from result.events


def replay_main(plan_path: str, source: str, out: TextIO) -> int:
    """Run ``load replay``; return the exit code."""
    try:
        plan = load_plan_file(plan_path)
    except PlanError as exc:
        print(f"load replay: plan {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    name = "standard input" if source == "-" else source
    try:
        stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"load replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE

    def bad(n: int, message: str) -> None:
        print(f"load replay: {name}: line {n}: {message}", file=sys.stderr)

    stats = ReplayStats()
    try:
        for event in replay_events(plan, numbered_lines(stream), on_bad=bad, stats=stats):
            out.write(json.dumps(event.to_json()) + "\n")
    except OSError as exc:
        print(f"load replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if stats.out_of_order:
        print(
            f"load replay: {name}: {stats.out_of_order} line(s) older than a line before them "
            f"(first: line {stats.first_out_of_order}), processed in file order",
            file=sys.stderr,
        )
    return EXIT_BAD_LINES if stats.bad else 0
