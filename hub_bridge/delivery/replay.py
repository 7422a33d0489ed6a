"""``hub-bridge eta replay --manifest FILE LOG``: the hub's ETA over an NMEA log (DESIGN §9).

The same code as on a van and in the hub: the log goes through the agent's GNSS pipeline (fix
assembly and filters of ``gnss replay``; its adaptive reporter picks the ``gnss.fix`` pings a van
would send), the kept fixes through the agent's reorder buffer and trip engine (as ``trips
replay``), and the pings and trip events, in the order a van would send them, into one
``DeliveryModel``. At every minute of log time once the route is active (the van left the depot,
or reached a stop), one JSON object per stop still ahead: ``{"at": ISO, "stop": ID, "eta": ISO}``.

This is the one module of the hub that imports the agent's ``gnss`` and ``trips`` (the replay
runs the agent's trip engine in front, DESIGN §9); the hub process never imports it, and it needs
the agent's extra installed. Input it cannot use gives a message on stderr and exit code 2 (an
unreadable or invalid manifest or log) or 1 (a log without a single NMEA sentence), never a
traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from edge_agent.gnss.nmea import NmeaStreamParser
from edge_agent.gnss.pipeline import REPLAY_FILTER, GnssPipeline
from edge_agent.gnss.replay import outcomes
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import ManifestError
from edge_agent.trips.manifest import parse_manifest as agent_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.wire.envelope import format_ts
from hub_bridge.delivery.model import DeliveryModel
from hub_bridge.delivery.plan import PlanError, parse_manifest
from hub_bridge.delivery.settings import DeliverySettings

__all__ = ["EXIT_NO_NMEA", "EXIT_UNUSABLE", "eta_lines", "run_eta_replay"]

EXIT_NO_NMEA = 1
EXIT_UNUSABLE = 2
FLEET = "replay"
DEVICE = "replay"
EVERY_S = 60.0
_CHUNK = 64 * 1024


def _iso(t: float) -> str:
    return format_ts(datetime.fromtimestamp(t, UTC))


class ReplayInputError(ValueError):
    """A manifest the replay cannot use."""


def eta_lines(
    manifest: Any,
    chunks: Iterable[bytes],
    *,
    config: TripsConfig | None = None,
    settings: DeliverySettings | None = None,
    model: DeliveryModel | None = None,
    parser: NmeaStreamParser | None = None,
) -> Iterator[dict[str, str]]:
    """``{"at", "stop", "eta"}`` for every stop still ahead, each minute of log time.

    ``manifest`` is the decoded manifest (checked by both the agent's and the hub's readers:
    ``ManifestError`` or ``PlanError``). A ``model`` passed in keeps what it learned (a hub's
    dump, or the days before); otherwise a fresh one starts from the priors.
    """
    cfg = config if config is not None else TripsConfig()
    m = agent_manifest(manifest)
    engine = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
    model = model if model is not None else DeliveryModel(settings)
    pipeline = GnssPipeline(REPLAY_FILTER, comments=True, parser=parser)
    order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
    state = engine.new_state()
    seq = 0
    next_at: float | None = None
    defined = False

    def send(type_: str, ts: str, data: dict[str, Any], ref: dict[str, Any] | None) -> None:
        nonlocal seq
        seq += 1
        env: dict[str, Any] = {
            "id": f"replay-{seq}",
            "seq": seq,
            "fleet": FLEET,
            "device": DEVICE,
            "type": type_,
            "ts": ts,
            "clock": "gnss",
            "data": data,
        }
        if ref:
            env["ref"] = ref
        model.apply(env)

    def due(t: float) -> Iterator[dict[str, str]]:
        # every minute boundary up to t, with the ETAs as they stood then
        nonlocal next_at
        route = model.routes[(FLEET, m.route)]
        if route.status != "active":
            next_at = None
            return
        if next_at is None:
            next_at = (t // EVERY_S + 1) * EVERY_S
            return
        while next_at <= t:
            at = _iso(next_at)
            for st in route.stops:
                if st.ahead and st.eta is not None:
                    yield {"at": at, "stop": st.id, "eta": _iso(st.eta)}
            next_at += EVERY_S

    for outcome in outcomes(chunks, pipeline):
        if not outcome.kept:
            continue
        fix = outcome.fix
        ts = format_ts(fix.time)
        if not defined:
            model.define(FLEET, DEVICE, "manifest", manifest, ts)
            defined = True
        t = fix.time.timestamp()
        yield from due(t)
        if outcome.report is not None:
            send("gnss.fix", ts, fix.event_data(), None)
        for f in order.push(fix):
            state, events = engine.step(state, f)
            for e in events:
                send(e.type, format_ts(e.ts), e.data, dict(e.ref))
    for f in order.flush():
        state, events = engine.step(state, f)
        for e in events:
            send(e.type, format_ts(e.ts), e.data, dict(e.ref))


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _load_manifest(path: str) -> Any:
    """The manifest file, decoded and checked by both readers; ``ReplayInputError`` names the
    file, the line of a JSON error and the field of a bad value."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReplayInputError(f"{path}: cannot read: {reason}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayInputError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
    try:
        agent_manifest(doc)
        parse_manifest(doc)
    except (ManifestError, PlanError) as exc:
        where = f"{path}: {exc.path}" if exc.path else path
        raise ReplayInputError(f"{where}: {exc.reason}") from None
    return doc


def run_eta_replay(manifest_path: str, log_path: str, out: TextIO) -> int:
    """Run ``eta replay`` (module docstring) and return the exit code; the lead wires it as
    ``hub-bridge eta replay --manifest FILE LOG`` (``LOG`` may be ``-`` for standard input)."""
    try:
        manifest = _load_manifest(manifest_path)
    except ReplayInputError as exc:
        print(f"eta replay: manifest {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    name = "standard input" if log_path == "-" else log_path
    try:
        stream: IO[bytes] = sys.stdin.buffer if log_path == "-" else open(log_path, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"eta replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    parser = NmeaStreamParser(comments=True)
    try:
        for line in eta_lines(manifest, _chunks(stream), parser=parser):
            out.write(json.dumps(line) + "\n")
    except OSError as exc:
        print(f"eta replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if parser.stats.sentences == 0:
        print(f"eta replay: no NMEA sentence in {name}", file=sys.stderr)
        return EXIT_NO_NMEA
    return 0
