"""NMEA logs to fixes through the agent's own pipeline, and ``edge-agent gnss replay``.

``fixes_from_bytes`` and ``fixes_from_lines`` run ``GnssPipeline`` (parser, fix assembly and the
filters the live service runs) over a recorded log and yield the fixes it keeps; the trips replay
reuses them. A log has no wall clock, so the filters judge it by its own time
(``pipeline.REPLAY_FILTER``). ``replay_main`` is the command of DESIGN §4: one JSON object per
kept fix on ``out``, a clear message on stderr and a non-zero exit code for input it cannot
read, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any, TextIO

from edge_agent.gnss.assembler import FixAssembler
from edge_agent.gnss.config import FilterConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.nmea import NmeaStreamParser
from edge_agent.gnss.pipeline import REPLAY_FILTER, GnssPipeline, Outcome
from edge_agent.wire.envelope import format_ts

__all__ = ["fix_to_json", "fixes_from_bytes", "fixes_from_lines", "outcomes", "replay_main"]

_CHUNK = 64 * 1024
EXIT_UNREADABLE = 2
EXIT_NO_NMEA = 1


def outcomes(chunks: Iterable[bytes], pipeline: GnssPipeline) -> Iterator[Outcome]:
    """What ``pipeline`` makes of every fix of an NMEA byte stream, to its end, in order."""
    for chunk in chunks:
        yield from pipeline.feed(chunk)
    yield from pipeline.end()


def fixes_from_bytes(
    chunks: Iterable[bytes],
    *,
    reference: datetime | None = None,
    parser: NmeaStreamParser | None = None,
    assembler: FixAssembler | None = None,
    filter: FilterConfig = REPLAY_FILTER,
) -> Iterator[Fix]:
    """The kept fixes of an NMEA byte stream given in chunks of any size, in order.

    Lines starting with ``#`` are comments. Pass your own ``parser``/``assembler`` to read
    their counters afterwards; ``reference`` is the date the week-rollover correction measures
    against (default: now); ``filter`` the filters' settings (the agent's, for a log).
    """
    pipeline = GnssPipeline(
        filter,
        reference=reference,
        comments=True,
        parser=parser,
        assembler=assembler,
    )
    for outcome in outcomes(chunks, pipeline):
        if outcome.kept:
            yield outcome.fix


def _line_bytes(lines: Iterable[str | bytes]) -> Iterator[bytes]:
    for line in lines:
        raw = line if isinstance(line, bytes) else line.encode("ascii", "replace")
        if raw.lstrip().startswith(b"#"):
            continue  # comment lines of recorded logs (gpsd's test logs carry headers)
        yield raw if raw.endswith(b"\n") else raw + b"\n"


def fixes_from_lines(
    lines: Iterable[str | bytes],
    *,
    reference: datetime | None = None,
    parser: NmeaStreamParser | None = None,
    assembler: FixAssembler | None = None,
    filter: FilterConfig = REPLAY_FILTER,
) -> Iterator[Fix]:
    """The kept fixes of an NMEA log given as lines (``#`` comment lines are skipped)."""
    return fixes_from_bytes(
        _line_bytes(lines), reference=reference, parser=parser, assembler=assembler, filter=filter
    )


def fix_to_json(fix: Fix) -> dict[str, Any]:
    """The JSON object ``gnss replay`` prints for a fix (DESIGN §4)."""
    return {
        "time": format_ts(fix.time),
        "lat": fix.lat,
        "lon": fix.lon,
        "alt_m": fix.alt_m,
        "speed_mps": None if fix.speed_mps is None else round(fix.speed_mps, 3),
        "track_deg": fix.track_deg,
        "mode": fix.mode,
        "quality": fix.quality,
        "hdop": fix.hdop,
        "sats": fix.sats,
    }


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def replay_main(path: str, out: TextIO) -> int:
    """``edge-agent gnss replay FILE|-``: print one JSON object per fix; return the exit code.

    Exit 0 when the input held NMEA (even with no valid fix), 1 when it held no NMEA
    sentence at all, 2 when it cannot be read.
    """
    name = "standard input" if path == "-" else path
    parser = NmeaStreamParser(comments=True)
    assembler = FixAssembler()
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"gnss replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    count = 0
    try:
        for fix in fixes_from_bytes(_chunks(stream), parser=parser, assembler=assembler):
            out.write(json.dumps(fix_to_json(fix)) + "\n")
            count += 1
    except OSError as exc:
        print(f"gnss replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    stats = parser.stats
    if stats.sentences == 0:
        detail = ", ".join(f"{k}={v}" for k, v in stats.as_dict().items() if v)
        print(
            f"gnss replay: no NMEA sentence in {name}" + (f" ({detail})" if detail else ""),
            file=sys.stderr,
        )
        return EXIT_NO_NMEA
    if count == 0:
        print(f"gnss replay: {name}: {stats.sentences} sentences but no valid fix", file=sys.stderr)
    return 0
