"""Exceptions as the delivery model keeps them: each raised once and resolved once, with a reason.

An exception's ``id`` is made of its type and what it is about (``late_risk:acme:r-1:s-3``), so a
rule that fires again on the same thing finds it already raised and says nothing, and a replay of
the same events raises the same ids. Types raised by the hub's own rules::

    misload, missing, pod_far, scan_without_pod, device_stale, gnss_lost, dwell_long, late_risk

and the devices' own ``exception.*`` events, raised under their event type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RULE_TYPES", "ExceptionBook", "ExceptionState"]

RULE_TYPES = (
    "misload",
    "missing",
    "pod_far",
    "scan_without_pod",
    "device_stale",
    "gnss_lost",
    "dwell_long",
    "late_risk",
)


@dataclass(slots=True)
class ExceptionState:
    """One exception: what, about what (``ref``), why, the event that raised it, and when it was
    raised and resolved (ISO times; ``resolved_at`` None while open)."""

    id: str
    type: str
    fleet: str
    reason: str
    raised_at: str
    ref: dict[str, str]
    event: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    resolved_at: str | None = None
    resolution: str | None = None

    @property
    def open(self) -> bool:
        """Whether it is still open."""
        return self.resolved_at is None

    def view(self) -> dict[str, Any]:
        """The exception as the API shows it."""
        out = asdict(self)
        out["status"] = "open" if self.open else "resolved"
        return out


@dataclass(slots=True)
class ExceptionBook:
    """Every exception of a model by id; ``raise_`` and ``resolve`` act at most once each."""

    items: dict[str, ExceptionState] = field(default_factory=dict)

    def raise_(self, exc: ExceptionState) -> bool:
        """Record ``exc`` unless one with its id exists; whether it was new."""
        if exc.id in self.items:
            return False
        self.items[exc.id] = exc
        return True

    def resolve(self, exc_id: str, at: str, resolution: str) -> ExceptionState | None:
        """Resolve an open exception; the exception, or None when not open."""
        exc = self.items.get(exc_id)
        if exc is None or not exc.open:
            return None
        exc.resolved_at = at
        exc.resolution = resolution
        return exc

    def is_open(self, exc_id: str) -> bool:
        """Whether ``exc_id`` is raised and not yet resolved."""
        exc = self.items.get(exc_id)
        return exc is not None and exc.open

    def to_json(self) -> list[dict[str, Any]]:
        """JSON data."""
        return [asdict(e) for e in self.items.values()]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> ExceptionBook:
        """The inverse of ``to_json``."""
        return cls({d["id"]: ExceptionState(**d) for d in data})
