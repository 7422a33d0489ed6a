"""The demo on embedded defaults: the whole system on one machine, on simulators.

A private mosquitto on a free port (or ``--broker URL``), the hub, a station agent at the depot's
docks and one edge agent per van. The vans are first loaded at two docks (``station_demo``: the
load plan sent with ``hub-bridge send``, one misload caught and corrected, one parcel left behind,
one gate-out per van). Each van's agent reads its GNSS receiver (the GNSS simulator on a TCP
socket, playing the van's day at ``--speed`` times real time) and gets its manifest from the hub
side on ``cmd/manifest``; its trip engine turns the fixes into departures, approaches, arrivals,
dwells and departures. The driver's app (the driver-app simulator) posts the scans and proofs of
delivery at each stop to the van's local API; one stop is in a dead zone and its events are posted
later as a backlog. A third of the way through, the broker is killed (it has no persistence) and
started again.

Before anything happens a dispatch system (``demo_delivery.Dispatch``, a small web server in this
process) subscribes to the fleet's parcel statuses and exceptions through the hub's API and checks
every webhook's signature. The station agent's clock is set back (``shifted_clock``) so that the
loading is stamped before the vans' day, which is played fast and in the past; the driver app
posts nothing for the parcel left at the depot; the first van's second stop has a delivery window
that closes ten minutes before the van can be there (the hub raises it as late risk).

At the end the demo prints the station's and each van's timeline as the hub stored it, checks the
station's load events against what the docks played, scores the trip events against the
simulator's ground truth, and checks that every event the app had accepted is in the timeline
exactly once. Then it prints each parcel's status and the fleet's exceptions as the hub's API
gives them, and checks them (``demo_delivery.check_delivery``): the misload raised and resolved,
the parcel left behind ``missing`` with its exception, the late stop's ``late_risk``, every other
parcel ``delivered``, and every exception's raise and resolve received by the dispatch system,
signed. Exit status 0 when all of that holds.

    python -m simulators.demo [--vans 2] [--stops 3] [--speed 100] [--broker URL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from simulators.broker import Mosquitto, free_port
from simulators.demo_delivery import (
    Dispatch,
    check_delivery,
    print_delivery,
    tight_windows,
    wait_delivery,
)
from simulators.demo_pki import DemoPki
from simulators.driver_app import Post, plan_deliveries, run_app
from simulators.feed import drive_fleet
from simulators.scoring import score
from simulators.station_demo import LoadingScript, check_station, print_station
from simulators.van import VanRun, run_van
from simulators.world import fleet_scenarios

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def main(argv: list[str] | None = None) -> int:
    """Run the demo; print the timeline; exit 0 when everything arrived once and scored exact."""
    ap = argparse.ArgumentParser(prog="python -m simulators.demo", description=__doc__)
    ap.add_argument("--vans", type=int, default=2)
    ap.add_argument("--stops", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=100.0, help="times real time")
    ap.add_argument("--broker", help="use this broker instead of a private mosquitto")
    ap.add_argument("--workdir", help="keep configs, databases and logs here")
    ap.add_argument(
        "--plain",
        action="store_true",
        help="plain MQTT without certificates (a quick local try; the default is TLS with a "
        "fleet CA, provisioned devices and the shipped ACL)",
    )
    args = ap.parse_args(argv)
    tls = not args.plain and not args.broker

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lastmile-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    # the day is played in the past, ending about now, so no clock sees a fix from the future
    probe = fleet_scenarios(args.vans, seed=args.seed, stops=args.stops, tunnels=1)
    length = max(run_van(sc).samples[-1].t for sc in probe) + 60.0 * args.vans
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=length)
    scenarios = fleet_scenarios(args.vans, seed=args.seed, stops=args.stops, tunnels=1, start=start)
    runs = [run_van(sc) for sc in scenarios]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[str]] = []
    hub_cfg: dict[str, Any] = {
        "timeline": {"url": f"sqlite:///{work / 'timeline.db'}"},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "log": {"level": "WARNING"},
        # the demo's dispatch system listens on loopback, inside the hub's own network
        "delivery": {"webhooks": {"allow_private": True}},
    }
    pki: DemoPki | None = None
    if tls:
        # the fleet's CA first (the broker's certificate comes from it), as on a real hub
        hub_api = int(hub_cfg["api"]["listen"].rsplit(":", 1)[1])
        pki = DemoPki(work, env, free_port(), hub_api)
        hub_cfg.update(pki.hub_sections())
        (work / "hub.yaml").write_text(json.dumps(hub_cfg, indent=1))
        pki.init_ca(work / "hub.yaml")
        broker: Mosquitto | None = pki.broker()
    else:
        broker = None if args.broker else Mosquitto()
    if broker is not None:
        broker.start()
    url = args.broker or (broker.url if broker else "")
    if pki is not None:
        url = f"mqtts://127.0.0.1:{pki.broker_port}"
    else:
        hub_cfg["broker"] = {"url": url}

    def device_config(name: str, role: str, demo: dict[str, Any]) -> dict[str, Any]:
        """A device's configuration: the demo's settings, and its identity; over TLS the one
        ``edge-agent provision`` wrote (its certificate, key, CA, broker URL, API token)."""
        if pki is None:
            ident = {"device": {"id": name, "fleet": "acme", "role": role}, "broker": {"url": url}}
            return {**demo, **ident}
        provisioned = pki.provision(work / "hub.yaml", name, role)
        api = {**demo.get("api", {}), "token_file": provisioned["api"]["token_file"]}
        ident = {"device": provisioned["device"], "broker": provisioned["broker"]}
        return {**demo, **ident, "api": api}

    def launch(module: str, name: str, cfg: dict[str, Any], clock_back: float = 0.0) -> int:
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(cfg, indent=1))
        argv = [sys.executable, "-m", module, "run", "--config", str(path)]
        if clock_back:
            argv[2:3] = ["simulators.shifted_clock", f"{clock_back:.3f}", module]
        with (work / f"{name}.log").open("a") as log:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{name} did not start; see {work / (name + '.log')}")
        return int(json.loads(line)["api_port"])

    accepted: dict[str, int] = {}
    # the first van's second stop gets a window that closes before the van can be there
    manifests, late = tight_windows(runs)
    manifest_of = {r.scenario.van: m for r, m in zip(runs, manifests, strict=True)}
    hub_url = f"http://{hub_cfg['api']['listen']}"
    dispatch = Dispatch()
    try:
        launch("hub_bridge", "hub", hub_cfg)
        gnss_ports = [free_port() for _ in runs]
        api_ports: list[int] = []
        for run, port in zip(runs, gnss_ports, strict=True):
            van = run.scenario.van
            demo = {
                "outbox": {"path": str(work / f"{van}.outbox.db")},
                "api": {"listen": f"127.0.0.1:{free_port()}"},
                "uplink": {"ack_timeout": "5s", "backoff_max": "2s"},
                "clock": {"policy": "system"},
                "log": {"level": "WARNING"},
                # the day is replayed fast and in the past: accept its fixes' times
                "gnss": {
                    "source": f"socket://127.0.0.1:{port}",
                    "reconnect_max": "0.5s",
                    "filter": {"max_age": "2d"},
                },
                "trips": {"zones": run.scenario.geofences},
            }
            api_ports.append(launch("edge_agent", van, device_config(van, "van", demo)))
        how = "TLS, certificates from the fleet CA, the shipped ACL" if pki else "plain MQTT"
        print(f"demo: broker {url} ({how}), {len(runs)} vans, files in {work}", flush=True)
        day = max(r.fixes[-1].time.timestamp() - r.fixes[0].time.timestamp() for r in runs)

        station = LoadingScript(runs)

        async def load_at_the_docks() -> None:
            await station.start_devices()
            try:
                demo = station.agent_config(url, work, free_port())
                cfg = await asyncio.to_thread(device_config, "depot-1", "station", demo)
                # the loading is stamped 10 minutes before the vans' day starts (shifted_clock)
                back = time.time() - (start.timestamp() - 600.0)
                await asyncio.to_thread(launch, "edge_agent", "depot-1", cfg, back)
                sent = await station.send_plan(work / "hub.yaml", env)
                print(f"demo: hub-bridge send loadplan: {sent}", flush=True)
                await station.load()
            finally:
                await station.close()
            print("demo: the vans are loaded and leave the docks for their routes", flush=True)

        async def scenario() -> None:
            # the dispatch system subscribes before anything happens
            await dispatch.start()
            sub = await asyncio.to_thread(dispatch.subscribe, hub_url)
            print(
                f"demo: dispatch system subscribed at {dispatch.url}: webhook {sub['id']} "
                f"for {', '.join(sub['kinds'])}",
                flush=True,
            )
            await load_at_the_docks()
            send = functools.partial(send_manifest, work / "hub.yaml", env, manifest_of)
            tasks = [asyncio.create_task(drive_fleet(runs, gnss_ports, send, args.speed))]
            for run, port in zip(runs, api_ports, strict=True):
                posts = _not_on_board(plan_deliveries(run, args.speed), station.left_behind)
                tasks.append(asyncio.create_task(_app(run.scenario.van, port, posts, accepted)))
            if broker is not None:
                await asyncio.sleep(day / args.speed / 3)
                print("demo: broker killed (no persistence); the vans keep accepting", flush=True)
                broker.kill()
                await asyncio.sleep(3)
                broker.start()
                print("demo: broker back; the outboxes drain", flush=True)
            await asyncio.gather(*tasks)
            await asyncio.to_thread(drain)
            try:
                view = await asyncio.to_thread(
                    wait_delivery, hub_url, runs, dispatch, station, late
                )
            finally:
                await dispatch.close()
            views.append(view)

        def drain() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if all(_get(p, "/v1/health")["queue"]["depth"] == 0 for p in api_ports):
                    break
                time.sleep(0.2)

        views: list[Any] = []
        asyncio.run(scenario())
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        out = subprocess.run(
            [sys.executable, "-m", "hub_bridge", "events", "--config", str(work / "hub.yaml")],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
        if broker is not None:
            broker.stop()
    timeline = [json.loads(line) for line in out.stdout.splitlines()]
    print_station(timeline)
    problems = check_station(timeline, station)
    for problem in problems:
        print(f"  station: {problem}")
    failed = _report(timeline, runs, accepted)
    print_delivery(views[0], runs, dispatch)
    delivery = check_delivery(views[0], runs, station, late, dispatch)
    for problem in delivery:
        print(f"  delivery: {problem}")
    return failed or (1 if problems or delivery else 0)


async def send_manifest(
    hub_config: Path, env: dict[str, str], manifests: dict[str, dict[str, Any]], run: VanRun
) -> None:
    """``hub-bridge send manifest --wait`` with the van's manifest in ``manifests``: the hub
    keeps it until the van's agent acknowledges it on ``cmd-ack``."""
    path = hub_config.parent / f"{run.scenario.van}.manifest.json"
    path.write_text(json.dumps(manifests[run.scenario.van]))
    argv = [
        sys.executable, "-m", "hub_bridge", "send", "manifest", "--config", str(hub_config),
        "--fleet", "acme", "--device", run.scenario.van, str(path), "--wait", "60s",
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, env=env, timeout=90, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"hub-bridge send manifest: exit {done.returncode}: {done.stderr}")


