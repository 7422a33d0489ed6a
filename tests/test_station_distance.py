"""Distance sensor frame parsers: good frames, garbage, truncation, splits, checksum errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.station.distance import (
    BinaryFrameParser,
    MaxbotixParser,
    default_baud,
    make_parser,
)


def tfmini(dist_cm: int, strength: int = 1000, temp: int = 0x0960) -> bytes:
    """A TFmini-S / TF-Luna frame built from the manual's layout (independent of the parser)."""
    body = bytes(
        [
            0x59,
            0x59,
            dist_cm & 0xFF,
            dist_cm >> 8,
            strength & 0xFF,
            strength >> 8,
            temp & 0xFF,
            temp >> 8,
        ]
    )
    return body + bytes([sum(body) % 256])


def a02(dist_mm: int) -> bytes:
    """A DFRobot A02YYUW frame: 0xFF, H, L, (0xFF + H + L) & 0xFF."""
    h, low = dist_mm >> 8, dist_mm & 0xFF
    return bytes([0xFF, h, low, (0xFF + h + low) & 0xFF])


def maxbotix(dist_mm: int) -> bytes:
    return b"R%04d\r" % dist_mm


def test_tfmini_frames_in_metres() -> None:
    p = make_parser("tfmini")
    assert p.feed(tfmini(150) + tfmini(1234)) == [1.5, 12.34]
    assert (p.frames, p.bad_frames, p.garbage, p.no_reading) == (2, 0, 0, 0)
    # written out by hand: 300 cm (0x012C), strength 1000, temperature 0x0900, checksum 0xD3
    assert p.feed(bytes.fromhex("59592c01e8030009d3")) == [3.0]


def test_tfmini_weak_or_overexposed_signal_is_no_reading() -> None:
    p = make_parser("tfmini")
    frames = tfmini(150, strength=99) + tfmini(150, strength=65535) + tfmini(0) + tfmini(0xFFFF)
    assert p.feed(frames + tfmini(200, strength=100)) == [2.0]
    assert (p.frames, p.no_reading, p.bad_frames) == (5, 4, 0)


def test_a02yyuw_and_maxbotix_frames() -> None:
    a = make_parser("a02yyuw")
    assert a.feed(a02(1500) + a02(4500) + a02(0) + a02(255)) == [1.5, 4.5, 0.255]
    assert (a.frames, a.no_reading) == (4, 1)
    m = make_parser("maxbotix")
    assert m.feed(maxbotix(300) + maxbotix(5000) + maxbotix(1234)) == [0.3, 5.0, 1.234]
    assert m.frames == 3


def test_checksum_errors_are_counted_and_the_next_frame_found() -> None:
    bad = bytearray(tfmini(150))
    bad[8] ^= 0x01
    p = make_parser("tfmini")
    assert p.feed(bytes(bad) + tfmini(250)) == [2.5]
    assert p.bad_frames == 1
    bad_a = bytearray(a02(1000))
    bad_a[3] ^= 0x80
    a = make_parser("a02yyuw")
    assert a.feed(bytes(bad_a) + a02(2000)) == [2.0]
    assert a.bad_frames >= 1


def test_truncated_frames_are_dropped_and_the_next_ones_kept() -> None:
    p = make_parser("tfmini")
    assert p.feed(tfmini(150)[:5] + tfmini(160) + tfmini(170)) == [1.6, 1.7]
    assert p.bad_frames >= 1
    a = make_parser("a02yyuw")
    assert a.feed(a02(1000)[:2] + a02(1100) + a02(1200)) == [1.1, 1.2]
    m = make_parser("maxbotix")
    assert m.feed(b"R12" + maxbotix(1500) + b"R99\r" + maxbotix(1600)) == [1.5, 1.6]
    assert m.bad_frames == 2


def test_garbage_is_skipped_and_counted() -> None:
    m = make_parser("maxbotix")
    assert m.feed(b"\x00\xffhello" + maxbotix(2500) + b"\n\n" + maxbotix(800)) == [2.5, 0.8]
    assert m.garbage == 9 and m.bad_frames == 0
    p = make_parser("tfmini")
    assert p.feed(b"\x00\x01\x02" + tfmini(300)) == [3.0]
    assert p.garbage == 3


@pytest.mark.parametrize(
    ("protocol", "stream"),
    [
        # header bytes inside frames (temperature, distance) must not fool the resync
        ("tfmini", tfmini(150) + tfmini(1234, temp=0x5959) + tfmini(0x5959)),
        ("a02yyuw", a02(0x00FF) + a02(0x11FF) + a02(4321)),
        ("maxbotix", maxbotix(300) + maxbotix(4999) + maxbotix(10)),
    ],
)
def test_every_split_point_gives_the_same_readings(protocol: str, stream: bytes) -> None:
    whole = make_parser(protocol).feed(stream)
    assert len(whole) == 3
    for cut in range(len(stream) + 1):
        p = make_parser(protocol)
        assert p.feed(stream[:cut]) + p.feed(stream[cut:]) == whole, cut
        assert p.bad_frames == 0 and p.garbage == 0
    one = make_parser(protocol)
    assert [d for b in stream for d in one.feed(bytes([b]))] == whole


def test_default_rates_and_unknown_protocol() -> None:
    assert default_baud("tfmini") == 115200
    assert default_baud("a02yyuw") == 9600
    assert default_baud("maxbotix") == 9600
    with pytest.raises(ValueError, match="unknown distance sensor protocol 'lidar'"):
        make_parser("lidar")


frame_values = st.integers(min_value=1, max_value=1200)


@given(
    st.lists(st.tuples(frame_values, st.binary(max_size=12)), max_size=20),
    st.sampled_from(["tfmini", "a02yyuw", "maxbotix"]),
    st.integers(min_value=1, max_value=16),
)
def test_frames_between_header_free_garbage_all_come_out(
    items: list[tuple[int, bytes]], protocol: str, chunk: int
) -> None:
    # garbage without the format's header byte cannot fake a frame: every frame is found
    header = {"tfmini": 0x59, "a02yyuw": 0xFF, "maxbotix": ord("R")}[protocol]
    builders: dict[str, Callable[[int], bytes]] = {
        "tfmini": tfmini,
        "a02yyuw": a02,
        "maxbotix": maxbotix,
    }
    build = builders[protocol]
    stream = b""
    expected = []
    for value, junk in items:
        stream += bytes(b for b in junk if b != header) + build(value)
        expected.append(value / (100.0 if protocol == "tfmini" else 1000.0))
    p = make_parser(protocol)
    got = []
    for i in range(0, len(stream), chunk):
        got += p.feed(stream[i : i + chunk])
    assert got == pytest.approx(expected)


@given(st.binary(max_size=400), st.sampled_from(["tfmini", "a02yyuw", "maxbotix"]))
def test_any_bytes_never_raise_and_the_buffer_stays_below_a_frame(
    data: bytes, protocol: str
) -> None:
    p = make_parser(protocol)
    assert isinstance(p, BinaryFrameParser | MaxbotixParser)
    limit = p.format.length if isinstance(p, BinaryFrameParser) else 6
    for i in range(0, len(data), 7):
        for metres in p.feed(data[i : i + 7]):
            assert 0.0 < metres < 700.0
        assert p.pending < limit
    accounted = p.garbage + p.bad_frames + p.pending
    assert accounted <= len(data)
