"""GS1 element strings: vectors from the GS1 General Specifications and the corpus, bad check
digits, truncation, forged input, and the scan event built from them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.scan.engine import DecodeEngine, load_image
from edge_agent.scan.events import Read, scan_event
from edge_agent.scan.gs1 import (
    AI_TABLE,
    GS,
    Gs1Error,
    bare_gs1,
    check_digit,
    is_gs1_text,
    parcel_ref,
    parse_element_string,
)
from edge_agent.wire.envelope import validate_data

CORPUS = Path(__file__).parent / "fixtures" / "barcodes"
SSCC = "106141412345678908"  # the SSCC of the GS1 General Specifications' examples


def test_check_digits_of_published_numbers() -> None:
    assert check_digit(SSCC[:-1]) == 8
    assert check_digit("0950400005910") == 1  # GTIN on the GS1 DataMatrix of the corpus
    assert check_digit("400638133393") == 1  # EAN-13 4006381333931


def test_sscc_gtin_postcodes_with_fnc1_separators() -> None:
    text = f"]C100{SSCC}420{'10115'}{GS}42127612345{GS}0109504000059101"
    elements = parse_element_string(text)
    assert elements == {
        "00": SSCC,
        "420": "10115",
        "421": "27612345",
        "01": "09504000059101",
    }
    assert parcel_ref(elements) == SSCC


def test_fixed_length_fields_need_no_separator_and_variable_ones_end_at_the_end() -> None:
    assert parse_element_string(f"{GS}0109504000059101" + "17141120" + "10AB-12") == {
        "01": "09504000059101",
        "17": "141120",
        "10": "AB-12",
    }


def test_human_readable_form_as_typed_on_a_keyboard_wedge() -> None:
    assert parse_element_string(f"(00){SSCC}(420)10115") == {"00": SSCC, "420": "10115"}
    assert is_gs1_text(f"(00){SSCC}")
    assert not is_gs1_text("https://example.org/p/1")


def test_gs1_datamatrix_from_the_corpus_through_the_engine_into_a_scan_event() -> None:
    image = CORPUS / "datamatrix-1" / "gs1-figure-4.15.1-2-32x32.png"
    (code,) = DecodeEngine().decode(load_image(str(image))).codes
    assert code.gs1 and code.symbology_id == "]d2"
    data, ref = scan_event(Read(code.text, code.format, "dock-1", gs1=code.gs1))
    validate_data("scan", data)
    assert data["gs1"]["01"] == "09504000059101"
    assert data["gs1"]["8200"] == "http://www.gs1.org/demo/"
    assert ref == {"parcel": "09504000059101.12345678p901"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("00106141412345678907", "bad check digit 7 at position 19, expected 8"),
        ("0109504000059102", "AI (01) GTIN: bad check digit"),
        ("0010614141234567", "needs 18 (truncated?)"),
        ("01", "AI (01) GTIN: empty value at position 2"),
        (f"420{GS}0109504000059101", "AI (420) SHIP TO POST: empty value"),
        ("", "empty element string"),
        ("9", "unknown application identifier '9' at position 0"),
        ("77123", "unknown application identifier '7712'"),
        ("0109504000059101" + "10" + "A" * 21, "AI (10) BATCH/LOT: 21 characters"),
        ("11ABCDEF", "AI (11) PROD DATE: non-digit"),
        ("10caf\u00e9", "outside GS1's set"),
        (f"01095040{GS}00059101", "separator inside a fixed field"),
        (f"10A{GS}10B", "AI (10) repeated"),
        ("421DE12", "3-digit country code"),
        ("(00)1234", "needs 18"),
        ("(42)x", "unknown application identifier (42)"),
    ],
)
def test_bad_element_strings_say_what_and_where(text: str, fragment: str) -> None:
    with pytest.raises(Gs1Error) as err:
        parse_element_string(text)
    assert fragment in str(err.value)


def test_bad_gs1_keeps_the_scan_with_the_error() -> None:
    data, ref = scan_event(Read("]C100106141412345678907", "Code128", "hand-1"))
    assert ref is None and "gs1" not in data
    assert "bad check digit" in data["gs1_error"]
    validate_data("scan", data)


def test_plain_text_is_not_gs1() -> None:
    data, ref = scan_event(Read("JD014600006123456789", "Code128", "hand-1", decode_ms=1.234))
    assert ref is None and "gs1" not in data and "gs1_error" not in data
    assert data["decode_ms"] == 1.23


def test_ai_table_is_consistent() -> None:
    for ai, spec in AI_TABLE.items():
        assert ai.isdigit() and 2 <= len(ai) <= 4, ai
        assert 1 <= spec.length <= 90, ai
        assert not spec.check or (spec.fixed and spec.numeric), ai


@given(st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_garbage_raises_gs1_error_only(text: str) -> None:
    with contextlib.suppress(Gs1Error):  # anything else escaping fails the test
        parse_element_string(text)
    data, _ = scan_event(Read(text or "x", "Code128", "s", gs1=True))
    assert "gs1" in data or "gs1_error" in data


def test_a_gs1_128_label_read_without_its_fnc1_is_still_gs1() -> None:
    """ZBar and many handhelds drop the FNC1: ``00`` and a valid SSCC first still name it."""
    body = "1" + "2345678901234567"
    sscc = body + str(check_digit(body))
    text = f"00{sscc}42012345"
    assert bare_gs1(text) == {"00": sscc, "420": "12345"}
    data, ref = scan_event(Read(text, "Code128", "dock-1"))
    assert data["gs1"] == {"00": sscc, "420": "12345"} and ref == {"parcel": sscc}
    wrong = f"00{body}{(check_digit(body) + 1) % 10}"
    for plain in (wrong, "0012345", f"x00{sscc}", "JD0012345678901234567890"):
        assert bare_gs1(plain) is None, plain
        data, ref = scan_event(Read(plain, "Code128", "dock-1"))
        assert "gs1" not in data and "gs1_error" not in data and ref is None
