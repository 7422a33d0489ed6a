"""The delivery tables' interface: notification log, webhook queue, subscriptions, views.

What the projector derives from the timeline (``hub_bridge.delivery.projector``) and what push
and the API read lives next to the timeline, in the same database:
``store_sqlite.SqliteDeliveryStore`` on the timeline's SQLite file, ``store_pg.PgDeliveryStore``
on its PostgreSQL database. Both implement ``DeliveryStore`` with the same meaning;
``open_delivery_store(url)`` picks one by the timeline URL.

Tables (the same on both backends):

- ``delivery_notices``: the durable notification log. Each notice once (its ``id`` is
  deterministic, so a projector re-processing events after a crash adds nothing), numbered by
  ``pos`` in the order the projector made them: the server-sent event stream's ``id`` and what
  ``Last-Event-ID`` resumes from.
- ``delivery_queue``: one row per (subscription, notice) the subscription's filters take,
  ``pending`` -> ``delivered`` or ``dead``; a row is made in the transaction that logs its
  notice, so nothing logged is ever left unqueued.
- ``delivery_subscriptions``: webhook subscriptions per fleet with their filters and secret.
- ``delivery_views``: the API's answers (a parcel, a route) as the projector last wrote them,
  so every hub instance answers, not only the one running the projector.
- ``delivery_exceptions``: each exception raised, and when it was resolved.
- ``delivery_checkpoint``: the projector's cursors and its model, to resume after a restart.

Errors::

    DeliveryStoreError      the tables cannot be used (a newer schema, a bad URL)
    StoreUnavailable        (hub_bridge.store) the database cannot be reached just now
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "KINDS",
    "STATES",
    "Checkpoint",
    "Delivery",
    "DeliveryStore",
    "DeliveryStoreError",
    "LoggedNotice",
    "NewNotice",
    "Outcome",
    "Subscription",
    "canonical_json",
    "new_secret",
    "new_subscription_id",
    "notice_subject",
]

KINDS = ("parcel.status", "stop.eta", "exception.raised", "exception.resolved")
"""What a notice can be (the INTERFACE of issue 12)."""

STATES = ("pending", "delivered", "dead")
"""A webhook delivery's states."""


class DeliveryStoreError(Exception):
    """The delivery tables cannot be used (a schema newer than the code, an unknown URL)."""


