"""``edge-agent trips replay --manifest FILE LOG``: the trip engine over a recorded NMEA log.

The same code as the live agent (fix assembly of ``gnss replay``, the reorder buffer, the step
engine with the default ``trips`` configuration), for tests, support and tuning. One JSON object
per derived event on ``out``: ``type``, ``ts``, ``ref`` (route, stop) and ``data`` (DESIGN §4).
Input it cannot use gives a message on stderr and a non-zero exit code, never a traceback: 2 for
an unreadable or invalid manifest or log, 1 for a log without a single NMEA sentence.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TextIO

from edge_agent.gnss.nmea import NmeaStreamParser
from edge_agent.gnss.replay import fixes_from_bytes
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine, TripEvent
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import Manifest, ManifestError, load_manifest_file
from edge_agent.trips.reorder import FixOrder

__all__ = ["replay_events", "replay_main"]

EXIT_NO_NMEA = 1
EXIT_UNUSABLE = 2
_CHUNK = 64 * 1024


def replay_events(
    manifest: Manifest,
    chunks: Iterable[bytes],
    config: TripsConfig | None = None,
    *,
    parser: NmeaStreamParser | None = None,
) -> Iterator[TripEvent]:
    """The events of an NMEA byte stream under ``manifest``, in the order the engine derives
    them."""
    cfg = config if config is not None else TripsConfig()
    engine = TripEngine(build_zones(manifest, cfg), EngineParams.from_config(cfg), manifest.route)
    state = engine.new_state()
    order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
    for fix in fixes_from_bytes(chunks, parser=parser):
        for due in order.push(fix):
            state, events = engine.step(state, due)
            yield from events
    for due in order.flush():
        state, events = engine.step(state, due)
        yield from events


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def replay_main(manifest_path: str, log: str, out: TextIO) -> int:
    """Run ``trips replay``; return the exit code."""
    try:
        manifest = load_manifest_file(manifest_path)
    except ManifestError as exc:
        print(f"trips replay: manifest {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    name = "standard input" if log == "-" else log
    try:
        stream: IO[bytes] = sys.stdin.buffer if log == "-" else open(log, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"trips replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    parser = NmeaStreamParser()
    try:
        for event in replay_events(manifest, _chunks(stream), parser=parser):
            out.write(json.dumps(event.to_json()) + "\n")
    except OSError as exc:
        print(f"trips replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if parser.stats.sentences == 0:
        print(f"trips replay: no NMEA sentence in {name}", file=sys.stderr)
        return EXIT_NO_NMEA
    return 0
