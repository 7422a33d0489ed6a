"""Commands and their answers (DESIGN §2): ``cmd/{name}`` from the hub, ``cmd-ack`` back.

A command's payload is a JSON object with an ``id`` next to its own fields (a manifest, a load
plan...). The device answers each command that has one on ``lm/v1/{fleet}/{device}/cmd-ack`` with
``{"id", "ok", "error"?}``: ``ok`` once the command is applied and kept on disk, ``error`` saying
what is wrong when it is refused. A handler refuses with ``CommandRefused``; the answer is the
same for a command delivered twice (QoS 1 and the hub's resends repeat it), so handlers are
idempotent.
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.wire import jsonbounds

__all__ = ["COMMAND_ID_MAX", "CommandRefused", "command_ack", "command_id"]

COMMAND_ID_MAX = 128
ERROR_MAX = 512


class CommandRefused(Exception):
    """A command the device will not apply; the message goes back in the ack's ``error``."""


def command_id(payload: bytes) -> str | None:
    """The ``id`` of a command payload, or None when it has none (no answer is then owed).

    Never raises: a payload that is not a bounded JSON object has no id to answer to.
    """
    try:
        doc = jsonbounds.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    cid = doc.get("id")
    if isinstance(cid, str) and 0 < len(cid) <= COMMAND_ID_MAX and cid.isprintable():
        return cid
    return None


def command_ack(cid: str, error: str | None = None) -> bytes:
    """The ``cmd-ack`` payload for command ``cid``: ok, or refused with ``error``."""
    body: dict[str, Any] = {"id": cid, "ok": error is None}
    if error is not None:
        body["error"] = error[:ERROR_MAX]
    return json.dumps(body, separators=(",", ":")).encode()
