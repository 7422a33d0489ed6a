"""The event envelope of wire contract v1 (DESIGN §2) and the registry of event types.

Both ends validate with this module: the agent before it accepts an event, the hub before it
stores one. Validation is strict and says what is wrong and where::

    >>> validate_envelope({"id": "x", "seq": 0, ...})
    EnvelopeError: seq: Input should be greater than or equal to 1

Errors::

    EnvelopeError (ValueError)      an envelope or its data does not match the contract;
                                    ``path`` names the field ("data.lat"), ``reason`` says why

Bounds (``edge_agent.wire.jsonbounds``), the same on both ends: ``data`` nests at most 32
containers, its integers are 64-bit, its floats finite, its strings and keys hold no lone
surrogate; ``seq`` (and every seq an ``outbox.evicted`` notice names) is at most ``SEQ_MAX`` =
2**53 - 1, which every JSON reader holds exactly and SQLite stores.

The envelope itself is closed (an unknown top-level field is an error: a new field means a new
contract version); the ``data`` of each type is open (the contract lets types grow fields), but
every field the registry knows is checked for type and range.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)

from edge_agent.wire.jsonbounds import MAX_DEPTH, JsonBoundsError, Unrepresentable, check, show_key
from edge_agent.wire.plain import plain_data

__all__ = [
    "CLOCKS",
    "HIGH_VALUE_PREFIXES",
    "LOW_VALUE_TYPES",
    "SEQ_MAX",
    "Envelope",
    "EnvelopeError",
    "batch_digest",
    "encode_batch",
    "encode_checked",
    "encode_envelope",
    "format_ts",
    "is_known_type",
    "is_low_value",
    "new_event_id",
    "parse_ts",
    "registered_types",
    "validate_data",
    "validate_envelope",
    "validate_identity",
]


CLOCKS = ("gnss", "ntp", "rtc", "unsynced")

SEQ_MAX = 2**53 - 1
"""Highest seq of the contract: exact in every JSON reader (IEEE doubles), well inside SQLite."""

IDENT_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_IDENT = re.compile(IDENT_RE)
TS_RE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$"
_TS = re.compile(TS_RE)
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$|^scan$|^pod$")

LOW_VALUE_TYPES = frozenset({"gnss.fix", "device.health"})
"""Types the outbox may thin when full (DESIGN §3.4); every other type is kept."""

HIGH_VALUE_PREFIXES = ("scan", "pod", "load.", "dock.", "trip.", "exception.", "outbox.")


class EnvelopeError(ValueError):
    """An envelope, or the data of its type, does not match wire contract v1."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


