"""Simulated vans fed to live agents: each van's fixes on a GNSS socket, its manifest first.

The fixes go out through the GNSS simulator (``simulators.gnss.serve_fixes``), one TCP socket per
van, at ``speed`` times real time; ``python -m simulators.fleet serve`` and the demo
(``simulators.demo``) both use it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from simulators.gnss import serve_fixes
from simulators.van import VanRun

__all__ = ["drive_fleet", "serve_runs"]


async def serve_runs(
    runs: list[tuple[VanRun, dict[str, Any]]], speed: float, base_port: int, host: str
) -> int:
    """Feed each van's fixes through the GNSS simulator, one TCP socket per van.

    Prints one JSON line per van once its socket listens (``gnss`` is the source URL for its
    agent's ``gnss.source``). Fixes are sent on time whether an agent listens or not, like a
    receiver; each van first stands 2-5 minutes in the depot, time for its agent to connect.
    """

    def announce(info: dict[str, Any]) -> Callable[[int], None]:
        def on_listen(port: int) -> None:
            print(json.dumps({**info, "gnss": f"socket://{host}:{port}"}), flush=True)

        return on_listen

    tasks = []
    for k, (run, info) in enumerate(runs):
        port = 0 if base_port == 0 else base_port + k
        tasks.append(
            serve_fixes(
                run.fixes,
                host=host,
                port=port,
                speed=speed,
                name=run.scenario.van,
                wait_for_client=False,
                on_listen=announce(info),
            )
        )
    await asyncio.gather(*tasks)
    return 0


async def drive_fleet(
    runs: list[VanRun],
    ports: list[int],
    send_manifest: Callable[[VanRun], Awaitable[object]],
    speed: float,
) -> None:
    """Give each agent its manifest (``send_manifest``: the demo uses ``hub-bridge send
    manifest --wait``, which returns once the van acknowledged it), then play each van's day on
    its socket."""
    await asyncio.gather(*(send_manifest(run) for run in runs))
    await asyncio.gather(
        *(
            serve_fixes(
                run.fixes, port=port, speed=speed, name=run.scenario.van, wait_for_client=True
            )
            for run, port in zip(runs, ports, strict=True)
        )
    )
