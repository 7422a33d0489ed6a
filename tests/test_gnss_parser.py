"""The sans-IO NMEA stream parser and the field layouts: framing, checksums, garbage, fuzzing."""

from __future__ import annotations

from pathlib import Path

import pynmea2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.gnss.assembler import FixAssembler
from edge_agent.gnss.nmea import NmeaStreamParser, checksum
from edge_agent.gnss.sentences import decode, parse_ddmmyy, parse_hms, parse_latlon

FIXTURES = Path(__file__).parent / "fixtures" / "gpsd-nmea"
GGA = b"$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,*7D"
RMC = b"$GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A*2D"


def corpus_lines() -> list[bytes]:
    lines = []
    for log in sorted(FIXTURES.glob("*.log")):
        for raw in log.read_bytes().splitlines():
            if raw.startswith(b"$"):
                lines.append(raw)
    return lines


CORPUS = corpus_lines()


def test_checksum_matches_the_reference_xor() -> None:
    for line in CORPUS[:200]:
        body = line[1 : line.rfind(b"*")]
        x = 0
        for b in body:
            x ^= b
        assert checksum(body) == x
    assert checksum(b"") == 0
    assert checksum(b"A") == 0x41


def test_sentence_fields_are_numbered_as_in_the_standard() -> None:
    p = NmeaStreamParser()
    (s,) = p.feed(GGA + b"\r\n")
    assert (s.talker, s.kind, s.address, s.checked) == ("GP", "GGA", "GPGGA", True)
    assert s.fields[1] == "193221.00"
    assert s.fields[6] == "1"
    (prop,) = p.feed(b"$PGRME,19.2,M,28.7,M,34.6,M*18\n")
    assert (prop.talker, prop.kind) == ("P", "GRME")
    assert p.stats.sentences == 2


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    p = NmeaStreamParser()
    out = p.feed(GGA + eol + RMC + eol)
    assert [s.kind for s in out] == ["GGA", "RMC"]
    assert p.stats.garbage_bytes == 0


def test_bad_and_missing_checksums() -> None:
    p = NmeaStreamParser()
    bad = GGA[:-2] + b"00"
    assert p.feed(bad + b"\n") == []
    assert p.feed(GGA[:-2] + b"zz\n") == []
    assert p.feed(GGA[:-3] + b"\n")[0].checked is False  # no "*hh": accepted, counted
    assert p.stats.bad_checksum == 2
    assert p.stats.no_checksum == 1
    strict = NmeaStreamParser(require_checksum=True)
    assert strict.feed(GGA[:-3] + b"\n") == []
    assert strict.stats.no_checksum == 1


def test_resynchronises_on_garbage_and_truncation() -> None:
    p = NmeaStreamParser()
    data = b"\x00\xff garbage" + GGA[:30] + RMC + b"\r\n" + b"\xde\xad" + GGA + b"\r\n"
    out = p.feed(data)
    assert [s.kind for s in out] == ["RMC", "GGA"]
    assert p.stats.truncated == 1
    assert p.stats.garbage_bytes == len(b"\x00\xff garbage") - 1 + 2  # the space is framing


def test_comment_lines_of_recorded_logs() -> None:
    quoted = b"# the log's header quotes " + RMC + b"\n"
    assert NmeaStreamParser().feed(quoted)[0].kind == "RMC"  # a live stream has no comments
    p = NmeaStreamParser(comments=True)
    assert p.feed(quoted + GGA + b"\r\n")[0].kind == "GGA"
    assert p.stats.sentences == 1
    assert p.stats.garbage_bytes == 0


def test_non_printable_bytes_inside_a_sentence_are_refused() -> None:
    p = NmeaStreamParser()
    assert p.feed(GGA[:20] + b"\x07" + GGA[21:] + b"\n") == []
    assert p.stats.bad_checksum == 1
    for bad in (b"\x07", b"\xe9"):
        body = GGA[1:20] + bad + GGA[21:-3]  # forged: the checksum covers the bad byte
        assert p.feed(b"$" + body + b"*" + f"{checksum(body):02X}".encode() + b"\n") == []
    assert p.stats.bad_chars == 2