Ident = Annotated[str, StringConstraints(pattern=IDENT_RE)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
RefValue = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Open(BaseModel):
    """Type data: known fields are checked strictly, fields added by newer senders kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class GnssFixData(_Open):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    alt_m: float | None = None
    speed_mps: float | None = Field(default=None, ge=0)
    track_deg: float | None = Field(default=None, ge=0, le=360)
    mode: Literal[2, 3]
    quality: int | None = Field(default=None, ge=0)
    hdop: float | None = Field(default=None, ge=0)
    pdop: float | None = Field(default=None, ge=0)
    sats: int | None = Field(default=None, ge=0)


class ScanData(_Open):
    text: str = Field(min_length=1, max_length=8192)
    symbology: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=128)
    gs1: dict[str, Any] | None = None


class PodData(_Open):
    parcel: str = Field(min_length=1, max_length=256)
    kind: Literal["signature", "photo", "pin", "none"]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    recipient: str | None = Field(default=None, max_length=256)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class ZoneData(_Open):
    """Trip and geofence events: which zone, and optionally where the van was."""

    zone: str | None = Field(default=None, max_length=256)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class DwellData(ZoneData):
    dwell_s: float = Field(ge=0)


Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class DoorData(_Open):
    dock: Name
    state: Literal["open", "closed"]


class BayData(_Open):
    dock: Name
    state: Literal["occupied", "free"]


class VehicleAtDockData(_Open):
    dock: Name
    vehicle: Name


class VerifiedData(_Open):
    parcel: Name
    route: Name
    vehicle: Name
    dock: Name


class MisloadData(_Open):
    """A parcel of another route loaded at ``dock`` (``vehicle`` null: none known there)."""

    parcel: Name
    dock: Name
    vehicle: Name | None
    expected_route: Name
    expected_vehicle: Name
    expected_dock: Name


class UnknownParcelData(_Open):
    parcel: Name
    dock: Name
    vehicle: Name | None


class GateOutData(_Open):
    route: Name
    vehicle: Name
    dock: Name
    expected: int = Field(ge=0)
    verified: int = Field(ge=0)
    misloaded: int = Field(ge=0)
    missing: list[Name] = Field(max_length=100_000)


class MissingData(_Open):
    route: Name
    vehicle: Name
    parcels: list[Name] = Field(min_length=1, max_length=100_000)


class EvictedData(_Open):
    """Seqs the outbox gave up (size cap), or that an earlier hub acked and then lost."""

    ranges: list[
        Annotated[list[Annotated[int, Field(ge=1, le=SEQ_MAX)]], Field(min_length=2, max_length=2)]
    ] = Field(min_length=1)
    count: int = Field(ge=1, le=SEQ_MAX)
    reason: Literal["size-cap", "corrupt", "acked-earlier"]

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: list[list[int]]) -> list[list[int]]:
        for lo, hi in ranges:
            if lo > hi:
                raise ValueError(f"range [{lo}, {hi}] is reversed")
        return ranges


class FreeData(_Open):
    """Types whose payload is free-form (health reports, exceptions)."""


_REGISTRY: dict[str, type[_Open]] = {
    "gnss.fix": GnssFixData,
    "trip.depart": ZoneData,
    "trip.approach": ZoneData,
    "trip.arrive": ZoneData,
    "trip.dwell": DwellData,
    "trip.moving": ZoneData,
    "trip.stopped": ZoneData,
    "geofence.enter": ZoneData,
    "geofence.exit": ZoneData,
    "scan": ScanData,
    "pod": PodData,
    "dock.door": DoorData,
    "dock.bay": BayData,
    "dock.vehicle": VehicleAtDockData,
    "load.verified": VerifiedData,
    "load.misload": MisloadData,
    "load.unknown": UnknownParcelData,
    "load.gateout": GateOutData,
    "load.missing": MissingData,
    "device.health": FreeData,
    "device.report": FreeData,
    "outbox.evicted": EvictedData,
}
_FAMILIES: dict[str, type[_Open]] = {"exception.": FreeData}


def _schema_for(type_: str) -> type[_Open] | None:
    schema = _REGISTRY.get(type_)
    if schema is None:
        for prefix, family in _FAMILIES.items():
            if type_.startswith(prefix) and len(type_) > len(prefix) and _TYPE.match(type_):
                return family
    return schema


def registered_types() -> list[str]:
    """Every registered type name, and each family as its prefix followed by ``*``."""
    return sorted(_REGISTRY) + [f"{prefix}*" for prefix in _FAMILIES]


def is_known_type(type_: str) -> bool:
    """Whether ``type_`` is in the registry (exact name or a registered family)."""
    return _schema_for(type_) is not None


def is_low_value(type_: str) -> bool:
    """Whether the outbox may evict events of this type when full (DESIGN §3.4)."""
    return type_ in LOW_VALUE_TYPES


class Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    parcel: RefValue | list[RefValue] | None = None
    shipment: RefValue | None = None
    stop: RefValue | None = None
    route: RefValue | None = None
    vehicle: RefValue | None = None
    dock: RefValue | None = None


class Envelope(BaseModel):
    """The closed top level of every event (DESIGN §2)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: EventId
    seq: int = Field(ge=1, le=SEQ_MAX)
    fleet: Ident
    device: Ident
    type: str = Field(min_length=1, max_length=128)
    ts: Annotated[str, StringConstraints(pattern=TS_RE)]
    clock: Literal["gnss", "ntp", "rtc", "unsynced"]
    data: dict[str, Any]
    ref: Ref | None = None

    @field_validator("ts")
    @classmethod
    def _real_date(cls, ts: str) -> str:
        # the pattern (checked in pydantic-core) fixed the layout and the ranges of every part;
        # only the day of the month can still be impossible (02-30), and days are few: cache them
        if not _real_day(ts[:10]):
            raise ValueError(f"{ts!r} is not a valid date")
        return ts

    @field_validator("type")
    @classmethod
    def _registered(cls, type_: str) -> str:
        if not is_known_type(type_):
            raise ValueError(f"unknown event type {type_!r}")
        return type_


@lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


_ENVELOPE = TypeAdapter(Envelope)
# one model per registered type, with its data schema inside: one validation call per envelope
_TYPED: dict[type[_Open], TypeAdapter[Any]] = {
    schema: TypeAdapter(
        create_model(f"Envelope_{schema.__name__}", __base__=Envelope, data=(schema, ...))
    )
    for schema in {*_REGISTRY.values(), *_FAMILIES.values()}
}


def _first_error(exc: ValidationError, prefix: str = "") -> EnvelopeError:
    err = exc.errors(include_url=False)[0]
    # keys come from the sender: shown escaped when they hold what a log or UTF-8 cannot carry
    path = ".".join(str(p) if isinstance(p, int) else show_key(p) for p in err["loc"])
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if isinstance(err.get("input"), Unrepresentable):
        msg = err["input"].reason  # NaN, 1e400, a 5000-digit integer: say that, not "not an int"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "missing"
    return EnvelopeError(path, msg)


def _bounded(data: Any) -> None:
    try:
        check(data, MAX_DEPTH, "data")
    except JsonBoundsError as exc:
        raise EnvelopeError(exc.path, exc.reason) from None


def validate_data(type_: str, data: Any) -> dict[str, Any]:
    """Check ``data`` against the bounds and the schema of ``type_``; return it unchanged (a
    plain dict).

    Raises EnvelopeError with a path under ``data``.
    """
    if plain_data(type_, data):  # a fix or a scan of known fields: a few plain tests decide
        return dict(data)
    schema = _schema_for(type_)
    if schema is None:
        raise EnvelopeError("type", f"unknown event type {type_[:128]!r}")
    if not isinstance(data, Mapping):
        raise EnvelopeError("data", f"must be an object, not {type(data).__name__}")
    _bounded(data if type(data) is dict else dict(data))
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, "data") from None
    return dict(data)


