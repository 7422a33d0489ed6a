"""Checks one MQTT message against wire contract v1: pure, no I/O.

``check_events(topic, payload, now)`` sorts a batch into events to store and rejects with their
reasons; a message that cannot be read at all becomes one dead letter. Rules (issue 2, DESIGN §2):

- the payload is at most 256 KiB, UTF-8 JSON, ``{"events": [envelope, ...]}``;
- every envelope passes the shared validator (``edge_agent.envelope``);
- the envelope's fleet and device equal the topic's (a mismatch is a forgery: the whole batch is
  dead-lettered, nothing of it is stored or acknowledged);
- a ``ts`` further than ``future_tolerance`` ahead of the hub's clock is kept but flagged.

An invalid envelope from the right device is rejected alone; its seq (when readable) is still
accounted for, so the device's watermark does not stall on an event that will never be valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.envelope import BATCH_MAX_BYTES, EnvelopeError, format_ts, validate_envelope
from edge_agent.topics import TopicName

__all__ = ["BatchCheck", "Reject", "check_events"]


@dataclass(frozen=True, slots=True)
class Reject:
    """One envelope of a batch that is not stored: why, and its seq when it has one."""

    reason: str
    seq: int | None
    raw: Any


@dataclass(slots=True)
class BatchCheck:
    """The verdict on one events message."""

    events: list[dict[str, Any]] = field(default_factory=list)
    flags: list[list[str]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dead_letter: str | None = None


def check_events(
    topic: TopicName,
    payload: bytes,
    now: float,
    *,
    max_bytes: int = BATCH_MAX_BYTES,
    future_tolerance_s: float = 600.0,
) -> BatchCheck:
    """Validate an events batch published on ``topic`` (already parsed) at hub time ``now``."""
    out = BatchCheck()
    if len(payload) > max_bytes:
        out.dead_letter = f"oversize: {len(payload)} bytes > {max_bytes}"
        return out
    try:
        # decode first: json.loads(bytes) would also accept UTF-16/32, which the contract does not
        doc = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        out.dead_letter = f"not UTF-8: {exc.reason} at byte {exc.start}"
        return out
    except json.JSONDecodeError as exc:
        out.dead_letter = f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
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
                f"forged: events[{i}] says {env.get('fleet')!r}/{env.get('device')!r},"
                f" the topic {topic.fleet!r}/{topic.device!r}"
            )
            return out
    future_limit = format_ts(datetime.fromtimestamp(now + future_tolerance_s, UTC))
    for i, env in enumerate(items):
        try:
            checked = validate_envelope(env)
        except EnvelopeError as exc:
            seq = env.get("seq") if isinstance(env, dict) else None
            ok_seq = isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
            out.rejects.append(Reject(f"events[{i}]: {exc}", seq if ok_seq else None, env))
            continue
        flags: list[str] = []
        # contract timestamps share one fixed layout, so they compare as strings
        if checked["ts"] > future_limit:
            flags.append("future-ts")
        out.events.append(checked)
        out.flags.append(flags)
    return out
