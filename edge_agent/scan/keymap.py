"""Keyboard-wedge scanners: Linux input key events to text, as pure code (no evdev here).

A wedge scanner types each code as key presses on a US layout and ends it with Enter. GS1
data needs the GS character, which scanners type as Ctrl+] (or as the configured prefix's
replacement); ``KeyTranslator.feed(code, value)`` returns the finished code at Enter.
Key numbers are those of ``linux/input-event-codes.h``.
"""

from __future__ import annotations

__all__ = ["KEY_ENTER", "KEY_KPENTER", "KeyTranslator"]

KEY_ENTER = 28
KEY_KPENTER = 96
_LSHIFT, _RSHIFT, _LCTRL, _RCTRL, _CAPS = 42, 54, 29, 97, 58
_RIGHTBRACE = 27

# key -> (unshifted, shifted), US layout
_KEYS: dict[int, tuple[str, str]] = {
    2: ("1", "!"), 3: ("2", "@"), 4: ("3", "#"), 5: ("4", "$"), 6: ("5", "%"),
    7: ("6", "^"), 8: ("7", "&"), 9: ("8", "*"), 10: ("9", "("), 11: ("0", ")"),
    12: ("-", "_"), 13: ("=", "+"),
    16: ("q", "Q"), 17: ("w", "W"), 18: ("e", "E"), 19: ("r", "R"), 20: ("t", "T"),
    21: ("y", "Y"), 22: ("u", "U"), 23: ("i", "I"), 24: ("o", "O"), 25: ("p", "P"),
    26: ("[", "{"), 27: ("]", "}"),
    30: ("a", "A"), 31: ("s", "S"), 32: ("d", "D"), 33: ("f", "F"), 34: ("g", "G"),
    35: ("h", "H"), 36: ("j", "J"), 37: ("k", "K"), 38: ("l", "L"), 39: (";", ":"),
    40: ("'", '"'), 41: ("`", "~"), 43: ("\\", "|"),
    44: ("z", "Z"), 45: ("x", "X"), 46: ("c", "C"), 47: ("v", "V"), 48: ("b", "B"),
    49: ("n", "N"), 50: ("m", "M"), 51: (",", "<"), 52: (".", ">"), 53: ("/", "?"),
    57: (" ", " "),
    # keypad digits (some scanners type numbers on the keypad)
    71: ("7", "7"), 72: ("8", "8"), 73: ("9", "9"), 74: ("-", "-"), 75: ("4", "4"),
    76: ("5", "5"), 77: ("6", "6"), 78: ("+", "+"), 79: ("1", "1"), 80: ("2", "2"),
    81: ("3", "3"), 82: ("0", "0"), 83: (".", "."), 98: ("/", "/"), 55: ("*", "*"),
}  # fmt: skip


class KeyTranslator:
    """Key events (code, value: 1 press, 0 release, 2 autorepeat) to finished codes."""

    def __init__(self, max_length: int = 4096) -> None:
        self._chars: list[str] = []
        self._shift: set[int] = set()
        self._ctrl: set[int] = set()
        self._caps = False
        self.max_length = max_length
        self.unknown_keys = 0
        self.overlong = 0

    def feed(self, code: int, value: int) -> str | None:
        """One key event; the code typed so far when it is Enter, else None."""
        if code in (_LSHIFT, _RSHIFT):
            (self._shift.add if value else self._shift.discard)(code)
            return None
        if code in (_LCTRL, _RCTRL):
            (self._ctrl.add if value else self._ctrl.discard)(code)
            return None
        if value != 1:
            return None  # releases and autorepeat type nothing
        if code == _CAPS:
            self._caps = not self._caps
            return None
        if code in (KEY_ENTER, KEY_KPENTER):
            text, self._chars = "".join(self._chars), []
            return text or None
        if self._ctrl and code == _RIGHTBRACE:
            self._chars.append("\x1d")  # Ctrl+] is GS (FNC1 in GS1 data)
            return None
        pair = _KEYS.get(code)
        if pair is None:
            self.unknown_keys += 1
            return None
        char = pair[1] if self._shift else pair[0]
        if self._caps and char.isalpha():
            char = char.swapcase()
        self._chars.append(char)
        if len(self._chars) > self.max_length:
            self.overlong += 1
            self._chars = []
        return None