def validate_envelope(obj: Any) -> dict[str, Any]:
    """Validate one envelope as it travels on the wire; return it as a plain dict.

    The returned dict is the input (not a re-serialisation), so what is stored is byte-for-byte
    what was sent, apart from JSON formatting. ``data`` is held to the bounds of
    ``edge_agent.wire.jsonbounds`` first (one walk), then every field to its schema.
    """
    if not isinstance(obj, Mapping):
        raise EnvelopeError("", f"an envelope must be an object, not {type(obj).__name__}")
    data = obj.get("data")
    if isinstance(data, dict):  # anything else is refused by the schema below
        _bounded(data)
    type_ = obj.get("type")
    schema = _schema_for(type_) if isinstance(type_, str) else None
    adapter = _ENVELOPE if schema is None else _TYPED[schema]
    try:
        adapter.validate_python(obj)
    except ValidationError as exc:
        raise _first_error(exc) from None
    if schema is None:  # the generic model accepted a type the registry does not know
        raise EnvelopeError("type", f"unknown event type {type_!r}")
    if "ref" in obj and obj["ref"] is not None and not obj["ref"]:
        raise EnvelopeError("ref", "must be omitted rather than empty")
    return dict(obj)


def validate_identity(fleet: str, device: str) -> None:
    """Check a fleet and a device id against the contract's identifier pattern."""
    for name, value in (("fleet", fleet), ("device", device)):
        if not isinstance(value, str) or not _IDENT.match(value):
            raise EnvelopeError(name, f"{value!r} does not match {IDENT_RE}")


