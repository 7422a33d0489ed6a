"""The demo's station: the vans are loaded at the depot's docks before they leave for their routes.

One station agent (``depot-1``, ``device.role: station``) watches two docks, each with a handheld
scanner and a TFmini distance sensor over its bay (``simulators.dock_devices``, on sockets). Its
load plan is built from the vans' manifests (every parcel of a van's stops is on its route; vans
alternate between the two docks) and sent with ``hub-bridge send loadplan --wait``: the hub keeps
it, publishes it on ``cmd/loadplan`` and waits for the station's ``cmd-ack``. Then each van backs
into its bay, is identified by its vehicle code, and its parcels are read, with two things going
wrong on purpose:

- a parcel of the second van is carried to the first van's dock: the station flags the misload
  (its signal would go red) and the parcel is then loaded at its own dock, where it is verified;
- the last parcel of the first van is left behind: its gate-out lists it as missing.

Each van then pulls out (the bay goes free): one gate-out per van. ``check_station`` verifies
all of that in the hub's timeline.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from simulators.dock_devices import DockDevices
from simulators.van import VanRun

__all__ = ["STATION", "LoadingScript", "check_station", "print_station"]

STATION = "depot-1"
DOCKS = ("dock-1", "dock-2")


def parcels_of(run: VanRun) -> list[str]:
    """Every parcel of a van's manifest, in stop order."""
    out: list[str] = []
    for stop in run.scenario.manifest["stops"]:
        out.extend(str(p if isinstance(p, str) else p["id"]) for p in stop.get("parcels", []))
    return out


class LoadingScript:
    """The station side of the demo (module docstring)."""

    def __init__(self, runs: list[VanRun]) -> None:
        self.runs = runs
        self.docks = {dock: DockDevices(dock) for dock in DOCKS}
        self.dock_of = {run.scenario.van: DOCKS[i % len(DOCKS)] for i, run in enumerate(runs)}
        first = parcels_of(runs[0])
        self.left_behind = first[-1] if first else None
        second = parcels_of(runs[1]) if len(runs) > 1 else []
        self.misloaded = second[0] if second else None

    def plan(self) -> dict[str, Any]:
        """The load plan: one route per van, at its dock."""
        return {
            "station": STATION,
            "routes": [
                {
                    "route": run.scenario.manifest["route"],
                    "vehicle": run.scenario.van,
                    "dock": self.dock_of[run.scenario.van],
                    "parcels": parcels_of(run),
                }
                for run in self.runs
            ],
        }

    def agent_config(self, broker_url: str, work: Any, api_port: int) -> dict[str, Any]:
        """The station agent's configuration."""
        return {
            "device": {"id": STATION, "fleet": "acme", "role": "station"},
            "broker": {"url": broker_url},
            "outbox": {"path": str(work / f"{STATION}.outbox.db")},
            "api": {"listen": f"127.0.0.1:{api_port}"},
            "uplink": {"ack_timeout": "5s", "backoff_max": "2s"},
            "log": {"level": "WARNING"},
            "station": {"docks": [d.station_dock() for d in self.docks.values()]},
        }

    async def start_devices(self) -> None:
        """Open the docks' scanner and distance-sensor sockets (before the agent starts)."""
        for dock in self.docks.values():
            await dock.start()

    async def close(self) -> None:
        """Close the docks' sockets."""
        for dock in self.docks.values():
            await dock.close()

    async def send_plan(self, hub_config: Path, env: dict[str, str]) -> str:
        """Send the load plan with ``hub-bridge send loadplan --wait`` (the hub keeps it until
        the station answers on ``cmd-ack``); return what the command printed."""
        plan = hub_config.parent / "loadplan.json"
        plan.write_text(json.dumps(self.plan(), indent=1))
        argv = [
            sys.executable, "-m", "hub_bridge", "send", "loadplan", "--config", str(hub_config),
            "--fleet", "acme", "--device", STATION, str(plan), "--wait", "60s",
        ]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=env, timeout=90
        )
        if done.returncode != 0:
            raise RuntimeError(f"hub-bridge send loadplan: exit {done.returncode}: {done.stderr}")
        last: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return f"command {last['id']}: {last['status']}, sent {last['sent_count']} time(s)"

    async def load(self) -> None:
        """Load every van at its dock, with the misload and the parcel left behind."""
        async with asyncio.timeout(60):
            for dock in self.docks.values():
                await dock.wait_connected()
        hold = 1.5  # the bay sensor must see the van for its hold time (1 s by default)
        for run in self.runs:
            van = run.scenario.van
            dock = self.docks[self.dock_of[van]]
            dock.arrive()
            await asyncio.sleep(hold)
            await dock.scan(f"VEH:{van}")
            for parcel in parcels_of(run):
                if parcel == self.left_behind:
                    continue
                if parcel == self.misloaded:
                    continue  # carried to the wrong dock first: see below
                await dock.scan(parcel)
                await asyncio.sleep(0.05)
            if run is self.runs[0] and self.misloaded is not None:
                await dock.scan(self.misloaded)  # the wrong van: red
                await asyncio.sleep(0.3)
        # the misloaded parcel is taken off and loaded where it belongs
        if self.misloaded is not None and len(self.runs) > 1:
            await self.docks[self.dock_of[self.runs[1].scenario.van]].scan(self.misloaded)
            await asyncio.sleep(0.3)
        for dock in self.docks.values():
            dock.leave()
        await asyncio.sleep(hold + 1.0)


