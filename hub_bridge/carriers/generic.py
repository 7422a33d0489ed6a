"""The worked adapter: a generic tracking export, CSV (with a header line), a JSON array of
objects (or ``{"events"|"rows"|"shipments"|"items": [...]}``) or JSON Lines.

Columns (``Columns``, each renamable): ``tracking_number`` and ``status`` and ``timestamp`` are
required; ``lat``, ``lon``, ``vehicle``, ``stop``, ``signature``, ``recipient``, ``route`` and
``event_id`` (the carrier's own id of the status event, when it has one) are used when present.
A timestamp is ISO 8601 (a time without an offset is taken as UTC) or Unix seconds. The device an
event is filed under is its vehicle (lower-cased, anything outside ``[a-z0-9_-]`` made ``-``)
or, without one, ``default_device``.

Every row that cannot become an envelope is a ``BadRow`` naming its line (CSV, JSON Lines; a
quoted CSV field may span lines: the row's first line) or its item (a JSON array) and the
reason; the envelope each row becomes is checked by the contract's own validator
(``validate_envelope``) before it is handed on, so the hub refuses nothing the import accepted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from edge_agent.wire.envelope import (
    EnvelopeError,
    format_ts,
    is_known_type,
    registered_types,
    validate_envelope,
)
from hub_bridge.carriers.adapter import (
    STATUS_TYPES,
    BadRow,
    Conversion,
    Draft,
    event_id,
    normal_status,
)

__all__ = ["COLUMNS", "Columns", "GenericTracking"]

Format = Literal["csv", "json", "jsonl"]
COLUMNS = (
    "tracking_number",
    "status",
    "timestamp",
    "lat",
    "lon",
    "vehicle",
    "stop",
    "signature",
    "recipient",
    "route",
    "event_id",
)
_REQUIRED = ("tracking_number", "status", "timestamp")
_IDENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class Columns:
    """Which column of the export holds what (``name -> header``); by default each is its own
    name."""

    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})"
            )

    def header(self, name: str) -> str:
        """The export's header of ``name``."""
        return self.names.get(name, name)


