"""``edge-agent``: the command line of DESIGN §4.

Each subcommand imports what it needs when it runs, so ``gnss replay`` does not load OpenCV and
``run`` starts fast on a Pi.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from edge_agent.platform.lifecycle import cli_main

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.runtime import run_agent_from_file

    return run_agent_from_file(args.config)


def _cmd_config(args: argparse.Namespace) -> int:
    from edge_agent.config import load_agent_config
    from edge_agent.platform.redact import redact_data
    from edge_agent.platform.yamlconf import ConfigError, mask_secrets

    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    # secret keys masked, and the password and secret parameters of every URL (broker, GNSS
    # source, cameras); tls.key is a file path and stays readable
    dump = redact_data(mask_secrets(config.model_dump(mode="json")), mask_keys=False)
    print(json.dumps(dump, indent=2))
    return 0


def _cmd_gnss_replay(args: argparse.Namespace) -> int:
    from edge_agent.gnss.replay import replay_main

    return replay_main(args.file, sys.stdout)


def _cmd_scan_decode(args: argparse.Namespace) -> int:
    from edge_agent.scan.cli import decode_main

    return decode_main(args.images, sys.stdout)


def _cmd_trips_replay(args: argparse.Namespace) -> int:
    from edge_agent.trips.replay import replay_main

    return replay_main(args.manifest, args.log, sys.stdout)


def _cmd_load_replay(args: argparse.Namespace) -> int:
    from edge_agent.station.replay import replay_main

    return replay_main(args.plan, args.input, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edge-agent``."""
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an agent (van or station, by config)")
    run.add_argument("--config", required=True, help="YAML configuration file")
    run.set_defaults(func=_cmd_run)

    cfg = sub.add_parser("config", help="print the effective, validated configuration")
    cfg.add_argument("--config", required=True, help="YAML configuration file")
    cfg.set_defaults(func=_cmd_config)

    gnss = sub.add_parser("gnss", help="GNSS tools").add_subparsers(dest="gnss_cmd", required=True)
    replay = gnss.add_parser("replay", help="print one JSON object per fix of an NMEA log")
    replay.add_argument("file", help="NMEA log, or - for standard input")
    replay.set_defaults(func=_cmd_gnss_replay)

    scan = sub.add_parser("scan", help="scanning tools")
    scan_sub = scan.add_subparsers(dest="scan_cmd", required=True)
    decode = scan_sub.add_parser("decode", help="decode the barcodes in image files")
    decode.add_argument("images", nargs="+", help="image files")
    decode.set_defaults(func=_cmd_scan_decode)

    trips = sub.add_parser("trips", help="trip tools")
    trips_sub = trips.add_subparsers(dest="trips_cmd", required=True)
    treplay = trips_sub.add_parser("replay", help="run the trip engine over an NMEA log")
    treplay.add_argument("--manifest", required=True, help="manifest JSON (DESIGN §2)")
    treplay.add_argument("log", help="NMEA log, or - for standard input")
    treplay.set_defaults(func=_cmd_trips_replay)

    load = sub.add_parser("load", help="station load-verification tools")
    load_sub = load.add_subparsers(dest="load_cmd", required=True)
    lreplay = load_sub.add_parser("replay", help="run the load engine over recorded observations")
    lreplay.add_argument("--plan", required=True, help="load plan JSON (DESIGN §8)")
    lreplay.add_argument("input", help="observations, one JSON object per line, or - for stdin")
    lreplay.set_defaults(func=_cmd_load_replay)

    from edge_agent import doctor, provision  # light at import: their heavy parts load on use

    provision.add_parser(sub)
    doctor.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-agent``."""
    return cli_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