def station_events(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The station's events in the timeline."""
    return [e for e in timeline if e["device"] == STATION and e["type"] != "device.health"]


def print_station(timeline: list[dict[str, Any]]) -> None:
    """Print the station's timeline: dock arrivals, load verification and gate-outs."""
    mine = station_events(timeline)
    print(f"\ntimeline of acme/{STATION} (the docks), in seq order:")
    for e in mine:
        d = e["data"]
        if e["type"] == "load.gateout":
            what = (
                f"{d['route']} {d['vehicle']}: {d['verified']}/{d['expected']} verified, "
                f"{d['misloaded']} misloaded, missing {d['missing']}"
            )
        elif e["type"] == "load.misload":
            what = f"{d['parcel']} onto {d['vehicle']}, belongs to {d['expected_vehicle']}"
        elif e["type"] == "load.missing":
            what = f"{d['route']} {d['vehicle']}: {d['parcels']}"
        else:
            what = d.get("parcel") or d.get("vehicle") or d.get("state") or ""
        print(f"  {e['seq']:>5}  {e['ts']}  {e['type']:<14} {d.get('dock', ''):<7} {what}")
    counts = Counter(e["type"] for e in mine)
    print(f"  {len(mine)} events: {dict(sorted(counts.items()))}")


def check_station(timeline: list[dict[str, Any]], script: LoadingScript) -> list[str]:
    """What is wrong with the station's events (empty when all is as the script played it)."""
    mine = station_events(timeline)
    problems: list[str] = []
    gateouts = [e["data"] for e in mine if e["type"] == "load.gateout"]
    if len(gateouts) != len(script.runs):
        problems.append(f"{len(gateouts)} gate-outs for {len(script.runs)} vans")
    misloads = [e["data"] for e in mine if e["type"] == "load.misload"]
    want_misloads = [script.misloaded] if script.misloaded is not None else []
    if [m["parcel"] for m in misloads] != want_misloads:
        problems.append(f"misloads {misloads}, expected {want_misloads}")
    verified = Counter(e["data"]["parcel"] for e in mine if e["type"] == "load.verified")
    if script.misloaded is not None and verified[script.misloaded] != 1:
        problems.append(f"the misloaded parcel was verified {verified[script.misloaded]} times")
    missing = [p for g in gateouts for p in g["missing"]]
    want_missing = [script.left_behind] if script.left_behind is not None else []
    if missing != want_missing:
        problems.append(f"missing {missing}, expected {want_missing}")
    expected = sum(len(parcels_of(r)) for r in script.runs) - len(want_missing)
    if sum(verified.values()) != expected or max(verified.values(), default=1) != 1:
        problems.append(f"{sum(verified.values())} verified, expected {expected} once each")
    return problems
