"""Events posted over HTTP by a carrier without devices: the MQTT ingest's rules, sans-IO.

``POST /v1/fleets/{fleet}/events`` takes one envelope, ``{"events": [...]}`` or a JSON array.
``read_body`` sorts it into what to store and what to refuse, ``answer`` turns the store's
results into the reply. Between them the API stores (``TimelineStore.store_many``) and
dead-letters (``TimelineStore.dead_letter``); nothing here does I/O.

The rules are the MQTT ingest's, by construction: every element is checked by
``hub_bridge.ingest.check_events`` as a one-event batch on the topic
``lm/v1/{fleet}/{device}/events`` of its own device, so validation, the future-``ts`` flag, the
accounting of a rejected event's seq and the dead-letter reasons are the same code. An element
whose ``fleet`` is not the path's is a forgery: the whole request is refused and dead-lettered,
nothing of it stored (as one forged envelope taints a whole MQTT message). Each accepted event is
its own ``Batch`` of one ``store_many`` call (one transaction, one commit), so the store's result
says of each event whether it was stored, a duplicate (its id is stored) or a conflict (its seq is
taken by another id: rejected and dead-lettered, as MQTT does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.wire import jsonbounds
from edge_agent.wire.envelope import IDENT_RE, SEQ_MAX
from edge_agent.wire.topics import TopicName
from edge_agent.wire.topics import events as events_topic
from hub_bridge.ingest import check_events
from hub_bridge.timeline import Batch, StoreResult

__all__ = ["EVENTS_MAX", "Intake", "IntakeError", "Item", "answer", "read_body", "topic_of"]

EVENTS_MAX = 5000
"""Most envelopes in one request (each is validated on the hub's loop)."""
_IDENT = re.compile(IDENT_RE.strip("^$"))


class IntakeError(Exception):
    """The request as a whole is refused (``status`` 400 or 413): nothing is stored. ``topic``
    and ``reason`` are what is dead-lettered."""

    def __init__(self, status: int, reason: str, topic: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.topic = topic


@dataclass(slots=True)
class Item:
    """One element of the request and what became of it."""

    index: int
    id: str | None
    seq: int | None
    device: str | None
    status: str | None = None
    """``stored``, ``duplicate`` or ``rejected``; ``None`` until the store answered."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The element's line of the answer."""
        out: dict[str, Any] = {"id": self.id, "seq": self.seq, "status": self.status}
        if self.device is not None:
            out["device"] = self.device
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class Intake:
    """A request sorted: its items, the batches to store (``owners[k]`` is the item of
    ``batches[k]``, ``None`` for a batch that only accounts rejected seqs), and the dead
    letters of the rejected items ``(topic, reason, sample, device, seq)``."""

    fleet: str
    items: list[Item] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    owners: list[Item | None] = field(default_factory=list)
    rejects: list[tuple[str, str, bytes, str | None, int | None]] = field(default_factory=list)


def topic_of(fleet: str, device: str | None) -> str:
    """The topic a device's events would come on; ``+`` for a device the element did not
    name readably (what the dead letter is filed under)."""
    return events_topic(fleet, device) if device is not None else events_topic(fleet, "+")


def read_body(fleet: str, body: bytes, now: float, *, future_tolerance_s: float = 600.0) -> Intake:
    """Sort a request's body (already bounded in size) into batches and rejects; raise
    ``IntakeError`` for a body that is not one of the three shapes, or forged."""
    everyone = topic_of(fleet, None)
    try:
        doc = jsonbounds.loads(body)
    except jsonbounds.JsonBoundsError as exc:
        raise IntakeError(400, f"the body is not JSON: {exc}", everyone) from None
    if isinstance(doc, list):
        elements = doc
    elif isinstance(doc, dict) and "events" in doc:
        if not isinstance(doc["events"], list):
            reason = 'events: must be a list of envelopes {"events": [...]}'
            raise IntakeError(400, reason, everyone)
        elements = doc["events"]
    elif isinstance(doc, dict):
        elements = [doc]
    else:
        raise IntakeError(
            400, 'the body must be an envelope, {"events": [...]} or a JSON array', everyone
        )
    if not elements:
        raise IntakeError(400, "empty batch: no envelope", everyone)
    if len(elements) > EVENTS_MAX:
        raise IntakeError(413, f"{len(elements)} envelopes, more than {EVENTS_MAX}", everyone)
    # identity first, as on MQTT: one forged envelope taints the whole request
    for i, env in enumerate(elements):
        if isinstance(env, dict) and env.get("fleet") != fleet:
            raise IntakeError(
                400,
                f"forged: events[{i}] says fleet {_shown(env.get('fleet'))}, the path {fleet!r}",
                everyone,
            )
    out = Intake(fleet)
    rejected: dict[str, list[int]] = {}
    groups: dict[str, list[tuple[Item, Any]]] = {}
    for i, env in enumerate(elements):
        item = _item(i, env)
        out.items.append(item)
        problem = _unchecked(env, item)
        if problem is not None:
            _reject(out, item, problem, env, rejected)
            continue
        assert item.device is not None
        groups.setdefault(item.device, []).append((item, env))
    verdicts: dict[int, _Verdict] = {}
    for device, members in groups.items():
        topic = TopicName(fleet, device, "events")
        found = _check(topic, members, now, future_tolerance_s)
        if found is None:  # not told apart: each element on its own (the same checks, slower)
            found = {}
            for member in members:
                found |= _check(topic, [member], now, future_tolerance_s) or {}
        verdicts |= found
    for item, env in ((m, e) for members in groups.values() for m, e in members):
        verdict = verdicts.get(item.index)
        if verdict is None or isinstance(verdict, str):
            reason = verdict or f"events[{item.index}]: not checked"
            _reject(out, item, reason, env, rejected)
            continue
        assert item.device is not None
        event, flags, text = verdict
        bodies = None if text is None else [text]
        out.batches.append(Batch(fleet, item.device, [event], [flags], (), bodies))
        out.owners.append(item)
    # request order within each device: of two elements with one id, the first is stored
    order = sorted(range(len(out.batches)), key=lambda k: _index(out.owners[k]))
    out.batches = [out.batches[k] for k in order]
    out.owners = [out.owners[k] for k in order]
    # the seqs of rejected events are accounted for, so the device's watermark does not wait on
    # them; stored first, so that the watermark each event's batch reports counts them
    head = [Batch(fleet, device, (), (), tuple(seqs)) for device, seqs in sorted(rejected.items())]
    out.batches[:0] = head
    out.owners[:0] = [None] * len(head)
    return out


_Verdict = tuple[dict[str, Any], list[str], str | None] | str
"""What ``check_events`` said of one element: the event, its flags and stored text; or why not."""
_NUMBERED = re.compile(r"events\[([0-9]+)\]")


def _check(
    topic: TopicName, members: list[tuple[Item, Any]], now: float, future_tolerance_s: float
) -> dict[int, _Verdict] | None:
    """The MQTT ingest's verdict on each element of one device, by its index in the request;
    ``None`` when the verdicts cannot be told apart (the caller checks them one by one)."""
    try:
        payload = json.dumps({"events": [env for _, env in members]}).encode()
    except (TypeError, ValueError, RecursionError):
        # an unrepresentable number or nesting too deep to encode again: named by the bounds
        if len(members) > 1:
            return None
        item, env = members[0]
        try:
            jsonbounds.check(env, jsonbounds.MAX_DEPTH + 1)  # the envelope holds data 1 down
        except jsonbounds.JsonBoundsError as exc:
            return {item.index: f"events[{item.index}]: {exc}"}
        return {item.index: f"events[{item.index}]: cannot be encoded as JSON"}
    check = check_events(
        topic, payload, now, max_bytes=len(payload) + 1, future_tolerance_s=future_tolerance_s
    )
    if check.dead_letter is not None:
        return None
    out: dict[int, _Verdict] = {}
    for reject in check.rejects:
        # each reason names its element in the batch check_events was given: events[j]: ...
        m = _NUMBERED.match(reject.reason)
        if m is None or int(m.group(1)) >= len(members):
            return None
        item = members[int(m.group(1))][0]
        out[item.index] = f"events[{item.index}]{reject.reason[m.end() :]}"
    accepted = [item for item, _ in members if item.index not in out]
    if len(accepted) != len(check.events) or len(out) != len(check.rejects):
        return None
    bodies: list[str | None] = list(check.bodies) if check.bodies else [None] * len(accepted)
    for item, event, flags, text in zip(accepted, check.events, check.flags, bodies, strict=True):
        if event.get("id") != item.id or event.get("seq") != item.seq:
            return None
        out[item.index] = (event, flags, text)
    return out


def _index(owner: Item | None) -> int:
    return -1 if owner is None else owner.index


def answer(intake: Intake, results: Sequence[StoreResult]) -> dict[str, Any]:
    """The reply once ``intake.batches`` were stored with these ``results`` (one each): each
    element's status, and each device's watermark after the request. Conflicts (a seq taken by
    another id) become rejects, returned as dead letters to record by the caller."""
    watermarks: dict[str, int] = {}
    for batch, owner, result in zip(intake.batches, intake.owners, results, strict=True):
        watermarks[batch.device] = result.watermark
        if owner is None:
            continue
        if result.stored:
            owner.status = "stored"
        elif result.duplicates:
            owner.status = "duplicate"
        else:
            owner.status = "rejected"
            owner.error = (
                f"events[{owner.index}]: seq {owner.seq} is stored with another id"
                " (a seq is never reused)"
            )
    stored = sum(1 for i in intake.items if i.status == "stored")
    return {
        "stored": stored,
        "duplicates": sum(1 for i in intake.items if i.status == "duplicate"),
        "rejected": sum(1 for i in intake.items if i.status == "rejected"),
        "events": [i.as_json() for i in intake.items],
        "watermarks": dict(sorted(watermarks.items())),
    }


def conflicts(intake: Intake) -> list[tuple[str, str]]:
    """``(topic, reason)`` of the elements the store refused for their seq (after ``answer``)."""
    return [
        (topic_of(intake.fleet, i.device), i.error or "")
        for i in intake.items
        if i.status == "rejected" and i.error is not None and "stored with another id" in i.error
    ]


def _item(i: int, env: Any) -> Item:
    if not isinstance(env, dict):
        return Item(i, None, None, None)
    eid, seq, device = env.get("id"), env.get("seq"), env.get("device")
    return Item(
        i,
        eid if isinstance(eid, str) and eid.isascii() and eid.isprintable() else None,
        seq if type(seq) is int and 1 <= seq <= SEQ_MAX else None,
        device if isinstance(device, str) and _ident(device) else None,
    )


def _unchecked(env: Any, item: Item) -> str | None:
    """Why an element cannot even be given to ``check_events`` (it is then rejected alone)."""
    i = item.index
    if not isinstance(env, dict):
        return f"events[{i}]: not an object (an envelope is a JSON object)"
    if item.device is None:
        return f"events[{i}]: device: must match {IDENT_RE}"
    return None


def _reject(out: Intake, item: Item, reason: str, env: Any, rejected: dict[str, list[int]]) -> None:
    item.status, item.error = "rejected", reason
    if item.device is not None and item.seq is not None:
        rejected.setdefault(item.device, []).append(item.seq)
    sample = json.dumps(_sample(env), default=str).encode()
    out.rejects.append((topic_of(out.fleet, item.device), reason, sample, item.device, item.seq))


def _sample(value: Any, room: int = 4) -> Any:
    """A small copy of a refused element that ``json.dumps`` always encodes."""
    if isinstance(value, dict):
        if room <= 0:
            return "<cut>"
        return {_text(k): _sample(v, room - 1) for k, v in list(value.items())[:64]}
    if isinstance(value, list):
        return "<cut>" if room <= 0 else [_sample(v, room - 1) for v in value[:64]]
    if isinstance(value, str):
        return _text(value[:1024])
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:64]


def _text(s: Any) -> str:
    return str(s).encode("utf-8", "backslashreplace").decode("utf-8")


def _ident(s: str) -> bool:
    return _IDENT.fullmatch(s) is not None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(_text(value[:64]))
    return f"<{type(value).__name__}>"