def _not_on_board(posts: list[Post], parcel: str | None) -> list[Post]:
    """The driver app's posts without the scans and PoD of ``parcel`` (left at the depot: the
    driver cannot hand it over)."""
    out: list[Post] = []
    for post in posts:
        events = post.body if isinstance(post.body, list) else [post.body]
        kept = [e for e in events if (e.get("ref") or {}).get("parcel") != parcel]
        if kept:
            body = kept if isinstance(post.body, list) else kept[0]
            out.append(Post(post.at, body, post.what))
    return out


async def _app(van: str, port: int, posts: list[Any], accepted: dict[str, int]) -> None:
    answers = await run_app(f"http://127.0.0.1:{port}", posts, label=van)
    accepted.update({a["id"]: a["seq"] for a in answers})


def _report(timeline: list[dict[str, Any]], runs: list[VanRun], accepted: dict[str, int]) -> int:
    ok = True
    for run in runs:
        van = run.scenario.van
        mine = [e for e in timeline if e["device"] == van]
        print(f"\ntimeline of acme/{van} (without the position pings), in seq order:")
        for e in mine:
            if e["type"] in ("gnss.fix", "device.health"):
                continue
            ref = e.get("ref") or {}
            data = e["data"]
            what = data.get("zone") or data.get("text") or data.get("parcel") or ""
            dwell = f" dwell {data['dwell_s']:.0f}s" if "dwell_s" in data else ""
            print(
                f"  {e['seq']:>5}  {e['ts']}  {e['type']:<15} {what:<16}"
                f" {ref.get('stop', '')}{dwell}"
            )
        trips = [e for e in mine if e["type"].startswith(("trip.", "geofence."))]
        result = score(trips, run.truth, run.scenario.config()).summary()
        visits = [result["by_type"].get(t, {}) for t in ("trip.arrive", "trip.depart")]
        exact = all(v.get("matched") == v.get("required") and not v.get("false") for v in visits)
        ok = ok and exact
        counts = Counter(e["type"] for e in mine)
        print(f"  {len(mine)} events: {dict(sorted(counts.items()))}")
        arrive, depart = visits
        print(
            f"  against the ground truth: arrivals {arrive.get('matched')}/"
            f"{arrive.get('required')}, departures {depart.get('matched')}/"
            f"{depart.get('required')}, false {sum(v.get('false', 0) for v in visits)}"
        )
    stored = Counter(e["id"] for e in timeline)
    lost = [i for i in accepted if i not in stored]
    twice = [i for i, n in stored.items() if n > 1]
    print(
        f"\nthe driver apps had {len(accepted)} events accepted: {len(lost)} missing from the"
        f" timeline, {len(twice)} stored twice"
    )
    return 0 if ok and not lost and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
