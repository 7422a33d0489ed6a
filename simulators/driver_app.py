"""A driver's phone app and handheld, simulated: posts scans, pings and proofs of delivery to an
agent's local API, including a backlog posted at once after a dead zone.

``plan_shift()`` is pure (a list of timed posts); ``run_app()`` posts them over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from edge_agent.envelope import format_ts

__all__ = ["Post", "plan_shift", "run_app"]


@dataclass(frozen=True, slots=True)
class Post:
    """One POST to /v1/events at ``at`` seconds into the run (a list body is a batch)."""

    at: float
    body: dict[str, Any] | list[dict[str, Any]]
    what: str


def _pings(a: tuple[float, float], b: tuple[float, float], n: int) -> list[dict[str, Any]]:
    out = []
    heading = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) % 360
    for k in range(1, n + 1):
        f = k / n
        lat = a[0] + (b[0] - a[0]) * f
        lon = a[1] + (b[1] - a[1]) * f
        data = {"lat": round(lat, 6), "lon": round(lon, 6), "mode": 3, "speed_mps": 9.5}
        out.append({"type": "gnss.fix", "data": {**data, "track_deg": round(heading, 1)}})
    return out


def plan_shift(
    route: str = "r-17",
    stops: int = 4,
    parcels_per_stop: int = 2,
    seconds: float = 10.0,
    seed: int = 7,
) -> list[Post]:
    """A short shift: load scans at the depot, drive, deliver at each stop with PoD.

    The third stop is in a dead zone: its scan and PoD are posted as one batch later, with their
    original times, the way the app posts its backlog.
    """
    rng = random.Random(seed)
    depot = (52.3700, 4.8900)
    points = [
        (depot[0] + 0.004 * (i + 1), depot[1] + 0.006 * (i + 1) * rng.choice((1, -1)))
        for i in range(stops)
    ]
    parcels = [
        [f"JJD{route[-2:]}{s:02d}{p:04d}" for p in range(parcels_per_stop)] for s in range(stops)
    ]
    posts: list[Post] = []
    step = seconds / (stops + 2)
    t = 0.0
    for s, plist in enumerate(parcels):
        for p in plist:
            load = {"text": p, "symbology": "code128", "source": "handheld-1"}
            ref = {"parcel": p, "route": route, "stop": f"s-{s + 1}"}
            posts.append(Post(t, {"type": "scan", "data": load, "ref": ref}, f"load scan {p}"))
    here = depot
    backlog: list[dict[str, Any]] = []
    for s, (stop, plist) in enumerate(zip(points, parcels, strict=True)):
        t += step
        for k, ping in enumerate(_pings(here, stop, 5)):
            posts.append(Post(t - step + (k + 1) * step / 6, ping, "position"))
        here = stop
        for p in plist:
            ref = {"parcel": p, "route": route, "stop": f"s-{s + 1}"}
            scan: dict[str, Any] = {
                "type": "scan",
                "data": {"text": p, "symbology": "code128", "source": "app"},
            }
            digest = hashlib.sha256(f"photo-{p}".encode()).hexdigest()
            pod_data: dict[str, Any] = {"parcel": p, "kind": "photo", "sha256": digest}
            pod_data.update(recipient="front door", lat=stop[0], lon=stop[1])
            pod = {"type": "pod", "data": pod_data}
            events = [{**scan, "ref": ref}, {**pod, "ref": ref}]
            if s == 2:
                # dead zone: kept on the phone with the time it happened, posted later
                backlog.extend({**ev, "_at": t} for ev in events)
            else:
                posts.extend(Post(t, ev, f"{ev['type']} {p}") for ev in events)
        if s == 3 and backlog:
            posts.append(Post(t + 0.1, backlog, f"backlog of {len(backlog)} after a dead zone"))
            backlog = []
    if backlog:
        posts.append(Post(t + 0.1, backlog, f"backlog of {len(backlog)} after a dead zone"))
    posts.sort(key=lambda p: p.at)
    return posts


def _stamped(event: dict[str, Any], wall_start: float) -> dict[str, Any]:
    event = dict(event)
    at = event.pop("_at", None)
    if at is not None:
        event["ts"] = format_ts(datetime.fromtimestamp(wall_start + at, UTC))
    return event


async def run_app(api: str, posts: list[Post], *, verbose: bool = True) -> list[dict[str, Any]]:
    """Post the plan in real time; return the agent's answers (ids and seqs)."""
    answers: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    wall = time.time()
    async with aiohttp.ClientSession() as http:
        for post in posts:
            delay = start + post.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = post.body
            if isinstance(body, list):  # a backlog: events keep the time they happened
                body = [_stamped(ev, wall) for ev in body]
            async with http.post(f"{api}/v1/events", json=body) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"{post.what}: HTTP {resp.status} {body}")
            got = body if isinstance(body, list) else [body]
            answers.extend(got)
            if verbose and post.what != "position":
                print(f"  app: {post.what} -> seq {', '.join(str(a['seq']) for a in got)}")
    return answers
