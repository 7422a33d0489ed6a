"""Bounded JSON: what a hostile client may send is refused here, at the first boundary it crosses.

Python's ``json`` accepts more than anything downstream can carry: ``NaN`` and ``Infinity`` (no
other JSON reader takes them back), lone surrogates from ``"\\ud800"`` escapes (a str that cannot
be encoded to UTF-8, so one of them fails a whole group commit), integers of thousands of digits
(``ValueError`` past 4,300 digits, SQLite overflow past 2**63) and nesting up to the interpreter's
recursion limit (the hub's encoder then raises ``RecursionError``). The limits, the same on the
agent and on the hub:

- nesting: at most ``MAX_DEPTH`` containers, counting the value checked (an event's ``data``);
- numbers: integers in the signed 64-bit range, floats finite; no ``NaN``/``Infinity``;
- strings (keys too): no code point in U+D800..U+DFFF.

Two steps, so that the common case costs one C parse and one short walk:

``loads(text)`` decodes UTF-8 and parses. It never raises on a bad *value*: a constant
(``NaN``) or an integer Python cannot even build becomes an ``Unrepresentable`` in the tree, so
a caller holding a batch can refuse one element and keep the rest. It raises ``JsonBoundsError``
only when the text is not JSON at all (or nests deeper than the parser can go).

``check(value, max_depth)`` walks one value once (depth, numbers, strings, markers) and raises
``JsonBoundsError`` whose ``path`` names the offending element relative to the value
(``x[3].y``). It stops descending at ``max_depth``, so it never recurses further than that.

Errors::

    JsonBoundsError (ValueError)    ``path`` (may be empty) and ``reason``
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "PARSE_ROOM",
    "JsonBoundsError",
    "Unrepresentable",
    "check",
    "join_path",
    "loads",
    "show_key",
]

MAX_DEPTH = 32
"""Most containers nested in one checked value (an event's ``data`` counts as the first)."""

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""Integers are bounded to the signed 64-bit range (what SQLite and most readers hold)."""

PARSE_ROOM = 1500
"""Levels of nesting the parser may go beyond the interpreter's recursion limit (see ``loads``)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_KEY_SHOWN = 64  # a key longer than this is cut in error paths


class JsonBoundsError(ValueError):
    """A JSON text or value is outside the bounds; ``path`` names where (may be empty)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class Unrepresentable:
    """A JSON number or constant that has no bounded value (``NaN``, ``1e400``, a 5000-digit
    integer): kept in the parsed tree in place of the value so that ``check`` names its path."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 24 else f"{self.text[:20]}...({len(self.text)})"
        return f"<{shown}: {self.reason}>"

    __str__ = __repr__


def _constant(text: str) -> Unrepresentable:
    # only NaN, Infinity and -Infinity reach this hook
    return Unrepresentable(text, f"{text} is not allowed (JSON numbers are finite)")


def _int(text: str) -> int | Unrepresentable:
    # 19 characters hold every int64 with its sign; longer texts are checked without building
    # a huge int (Python refuses more than 4300 digits)
    if len(text) <= 19:
        return int(text)
    digits = len(text.lstrip("-").lstrip("0"))
    if digits <= 19:
        value = int(text)
        if INT_MIN <= value <= INT_MAX:
            return value
    return Unrepresentable(text, f"an integer of {digits} digits is outside the 64-bit range")


def loads(text: bytes | str) -> Any:
    """Parse a JSON text (bytes must be UTF-8) without raising on bad values.

    Raises JsonBoundsError when the text is not UTF-8 or not JSON. Values out of bounds stay in
    the tree (``Unrepresentable``, a float ``inf``, a str with a surrogate, deep nesting) for
    ``check`` to refuse with their path.

    Nesting: the C parser stops at the interpreter's recursion limit, which also counts the
    caller's frames, so how deep it gets depended on where it was called from. A text it cannot
    parse there is parsed again with ``PARSE_ROOM`` more levels allowed: an agent of an earlier
    version accepted events nested about 990 deep, and the hub must refuse each of them alone
    (its seq accounted) rather than the whole batch. Deeper than that is one error.
    """
    if isinstance(text, bytes | bytearray):
        try:
            # decode first: json.loads(bytes) would also take UTF-16/32, which no peer sends
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonBoundsError("", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        try:
            return _parse(text)
        except RecursionError:
            limit = sys.getrecursionlimit()
            # only this synchronous call runs meanwhile (other threads merely get more room)
            sys.setrecursionlimit(limit + PARSE_ROOM)
            try:
                return _parse(text)
            finally:
                sys.setrecursionlimit(limit)
    except json.JSONDecodeError as exc:
        raise JsonBoundsError(
            "", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonBoundsError("", f"nesting deeper than {MAX_DEPTH}") from None


_FAST = json.JSONDecoder(parse_constant=_constant)
_SLOW = json.JSONDecoder(parse_constant=_constant, parse_int=_int)


def _parse(text: str) -> Any:
    try:
        # the fast path: ints in C; parse_constant is called only for NaN/Infinity
        return _FAST.decode(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # an integer past Python's 4300-digit limit: parse again, every int through the hook
        return _SLOW.decode(text)


class _Found(Exception):
    """Raised inside the walk; each frame on the way out prepends its key or index."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str | int] = []


def show_key(key: str) -> str:
    """A key as error paths show it: as it is when printable, else its escaped ``repr`` (a lone
    surrogate or a control character must not reach a log line or a UTF-8 column); cut when long.
    """
    shown = key if key.isprintable() else repr(key)
    return shown if len(shown) <= _KEY_SHOWN else f"{shown[:_KEY_SHOWN]}...({len(key)} chars)"


def join_path(base: str, parts: list[str | int]) -> str:
    """``base`` followed by keys (``.key``) and indexes (``[3]``), as the API reports paths."""
    out = base
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{show_key(p)}" if out else show_key(p)
    return out


def _bad_str(s: str) -> bool:
    return not s.isascii() and _surrogate(s) is not None


_surrogate = _SURROGATE.search
_LONE = "a lone surrogate (U+D800..U+DFFF), which UTF-8 cannot encode"
_NOT_FINITE = "is not allowed (JSON numbers are finite)"
_OUT_OF_RANGE = "an integer outside the 64-bit range"


def _found(reason: str, key: str | int) -> _Found:
    exc = _Found(reason)
    exc.parts.append(key)
    return exc


def _walk(value: Any, room: int) -> None:
    # the hot path of every accepted event: exact type tests in the order data has them, no
    # calls for scalars; ``room`` is how many more containers may open here
    if room <= 0:
        raise _Found("")  # the reason is filled in by check(), which knows the limit
    for key, item in value.items() if type(value) is dict else enumerate(value):
        t = type(item)
        if t is float:
            if item - item:  # nan for inf and nan (truthy), 0.0 for every finite float
                raise _found(f"{item} {_NOT_FINITE}", key)
        elif t is str:
            if not item.isascii() and _surrogate(item) is not None:
                raise _found(_LONE, key)
        elif t is int:
            if not INT_MIN <= item <= INT_MAX:
                raise _found(_OUT_OF_RANGE, key)
        elif t is dict or t is list:
            try:
                _walk(item, room - 1)
            except _Found as found:
                found.parts.append(key)
                raise
        elif item is not None and t is not bool:
            try:
                _odd(item, room - 1)
            except _Found as found:
                found.parts.append(key)
                raise
        if type(key) is str and not key.isascii() and _surrogate(key) is not None:
            raise _found(f"the key has {_LONE}", key)


def _odd(item: Any, room: int) -> None:
    """A value of a type the JSON parser never makes (from an in-process producer)."""
    if isinstance(item, Unrepresentable):
        raise _Found(item.reason)
    if isinstance(item, bool):
        return
    if isinstance(item, str):
        if _bad_str(item):
            raise _Found(_LONE)
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise _Found(f"{item} {_NOT_FINITE}")
    elif isinstance(item, int):
        if not INT_MIN <= item <= INT_MAX:
            raise _Found(_OUT_OF_RANGE)
    elif isinstance(item, dict):
        _walk(dict(item), room)
    elif isinstance(item, list | tuple):
        _walk(list(item), room)
    else:
        raise _Found(f"{type(item).__name__} is not a JSON value")


def check(value: Any, max_depth: int = MAX_DEPTH, path: str = "") -> None:
    """Refuse ``value`` unless it is a bounded JSON value; the error's path starts with ``path``.

    One walk: nesting (``value`` itself is the first level), integers, floats, strings and keys,
    and the markers ``loads`` left.
    """
    try:
        t = type(value)
        if t is dict or t is list:
            _walk(value, max_depth)
        elif not (value is None or t is bool or (t is str and value.isascii())):
            _odd(value, max_depth)
    except _Found as found:
        found.parts.reverse()
        reason = found.reason or f"nesting deeper than {max_depth}"
        raise JsonBoundsError(join_path(path, found.parts), reason) from None
