"""Component health and counters, shared by every part of the agent.

Components report a state per name ("gnss": "ok" | "lost" ...) and count events per reason.
Transitions are logged once (a van offline for six hours must not fill its SD card): the first
bad state at WARNING, the recovery at INFO. ``snapshot()`` feeds ``GET /v1/health`` and the
``device.health`` events.

No input can grow it or leak through it: names come partly from outside (``unhandled:{name}``
of any ``cmd/*`` topic), so component and counter names are cut to ``MAX_NAME`` characters, each
component keeps at most ``MAX_COUNTERS`` counters (the rest are added up in ``other``), at most
``MAX_COMPONENTS`` components exist (the rest report as ``other``), and details are cut to
``MAX_DETAIL_KEYS`` keys and ``MAX_DETAIL_CHARS`` characters per string. Every detail string
is redacted (``edge_agent.platform.redact``): a URL with credentials shows ``***``, whichever
component reported it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edge_agent.platform.redact import MASK, is_secret_name, redact_text

__all__ = [
    "MAX_COMPONENTS",
    "MAX_COUNTERS",
    "MAX_DETAIL_CHARS",
    "MAX_DETAIL_KEYS",
    "MAX_NAME",
    "OTHER",
    "ComponentState",
    "HealthRegistry",
    "bounded_detail",
]

log = logging.getLogger(__name__)

OK_STATES = frozenset({"ok", "connected", "idle", "running"})

MAX_COMPONENTS = 64
MAX_COUNTERS = 32
MAX_NAME = 64
MAX_DETAIL_KEYS = 16
MAX_DETAIL_CHARS = 256
OTHER = "other"
"""The component, or the counter, that takes what is over the limits."""

_MAX_DEPTH = 3


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        # redact before cutting: a cut could split a URL and hide its "@" from the redactor
        return _cut(redact_text(value), MAX_DETAIL_CHARS)
    if depth >= _MAX_DEPTH:
        return _cut(redact_text(repr(value)), MAX_DETAIL_CHARS)
    if isinstance(value, dict):
        return bounded_detail(value, depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        out = [_bounded(v, depth + 1) for v in items[:MAX_DETAIL_KEYS]]
        if len(items) > MAX_DETAIL_KEYS:
            out.append(f"... {len(items) - MAX_DETAIL_KEYS} more")
        return out
    return _cut(redact_text(str(value)), MAX_DETAIL_CHARS)


def bounded_detail(detail: dict[Any, Any], depth: int = 0) -> dict[str, Any]:
    """``detail`` made safe to report: redacted, secret keys masked, sizes bounded."""
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(detail.items()):
        if i >= MAX_DETAIL_KEYS:
            out["..."] = f"{len(detail) - MAX_DETAIL_KEYS} more"
            break
        name = _cut(str(key), MAX_NAME)
        out[name] = MASK if is_secret_name(name) and value else _bounded(value, depth)
    return out


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

    def _component(self, component: str) -> str:
        name = _cut(component, MAX_NAME)
        if name in self._states or name in self._counters:
            return name
        if len(set(self._states) | set(self._counters)) >= MAX_COMPONENTS - 1:
            return OTHER
        return name

    def set_state(self, component: str, state: str, **detail: Any) -> bool:
        """Set a component's state; log and return True only on a transition.

        ``detail`` is stored redacted and bounded (``bounded_detail``)."""
        component = self._component(component)
        state = _cut(state, MAX_NAME)
        detail = bounded_detail(detail)
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
        current = self._states.get(_cut(component, MAX_NAME))
        return None if current is None else current.state

    def count(self, component: str, reason: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``reason`` of ``component`` (bounded: see the module)."""
        counters = self._counters.setdefault(self._component(component), Counter())
        key = _cut(reason, MAX_NAME)
        if key not in counters and len(counters) >= MAX_COUNTERS - 1:
            key = OTHER  # one slot stays free for "other"
        counters[key] += n

    def counters(self, component: str) -> dict[str, int]:
        """A copy of a component's counters."""
        return dict(self._counters.get(_cut(component, MAX_NAME), {}))

    def snapshot(self) -> dict[str, Any]:
        """Every component's state, age and counters, as JSON-ready data."""
        now = time.time()
        out: dict[str, Any] = {}
        for name in sorted(set(self._states) | set(self._counters)):
            entry: dict[str, Any] = {}
            st = self._states.get(name)
            if st is not None:
                entry.update(state=st.state, since_s=round(now - st.since, 1))
                for key, value in st.detail.items():
                    entry.setdefault(key, value)  # a detail never hides the state
            if name in self._counters:
                entry["counters"] = dict(self._counters[name])
            out[name] = entry
        return out
