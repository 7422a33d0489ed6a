"""``hub-bridge``: run the hub, print its timeline or its effective configuration (DESIGN §4),
send a command to a device (DESIGN §10).

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
import json
import logging
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
from hub_bridge.api import build_app
from hub_bridge.bridge import HubBridge
from hub_bridge.commands import COMMAND_NAMES, CommandError, check_command_body
from hub_bridge.config import HubConfig, load_hub_config
from hub_bridge.timeline import Timeline, TimelineError

__all__ = ["main", "run_hub"]

log = logging.getLogger(__name__)


async def run_hub(config: HubConfig, stop: asyncio.Event, *, announce: bool = False) -> None:
    """Run the bridge and its API until ``stop`` is set."""
    timeline = await Timeline.open(config.timeline.path, config.ingest.limits)
    health = HealthRegistry()
    bridge = HubBridge(config, timeline, health, command_limits=config.commands.limits)
    app = build_app(
        timeline,
        health,
        commands_changed=bridge.commands_changed,
        command_limits=bridge.command_limits,
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
            task = tg.create_task(bridge.run(), name="bridge")
            if announce:
                # ready means subscribed: what devices publish from now on reaches the hub
                waiter = tg.create_task(_announce_when(bridge.subscribed, bound))
            await stop.wait()
            task.cancel()
            if announce:
                waiter.cancel()
    finally:
        await runner.cleanup()
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
    except TimelineError as exc:
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

    if not config.timeline.path.exists():
        print(f"hub-bridge: no timeline at {config.timeline.path}", file=sys.stderr)
        return 1

    async def dump() -> None:
        timeline = await Timeline.open(config.timeline.path)
        try:
            async for env in timeline.events(args.fleet, args.device, with_flags=args.flags):
                sys.stdout.write(json.dumps(env, separators=(",", ":")) + "\n")
        finally:
            await timeline.close()

    try:
        asyncio.run(dump())
    except TimelineError as exc:
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


def _request(url: str, body: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request to the hub: (status, decoded JSON body); raises OSError when the hub
    cannot be reached."""
    req = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json"} if body is not None else {},
        method="POST" if body is not None else "GET",
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
        status, answer = _request(url, body)
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
    return _wait_for_answer(base, str(answer["id"]), f"{fleet}/{device}", wait)


def _wait_for_answer(base: str, cid: str, where: str, wait: float) -> int:
    """Poll the hub until the device answered command ``cid`` or ``wait`` seconds passed."""
    url = f"{base}/v1/commands/{urllib.parse.quote(cid, safe='')}"
    deadline = time.monotonic() + wait
    last: dict[str, Any] = {}
    while True:
        try:
            status, found = _request(url)
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
    send.add_argument("file", help="the command: a JSON object (- for stdin)")
    send.set_defaults(func=_cmd_send)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hub-bridge``."""
    return cli_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
