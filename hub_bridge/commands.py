"""Commands to devices, kept until the device acknowledges them (DESIGN §2, §10): the pure part.

``hub-bridge send NAME --fleet F --device D FILE`` posts the file to the running hub's API; the
hub checks it (``prepare_command``), gives it an id (a UUIDv7 from the wire helpers), keeps it in
the timeline store and publishes it on ``lm/v1/{fleet}/{device}/cmd/{name}`` (QoS 1, not
retained) until the device answers on ``cmd-ack`` (``parse_command_ack``):

- at once when queued (unless the device is known to be offline);
- again whenever the device's birth (``state`` online) arrives, since a device that was offline
  or restarted may have missed it;
- again while unanswered, after ``resend_delay`` (capped exponential backoff), while the device is
  not known to be offline.

The queue is bounded (``CommandLimits``): a new command supersedes an unanswered older one of the
same name for that device (a newer manifest replaces the old one: it is never sent again); a
device keeps at most ``max_per_device`` commands (finished ones go first); answered and superseded
ones are deleted after ``retention_s``. Nothing a device sends adds a row: only the hub's API does.

The hub does not validate a manifest or a load plan against its parser: those parsers belong to
the agent's domains, which the hub may not import (``tests/test_layers.py``). The device does,
and its refusal comes back in the ack's ``error``, recorded with the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_agent.wire import jsonbounds
from edge_agent.wire.commands import COMMAND_ID_MAX
from edge_agent.wire.envelope import new_event_id
from edge_agent.wire.limits import BATCH_MAX_BYTES

__all__ = [
    "ACK_MAX_BYTES",
    "COMMAND_NAMES",
    "PAYLOAD_MAX_BYTES",
    "STATUSES",
    "CommandAck",
    "CommandAckError",
    "CommandError",
    "CommandLimits",
    "check_command_body",
    "command_status",
    "parse_command_ack",
    "prepare_command",
    "resend_delay",
]

COMMAND_NAMES = ("manifest", "loadplan", "config", "report", "eta")
"""The commands ``hub-bridge send`` and the hub API take (DESIGN §2, §10). ``eta`` is the one the
hub's delivery service also queues by itself: each route's ETAs for its van
(``hub_bridge.delivery.vaneta``)."""

PAYLOAD_MAX_BYTES = BATCH_MAX_BYTES
"""Largest command on the wire, its id included: the batch limit, the largest message both ends
are built to take."""

ACK_MAX_BYTES = 4096
"""A larger ``cmd-ack`` is refused (an answer holds an id of 128 and an error of 512 characters)."""

ERROR_MAX = 512
"""Most characters of a device's error kept (the agent sends at most as many)."""

STATUSES = ("queued", "sent", "ok", "refused", "superseded")
"""A command's status: not published yet; published and unanswered; answered ok; refused by the
device (``error`` says why); replaced by a newer one of its name before the device answered."""


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """How the hub keeps and resends commands."""

    max_per_device: int = 100
    """Commands kept per device, answered ones included (finished ones are deleted first)."""
    retention_s: float = 7 * 86400.0
    """How long answered and superseded commands are kept."""
    resend_s: float = 30.0
    """First wait for an answer before publishing again..."""
    resend_max_s: float = 900.0
    """... doubling up to this."""

    def __post_init__(self) -> None:
        # one unanswered command per name must always fit
        if self.max_per_device < len(COMMAND_NAMES):
            raise ValueError(f"max_per_device must be at least {len(COMMAND_NAMES)}")
        if not 0 < self.resend_s <= self.resend_max_s:
            raise ValueError("resend_s must be positive and at most resend_max_s")


