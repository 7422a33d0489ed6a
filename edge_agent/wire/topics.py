"""MQTT topic names of wire contract v1 (DESIGN §2), built and parsed in one place."""

from __future__ import annotations

from typing import NamedTuple

from edge_agent.wire.envelope import EnvelopeError, validate_identity

__all__ = [
    "HUB_STATE_FILTER",
    "PREFIX",
    "TopicName",
    "ack",
    "cmd",
    "cmd_ack",
    "events",
    "hub_state",
    "parse",
    "state",
]

PREFIX = "lm/v1"


class TopicName(NamedTuple):
    """A parsed contract topic: ``lm/v1/{fleet}/{device}/{kind}[/{name}]``."""

    fleet: str
    device: str
    kind: str
    name: str | None = None


def events(fleet: str, device: str) -> str:
    """Edge to hub: batches of events."""
    return f"{PREFIX}/{fleet}/{device}/events"


def state(fleet: str, device: str) -> str:
    """Edge to hub, retained: birth and will."""
    return f"{PREFIX}/{fleet}/{device}/state"


def ack(fleet: str, device: str) -> str:
    """Hub to edge, retained: the ack watermark."""
    return f"{PREFIX}/{fleet}/{device}/ack"


def cmd(fleet: str, device: str, name: str) -> str:
    """Hub to edge: a command (``manifest``, ``config``, ``report``...)."""
    return f"{PREFIX}/{fleet}/{device}/cmd/{name}"


def cmd_ack(fleet: str, device: str) -> str:
    """Edge to hub: the answer to a command (``{"id", "ok", "error"?}``)."""
    return f"{PREFIX}/{fleet}/{device}/cmd-ack"


def hub_state(hub_id: str) -> str:
    """Hub to all, retained: a hub instance's birth and will (Sparkplug's primary host STATE)."""
    return f"{PREFIX}/_hub/{hub_id}/state"


HUB_STATE_FILTER = f"{PREFIX}/_hub/+/state"
"""What agents subscribe to: every hub instance's state (DESIGN §2)."""


def parse(topic: str) -> TopicName:
    """Split a contract topic; raise EnvelopeError naming what does not fit."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise EnvelopeError("topic", f"{topic!r} is not under {PREFIX}/{{fleet}}/{{device}}/")
    fleet, device, kind = parts[2], parts[3], parts[4]
    try:
        validate_identity(fleet, device)
    except EnvelopeError as exc:
        raise EnvelopeError("topic", f"{topic!r}: {exc}") from None
    if kind == "cmd" and len(parts) == 6 and parts[5]:
        return TopicName(fleet, device, kind, parts[5])
    if kind in ("events", "state", "ack", "cmd-ack") and len(parts) == 5:
        return TopicName(fleet, device, kind)
    raise EnvelopeError("topic", f"{topic!r}: unknown topic kind")
