"""``hub-bridge carrier import``: a carrier's tracking export into the hub, through its API.

    hub-bridge carrier import --fleet 3pl-fastlane --token-file fastlane.token \\
        --hub http://hub.example:8090 [--format csv|json|jsonl] [--carrier NAME] \\
        [--device feed] [--column tracking_number=AWB ...] [--status OFD=trip.depart ...] \\
        [--dry-run] FILE|-

Prints one JSON summary on stdout (rows, converted, stored, duplicates, rejected, watermarks);
every bad row on stderr as ``FILE:line N: reason`` and every event the hub rejected with its
reason. Exit 0 when every row was stored or was there already, 1 when a row was bad or an event
rejected (the rest is stored all the same), 2 when the import could not run (usage, a file,
the hub unreachable or refusing the token). Running it again on the same export stores nothing
twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from hub_bridge.carriers.adapter import number
from hub_bridge.carriers.client import HubClient, HubError
from hub_bridge.carriers.generic import COLUMNS, Columns, Format, GenericTracking
from hub_bridge.tenants import token_problem

__all__ = ["import_main", "import_parser"]


def import_parser() -> argparse.ArgumentParser:
    """The options of ``carrier import``."""
    p = argparse.ArgumentParser(
        prog="hub-bridge carrier import",
        description="Import a carrier's tracking export (CSV, JSON, JSON Lines) into the hub.",
    )
    p.add_argument("--fleet", required=True, help="the carrier's fleet id (its token's scope)")
    p.add_argument("--token-file", required=True, type=Path, help="file holding the API token")
    p.add_argument("--hub", required=True, help="the hub API, http(s)://host:port")
    p.add_argument("--format", choices=["csv", "json", "jsonl"], help="default: by extension")
    p.add_argument("--carrier", help="the carrier's name in event ids (default: the fleet)")
    p.add_argument("--device", default="feed", help="device of rows without a vehicle")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=HEADER",
        help=f"the export's header for a column ({', '.join(COLUMNS)})",
    )
    p.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS=TYPE",
        help="map a carrier status to an event type (scan, pod, trip.depart, exception.x ...)",
    )
    p.add_argument("--batch", type=int, default=500, help="envelopes per request (1-5000)")
    p.add_argument("--dry-run", action="store_true", help="print the envelopes, post nothing")
    p.add_argument("file", help="the export, or - for stdin")
    return p


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what} {v!r}: expected NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def import_main(argv: Sequence[str] | None = None) -> int:
    """Run ``carrier import`` with ``argv``; the exit status."""
    args = import_parser().parse_args(argv)
    name = "<stdin>" if args.file == "-" else args.file
    try:
        if not 1 <= args.batch <= 5000:
            raise ValueError("--batch: from 1 to 5000")
        fmt = args.format or _format_of(args.file)
        columns = Columns(_pairs(args.column, "--column"))
        statuses = _pairs(args.status, "--status")
        adapter = GenericTracking(
            cast(Format, fmt),
            args.carrier or args.fleet,
            columns=columns,
            status_types=statuses,
            default_device=args.device,
        )
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        text = raw.decode("utf-8-sig")
        token = args.token_file.read_text(encoding="utf-8").strip()
        problem = token_problem(token)
        if problem is not None:
            raise ValueError(f"{args.token_file}: the token {problem}")
    except (ValueError, OSError) as exc:
        print(f"hub-bridge carrier import: {exc}", file=sys.stderr)
        return 2
    conversion = adapter.convert(text, args.fleet)
    for bad in conversion.bad:
        print(f"{name}:{bad}", file=sys.stderr)
    if any(b.where == "file" for b in conversion.bad):
        return 2  # not a feed of this format at all: nothing to import
    summary: dict[str, Any] = {
        "rows": conversion.rows,
        "converted": len(conversion.drafts),
        "bad_rows": len(conversion.bad),
    }
    client = HubClient(args.hub, token)
    try:
        next_seqs = {} if args.dry_run else client.next_seqs(args.fleet)
        envelopes = number(conversion.drafts, next_seqs)
        if args.dry_run:
            for env in envelopes:
                print(json.dumps(env, separators=(",", ":")))
            return 1 if conversion.bad else 0
        posted = client.post(args.fleet, envelopes, args.batch)
    except (HubError, ValueError) as exc:
        print(f"hub-bridge carrier import: {exc}", file=sys.stderr)
        return 2
    by_id = {d.envelope["id"]: d.where for d in conversion.drafts}
    for r in posted.rejected:
        print(f"{name}:{by_id.get(r.get('id'), '?')}: {r.get('error')}", file=sys.stderr)
    summary |= {
        "stored": posted.stored,
        "duplicates": posted.duplicates,
        "rejected": len(posted.rejected),
        "requests": posted.requests,
        "watermarks": posted.watermarks,
    }
    print(json.dumps(summary))
    return 1 if conversion.bad or posted.rejected else 0


def _format_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".json", ".jsonl"):
        return suffix[1:]
    if suffix == ".ndjson":
        return "jsonl"
    raise ValueError(f"{path}: give --format (csv, json or jsonl): the extension does not say")


if __name__ == "__main__":
    sys.exit(import_main())
