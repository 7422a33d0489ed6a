"""A driver's phone app, simulated: posts the scans and proofs of delivery of each stop to the
van's local API, and a stop's events as a backlog after a dead zone.

``plan_deliveries()`` is pure (timed posts from a simulated van's day); ``run_app()`` posts them.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from edge_agent.wire.envelope import format_ts
from simulators.van import VanRun

__all__ = ["Post", "plan_deliveries", "run_app"]


@dataclass(frozen=True, slots=True)
class Post:
    """One POST to /v1/events at ``at`` seconds into the run (a list body is a batch)."""

    at: float
    body: dict[str, Any] | list[dict[str, Any]]
    what: str


def plan_deliveries(run: VanRun, speed: float, dead_zone_stop: int | None = 1) -> list[Post]:
    """The driver app's posts for one van: at each stop, a scan and a PoD per parcel.

    Times are the van's simulated day (``ts`` of each event), posted when the replay at ``speed``
    reaches them. The stop numbered ``dead_zone_stop`` (0-based) has no signal: its events are
    kept on the phone and posted with the next stop's.
    """
    day_start = run.fixes[0].time.timestamp()
    stops = {s["id"]: s for s in run.scenario.manifest["stops"]}
    route = run.scenario.manifest["route"]
    visits = [
        iv
        for iv in run.truth["intervals"]
        if iv["zone"].startswith("stop:") and iv.get("enter") and iv.get("exit")
    ]
    posts: list[Post] = []
    backlog: list[dict[str, Any]] = []
    for k, visit in enumerate(sorted(visits, key=lambda v: v["enter"])):
        stop_id = visit["zone"].split(":", 1)[1]
        stop = stops.get(stop_id)
        if stop is None:
            continue
        handed = visit["enter"] + (visit["exit"] - visit["enter"]) / 2
        ts = format_ts(datetime.fromtimestamp(handed, UTC))
        events: list[dict[str, Any]] = []
        for parcel in stop.get("parcels", []):
            ref = {"parcel": parcel, "route": route, "stop": stop_id}
            scan = {"text": parcel, "symbology": "code128", "source": "driver-app"}
            digest = hashlib.sha256(f"photo-{parcel}".encode()).hexdigest()
            pod = {"parcel": parcel, "kind": "photo", "sha256": digest, "recipient": "front door"}
            events.append({"type": "scan", "data": scan, "ref": ref, "ts": ts})
            events.append({"type": "pod", "data": pod, "ref": ref, "ts": ts})
        at = (handed - day_start) / speed
        if k == dead_zone_stop:
            backlog = events
            continue
        if backlog:
            events = backlog + events
            posts.append(Post(at, events, f"backlog of {len(backlog)} + {stop_id} deliveries"))
            backlog = []
        else:
            posts.append(Post(at, events, f"{stop_id}: {len(events) // 2} parcels delivered"))
    if backlog:
        posts.append(Post(posts[-1].at + 1 if posts else 0.0, backlog, "backlog after dead zone"))
    return posts


async def run_app(
    api: str, posts: list[Post], *, label: str = "app", verbose: bool = True
) -> list[dict[str, Any]]:
    """Post the plan in real time; return the agent's answers (ids and seqs)."""
    answers: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession() as http:
        for post in posts:
            delay = start + post.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with http.post(f"{api}/v1/events", json=post.body) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"{post.what}: HTTP {resp.status} {body}")
            got = body if isinstance(body, list) else [body]
            answers.extend(got)
            if verbose:
                seqs = ", ".join(str(a["seq"]) for a in got)
                print(f"  {label}: {post.what} -> seq {seqs}", flush=True)
    return answers
