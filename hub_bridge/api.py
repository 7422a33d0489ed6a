"""The hub's HTTP API: health, devices (watermark, gaps, online state), timeline, dead letters.

Read-only; the same aiohttp stack as the agent's local API. ``GET /v1/openapi.json`` describes it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge_agent.health import HealthRegistry
from hub_bridge.timeline import Timeline

__all__ = ["OPENAPI", "build_app"]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hub-bridge", "version": "1"},
    "paths": {
        "/v1/health": {"get": {"summary": "hub state and counters"}},
        "/v1/devices": {"get": {"summary": "devices: watermark, missing seqs, online state"}},
        "/v1/events": {
            "get": {
                "summary": "the timeline in (fleet, device, seq) order",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": t}}
                    for n, t in (
                        ("fleet", "string"),
                        ("device", "string"),
                        ("after_seq", "integer"),
                        ("limit", "integer"),
                    )
                ],
            }
        },
        "/v1/dead-letters": {"get": {"summary": "the most recent rejected messages"}},
    },
}


def _int(request: web.Request, name: str, default: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > hi:
        raise web.HTTPBadRequest(text=f'{{"error": "{name} must be an integer up to {hi}"}}')
    return int(raw)


def build_app(timeline: Timeline, health: HealthRegistry) -> web.Application:
    """The aiohttp application of the hub API."""

    async def get_health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "events": await timeline.count("events"),
                "dead_letters": await timeline.count("dead_letters"),
                "components": health.snapshot(),
            }
        )

    async def get_devices(_: web.Request) -> web.Response:
        return web.json_response(await timeline.devices())

    async def get_events(request: web.Request) -> web.Response:
        limit = _int(request, "limit", 1000, 10_000)
        after = _int(request, "after_seq", 0, 2**62)
        out = [
            env
            async for env in timeline.events(
                request.query.get("fleet"),
                request.query.get("device"),
                after,
                limit,
                with_flags=True,
            )
        ]
        return web.json_response(out)

    async def get_dead(request: web.Request) -> web.Response:
        return web.json_response(await timeline.dead_letters(_int(request, "limit", 100, 10_000)))

    async def get_openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    app = web.Application()
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/devices", get_devices)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/dead-letters", get_dead)
    app.router.add_get("/v1/openapi.json", get_openapi)
    return app
