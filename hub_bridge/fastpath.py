"""The hub's fast path through a well-formed batch: pure, no I/O, never the last word.

Three helpers for ``hub_bridge.ingest.check_events``, each of which may only say "plainly fine"
or "don't know" (then the general path runs, the shared validator decides and words the reason):

- ``split_batch(payload)``: a payload in the agents' own layout (``encode_batch``:
  ``{"events":[E,E,...]}``, no whitespace) is cut into its envelopes, each with its exact text:
  parsed whole by orjson when its encodings give the payload back byte for byte, else each
  envelope by the standard library's C scanner. Anything else (whitespace, other keys, ``NaN``,
  a huge integer, not UTF-8) returns None and the payload is parsed as before.
- ``plainly_valid(env, fleet, device)``: True only for a ``gnss.fix`` or ``scan`` envelope of
  the topic's device whose every field is inside the contract by plain type and range tests
  (no unknown field, no field the registry would need a schema for). Whatever it accepts the
  shared validator accepts too (``tests/test_hub_fastpath.py`` holds them together on valid,
  mutated and random envelopes); it rejects nothing.
- ``canonical_head(env)``: the start of the envelope's canonical encoding (up to ``"data":``),
  so that a device's own canonical text can be stored as it came instead of encoded again.
"""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from typing import Any

import orjson

from edge_agent.wire.envelope import CLOCKS, SEQ_MAX, TS_RE
from edge_agent.wire.plain import plain_data, plain_ref

__all__ = ["canonical_head", "plainly_valid", "split_batch"]

_OPEN = '{"events":['
_CLOSE = "]}"
_OPEN_BYTES = _OPEN.encode()
_CLOSE_BYTES = _CLOSE.encode()


def _refuse_constant(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity: the general path words it


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_scan = _DECODER.raw_decode


def split_batch(payload: bytes) -> tuple[list[str], list[Any]] | None:
    """The texts and values of a batch's envelopes, or None when the payload is not plainly in
    the agents' layout (``{"events":[...]}`` compact, at least one element)."""
    if not (payload.startswith(b'{"events":[{') and payload.endswith(b"}]}")):
        return None
    return _split_by_orjson(payload) or _split_by_scan(payload)


def _split_by_orjson(payload: bytes) -> tuple[list[str], list[Any]] | None:
    """The whole payload parsed by orjson and each envelope encoded back by it: when the
    envelopes' encodings joined are the payload byte for byte, each is its envelope's exact
    text (the usual case: an agent's canonical encoding). Anything else (a float written
    another way, a duplicate key, a number orjson does not take, a lone surrogate) gives None,
    and the scan below decides. A third of the cost of scanning envelope by envelope."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    events = doc.get("events") if type(doc) is dict and len(doc) == 1 else None
    if type(events) is not list or not events:
        return None
    try:
        texts = [orjson.dumps(env) for env in events]
    except orjson.JSONEncodeError:
        return None
    if _OPEN_BYTES + b",".join(texts) + _CLOSE_BYTES != payload:
        return None
    return [text.decode() for text in texts], events


def _split_by_scan(payload: bytes) -> tuple[list[str], list[Any]] | None:
    """Each envelope parsed by the standard library's C scanner, with its exact text."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    texts: list[str] = []
    values: list[Any] = []
    end = len(text) - len(_CLOSE)
    pos = len(_OPEN)
    try:
        while True:
            value, stop = _scan(text, pos)
            texts.append(text[pos:stop])
            values.append(value)
            if stop == end:
                return texts, values
            if text[stop] != ",":
                return None
            pos = stop + 1
    except (ValueError, RecursionError, IndexError):
        # not JSON, a constant, an integer past Python's digit limit, too deep: the general
        # path parses it again and says what it is
        return None


_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TS = re.compile(TS_RE)
_PLAIN_ID = re.compile(r"[!#-\[\]-~]{1,128}")  # as it is in JSON: no quote, no backslash
_ENVELOPE_KEYS = frozenset(("id", "seq", "fleet", "device", "type", "ts", "clock", "data", "ref"))
_CLOCKS = frozenset(CLOCKS)


@lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def plainly_valid(env: Any, fleet: str, device: str) -> bool:
    """Whether ``env`` is a ``gnss.fix`` or ``scan`` of ``fleet``/``device`` that the shared
    validator accepts, as far as plain tests can tell; False means "ask the validator"."""
    if type(env) is not dict or not env.keys() <= _ENVELOPE_KEYS:
        return False
    eid, seq, ts, data = env.get("id"), env.get("seq"), env.get("ts"), env.get("data")
    if not (
        type(eid) is str
        and _ID.fullmatch(eid)
        and type(seq) is int
        and 1 <= seq <= SEQ_MAX
        and env.get("fleet") == fleet
        and env.get("device") == device
        and type(env.get("clock")) is str
        and env["clock"] in _CLOCKS
        and type(ts) is str
        and _TS.fullmatch(ts)
        and _real_day(ts[:10])
        and type(data) is dict
        and ("ref" not in env or plain_ref(env["ref"]))
    ):
        return False
    # the data's plain tests are the agent's own (edge_agent.wire.plain): one source of truth
    return plain_data(str(env.get("type")), data)


def canonical_head(env: dict[str, Any]) -> str:
    """``encode_checked``'s output up to and including ``"data":`` for a valid envelope (or a
    string no text starts with, when its id needs escaping)."""
    eid = env["id"]
    if not _PLAIN_ID.fullmatch(eid):
        return "\x00"  # never a prefix of JSON text: the caller encodes the envelope
    return (
        f'{{"id":"{eid}","seq":{env["seq"]},"fleet":"{env["fleet"]}","device":"{env["device"]}",'
        f'"type":"{env["type"]}","ts":"{env["ts"]}","clock":"{env["clock"]}","data":'
    )
