"""GS1 element strings (GS1-128, GS1 DataMatrix, GS1 QR, or typed as "(00)...") as data.

Sans-IO and table-driven: ``AI_TABLE`` says, per Application Identifier, its name, whether its
length is fixed, its maximum length, its characters (numeric or GS1's alphanumeric set) and
whether it ends in a GS1 check digit; one generic parser walks any element string with it.
Variable-length fields end at a GS (ASCII 29, the FNC1 a scanner transmits) or at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AI_TABLE",
    "AiSpec",
    "Gs1Error",
    "bare_gs1",
    "check_digit",
    "is_gs1_text",
    "parcel_ref",
    "parse_element_string",
]

GS = "\x1d"
# AIM symbology identifiers a scanner may prefix GS1 data with (ISO/IEC 15424).
GS1_PREFIXES = ("]C1", "]e0", "]d2", "]Q3", "]J1")


class Gs1Error(ValueError):
    """An element string that is not valid GS1: says which AI and which character position."""


@dataclass(frozen=True, slots=True)
class AiSpec:
    """How one Application Identifier's data field is formed."""

    name: str
    length: int  # the fixed length, or the maximum length when ``fixed`` is false
    fixed: bool
    numeric: bool  # digits only; otherwise GS1's alphanumeric set (CSET 82)
    check: bool = False  # the last digit is a GS1 mod-10 check digit
    decimals: bool = False  # the AI's last digit is the decimal point position (310n ...)


def _n(name: str, length: int, check: bool = False) -> AiSpec:
    return AiSpec(name, length, True, True, check)


def _nv(name: str, length: int) -> AiSpec:
    return AiSpec(name, length, False, True)


def _x(name: str, length: int) -> AiSpec:
    return AiSpec(name, length, False, False)


# The AIs seen on parcel and logistic labels (GS1 General Specifications, section 3).
AI_TABLE: dict[str, AiSpec] = {
    "00": _n("SSCC", 18, check=True),
    "01": _n("GTIN", 14, check=True),
    "02": _n("CONTENT", 14, check=True),
    "10": _x("BATCH/LOT", 20),
    "11": _n("PROD DATE", 6),
    "12": _n("DUE DATE", 6),
    "13": _n("PACK DATE", 6),
    "15": _n("BEST BEFORE", 6),
    "16": _n("SELL BY", 6),
    "17": _n("USE BY", 6),
    "20": _n("VARIANT", 2),
    "21": _x("SERIAL", 20),
    "22": _x("CPV", 20),
    "240": _x("ADDITIONAL ID", 30),
    "241": _x("CUST. PART No.", 30),
    "250": _x("SECONDARY SERIAL", 30),
    "30": _nv("VAR. COUNT", 8),
    "37": _nv("COUNT", 8),
    "400": _x("ORDER NUMBER", 30),
    "401": _x("GINC", 30),
    "402": _n("GSIN", 17, check=True),
    "403": _x("ROUTE", 30),
    "410": _n("SHIP TO LOC", 13, check=True),
    "411": _n("BILL TO", 13, check=True),
    "412": _n("PURCHASE FROM", 13, check=True),
    "413": _n("SHIP FOR LOC", 13, check=True),
    "414": _n("LOC No.", 13, check=True),
    "420": _x("SHIP TO POST", 20),
    "421": _x("SHIP TO POST", 12),  # ISO 3166 numeric country (3 digits) + postcode
    "422": _n("ORIGIN", 3),
    "4300": _x("SHIP TO COMP", 35),
    "4302": _x("SHIP TO ADD1", 70),
    "4304": _x("SHIP TO ADD2", 70),
    "4306": _x("SHIP TO SUB", 70),
    "4307": _x("SHIP TO LOC", 2),
    "4308": _x("SHIP TO REG", 70),
    "4309": _n("SHIP TO GEO", 20),
    "8004": _x("GIAI", 30),
    "8006": _n("ITIP", 18),
    "8020": _x("REF No.", 25),
    "8200": _x("PRODUCT URL", 70),
    "90": _x("INTERNAL", 30),
    **{str(ai): _x("INTERNAL", 90) for ai in range(91, 100)},
    # Measures: the fourth digit is where the decimal point goes; value N6.
    **{
        f"{base}{d}": AiSpec(name, 6, True, True, decimals=True)
        for base, name in (
            ("310", "NET WEIGHT (kg)"),
            ("330", "GROSS WEIGHT (kg)"),
            ("331", "LENGTH (m), log"),
            ("332", "WIDTH (m), log"),
            ("333", "HEIGHT (m), log"),
            ("334", "AREA (m2), log"),
            ("335", "VOLUME (l), log"),
            ("336", "VOLUME (m3), log"),
        )
        for d in range(10)
    },
}

