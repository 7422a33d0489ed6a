"""``hub-bridge token new``: a tenant's API token, and the entry of ``tenants.tokens`` for it.

    hub-bridge token new --name fastlane --fleet 3pl-fastlane [--fleet other] \\
        [--rights read,write-events] [--out FILE]

Without ``--out`` the token is printed on stdout (first line) for the tenant, then the YAML entry
to add to the hub's configuration, which holds the token's SHA-256 only. With ``--out`` the token
is written to FILE (created 0600, never overwritten) and the entry names it as ``token_file``.
``--fleet all`` is the operator's scope. Exit 2 on a bad option, naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from hub_bridge.tenants import RIGHTS, TokenConfig, new_token

__all__ = ["token_main", "token_parser"]


def token_parser() -> argparse.ArgumentParser:
    """The options of ``token new``."""
    p = argparse.ArgumentParser(
        prog="hub-bridge token new", description="Make an API token for a tenant of the hub."
    )
    p.add_argument("--name", required=True, help="the token's name (in logs and answers)")
    p.add_argument(
        "--fleet", action="append", required=True, help="a fleet of its scope, or all (repeat)"
    )
    p.add_argument("--rights", default="read", help=f"comma-separated: {', '.join(RIGHTS)}")
    p.add_argument("--out", type=Path, help="write the token to this new file (0600)")
    return p


def token_main(argv: Sequence[str] | None = None) -> int:
    """Run ``token new`` with ``argv``; the exit status."""
    args = token_parser().parse_args(argv)
    token, digest = new_token()
    fleets: list[str] = args.fleet
    if "all" in fleets and len(fleets) > 1:
        print("hub-bridge token new: --fleet all is every fleet: give it alone", file=sys.stderr)
        return 2
    entry: dict[str, object] = {"name": args.name}
    if fleets == ["all"]:
        entry["fleets"] = "all"
    elif len(fleets) == 1:
        entry["fleet"] = fleets[0]
    else:
        entry["fleets"] = fleets
    entry["rights"] = [r.strip() for r in args.rights.split(",") if r.strip()]
    if args.out is not None:
        entry["token_file"] = str(args.out.resolve())
    else:
        entry["token_sha256"] = digest
    try:
        TokenConfig.model_validate(entry)  # the entry the hub will read, checked as it will be
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'token'}: {e['msg']}" for e in exc.errors()
        )
        print(f"hub-bridge token new: {problems}", file=sys.stderr)
        return 2
    if args.out is not None:
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            print(f"hub-bridge token new: {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    else:
        print(token)
    # flow-style YAML is JSON: one line to paste under tenants.tokens
    print("- " + json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(token_main())
