"""``hub-bridge``: run the hub, print its timeline, or its effective configuration (DESIGN §4)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.lifecycle import announce_ready, cli_main, run_until_signalled
from edge_agent.platform.redact import redact_data
from edge_agent.platform.settings import parse_listen
from edge_agent.platform.yamlconf import ConfigError, mask_secrets
from hub_bridge.api import build_app
from hub_bridge.bridge import HubBridge
from hub_bridge.config import HubConfig, load_hub_config
from hub_bridge.timeline import Timeline, TimelineError

__all__ = ["main", "run_hub"]

log = logging.getLogger(__name__)


async def run_hub(config: HubConfig, stop: asyncio.Event, *, announce: bool = False) -> None:
    """Run the bridge and its API until ``stop`` is set."""
    timeline = await Timeline.open(config.timeline.path, config.ingest.limits)
    health = HealthRegistry()
    runner = web.AppRunner(build_app(timeline, health), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        host, port = parse_listen(config.api.listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        bridge = HubBridge(config, timeline, health)
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hub-bridge``."""
    return cli_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
