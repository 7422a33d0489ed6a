"""Component health and counters, shared by every part of the agent.

Components report a state per name ("gnss": "ok" | "lost" ...) and count events per reason.
Transitions are logged once (a van offline for six hours must not fill its SD card): the first
bad state at WARNING, the recovery at INFO. ``snapshot()`` feeds ``GET /v1/health`` and the
``device.health`` events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ComponentState", "HealthRegistry"]

log = logging.getLogger(__name__)

OK_STATES = frozenset({"ok", "connected", "idle", "running"})


@dataclass(slots=True)
class ComponentState:
    state: str
    since: float
    detail: dict[str, Any] = field(default_factory=dict)


class HealthRegistry:
    """States and counters of the agent's components."""

    def __init__(self) -> None:
        self._states: dict[str, ComponentState] = {}
        self._counters: dict[str, Counter[str]] = {}

    def set_state(self, component: str, state: str, **detail: Any) -> bool:
        """Set a component's state; log and return True only on a transition."""
        current = self._states.get(component)
        if current is not None and current.state == state:
            current.detail = detail
            return False
        self._states[component] = ComponentState(state, time.time(), detail)
        extra = f" ({', '.join(f'{k}={v}' for k, v in detail.items())})" if detail else ""
        if state in OK_STATES:
            if current is not None:
                log.info("%s recovered: %s%s", component, state, extra)
        else:
            log.warning("%s: %s%s", component, state, extra)
        return True

    def state(self, component: str) -> str | None:
        """The current state of a component, or None if it never reported."""
        current = self._states.get(component)
        return None if current is None else current.state

    def count(self, component: str, reason: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``reason`` of ``component``."""
        self._counters.setdefault(component, Counter())[reason] += n

    def counters(self, component: str) -> dict[str, int]:
        """A copy of a component's counters."""
        return dict(self._counters.get(component, {}))

    def snapshot(self) -> dict[str, Any]:
        """Every component's state, age and counters, as JSON-ready data."""
        now = time.time()
        out: dict[str, Any] = {}
        for name in sorted(set(self._states) | set(self._counters)):
            entry: dict[str, Any] = {}
            st = self._states.get(name)
            if st is not None:
                entry.update(state=st.state, since_s=round(now - st.since, 1), **st.detail)
            if name in self._counters:
                entry["counters"] = dict(self._counters[name])
            out[name] = entry
        return out