class CommandError(ValueError):
    """A command the hub will not queue; ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_command_body(body: bytes, max_bytes: int = PAYLOAD_MAX_BYTES) -> dict[str, Any]:
    """The JSON object of a command file or request body; raise CommandError naming what is wrong.

    Bounded like everything the hub takes (``jsonbounds``): UTF-8, JSON, an object, nesting,
    finite numbers, 64-bit integers, no lone surrogate; at most ``max_bytes``; no ``id`` of its
    own (the hub gives each command its id, next to the command's fields).
    """
    if len(body) > max_bytes:
        raise CommandError(f"the command is {len(body)} bytes, more than {max_bytes}", 413)
    try:
        doc = jsonbounds.loads(body)
    except jsonbounds.JsonBoundsError as exc:
        raise CommandError(f"the command is {exc}") from None
    if not isinstance(doc, dict):
        raise CommandError(f"a command is a JSON object, not {_kind(doc)}")
    try:
        jsonbounds.check(doc)
    except jsonbounds.JsonBoundsError as exc:
        raise CommandError(f"the command: {exc}") from None
    if "id" in doc:
        raise CommandError('id: the hub gives each command its id; remove "id" from the command')
    return doc


def prepare_command(
    body: bytes, max_bytes: int = PAYLOAD_MAX_BYTES, cid: str | None = None
) -> tuple[str, str]:
    """Check a command (``check_command_body``) and give it its id: ``(id, payload)``, the
    payload being the command's JSON object with ``id`` first, as it is published."""
    doc = check_command_body(body, max_bytes)
    cid = cid or new_event_id()
    payload = json.dumps({"id": cid, **doc}, separators=(",", ":"), ensure_ascii=False)
    size = len(payload.encode("utf-8"))
    if size > max_bytes:
        raise CommandError(f"with its id the command is {size} bytes, more than {max_bytes}", 413)
    return cid, payload


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def resend_delay(sent_count: int, limits: CommandLimits) -> float:
    """Seconds to wait for an answer after the ``sent_count``-th publication (1 for the first):
    ``resend_s`` doubling up to ``resend_max_s``. No jitter: each command has its own schedule,
    and births, not timers, are what bring a fleet back at once."""
    return min(limits.resend_max_s, limits.resend_s * 2.0 ** min(max(sent_count - 1, 0), 32))


class CommandAckError(ValueError):
    """A ``cmd-ack`` payload that is not ``{"id", "ok", "error"?}`` within bounds."""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A device's answer to command ``id``: applied (``ok``) or refused with ``error``."""

    id: str
    ok: bool
    error: str | None = None


def parse_command_ack(payload: bytes) -> CommandAck:
    """Decode a ``cmd-ack`` payload (bounded); raise CommandAckError saying what is wrong."""
    if len(payload) > ACK_MAX_BYTES:
        raise CommandAckError(f"oversize: {len(payload)} bytes > {ACK_MAX_BYTES}")
    try:
        doc = jsonbounds.loads(payload)
        jsonbounds.check(doc, max_depth=2)
    except jsonbounds.JsonBoundsError as exc:
        raise CommandAckError(str(exc)) from None
    if not isinstance(doc, dict):
        raise CommandAckError(f"not a JSON object but {_kind(doc)}")
    cid, ok, error = doc.get("id"), doc.get("ok"), doc.get("error")
    if not (isinstance(cid, str) and 0 < len(cid) <= COMMAND_ID_MAX and cid.isprintable()):
        raise CommandAckError(f'"id" must be a printable string of 1 to {COMMAND_ID_MAX} chars')
    if not isinstance(ok, bool):
        raise CommandAckError('"ok" must be true or false')
    if error is not None and not isinstance(error, str):
        raise CommandAckError('"error" must be a string')
    if not ok and not error:
        error = "refused"  # a refusal without a reason is still a refusal
    return CommandAck(cid, ok, error[:ERROR_MAX] if error and not ok else None)


def command_status(sent_count: int, acked: bool, ok: bool | None, superseded: bool) -> str:
    """A command's status (``STATUSES``): an answer wins over being superseded (the device had
    the command before its successor came)."""
    if acked:
        return "ok" if ok else "refused"
    if superseded:
        return "superseded"
    return "sent" if sent_count > 0 else "queued"
