"""GNSS path throughput: parse + fix assembly + filter + reporting, next to pynmea2.parse alone.

Both run in the same process on the same sentences (the 20 real receivers' logs of
tests/fixtures/gpsd-nmea, repeated), best of several rounds, so the ratio holds on a noisy
shared machine. Also: the CPU share needed to keep up with a saturated 115200-baud stream,
and with a 10 Hz receiver (the simulator's output: GGA, GSA, RMC, VTG each epoch, GSV each
second). Prints one JSON object.

    .venv/bin/python benchmarks/bench_gnss.py [--rounds 5] [--repeat 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pynmea2

from edge_agent.gnss.assembler import FixAssembler
from edge_agent.gnss.config import FilterConfig, ReportConfig
from edge_agent.gnss.filters import AdaptiveReporter, FixFilter
from edge_agent.gnss.nmea import NmeaStreamParser
from simulators.gnss import Driver, GnssSimulator, Waypoint

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gpsd-nmea"
BAUD_115200_BYTES_PER_S = 115200 / 10  # 8N1: ten bits on the wire per byte
CHUNK = 4096


def corpus_lines() -> list[bytes]:
    lines = []
    for log in sorted(FIXTURES.glob("*.log")):
        for raw in log.read_bytes().splitlines():
            if raw.startswith(b"$"):
                lines.append(raw + b"\r\n")
    return lines


def ten_hz_stream(seconds: int) -> bytes:
    route = [Waypoint(52.3731, 4.8922), Waypoint(52.3600, 4.8852), Waypoint(52.3500, 4.9000)]
    sim = GnssSimulator(Driver(route), rate_hz=10.0, start=datetime(2026, 6, 1, 9, tzinfo=UTC))
    return b"".join("".join(sim.epoch()[1]).encode() for _ in range(seconds * 10))


def pipeline(data: bytes) -> tuple[int, int]:
    """Parse, assemble, filter and report a byte stream; (sentences, fixes)."""
    parser = NmeaStreamParser()
    assembler = FixAssembler()
    fix_filter = FixFilter(FilterConfig())
    reporter = AdaptiveReporter(ReportConfig())
    fixes = 0
    for i in range(0, len(data), CHUNK):
        for sentence in parser.feed(data[i : i + CHUNK]):
            for fix in assembler.push(sentence):
                fixes += 1
                if fix_filter.check(fix) is None:
                    reporter.step(fix)
    for fix in assembler.flush():
        fixes += 1
        if fix_filter.check(fix) is None:
            reporter.step(fix)
    return parser.stats.sentences, fixes


def pynmea2_only(lines: list[str]) -> int:
    ok = 0
    for line in lines:
        try:
            pynmea2.parse(line)
            ok += 1
        except pynmea2.ParseError:
            pass
    return ok


def best(rounds: int, clock: Callable[[], float], *fns: Callable[[], object]) -> list[float]:
    """Best time of each function; rounds alternate between them so noise hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times, strict=True):
            t0 = clock()
            fn()
            out.append(clock() - t0)
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=40, help="times the corpus is repeated")
    args = ap.parse_args()

    lines = corpus_lines() * args.repeat
    data = b"".join(lines)
    text = [line.decode("ascii", "replace").rstrip("\r\n") for line in lines]
    sentences, fixes = pipeline(data)

    ours_s, peer_s = best(
        args.rounds, time.perf_counter, lambda: pipeline(data), lambda: pynmea2_only(text)
    )
    stream = ten_hz_stream(60)
    ours_cpu, ten_hz_cpu = best(
        args.rounds, time.process_time, lambda: pipeline(data), lambda: pipeline(stream)
    )

    ours_rate = sentences / ours_s
    peer_rate = len(text) / peer_s
    bytes_per_cpu_s = len(data) / ours_cpu
    print(
        json.dumps(
            {
                "benchmark": "gnss",
                "python": platform.python_version(),
                "sentences": sentences,
                "fixes": fixes,
                "ours_sentences_per_s": round(ours_rate),
                "pynmea2_parse_sentences_per_s": round(peer_rate),
                "ratio_ours_to_pynmea2": round(ours_rate / peer_rate, 2),
                "target_ratio": 0.5,
                "bytes_per_cpu_s": round(bytes_per_cpu_s),
                "cpu_share_115200_baud": round(BAUD_115200_BYTES_PER_S / bytes_per_cpu_s, 4),
                "cpu_share_10hz": round(ten_hz_cpu / 60.0, 5),
                "target_cpu_share_10hz": 0.01,
                "ten_hz_bytes_per_s": round(len(stream) / 60.0),
            }
        )
    )


if __name__ == "__main__":
    main()
