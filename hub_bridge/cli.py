"""``hub-bridge``: run the hub, print its timeline or its effective configuration (DESIGN §4),
send a command to a device, make the fleet CA, give out claims and revoke devices (DESIGN §10).

``hub-bridge ca init`` makes (or imports) the CA in ``pki.dir`` with the hub's and the broker's
certificates and an empty CRL, keeping what is there. ``hub-bridge claim create`` and
``hub-bridge device revoke`` write the timeline store directly (it is shared by design, and the
hub need not run): a claim is then redeemed by the running hub's ``POST /v1/provision``; a
revocation rewrites ``crl.pem``, which the broker reads when it starts. Exit codes of these:
0 done, 1 refused or failed (the reason on stderr), 2 a bad command line or configuration.

``hub-bridge send NAME --fleet F --device D FILE`` posts the file to the running hub's API
(``api.listen`` of the hub's configuration): the hub owns the MQTT connection, the resend
schedule and the queue, so the command takes the one path every command takes, is committed
before the answer, and is published at once. The CLI does not write the store itself (the hub
would only find the command by polling) nor publish on MQTT (only the hub may publish ``cmd``,
and a message alone is not kept until answered).

Exit codes of ``send``: 0 queued (with ``--wait``: applied by the device); 1 refused by the
device (its error on stderr); 2 a bad command line, configuration or file (nothing sent);
3 ``--wait`` ran out, the command is still queued; 4 superseded by a newer command of the same
name before the device answered; 5 the hub could not be reached or could not store it (nothing
queued).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.lifecycle import announce_ready, cli_main, run_until_signalled
from edge_agent.platform.redact import redact_data
from edge_agent.platform.settings import parse_listen
from edge_agent.platform.units import parse_duration
from edge_agent.platform.yamlconf import ConfigError, mask_secrets
from edge_agent.wire.envelope import IDENT_RE
from hub_bridge import pki
from hub_bridge.api import DOCUMENT, build_app, check_scope
from hub_bridge.backends import open_delivery_store, open_timeline
from hub_bridge.bridge import HubBridge
from hub_bridge.claims import ROLES, ClaimError, claim_text, new_token, qr_text, token_hash
from hub_bridge.commands import COMMAND_NAMES, CommandError, check_command_body
from hub_bridge.config import HubConfig, load_hub_config
from hub_bridge.delivery.projector import DeliveryService
from hub_bridge.delivery.routes import DELIVERY_ACCESS, add_delivery_routes
from hub_bridge.delivery.store import DeliveryStore
from hub_bridge.ingest import HUB_DEVICE
from hub_bridge.store import StoreUnavailable
from hub_bridge.tenants import TokenError
from hub_bridge.timeline import TimelineError

__all__ = ["main", "run_hub"]

log = logging.getLogger(__name__)


async def run_hub(config: HubConfig, stop: asyncio.Event, *, announce: bool = False) -> None:
    """Run the bridge and its API until ``stop`` is set."""
    tenants = config.tenants.build()  # a bad token file stops the start (TokenError), named
    timeline = await open_timeline(config.timeline.url, config.ingest.limits)
    health = HealthRegistry()
    # the delivery timeline (DESIGN §9): its tables in the timeline's database, its projector
    # following the timeline, its webhooks and stream
    delivery_store: DeliveryStore | None = None
    service: DeliveryService | None = None
    try:
        if config.delivery.enabled:
            delivery_store = await open_delivery_store(config.timeline.url)
            service = DeliveryService(timeline, delivery_store, config.delivery, health=health)
    except BaseException:
        await timeline.close()
        raise
    bridge = HubBridge(
        config,
        timeline,
        health,
        command_limits=config.commands.limits,
        on_stored=None if service is None else service.events_stored,
    )
    if service is not None:
        # each route's ETAs go to its van (cmd/eta): one ETA on the driver app too
        service.send_etas(timeline, bridge.command_limits, bridge.commands_changed)
        # storing and acknowledging what the vans send comes before projecting it
        service.yield_to(lambda: bridge.backlog > 0)
    app = build_app(
        timeline,
        health,
        commands_changed=bridge.commands_changed,
        command_limits=bridge.command_limits,
        provisioning=config.pki_settings(),
        tenants=tenants,
        max_batch_bytes=config.ingest.max_batch_bytes,
        future_tolerance_s=config.ingest.future_tolerance,
        extra_access=None if service is None else DELIVERY_ACCESS,
    )
    if service is not None and delivery_store is not None:
        add_delivery_routes(
            app,
            app[DOCUMENT],
            store=delivery_store,
            stream=service.stream,
            check_scope=check_scope,
            allow_private=config.delivery.webhooks.allow_private,
        )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        host, port = parse_listen(config.api.listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(bridge.run(), name="bridge")]
            if service is not None:
                tasks.append(tg.create_task(service.run(), name="delivery"))
            if announce:
                # ready means subscribed: what devices publish from now on reaches the hub
                tasks.append(tg.create_task(_announce_when(bridge.subscribed, bound)))
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        await runner.cleanup()
        if delivery_store is not None:
            await delivery_store.close()
        await timeline.close()


async def _announce_when(subscribed: asyncio.Event, port: int) -> None:
    await subscribed.wait()
    announce_ready(port)


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        run_until_signalled(lambda stop: run_hub(config, stop, announce=True), config.log.level)
    except TokenError as exc:
        print(f"hub-bridge: {exc}", file=sys.stderr)
        return 2
    except (TimelineError, StoreUnavailable) as exc:
        print(f"hub-bridge: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    # secret keys masked, and the password and secret parameters of every URL
    dump = redact_data(mask_secrets(config.model_dump(mode="json")), mask_keys=False)
    print(json.dumps(dump, indent=2))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    if config.timeline.is_sqlite and not config.timeline.path.exists():
        print(f"hub-bridge: no timeline at {config.timeline.path}", file=sys.stderr)
        return 1

    async def dump() -> None:
        timeline = await open_timeline(config.timeline.url)
        try:
            async for env in timeline.events(args.fleet, args.device, with_flags=args.flags):
                sys.stdout.write(json.dumps(env, separators=(",", ":")) + "\n")
        finally:
            await timeline.close()

    try:
        asyncio.run(dump())
    except (TimelineError, StoreUnavailable) as exc:
        print(f"hub-bridge: {exc}", file=sys.stderr)
        return 1
    return 0


EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_SUPERSEDED, EXIT_UNREACHABLE = range(6)
_POLL_S = 0.2
_HTTP_TIMEOUT_S = 10.0
_IDENT = re.compile(IDENT_RE.strip("^$"))


def _hub_url(listen: str) -> str:
    """The base URL the CLI reaches the hub's API at, from ``api.listen``."""
    host, port = parse_listen(listen)
    if port == 0:
        raise ValueError(f"api.listen {listen!r} has port 0: the hub's port cannot be known")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _request(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, Any]:
    """One HTTP request to the hub: (status, decoded JSON body); raises OSError when the hub
    cannot be reached."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw[:300].decode("utf-8", "replace")}


def _say(message: str) -> None:
    print(f"hub-bridge send: {message}", file=sys.stderr)


def _cmd_send(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    for what, value in (("--fleet", args.fleet), ("--device", args.device)):
        if not _IDENT.fullmatch(value):
            _say(f"{what} {value!r} must match {IDENT_RE}")
            return EXIT_USAGE
    wait: float | None = None
    if args.wait is not None:
        try:
            wait = parse_duration(args.wait)
        except ValueError as exc:
            _say(f"--wait: {exc}")
            return EXIT_USAGE
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        _say(f"{args.file}: {exc.strerror or exc}")
        return EXIT_USAGE
    token_file = args.token_file or os.environ.get("HUB_BRIDGE_TOKEN_FILE")
    token: str | None = None
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            _say(f"--token-file {token_file}: {exc.strerror or exc}")
            return EXIT_USAGE
    try:
        check_command_body(body)  # the hub checks again: this only spares a round trip
        base = _hub_url(config.api.listen)
    except CommandError as exc:
        _say(f"{args.file}: {exc}")
        return EXIT_USAGE
    except ValueError as exc:
        _say(str(exc))
        return EXIT_USAGE
    fleet, device = args.fleet, args.device
    url = f"{base}/v1/devices/{fleet}/{device}/commands/{args.name}"
    try:
        status, answer = _request(url, body, token)
    except OSError as exc:
        _say(f"the hub at {base} cannot be reached ({exc}): nothing was queued")
        return EXIT_UNREACHABLE
    if status != 202:
        error = answer.get("error") if isinstance(answer, dict) else answer
        _say(f"the hub answered {status}: {error}")
        return EXIT_USAGE if 400 <= status < 500 and status != 408 else EXIT_UNREACHABLE
    print(json.dumps(answer, separators=(",", ":")), flush=True)
    if not answer.get("device_known", True):
        _say(f"the hub has not heard of {fleet}/{device} yet: the command waits for it")
    if wait is None:
        return EXIT_OK
    return _wait_for_answer(base, str(answer["id"]), f"{fleet}/{device}", wait, token)


def _wait_for_answer(base: str, cid: str, where: str, wait: float, token: str | None = None) -> int:
    """Poll the hub until the device answered command ``cid`` or ``wait`` seconds passed."""
    url = f"{base}/v1/commands/{urllib.parse.quote(cid, safe='')}"
    deadline = time.monotonic() + wait
    last: dict[str, Any] = {}
    while True:
        try:
            status, found = _request(url, token=token)
        except OSError:  # the hub restarting: the command is kept, keep asking
            status, found = 0, None
        if status == 200 and isinstance(found, dict):
            last = found
            state = found.get("status")
            if state in ("ok", "refused", "superseded"):
                found.pop("payload", None)
                print(json.dumps(found, separators=(",", ":")), flush=True)
            if state == "ok":
                return EXIT_OK
            if state == "refused":
                _say(f"{where} refused {found.get('name')} {cid}: {found.get('error')}")
                return EXIT_REFUSED
            if state == "superseded":
                _say(
                    f"{cid} was superseded by {found.get('superseded_by')} before {where} answered"
                )
                return EXIT_SUPERSEDED
        elif status == 404:
            _say(f"the hub no longer has command {cid}")
            return EXIT_UNREACHABLE
        if time.monotonic() >= deadline:
            sent = last.get("sent_count", "?")
            _say(f"no answer from {where} within {wait:g} s: {cid} is still queued (sent {sent}x)")
            return EXIT_TIMEOUT
        time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))


CLAIM_TTL_MAX_S = 30 * 86400.0


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"hub-bridge {command}: {message}", file=sys.stderr)
    return code


def _cmd_ca_init(args: argparse.Namespace) -> int:
    hub_id = args.hub_id
    folder = Path(args.dir) if args.dir else None
    if args.config:
        try:
            config = load_hub_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        folder = folder or config.pki.dir
        hub_id = hub_id or config.hub_id
    try:
        report = pki.init_ca(
            folder or pki.DEFAULT_DIR,
            import_cert=Path(args.import_cert) if args.import_cert else None,
            import_key=Path(args.import_key) if args.import_key else None,
            broker_hosts=args.broker_host or pki.DEFAULT_BROKER_HOSTS,
            hub_id=hub_id or "hub",
            force=args.force,
        )
    except pki.PkiError as exc:
        return _fail("ca init", str(exc))
    except OSError as exc:
        return _fail("ca init", f"{exc.filename or ''}: {exc.strerror or exc}")
    for name in report.made:
        print(f"made {report.folder / name}")
    for name in report.kept:
        print(f"kept {report.folder / name}")
    cert = report.authority.cert
    print(f"CA {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"CA SHA-256 fingerprint {pki.fingerprint(cert)}")
    if args.force and report.made:
        print(
            "hub-bridge ca init: --force: certificates of the old CA no longer work",
            file=sys.stderr,
        )
    return 0


def _ident_args(command: str, args: argparse.Namespace) -> int | None:
    for what, value in (("--fleet", args.fleet), ("--device", args.device)):
        if not _IDENT.fullmatch(value):
            return _fail(command, f"{what} {value!r} must match {IDENT_RE}", 2)
    return None


def _cmd_claim_create(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if (bad := _ident_args("claim create", args)) is not None:
        return bad
    if args.device == HUB_DEVICE:
        return _fail("claim create", f"--device {HUB_DEVICE}: reserved for the hub's own events", 2)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        return _fail("claim create", f"--ttl: {exc}", 2)
    if not 0 < ttl <= CLAIM_TTL_MAX_S:
        return _fail("claim create", "--ttl must be more than 0 and at most 30d", 2)
    settings = config.pki_settings()
    if not (settings.dir / pki.CA_CERT).exists():
        return _fail("claim create", f"no CA in {settings.dir}: run hub-bridge ca init first")
    token = new_token()
    try:
        text = claim_text(settings.hub_api_url, token)
    except ClaimError as exc:
        return _fail("claim create", f"pki.hub_api_url: {exc}", 2)
    now = time.time()
    expires = now + ttl

    async def record() -> None:
        timeline = await open_timeline(config.timeline.url, config.ingest.limits)
        try:
            await timeline.add_claim(
                token_hash(token), args.fleet, args.device, args.role, expires, now
            )
        finally:
            await timeline.close()

    try:
        asyncio.run(record())
    except (TimelineError, OSError) as exc:
        return _fail("claim create", f"the claim could not be stored: {exc}")
    until = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")[:-6] + "Z"
    if args.json:
        answer = {
            "fleet": args.fleet,
            "device": args.device,
            "role": args.role,
            "expires": until,
            "token": token,
            "claim": text,
        }
        print(json.dumps(answer, separators=(",", ":")))
        return 0
    print(f"claim for {args.fleet}/{args.device} (role {args.role}), once, until {until}")
    print(f"token: {token}")
    print(text)
    if args.qr != "none":
        print()
        print(qr_text(text, dark_terminal=args.qr == "dark"), end="")
    print(f"on the device: edge-agent provision --claim '{text}'", file=sys.stderr)
    return 0


def _cmd_device_revoke(args: argparse.Namespace) -> int:
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if (bad := _ident_args("device revoke", args)) is not None:
        return bad
    folder = config.pki.dir

    async def revoke() -> tuple[list[str], int, list[tuple[int, float]]]:
        timeline = await open_timeline(config.timeline.url, config.ingest.limits)
        try:
            issued = len(await timeline.certificates(args.fleet, args.device))
            serials = await timeline.revoke_device(args.fleet, args.device)
            return serials, issued, await timeline.revoked_certificates()
        finally:
            await timeline.close()

    try:
        authority = pki.load_authority(folder)  # before anything changes: the CRL needs it
        serials, issued, revoked = asyncio.run(revoke())
    except pki.PkiError as exc:
        return _fail("device revoke", str(exc))
    except (TimelineError, OSError) as exc:
        return _fail("device revoke", f"the store cannot be used: {exc}")
    if issued == 0:
        return _fail(
            "device revoke", f"no certificate was ever issued to {args.fleet}/{args.device}"
        )
    entries = [(serial, dt.datetime.fromtimestamp(at, dt.UTC)) for serial, at in revoked]
    try:
        path = pki.write_crl(folder, authority, entries)
    except OSError as exc:
        return _fail(
            "device revoke",
            f"revoked in the store, but {folder / pki.CRL} could not be written ({exc}): "
            "run this command again",
        )
    if serials:
        print(
            f"revoked {len(serials)} certificate(s) of {args.fleet}/{args.device}:",
            ", ".join(serials),
        )
    else:
        print(f"every certificate of {args.fleet}/{args.device} was revoked already")
    print(f"wrote {path} ({len(entries)} revoked certificate(s)): restart the broker to apply it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hub-bridge``."""
    p = argparse.ArgumentParser(prog="hub-bridge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hub")
    run.add_argument("--config", required=True)
    run.set_defaults(func=_cmd_run)
    cfg = sub.add_parser("config", help="print the effective configuration, secrets masked")
    cfg.add_argument("--config", required=True)
    cfg.set_defaults(func=_cmd_config)
    ev = sub.add_parser("events", help="print the stored timeline, one JSON envelope per line")
    ev.add_argument("--config", required=True)
    ev.add_argument("--fleet")
    ev.add_argument("--device")
    ev.add_argument("--flags", action="store_true", help="add the hub's flags as _flags")
    ev.set_defaults(func=_cmd_events)
    send = sub.add_parser(
        "send",
        help="send a command to a device, kept until the device acknowledges it",
        description="Queue a command in the running hub (through its API at api.listen). Exit "
        "0 queued (with --wait: applied), 1 refused by the device, 2 bad input, 3 --wait ran "
        "out (still queued), 4 superseded, 5 the hub unreachable (nothing queued).",
    )
    send.add_argument("name", choices=COMMAND_NAMES, help="the command")
    send.add_argument("--config", required=True, help="the hub's configuration")
    send.add_argument("--fleet", required=True)
    send.add_argument("--device", required=True)
    send.add_argument("--wait", metavar="DURATION", help="wait this long for the answer (30s)")
    send.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding an API token with the commands right (tenants.tokens); default "
        "$HUB_BRIDGE_TOKEN_FILE",
    )
    send.add_argument("file", help="the command: a JSON object (- for stdin)")
    send.set_defaults(func=_cmd_send)

    ca = sub.add_parser("ca", help="the fleet CA").add_subparsers(dest="ca_command", required=True)
    init = ca.add_parser(
        "init",
        help="make (or import) the fleet CA and the hub's and broker's certificates",
        description="Make or import the fleet CA in the PKI folder, issue the hub's client "
        "certificate (CN _hub/HUB_ID) and the broker's server certificate, and write an empty "
        "CRL. Existing files are kept (--force makes everything anew).",
    )
    init.add_argument("--config", help="the hub's configuration (pki.dir, hub_id)")
    init.add_argument("--dir", help=f"the PKI folder (pki.dir; default {pki.DEFAULT_DIR})")
    init.add_argument("--import-cert", metavar="FILE", help="an existing CA certificate (PEM)")
    init.add_argument("--import-key", metavar="FILE", help="its key (PEM, not encrypted)")
    init.add_argument(
        "--broker-host",
        action="append",
        metavar="NAME",
        help="a name or address of the broker for its certificate (repeat; default "
        "localhost and 127.0.0.1)",
    )
    init.add_argument("--hub-id", help="the hub's id for its certificate (hub_id; default hub)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(func=_cmd_ca_init)

    claim = sub.add_parser("claim", help="claims for provisioning devices").add_subparsers(
        dest="claim_command", required=True
    )
    create = claim.add_parser(
        "create",
        help="a one-time claim token (and its QR code) for a technician",
        description="Store a one-time, expiring claim for one device and print it: the token, "
        "the claim text lmclaim:{hub_api_url}#{token} for edge-agent provision --claim, and a "
        "QR code of it.",
    )
    create.add_argument("--config", required=True, help="the hub's configuration")
    create.add_argument("--fleet", required=True)
    create.add_argument("--device", required=True)
    create.add_argument("--role", choices=ROLES, default="van")
    create.add_argument("--ttl", default="1h", metavar="DURATION", help="valid for (1h; <= 30d)")
    create.add_argument(
        "--qr",
        choices=("dark", "light", "none"),
        default="dark",
        help="the QR code for a dark (default) or light terminal, or none",
    )
    create.add_argument("--json", action="store_true", help="print one JSON object instead")
    create.set_defaults(func=_cmd_claim_create)

    device = sub.add_parser("device", help="devices' identities").add_subparsers(
        dest="device_command", required=True
    )
    revoke = device.add_parser(
        "revoke",
        help="revoke a device's certificates and rewrite the CRL",
        description="Mark every certificate of the device revoked (and its unused claims "
        "void) and rewrite crl.pem in pki.dir, the broker's crlfile.",
    )
    revoke.add_argument("--config", required=True, help="the hub's configuration")
    revoke.add_argument("--fleet", required=True)
    revoke.add_argument("--device", required=True)
    revoke.set_defaults(func=_cmd_device_revoke)

    eta = sub.add_parser("eta", help="the hub's ETA").add_subparsers(
        dest="eta_command", required=True
    )
    replay = eta.add_parser(
        "replay",
        help="the hub's ETA over an NMEA log and a manifest, the agent's trip engine in front",
        description="Run the agent's GNSS pipeline and trip engine over LOG as on a van, and the "
        'hub\'s ETA behind them; print {"at", "stop", "eta"} for every stop still ahead, every '
        "minute of log time (DESIGN §9). Needs the agent extra (lastmile-edge[agent]).",
    )
    replay.add_argument("--manifest", required=True, help="the route's manifest (JSON, DESIGN §2)")
    replay.add_argument("log", help="an NMEA log (as gnss replay reads it), or - for stdin")
    replay.set_defaults(func=_cmd_eta_replay)

    # commands with parsers of their own: everything after the command name goes to them
    token = sub.add_parser("token", help="API tokens for tenants (hub-bridge token new --help)")
    token.add_argument("rest", nargs=argparse.REMAINDER)
    token.set_defaults(func=lambda a: _delegate("token", a.rest))
    carrier = sub.add_parser(
        "carrier", help="import a carrier's tracking export (hub-bridge carrier import --help)"
    )
    carrier.add_argument("rest", nargs=argparse.REMAINDER)
    carrier.set_defaults(func=lambda a: _delegate("carrier", a.rest))
    return p


def _cmd_eta_replay(args: argparse.Namespace) -> int:
    # the agent's GNSS pipeline and trip engine run in front (DESIGN §9): imported only here
    from hub_bridge.delivery.replay import run_eta_replay

    return run_eta_replay(args.manifest, args.log, sys.stdout)


def _delegate(command: str, rest: list[str]) -> int:
    """``token new ...`` and ``carrier import ...``: their modules parse their own arguments."""
    verb = {"token": "new", "carrier": "import"}[command]
    if not rest or rest[0] != verb:
        print(f"usage: hub-bridge {command} {verb} [--help]", file=sys.stderr)
        return 2
    if command == "token":
        from hub_bridge.tokens_cli import token_main

        return token_main(rest[1:])
    from hub_bridge.carriers.cli import import_main

    return import_main(rest[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hub-bridge``."""
    return cli_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