def test_buffer_is_bounded_and_overlong_lines_are_dropped() -> None:
    p = NmeaStreamParser(max_length=100)
    assert p.feed(b"$GPTXT," + b"A" * 500) == []
    assert p.buffered == 0
    assert p.stats.too_long == 1
    assert p.feed(b"$GPTXT," + b"B" * 200 + b"\n" + GGA + b"\n")[0].kind == "GGA"
    assert p.stats.too_long == 2
    with pytest.raises(ValueError, match="max_length"):
        NmeaStreamParser(max_length=4)


def test_bad_address_is_refused() -> None:
    p = NmeaStreamParser()
    body = b"G!,1,2"
    assert p.feed(b"$" + body + b"*" + f"{checksum(body):02X}".encode() + b"\n") == []
    assert p.stats.bad_address == 1


def test_one_byte_at_a_time_equals_whole() -> None:
    data = (FIXTURES / "furuno_gl_ga.log").read_bytes()
    whole = NmeaStreamParser().feed(data)
    p = NmeaStreamParser()
    bytewise = [s for i in range(len(data)) for s in p.feed(data[i : i + 1])]
    assert whole == bytewise
    assert len(whole) > 250


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    p = NmeaStreamParser(max_length=120)
    a = FixAssembler()
    for chunk in chunks:
        for s in p.feed(chunk):
            a.push(s)
        assert p.buffered <= 120
    a.flush()


@st.composite
def mutated_sentences(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        i = draw(st.integers(0, len(line) - 1))
        if op == "replace":
            line[i] = draw(st.sampled_from(b"0123456789,.-*$ABNSEWVX\x00\xff"))
        elif op == "delete":
            del line[i]
        else:
            line.insert(i, draw(st.sampled_from(b",.-9$*\r\n")))
        if not line:
            line = bytearray(b"$")
    body = bytes(line[1:]).split(b"*")[0]
    if draw(st.booleans()):
        # Forged: a correct checksum over garbage fields, so the decoder and assembler see it.
        return b"$" + body + b"*" + f"{checksum(body):02X}".encode()
    return bytes(line)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(mutated_sentences(), min_size=1, max_size=30))
def test_mutated_and_forged_sentences_never_raise(lines: list[bytes]) -> None:
    p = NmeaStreamParser()
    a = FixAssembler()
    fixes = []
    for line in lines:
        for s in p.feed(line + b"\r\n"):
            decode(s)
            fixes += a.push(s)
    fixes += a.flush()
    for fix in fixes:
        assert -90.0 <= fix.lat <= 90.0
        assert -180.0 <= fix.lon <= 180.0
        assert fix.mode in (2, 3)
        assert fix.speed_mps is None or fix.speed_mps >= 0.0
        assert fix.track_deg is None or 0.0 <= fix.track_deg < 360.0
        assert fix.time.tzinfo is not None


def test_time_of_day_is_exact() -> None:
    assert parse_hms("132820.60") == ((13 * 60 + 28) * 60 + 20) * 1_000_000 + 600_000
    assert parse_hms("000231.099") == 151_099_000
    assert parse_hms("102523.342") == 37_523_342_000
    assert parse_hms("235959") == 86_399_000_000
    assert parse_hms("235959.") == 86_399_000_000
    for bad in ("", "12345", "246000", "126000", "120060", "12a000", "120000,5", "120000.5x"):
        assert parse_hms(bad) is None, bad


