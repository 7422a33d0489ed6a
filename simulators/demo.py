"""The demo on embedded defaults: a private mosquitto, the hub, a van agent fed by the driver-app
simulator, a broker outage in the middle, and the resulting timeline printed at the end.

    python -m simulators.demo [--broker mqtt://host:1883] [--seconds 12] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from simulators.broker import Mosquitto, free_port
from simulators.driver_app import plan_shift, run_app

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _start(module: str, config: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{module} did not start; see {log}")
    return proc, int(json.loads(line)["api_port"])


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the demo; print the timeline; exit 0 when every accepted event arrived once."""
    ap = argparse.ArgumentParser(prog="python -m simulators.demo", description=__doc__)
    ap.add_argument("--broker", help="use this broker instead of a private mosquitto")
    ap.add_argument("--seconds", type=float, default=12.0, help="length of the simulated shift")
    ap.add_argument("--workdir", help="keep configs, databases and logs here")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lastmile-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = None if args.broker else Mosquitto()
    if broker is not None:
        broker.start()
    url = args.broker or (broker.url if broker else "")
    print(f"demo: broker {url}, files in {work}")
    hub_cfg = work / "hub.yaml"
    hub_cfg.write_text(
        json.dumps(
            {
                "broker": {"url": url},
                "timeline": {"url": f"sqlite:///{work / 'timeline.db'}"},
                "api": {"listen": f"127.0.0.1:{free_port()}"},
                "log": {"level": "WARNING"},
            }
        )
    )
    agent_cfg = work / "van-042.yaml"
    agent_cfg.write_text(
        json.dumps(
            {
                "device": {"id": "van-042", "fleet": "acme"},
                "broker": {"url": url},
                "outbox": {"path": str(work / "van-042.outbox.db")},
                "api": {"listen": f"127.0.0.1:{free_port()}"},
                "uplink": {"ack_timeout": "5s", "backoff_max": "2s"},
                "log": {"level": "WARNING"},
            }
        )
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        hub, hub_port = _start("hub_bridge", hub_cfg, work / "hub.log")
        procs.append(hub)
        agent, agent_port = _start("edge_agent", agent_cfg, work / "agent.log")
        procs.append(agent)
        print(f"demo: hub api :{hub_port}, van-042 local api :{agent_port}")
        posts = plan_shift(seconds=args.seconds)

        async def drive() -> list[dict[str, Any]]:
            task = asyncio.create_task(run_app(f"http://127.0.0.1:{agent_port}", posts))
            if broker is not None:
                await asyncio.sleep(args.seconds / 3)
                print("demo: broker killed (no persistence): the van keeps accepting")
                broker.kill()
                await asyncio.sleep(args.seconds / 4)
                broker.start()
                print("demo: broker back: the outbox drains")
            return await task

        answers = asyncio.run(drive())
        drained = _wait(lambda: _get(agent_port, "/v1/health")["queue"]["depth"] == 0, 60)
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        out = subprocess.run(
            [sys.executable, "-m", "hub_bridge", "events", "--config", str(hub_cfg)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        timeline = [json.loads(line) for line in out.stdout.splitlines()]
        print("\ntimeline (acme/van-042, in seq order):")
        for env in timeline:
            if env["type"] == "gnss.fix":
                continue
            ref = env.get("ref") or {}
            what = env["data"].get("text") or env["data"].get("parcel") or env["data"].get("alarm")
            stop = ref.get("stop", "")
            print(f"  {env['seq']:>4}  {env['ts']}  {env['type']:<14} {what or ''}  {stop}")
        counts = Counter(env["type"] for env in timeline)
        stored = {env["id"] for env in timeline}
        accepted = {a["id"] for a in answers}
        lost = accepted - stored
        print(f"\n{len(timeline)} events in the timeline: {dict(sorted(counts.items()))}")
        print(f"accepted by the van: {len(accepted)}, missing: {len(lost)}, drained: {drained}")
        return 0 if not lost and drained else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
