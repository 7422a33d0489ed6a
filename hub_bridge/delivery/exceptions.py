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
    # open exceptions by what they are about: (fleet, "parcel" | "route", id) -> exception ids
    _open: dict[tuple[str, str, str], set[str]] = field(default_factory=dict, repr=False)

    def raise_(self, exc: ExceptionState) -> bool:
        """Record ``exc`` unless one with its id exists; whether it was new."""
        if exc.id in self.items:
            return False
        self.items[exc.id] = exc
        if exc.open:
            for key in self._keys(exc):
                self._open.setdefault(key, set()).add(exc.id)
        return True

    @staticmethod
    def _keys(exc: ExceptionState) -> list[tuple[str, str, str]]:
        return [(exc.fleet, k, exc.ref[k]) for k in ("parcel", "route") if k in exc.ref]

    def open_about(self, fleet: str, what: str, ident: str) -> list[ExceptionState]:
        """The open exceptions whose ``ref`` names ``what`` (``parcel`` or ``route``)
        ``ident``, by the time they were raised (then id: the same order on every replay)."""
        ids = self._open.get((fleet, what, ident), ())
        return sorted((self.items[i] for i in ids), key=lambda e: (e.raised_at, e.id))

    def forget(self, keep: set[str]) -> None:
        """Drop every exception whose id is not in ``keep``."""
        self.items = {i: e for i, e in self.items.items() if i in keep}
        self._reindex()

    def _reindex(self) -> None:
        self._open = {}
        for exc in self.items.values():
            if exc.open:
                for key in self._keys(exc):
                    self._open.setdefault(key, set()).add(exc.id)

    def resolve(self, exc_id: str, at: str, resolution: str) -> ExceptionState | None:
        """Resolve an open exception; the exception, or None when not open."""
        exc = self.items.get(exc_id)
        if exc is None or not exc.open:
            return None
        exc.resolved_at = at
        exc.resolution = resolution
        for key in self._keys(exc):
            self._open.get(key, set()).discard(exc.id)
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
        book = cls({d["id"]: ExceptionState(**d) for d in data})
        book._reindex()
        return book