def canonical_json(value: Any) -> str:
    """The one serialisation of a notice: the webhook body, the stream's data, the log row."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def notice_subject(kind: str, payload: Mapping[str, Any]) -> str | None:
    """What a subscription's ``types`` filter matches for a notice: the exception's type for
    ``exception.*`` notices, the type of the event that caused it otherwise (``pod``,
    ``load.misload``, ``trip.arrive``...), None when the notice names neither."""
    if kind.startswith("exception."):
        for name in ("type", "exception"):
            value = payload.get(name)
            if isinstance(value, str):
                return value
            if isinstance(value, Mapping) and isinstance(value.get("type"), str):
                return str(value["type"])
    event = payload.get("event")
    if isinstance(event, Mapping) and isinstance(event.get("type"), str):
        return str(event["type"])
    return None


def new_secret() -> str:
    """A webhook signing secret (256 bits), given when a subscription is made without one."""
    return "whsec_" + secrets.token_urlsafe(32)


def new_subscription_id() -> str:
    """A subscription id: short, URL-safe, unguessable enough to not collide."""
    return "wh_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook subscription of a fleet: where to POST and which notices."""

    id: str
    fleet: str
    url: str
    secret: str
    kinds: tuple[str, ...] = ()
    """Notice kinds taken; empty takes all."""
    types: tuple[str, ...] = ()
    """Exception types or causing event types taken (``notice_subject``); empty takes all."""
    description: str = ""
    created: float = 0.0
    active: bool = True

    def takes(self, fleet: str, kind: str, subject: str | None) -> bool:
        """Whether a notice of ``fleet`` and ``kind`` about ``subject`` goes to this subscriber."""
        if not self.active or fleet != self.fleet:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        return not self.types or (subject is not None and subject in self.types)

    def public(self) -> dict[str, Any]:
        """The subscription as the API shows it: everything but the secret."""
        return {
            "id": self.id,
            "fleet": self.fleet,
            "url": self.url,
            "kinds": list(self.kinds),
            "types": list(self.types),
            "description": self.description,
            "created": self.created,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class NewNotice:
    """A notice as the projector hands it to the store: ``body`` is its canonical JSON."""

    id: str
    fleet: str
    kind: str
    key: str
    ts: str
    body: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class LoggedNotice:
    """A notice of the log with its position."""

    pos: int
    id: str
    fleet: str
    kind: str
    key: str
    ts: str
    body: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A queued webhook delivery due now: the head of its (subscription, key)."""

    sub: str
    notice: str
    pos: int
    key: str
    kind: str
    attempts: int
    created: float
    url: str
    secret: str
    body: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a delivery gave, as the queue records it."""

    sub: str
    notice: str
    at: float
    delivered: bool
    dead: bool = False
    next_at: float | None = None
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class Checkpoint:
    """Where the projector is: its cursors and its model's state."""

    events: int = 0
    """The timeline's ``events_since`` cursor."""
    commands: int = 0
    """The commands cursor (manifests and load plans sent through the hub)."""
    hub_seq: int = 0
    """The last seq of the hub's own exception events in the timeline."""
    model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DeliveryStore(Protocol):
    """Every backend of the delivery tables: the same methods with the same meaning."""

    async def close(self) -> None: ...

    async def lead(self) -> bool:
        """Whether this hub runs the projector and the webhook worker: it holds (or just took)
        the leader lock. One hub on SQLite always does."""
        ...

    # -- the projector ----------------------------------------------------------------------

    async def log_notices(
        self,
        notices: Sequence[NewNotice],
        views: Sequence[tuple[str, str, str, str | None]] = (),
        now: float = 0.0,
    ) -> list[LoggedNotice]:
        """In one transaction: log the notices not logged yet, queue each new one for every
        subscription that takes it, keep exceptions' raise/resolve, and write ``views``
        (kind, fleet, key, JSON or None to delete). Returns the notices logged now."""
        ...

    async def load_checkpoint(self, name: str) -> Checkpoint | None: ...

    async def save_checkpoint(self, name: str, checkpoint: Checkpoint, now: float) -> None: ...

    async def commands_since(self, cursor: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Manifests and load plans queued through the hub after ``cursor``, oldest first:
        ``{"id", "fleet", "device", "name", "payload", "created"}``; and the next cursor. Recent
        ones at or below ``cursor`` may come again (the caller skips ids it took)."""
        ...

    # -- the stream ------------------------------------------------------------------------

    async def notices_after(
        self, pos: int, fleet: str | None = None, limit: int = 1000
    ) -> list[LoggedNotice]: ...

    async def last_pos(self) -> int: ...

    # -- views and exceptions (the API) ------------------------------------------------------

    async def view(self, kind: str, fleet: str, key: str) -> dict[str, Any] | None: ...

    async def exceptions(
        self,
        fleet: str | None,
        state: str = "open",
        types: Sequence[str] = (),
        limit: int = 100,
    ) -> list[dict[str, Any]]: ...

    # -- subscriptions -----------------------------------------------------------------------

    async def add_subscription(self, sub: Subscription) -> None: ...

    async def subscriptions(self, fleet: str | None = None) -> list[Subscription]: ...

    async def subscription(self, fleet: str, sid: str) -> Subscription | None: ...

    async def delete_subscription(self, fleet: str, sid: str) -> bool: ...

    # -- the webhook queue -------------------------------------------------------------------

    async def due(self, sub: Subscription, now: float, limit: int) -> list[Delivery]:
        """The subscription's deliveries due at ``now`` that head their key (no earlier
        pending delivery of the same key), in log order."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        ...

    async def record(self, outcomes: Sequence[Outcome]) -> None: ...

    async def deliveries(
        self, fleet: str, sid: str, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...

    async def retry(self, fleet: str, sid: str, notice: str | None, now: float) -> int:
        """Put dead deliveries of a subscription (one, or all when ``notice`` is None) back in
        the queue, due now; returns how many."""
        ...

    async def prune(self, before: float, views_before: float | None = None) -> int:
        """Delete delivered and dead deliveries, and notices no delivery waits for, older than
        ``before``; views and resolved exceptions not updated since ``views_before``; returns
        rows deleted."""
        ...
