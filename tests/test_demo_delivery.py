"""The demo's delivery side (simulators.demo_delivery, simulators.shifted_clock): the dispatch
system's signature check against the hub's signing, its receiver over real HTTP, the stop made
late, the driver app's posts without the parcel left behind, and the checks of the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub_bridge.delivery.push import sign
from simulators.demo import _not_on_board
from simulators.demo_delivery import (
    LATE_BY_S,
    DeliveryView,
    Dispatch,
    check_delivery,
    late_stop,
    signature_ok,
    tight_windows,
)
from simulators.driver_app import Post, plan_deliveries
from simulators.station_demo import LoadingScript, parcels_of
from simulators.van import VanRun, run_van
from simulators.world import fleet_scenarios

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs() -> list[VanRun]:
    return [run_van(sc) for sc in fleet_scenarios(2, seed=1, stops=3, tunnels=1)]


def test_signature_ok_takes_the_hubs_signature_and_nothing_else() -> None:
    body = b'{"id":"n-1","kind":"parcel.status"}'
    now = time.time()
    header = sign("s3cret-s3cret-s3cret", body, int(now))
    assert signature_ok("s3cret-s3cret-s3cret", header, body, now)
    assert not signature_ok("s3cret-s3cret-s3cret", header, body + b" ", now)
    assert not signature_ok("another-secret-here", header, body, now)
    assert not signature_ok("s3cret-s3cret-s3cret", header, body, now + 301)  # a replay
    assert not signature_ok("s3cret-s3cret-s3cret", "v1=abc", body, now)
    assert not signature_ok("s3cret-s3cret-s3cret", "", body, now)


async def test_dispatch_counts_signed_notices_once_and_refuses_the_rest() -> None:
    dispatch = Dispatch()
    await dispatch.start()
    try:
        notice = {
            "id": "misload:acme:P1:raised",
            "kind": "exception.raised",
            "payload": {"id": "misload:acme:P1", "type": "misload"},
        }
        body = json.dumps(notice).encode()

        async def post(signature: str, delivery: str) -> int:
            headers = {
                "X-LM-Signature": signature,
                "X-LM-Event": "exception.raised",
                "X-LM-Delivery": delivery,
            }
            async with (
                aiohttp.ClientSession() as http,
                http.post(dispatch.url, data=body, headers=headers) as resp,
            ):
                return resp.status

        good = sign(dispatch.secret, body, int(time.time()))
        assert await post(good, "d-1") == 204
        assert await post(good, "d-1") == 204  # a retry of the same notice
        assert await post(sign("not-the-secret-at-all", body, int(time.time())), "d-2") == 401
    finally:
        await dispatch.close()
    assert dispatch.signed == {"exception.raised": 1}
    assert dispatch.unsigned == 1
    assert dispatch.exceptions == {"misload:acme:P1": ["exception.raised"]}


def test_tight_window_closes_before_the_van_gets_there(runs: list[VanRun]) -> None:
    before = json.dumps([r.scenario.manifest for r in runs])
    manifests, late = tight_windows(runs)
    assert json.dumps([r.scenario.manifest for r in runs]) == before  # copies, not changed
    found = late_stop(runs[0])
    assert found is not None
    sid, arrive = found
    assert late == {runs[0].scenario.manifest["route"]: sid}
    stop = next(s for s in manifests[0]["stops"] if s["id"] == sid)
    start, end = (time_of(x) for x in stop["window"])
    assert end == pytest.approx(arrive - LATE_BY_S, abs=0.001)
    assert end - start == 3600
    # the window is still open when the van leaves the depot: there is time to act
    left_depot = next(iv["exit"] for iv in runs[0].truth["intervals"] if iv["zone"] == "depot")
    assert left_depot < end
    assert manifests[1] == runs[1].scenario.manifest


def time_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_driver_app_posts_nothing_for_the_parcel_left_behind(runs: list[VanRun]) -> None:
    posts = plan_deliveries(runs[0], 100.0)
    gone = parcels_of(runs[0])[-1]

    def parcels(ps: list[Post]) -> list[str]:
        out = []
        for p in ps:
            for e in p.body if isinstance(p.body, list) else [p.body]:
                out.append(e["ref"]["parcel"])
        return out

    kept = _not_on_board(posts, gone)
    assert gone in parcels(posts)
    assert gone not in parcels(kept)
    assert len(parcels(kept)) == len(parcels(posts)) - 2  # its scan and its PoD
    single = [Post(1.0, {"type": "pod", "ref": {"parcel": gone}}, "one")]
    assert _not_on_board(single, gone) == []


def _exc(kind: str, ref: dict[str, str], resolved: bool) -> dict[str, Any]:
    ident = f"{kind}:acme:{'/'.join(ref.values())}"
    return {
        "id": ident,
        "type": kind,
        "state": "resolved" if resolved else "open",
        "raised_at": "2026-03-02T07:00:00.000Z",
        "resolved_at": "2026-03-02T07:10:00.000Z" if resolved else None,
        "raised": {"payload": {"id": ident, "ref": ref, "reason": "why"}},
        "resolved": {"payload": {"resolution": "done"}} if resolved else None,
    }


def test_check_delivery_passes_the_day_as_played_and_names_each_fault(
    runs: list[VanRun],
) -> None:
    script = LoadingScript(runs)
    assert script.misloaded is not None and script.left_behind is not None
    _, late = tight_windows(runs)
    [(rid, sid)] = late.items()
    parcels = {
        p: {"status": "missing" if p == script.left_behind else "delivered"}
        for r in runs
        for p in parcels_of(r)
    }
    excs = [
        _exc("misload", {"parcel": script.misloaded}, True),
        _exc("missing", {"parcel": script.left_behind}, False),
        _exc("late_risk", {"stop": sid, "route": rid}, True),
    ]
    dispatch = Dispatch()
    for e in excs:
        got = ["exception.raised"] + (["exception.resolved"] if e["state"] == "resolved" else [])
        dispatch.exceptions[e["id"]] = got
        dispatch.signed.update(got)
    dispatch.signed["parcel.status"] = 10
    n = sum(dispatch.signed.values())
    view = DeliveryView({}, parcels, excs, {"pending": 0, "delivered": n, "dead": 0})
    assert check_delivery(view, runs, script, late, dispatch) == []

    wrong = {**parcels, script.left_behind: {"status": "delivered"}}
    faults = check_delivery(
        DeliveryView({}, wrong, excs[:1], {"pending": 3, "delivered": n, "dead": 0}),
        runs,
        script,
        late,
        dispatch,
    )
    assert f"{script.left_behind} (left behind) is delivered, not missing" in faults
    assert f"no missing exception for {script.left_behind}" in faults
    assert f"no late_risk exception for stop {sid} of {rid}" in faults
    assert any("webhook queue not empty" in f for f in faults)
    unresolved = [_exc("misload", {"parcel": script.misloaded}, False), *excs[1:]]
    faults = check_delivery(DeliveryView({}, parcels, unresolved, view.deliveries), runs,
                            script, late, dispatch)  # fmt: skip
    assert any(f.startswith(f"misload of {script.misloaded}") for f in faults)


def test_shifted_clock_sets_the_agents_clock_back(tmp_path: Path) -> None:
    (tmp_path / "say_now.py").write_text(
        "import time\n"
        "from edge_agent.clock import Clock\n"
        "print(time.time(), Clock('system').now()[0].timestamp())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    argv = [sys.executable, "-m", "simulators.shifted_clock", "3600", "say_now"]
    before = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=60)
    after = time.time()
    wall, stamped = (float(x) for x in done.stdout.split())
    for t in (wall, stamped):
        assert before - 3600 <= t <= after - 3600
    bad = subprocess.run(
        [sys.executable, "-m", "simulators.shifted_clock", "soon", "say_now"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "SECONDS must be a number, not 'soon'" in bad.stderr


def test_no_stop_is_made_late_when_its_window_would_close_in_the_depot() -> None:
    runs = [run_van(sc) for sc in fleet_scenarios(1, seed=1, stops=1, tunnels=1)]
    manifests, late = tight_windows(runs)
    assert late == {}
    assert manifests == [runs[0].scenario.manifest]