class GenericTracking:
    """A generic tracking export (``fmt``) of ``carrier`` → drafts of envelopes."""

    def __init__(
        self,
        fmt: Format,
        carrier: str,
        *,
        columns: Columns | None = None,
        status_types: Mapping[str, str] | None = None,
        default_device: str = "feed",
    ) -> None:
        if not _IDENT.fullmatch(default_device):
            raise ValueError(f"default device {default_device!r}: must match [a-z0-9][a-z0-9_-]*")
        self.name = f"generic-{fmt}"
        self.fmt = fmt
        self.carrier = carrier
        self.columns = columns or Columns()
        self.status_types = {
            **STATUS_TYPES,
            **{normal_status(k): v for k, v in (status_types or {}).items()},
        }
        for status, kind in self.status_types.items():
            if not is_known_type(kind):
                known = ", ".join(registered_types())
                raise ValueError(f"status {status}: {kind!r} is not an event type ({known})")
        self.default_device = default_device

    def convert(self, text: str, fleet: str) -> Conversion:
        """Every row of ``text`` as a draft or a bad row (never raises on the text)."""
        out = Conversion()
        try:
            rows = list(self._rows(text))
        except ValueError as exc:  # the file as a whole cannot be read
            out.bad.append(BadRow("file", str(exc)))
            return out
        for where, row in rows:
            out.rows += 1
            if isinstance(row, str):
                out.bad.append(BadRow(where, row))
                continue
            try:
                out.drafts.append(Draft(where, self._envelope(row, fleet)))
            except ValueError as exc:
                out.bad.append(BadRow(where, str(exc)))
        return out

    def _rows(self, text: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
        """``(where, row)``; a row that is not an object comes as the reason it is not."""
        if self.fmt == "csv":
            yield from _csv_rows(text)
        elif self.fmt == "jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, parse_constant=_no_constant)
                except (ValueError, RecursionError) as exc:
                    yield f"line {n}", f"not JSON: {exc}"
                    continue
                yield f"line {n}", row if isinstance(row, dict) else "not a JSON object"
        else:
            try:
                doc = json.loads(text, parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"not JSON: {exc}") from None
            if isinstance(doc, dict):
                lists = [k for k in ("events", "rows", "shipments", "items") if k in doc]
                if not lists or not isinstance(doc[lists[0]], list):
                    raise ValueError('expected a JSON array, or {"events": [...]}')
                doc = doc[lists[0]]
            if not isinstance(doc, list):
                raise ValueError("expected a JSON array of rows")
            for n, row in enumerate(doc, 1):
                yield f"item {n}", row if isinstance(row, dict) else "not a JSON object"

    def _get(self, row: Mapping[str, Any], name: str) -> str | None:
        value = row.get(self.columns.header(name))
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{self.columns.header(name)}: a text or a number is required")
        text = str(value).strip()
        return text or None

    def _envelope(self, row: Mapping[str, Any], fleet: str) -> dict[str, Any]:
        got = {name: self._get(row, name) for name in COLUMNS}
        for name in _REQUIRED:
            if got[name] is None:
                raise ValueError(f"{self.columns.header(name)}: missing or empty")
        tracking, status, when = got["tracking_number"], got["status"], got["timestamp"]
        assert tracking is not None
        assert status is not None
        assert when is not None
        kind = self.status_types.get(normal_status(status))
        if kind is None:
            raise ValueError(
                f"{self.columns.header('status')}: {status[:64]!r} is not a known status"
                " (map it with --status STATUS=TYPE)"
            )
        ts = _timestamp(when, self.columns.header("timestamp"))
        lat = _coordinate(got["lat"], -90, 90, self.columns.header("lat"))
        lon = _coordinate(got["lon"], -180, 180, self.columns.header("lon"))
        if (lat is None) != (lon is None):
            raise ValueError("lat and lon: give both or neither")
        device = self.default_device
        if got["vehicle"] is not None:
            device = re.sub(r"[^a-z0-9_-]", "-", got["vehicle"].lower())[:64].strip("-_")
            if not _IDENT.fullmatch(device):
                raise ValueError(
                    f"{self.columns.header('vehicle')}: {got['vehicle'][:64]!r}"
                    " does not make a device id"
                )
        data: dict[str, Any] = {"status": status}
        if kind == "scan":
            data |= {"text": tracking, "symbology": "carrier", "source": self.carrier}
        elif kind == "pod":
            data |= {"parcel": tracking, "kind": "signature" if got["signature"] else "none"}
            if got["recipient"] or got["signature"]:
                data["recipient"] = got["recipient"] or got["signature"]
        elif kind.startswith("trip.") and got["stop"] is not None:
            data["zone"] = got["stop"]
        if lat is not None and lon is not None:
            data |= {"lat": lat, "lon": lon}
        ref: dict[str, Any] = {"parcel": tracking}
        for name in ("vehicle", "stop", "route"):
            if got[name] is not None and not (name == "stop" and kind == "trip.depart"):
                ref[name] = got[name]
        envelope = {
            "id": event_id(self.carrier, tracking, status, ts, got["event_id"] or ""),
            "seq": 1,  # checked with a seq; the real one is given by adapter.number
            "fleet": fleet,
            "device": device,
            "type": kind,
            "ts": ts,
            "clock": "ntp",  # the carrier's servers' clock
            "data": data,
            "ref": ref,
        }
        try:
            checked = validate_envelope(envelope)
        except EnvelopeError as exc:
            raise ValueError(f"the event it makes is not valid: {exc}") from None
        checked.pop("seq")
        return checked


def _csv_rows(text: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError("empty: no header line") from None
    except csv.Error as exc:
        raise ValueError(f"line 1: {exc}") from None
    names = [h.strip().lstrip("\ufeff") for h in header]
    if len(set(names)) != len(names):
        raise ValueError("line 1: a column name is given twice")
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"line {start}", f"not CSV: {exc}"
            start = reader.line_num + 1
            continue
        where, start = f"line {start}", reader.line_num + 1
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            yield where, f"{len(cells)} fields, the header has {len(names)}"
            continue
        yield where, dict(zip(names, cells, strict=True))


def _timestamp(text: str, column: str) -> str:
    try:
        if re.fullmatch(r"[0-9]{9,11}(\.[0-9]+)?", text):
            when = datetime.fromtimestamp(float(text), UTC)
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"{column}: {text[:64]!r} is not an ISO 8601 time or Unix seconds"
        ) from None
    if not 2000 <= when.year <= 2999:
        raise ValueError(f"{column}: {text[:64]!r} is out of range")
    return format_ts(when.astimezone(UTC))


def _coordinate(text: str | None, lo: float, hi: float, column: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column}: {text[:64]!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{column}: {text[:64]} is not from {lo:g} to {hi:g}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")