class _RandomPool:
    """Bytes from the OS's CSPRNG, fetched 4 KiB at a time: one syscall per 400 event ids."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()  # drivers may stamp events from their threads

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(self._size), 0
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out


_RANDOM = _RandomPool()


def new_event_id() -> str:
    """A new globally unique, time-ordered event id: UUIDv7 (RFC 9562 §5.7).

    48 bits of Unix milliseconds, the version, 74 random bits (from the OS's CSPRNG) and the
    variant. Written here rather than taken from a package because it is on the hot path of
    every accepted event.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_RANDOM.take(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_ts(when: datetime) -> str:
    """Format an aware datetime as the contract's ``ts``: UTC, milliseconds, ``Z``."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: event times must be timezone-aware")
    utc = when if when.tzinfo is UTC else when.astimezone(UTC)
    # isoformat is C: "2026-11-21T08:15:02.123+00:00" -> "2026-11-21T08:15:02.123Z"
    return utc.isoformat(timespec="milliseconds")[:23] + "Z"


def parse_ts(ts: str) -> datetime:
    """Parse a contract ``ts`` (``2026-11-21T08:15:02.123Z``) into an aware UTC datetime."""
    if not isinstance(ts, str) or not _TS.match(ts):
        raise ValueError(f"{ts!r} is not ISO 8601 UTC with milliseconds and Z")
    try:
        # the pattern fixed the layout; fromisoformat (C) checks the calendar, fast
        return datetime.fromisoformat(ts[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{ts!r} is not a valid date and time") from None


def encode_batch(bodies: Sequence[bytes]) -> bytes:
    """Join already-encoded envelopes into one events payload ``{"events": [...]}``."""
    return b'{"events":[' + b",".join(bodies) + b"]}"


def batch_digest(payload: bytes) -> str:
    """The digest of an events message's payload, as the hub names the messages it stored.

    Each ack of the hub names them, ``[lo, hi, digest]`` (``"got"``); the device compares the
    digest with that of a payload it published. Equal means the hub handled exactly these
    events at these seqs: the proof that the seqs its watermark covers hold this device's
    events, not an earlier incarnation's that took the same seqs."""
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# the C encoder ``_ENCODER.encode`` builds anew on every call, built once: a third of the cost of
# encoding an event's data. No cycle check (``markers`` None): only validated values come here,
# and validation bounds their nesting, so none can hold itself
_C_ENCODE: Any = getattr(json.encoder, "c_make_encoder", None)  # None without the C speedups
if _C_ENCODE is not None:
    _C_ENCODE = _C_ENCODE(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )


def _dumps(value: Any) -> str:
    """``_ENCODER.encode(value)`` of a validated value, byte for byte."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_PLAIN_ID = re.compile(r"[!#-\[\]-~]+")  # printable ASCII but '"' and '\\': as it is in JSON


def encode_checked(
    event_id: str,
    seq: int,
    fleet: str,
    device: str,
    type_: str,
    ts: str,
    clock: str,
    data: Mapping[str, Any],
    ref: Mapping[str, Any] | None = None,
) -> bytes:
    """``encode_envelope`` of an envelope whose fields were validated, several times faster.

    fleet, device, type, ts and clock passed validation, so they hold no character that JSON
    escapes and go in as they are; id, data and ref go through the encoder. Byte for byte the
    same output as ``encode_envelope`` (a test holds them together).
    """
    tail = f',"ref":{_dumps(ref)}}}' if ref else "}"
    # ids are printable ASCII (UUIDv7 or a client's): only a quote or a backslash needs escaping
    quoted = f'"{event_id}"' if _PLAIN_ID.fullmatch(event_id) else _ENCODER.encode(event_id)
    return (
        f'{{"id":{quoted},"seq":{seq},"fleet":"{fleet}","device":"{device}",'
        f'"type":"{type_}","ts":"{ts}","clock":"{clock}","data":{_dumps(data)}{tail}'
    ).encode()


def encode_envelope(env: Mapping[str, Any]) -> bytes:
    """Canonical compact JSON of one envelope (what the outbox stores and the uplink sends)."""
    return _ENCODER.encode(env).encode()