# GS1's "CSET 82": the characters an alphanumeric AI may carry.
_CSET82 = re.compile(r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]*$")
_HRI = re.compile(r"\((\d{2,4})\)")


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of ``digits`` (the data without its check digit)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def is_gs1_text(text: str) -> bool:
    """Whether scanned text announces GS1 data: an AIM GS1 prefix, a leading GS, or "(AI)"."""
    return text.startswith(GS1_PREFIXES) or text.startswith(GS) or bool(_HRI.match(text))


_BARE_SSCC = re.compile(r"^00\d{18}")


def bare_gs1(text: str) -> dict[str, str] | None:
    """The elements of a GS1-128 label's content read without its FNC1 (what ZBar and many
    handhelds send: ``00`` and an SSCC first, no AIM prefix, no brackets), or None.

    Only a text that starts with AI 00 and parses whole, check digit included, counts: a
    carrier code that merely starts with ``00`` stays plain text.
    """
    if not _BARE_SSCC.match(text):
        return None
    try:
        return parse_element_string(text)
    except Gs1Error:
        return None


def _ai_at(s: str, i: int) -> tuple[str, AiSpec]:
    for n in (2, 3, 4):
        ai = s[i : i + n]
        spec = AI_TABLE.get(ai)
        if spec is not None and len(ai) == n:
            return ai, spec
    raise Gs1Error(f"unknown application identifier {s[i : i + 4]!r} at position {i}")


def _check_value(ai: str, spec: AiSpec, value: str, pos: int) -> None:
    if not value:
        raise Gs1Error(f"AI ({ai}) {spec.name}: empty value at position {pos}")
    if spec.fixed and len(value) != spec.length:
        raise Gs1Error(
            f"AI ({ai}) {spec.name}: {len(value)} characters at position {pos}, "
            f"needs {spec.length} (truncated?)"
        )
    if len(value) > spec.length:
        raise Gs1Error(
            f"AI ({ai}) {spec.name}: {len(value)} characters at position {pos}, "
            f"at most {spec.length}"
        )
    if spec.numeric and not value.isdigit():
        raise Gs1Error(f"AI ({ai}) {spec.name}: non-digit in {value!r} at position {pos}")
    if not spec.numeric and not _CSET82.match(value):
        raise Gs1Error(f"AI ({ai}) {spec.name}: character outside GS1's set at position {pos}")
    if ai == "421" and not (len(value) >= 4 and value[:3].isdigit()):
        raise Gs1Error(f"AI (421): needs a 3-digit country code and a postcode at {pos}")
    if spec.check and check_digit(value[:-1]) != int(value[-1]):
        raise Gs1Error(
            f"AI ({ai}) {spec.name}: bad check digit {value[-1]} at position "
            f"{pos + len(value) - 1}, expected {check_digit(value[:-1])}"
        )


def parse_element_string(text: str) -> dict[str, str]:
    """GS1 data as ``{AI: value}`` in the order found; ``Gs1Error`` if anything is off.

    Accepts the transmitted form (optional AIM prefix or leading GS, GS between
    variable-length fields) and the human-readable form "(00)123...(420)12345".
    """
    for prefix in GS1_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if text.startswith("("):
        return _parse_hri(text)
    s = text.lstrip(GS)
    if not s:
        raise Gs1Error("empty element string")
    out: dict[str, str] = {}
    i = 0
    while i < len(s):
        ai, spec = _ai_at(s, i)
        start = i + len(ai)
        if spec.fixed:
            end = start + spec.length
            value = s[start:end]
            if GS in value:
                raise Gs1Error(f"AI ({ai}) {spec.name}: separator inside a fixed field at {start}")
        else:
            sep = s.find(GS, start)
            end = len(s) if sep < 0 else sep
            value = s[start:end]
        _check_value(ai, spec, value, start)
        if ai in out:
            raise Gs1Error(f"AI ({ai}) repeated at position {i}")
        out[ai] = value
        i = end
        if i < len(s) and s[i] == GS:
            i += 1
    return out


def _parse_hri(text: str) -> dict[str, str]:
    matches = list(_HRI.finditer(text))
    if not matches or matches[0].start() != 0:
        raise Gs1Error("human-readable GS1 must start with an AI in parentheses")
    out: dict[str, str] = {}
    for k, m in enumerate(matches):
        ai = m.group(1)
        spec = AI_TABLE.get(ai)
        if spec is None:
            raise Gs1Error(f"unknown application identifier ({ai}) at position {m.start()}")
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        value = text[m.end() : end]
        _check_value(ai, spec, value, m.end())
        if ai in out:
            raise Gs1Error(f"AI ({ai}) repeated at position {m.start()}")
        out[ai] = value
    return out


def parcel_ref(elements: dict[str, str]) -> str | None:
    """The parcel reference from GS1 data: the SSCC, else the GINC, else GTIN + serial."""
    if "00" in elements:
        return elements["00"]
    if "401" in elements:
        return elements["401"]
    if "01" in elements and "21" in elements:
        return f"{elements['01']}.{elements['21']}"
    return None
