"""Checks one MQTT message against wire contract v1: pure, no I/O.

``check_events(topic, payload, now)`` sorts a batch into events to store and rejects with their
reasons; a message that cannot be read at all becomes one dead letter. Rules (issue 2, DESIGN §2):

- the payload is at most 256 KiB, UTF-8 JSON, ``{"events": [envelope, ...]}``;
- every envelope passes the shared validator (``edge_agent.wire.envelope``);
- the envelope's fleet and device equal the topic's (a mismatch is a forgery: the whole batch is
  dead-lettered, nothing of it is stored or acknowledged);
- a ``ts`` further than ``future_tolerance`` ahead of the hub's clock is kept but flagged.

An invalid envelope from the right device is rejected alone; its seq (when readable: an int
from 1 to ``SEQ_MAX``) is still accounted for, so the device's watermark does not stall on an
event that will never be valid. The payload is parsed by ``edge_agent.wire.jsonbounds.loads``, which
never raises on a bad value: ``NaN``, ``1e400``, a 5000-digit integer, a lone surrogate or data
nested deeper than 32 fail only the envelope that holds them (the same bounds as the agent's API).
Only a payload that is not JSON at all (or nests past the parser's own limit, about 990 levels)
is one dead letter. Nothing here raises, whatever the payload; what a reject carries (reason,
``raw``) is safe to log, to encode as UTF-8 and to ``json.dumps``.

The common case is made cheap without a second set of rules (``hub_bridge.fastpath``): a batch
in the agents' own layout is split into its envelopes' texts with one C scan each, and an
envelope of a hot type (``gnss.fix``, ``scan``) whose every field is plainly inside the contract
is accepted by a few type and range tests; anything else, valid or not, goes through the shared
validator, which alone words the reasons. Each accepted event comes with the text the timeline
stores (``bodies``): the device's own canonical bytes when its header is canonical, else the
envelope encoded once here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.wire.envelope import (
    SEQ_MAX,
    EnvelopeError,
    batch_digest,
    encode_checked,
    format_ts,
    validate_envelope,
)
from edge_agent.wire.jsonbounds import MAX_DEPTH, JsonBoundsError, Unrepresentable, loads
from edge_agent.wire.limits import BATCH_MAX_BYTES
from edge_agent.wire.topics import TopicName
from hub_bridge.fastpath import canonical_head, plainly_valid, split_batch

__all__ = ["BatchCheck", "Reject", "batch_proof", "check_events"]


@dataclass(frozen=True, slots=True)
class Reject:
    """One envelope of a batch that is not stored: why, and its seq when it has one.

    ``raw`` is the envelope cut to a few levels, its unrepresentable numbers as their text: it
    can be ``json.dumps``-ed whatever was sent."""

    reason: str
    seq: int | None
    raw: Any


@dataclass(slots=True)
class BatchCheck:
    """The verdict on one events message."""

    events: list[dict[str, Any]] = field(default_factory=list)
    flags: list[list[str]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    """Each event's stored text: compact JSON of the envelope, in the contract's field order."""
    rejects: list[Reject] = field(default_factory=list)
    dead_letter: str | None = None


HUB_DEVICE = "hub"
"""The device id of the hub's own events in each fleet (the exceptions its rules raise, issue
12): no device may take it (claims and ingest refuse it)."""


def check_events(
    topic: TopicName,
    payload: bytes,
    now: float,
    *,
    max_bytes: int = BATCH_MAX_BYTES,
    future_tolerance_s: float = 600.0,
    fast: bool = True,
) -> BatchCheck:
    """Validate an events batch published on ``topic`` (already parsed) at hub time ``now``.

    ``fast=False`` skips the fast path (``hub_bridge.fastpath``): the same verdict, slower."""
    out = BatchCheck()
    if topic.device == HUB_DEVICE:
        out.dead_letter = f"device id {HUB_DEVICE!r} is reserved for the hub's own events"
        return out
    if len(payload) > max_bytes:
        out.dead_letter = f"oversize: {len(payload)} bytes > {max_bytes}"
        return out
    split = (
        split_batch(payload) if fast else None
    )  # the agents' layout: each envelope's text comes with it
    texts: list[str] | None = None
    if split is not None:
        texts, items = split
    else:
        try:
            doc = loads(payload)  # UTF-8 only: json.loads(bytes) would also take UTF-16/32
        except JsonBoundsError as exc:
            out.dead_letter = str(exc)
            return out
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            out.dead_letter = 'not a batch: expected {"events": [...]}'
            return out
        items = doc["events"]
    if not items:
        out.dead_letter = "empty batch"
        return out
    # identity first: one forged envelope taints the whole message
    for i, env in enumerate(items):
        if isinstance(env, dict) and (
            env.get("fleet") != topic.fleet or env.get("device") != topic.device
        ):
            out.dead_letter = (
                f"forged: events[{i}] says {_shown(env.get('fleet'))}/{_shown(env.get('device'))},"
                f" the topic {topic.fleet!r}/{topic.device!r}"
            )
            return out
    future_limit = format_ts(datetime.fromtimestamp(now + future_tolerance_s, UTC))
    for i, env in enumerate(items):
        plain = fast and plainly_valid(env, topic.fleet, topic.device)
        if plain:
            checked: dict[str, Any] = env
        else:
            try:
                checked = validate_envelope(env)
            except EnvelopeError as exc:
                seq = env.get("seq") if isinstance(env, dict) else None
                ok_seq = type(seq) is int and 1 <= seq <= SEQ_MAX
                out.rejects.append(
                    Reject(_safe_text(f"events[{i}]: {exc}"), seq if ok_seq else None, _pruned(env))
                )
                continue
        flags: list[str] = []
        # contract timestamps share one fixed layout, so they compare as strings
        if checked["ts"] > future_limit:
            flags.append("future-ts")
        out.events.append(checked)
        out.flags.append(flags)
        text = texts[i] if texts is not None and plain else None
        if text is None or not text.startswith(canonical_head(checked)):
            text = encode_checked(
                checked["id"],
                checked["seq"],
                checked["fleet"],
                checked["device"],
                checked["type"],
                checked["ts"],
                checked["clock"],
                checked["data"],
                checked.get("ref"),
            ).decode()
        out.bodies.append(text)
    return out


def batch_proof(check: BatchCheck, payload: bytes) -> tuple[int, int, str] | None:
    """``[lo, hi, digest]`` of a checked message for the device's ack: the range of the seqs in
    it, stored or rejected (a rejected seq is accounted for too), and ``batch_digest`` of its
    payload. None when no envelope has a seq."""
    seqs = [int(env["seq"]) for env in check.events]
    seqs.extend(r.seq for r in check.rejects if r.seq is not None)
    if not seqs:
        return None
    return (min(seqs), max(seqs), batch_digest(payload))


def _shown(value: Any) -> str:
    """A sender's value in a message: a short repr of a str, else only its type (a deep or huge
    value must not be repr-ed whole)."""
    if isinstance(value, str):
        return repr(value[:64])
    return f"<{type(value).__name__}>"


def _safe_text(text: str) -> str:
    # a lone surrogate cannot be logged to a UTF-8 file nor stored in a TEXT column
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _pruned(value: Any, room: int = MAX_DEPTH + 4) -> Any:
    """A copy that ``json.dumps`` can always encode: containers below ``room`` levels and
    unrepresentable numbers replaced by strings saying what they were."""
    if isinstance(value, Unrepresentable):
        return f"<{value.text[:40]}: {value.reason}>"
    if isinstance(value, dict | list):
        if room <= 0:
            return "<deeper: cut>"
        if isinstance(value, dict):
            return {_safe_text(str(k)): _pruned(v, room - 1) for k, v in value.items()}
        return [_pruned(v, room - 1) for v in value]
    if isinstance(value, str):
        return _safe_text(value)
    return value