def test_latlon_parsing() -> None:
    assert parse_latlon("2037.72792", "N", is_lat=True) == pytest.approx(20.628798667, abs=1e-9)
    assert parse_latlon("08704.08478", "W", is_lat=False) == pytest.approx(-87.068079667, 1e-9)
    assert parse_latlon("4404.1165102", "S", is_lat=True) == pytest.approx(-44.068608503, 1e-9)
    assert parse_latlon("3348", "N", is_lat=True) == pytest.approx(33.8)
    for value, hemi in [
        ("", "N"),
        ("2037.7", ""),
        ("2037.7", "E"),
        ("8960.0000", "N"),  # 60 minutes: malformed
        ("9100.0000", "N"),
        ("-2037.7", "N"),
        ("37.7", "N"),
        ("20x7.7", "N"),
    ]:
        assert parse_latlon(value, hemi, is_lat=True) is None, value
    assert parse_latlon("18100.0", "E", is_lat=False) is None


def test_dates_and_centuries() -> None:
    assert parse_ddmmyy("231207") == (2007, 12, 23)
    assert parse_ddmmyy("220899") == (1999, 8, 22)  # Telit after the 2019 rollover
    assert parse_ddmmyy("050180") == (1980, 1, 5)
    assert parse_ddmmyy("290224") == (2024, 2, 29)
    for bad in ("290223", "2208-1", "321207", "001207", "231307", "23120", ""):
        assert parse_ddmmyy(bad) is None, bad


def _sentence(text: str) -> bytes:
    body = text.encode()
    return b"$" + body + b"*" + f"{checksum(body):02X}".encode() + b"\r\n"


def test_layouts_across_nmea_versions() -> None:
    p = NmeaStreamParser()

    def one(text: str) -> dict[str, object]:
        (s,) = p.feed(_sentence(text))
        rec = decode(s)
        assert rec is not None
        return rec

    old_vtg = one("GPVTG,054.7,034.4,005.5,010.2")
    assert (old_vtg["track"], old_vtg["speed_kn"]) == (54.7, 5.5)
    new_vtg = one("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A")
    assert (new_vtg["track"], new_vtg["speed_kn"], new_vtg["faa"]) == (54.7, 5.5, "A")
    gsa411 = one("GNGSA,A,3,04,05,09,11,36,,,,,,,,1.5,1.3,1.0,3")
    assert (gsa411["fix_mode"], gsa411["used"], gsa411["system"]) == (3, 5, 3)
    rmc41 = one("GNRMC,120213.000,A,5957.0062,N,01100.6429,E,0.00,0.00,310722,,,D,V")
    assert (rmc41["status"], rmc41["faa"]) == ("A", "D")
    rmc20 = one("GPRMC,142216,A,3348.452,N,11821.143,W,000.0,353.6,081002,013.8,E")
    assert rmc20["faa"] is None
    assert rmc20["date"] == (2002, 10, 8)
    gll15 = one("GPGLL,3348.452,N,11821.142,W")
    assert gll15["status"] is None
    assert gll15["time"] is None
    gns = one("GNGNS,120213.000,5957.0062,N,01100.6429,E,NDD,11,1.3,168.9,39.5,,,V")
    assert (gns["modes"], gns["sats"], gns["alt"]) == ("NDD", 11, 168.9)
    (txt,) = p.feed(_sentence("GPTXT,01,01,02,ANTENNA OK"))
    assert decode(txt) is None


def test_positions_agree_with_pynmea2() -> None:
    """pynmea2 as an independent peer: every corpus position decodes to the same degrees."""
    p = NmeaStreamParser()
    compared = 0
    for line in CORPUS:
        for s in p.feed(line + b"\n"):
            if s.kind not in ("GGA", "RMC", "GLL", "GNS"):
                continue
            rec = decode(s)
            assert rec is not None
            if rec["lat"] is None or rec["lon"] is None:
                continue
            try:
                ref = pynmea2.parse(line.decode())
            except pynmea2.ParseError:
                continue
            assert rec["lat"] == pytest.approx(ref.latitude, abs=1e-9), line
            assert rec["lon"] == pytest.approx(ref.longitude, abs=1e-9), line
            compared += 1
    assert compared > 500
