"""The demo's delivery side: a dispatch system subscribed to the hub, a stop made late on purpose,
and the parcels' statuses and exceptions read back from the hub's API at the end.

- ``Dispatch`` is the dispatch system: a small aiohttp server in the demo's process, subscribed
  to the fleet through ``POST /v1/fleets/acme/webhooks`` (parcel statuses and exceptions raised
  and resolved). It checks each POST's ``X-LM-Signature`` the way any receiver would, without
  the hub's code: HMAC-SHA256 of ``f"{t}.{body}"`` over the raw body, keyed with the secret it
  chose when subscribing, and ``t`` within five minutes of its clock.
- ``tight_windows`` gives one van's second stop a delivery window that closes ten minutes before
  the simulated van gets there. The hub's late-risk rule compares the ETA with the window's end
  at the time of the van's own fixes (event time, not the wall clock), so the 100x replay raises
  it from the fixes themselves: from the moment the van leaves the depot its ETA for that stop is
  past the window's end by more than the 5-minute margin while the window is still open. The van
  reaching the stop resolves it.
- ``read_delivery`` reads every route, parcel and exception from the hub's API, ``print_delivery``
  prints them and ``check_delivery`` says what is not as the day was played.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from edge_agent.wire.envelope import format_ts
from simulators.station_demo import LoadingScript, parcels_of
from simulators.van import VanRun

__all__ = [
    "DeliveryView",
    "Dispatch",
    "check_delivery",
    "print_delivery",
    "read_delivery",
    "tight_windows",
]

FLEET = "acme"
KINDS = ["parcel.status", "exception.raised", "exception.resolved"]
LATE_BY_S = 600.0  # the late stop's window closes this long before the van gets there
SIGNATURE_TOLERANCE_S = 300.0
REPLAY_STALE = (
    "an artefact of the replay: the hub judges silence on its wall clock, and a day played at "
    "100x in the past is far behind it until its end"
)


def _iso(t: float) -> str:
    return format_ts(datetime.fromtimestamp(t, UTC))


def signature_ok(secret: str, header: str, body: bytes, now: float) -> bool:
    """Whether ``header`` (``t=...,v1=...``) signs ``body`` with ``secret`` within five minutes
    of ``now``: what a dispatch system runs on each webhook, before parsing the body."""
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1":
            macs.append(value)
    if t is None or abs(now - t) > SIGNATURE_TOLERANCE_S:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, m) for m in macs)


@dataclass
class Dispatch:
    """The dispatch system: a webhook receiver that counts signed notices (module docstring)."""

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    signed: Counter[str] = field(default_factory=Counter)
    unsigned: int = 0
    deliveries: set[str] = field(default_factory=set)
    exceptions: dict[str, list[str]] = field(default_factory=dict)
    subscription: str = ""
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hooks/lastmile", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks/lastmile"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-LM-Signature", "")
        if not signature_ok(self.secret, header, body, time.time()):
            self.unsigned += 1
            return web.Response(status=401, text="bad signature")
        delivery = request.headers.get("X-LM-Delivery", "")
        if delivery in self.deliveries:
            return web.Response(status=204)  # at least once: a retry of one already taken
        self.deliveries.add(delivery)
        kind = request.headers.get("X-LM-Event", "")
        self.signed[kind] += 1
        notice = json.loads(body)
        if kind.startswith("exception."):
            payload = notice.get("payload", notice)
            self.exceptions.setdefault(str(payload.get("id")), []).append(kind)
        return web.Response(status=204)

    def subscribe(self, hub: str) -> dict[str, Any]:
        """``POST /v1/fleets/acme/webhooks`` on the hub at ``hub`` (its base URL); the answer."""
        body = {
            "url": self.url,
            "kinds": KINDS,
            "secret": self.secret,
            "description": "the demo's dispatch system",
        }
        answer: dict[str, Any] = _call(hub, f"/v1/fleets/{FLEET}/webhooks", body)
        self.subscription = str(answer["id"])
        return answer


def _call(hub: str, path: str, body: Any | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        hub + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"hub {path}: HTTP {exc.code}: {exc.read()[:300]!r}") from None


def late_stop(run: VanRun) -> tuple[str, float] | None:
    """The stop made late (the van's second stop, or its only one) and when the van truly
    reaches it (epoch seconds, from the simulator's ground truth)."""
    stops = run.scenario.manifest["stops"]
    if not stops:
        return None
    sid = str(stops[1 if len(stops) > 1 else 0]["id"])
    enters = [
        iv["enter"]
        for iv in run.truth["intervals"]
        if iv["zone"] == f"stop:{sid}" and iv.get("enter")
    ]
    return (sid, float(min(enters))) if enters else None


def tight_windows(runs: list[VanRun]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each van's manifest as sent to it, the first van's late stop with a window that closes
    ``LATE_BY_S`` before the van gets there; and ``{route: stop}`` of that late stop. None is
    made late when its window would close before the van has left the depot plus a minute (a
    day of one stop close to the depot): the hub judges late risk only on an active route."""
    manifests = [copy.deepcopy(run.scenario.manifest) for run in runs]
    late: dict[str, str] = {}
    found = late_stop(runs[0]) if runs else None
    ivs = runs[0].truth["intervals"] if runs else []
    left = [iv["exit"] for iv in ivs if iv["zone"] == "depot" and iv.get("exit")]
    if found is not None and left and found[1] - LATE_BY_S > min(left) + 60.0:
        sid, arrive = found
        end = arrive - LATE_BY_S
        for stop in manifests[0]["stops"]:
            if stop["id"] == sid:
                stop["window"] = [_iso(end - 3600.0), _iso(end)]
        late[str(manifests[0]["route"])] = sid
    return manifests, late


@dataclass
class DeliveryView:
    """What the hub's API says at the end: routes, parcels and exceptions of the fleet."""

    routes: dict[str, dict[str, Any]]
    parcels: dict[str, dict[str, Any]]
    exceptions: list[dict[str, Any]]
    deliveries: dict[str, int]


def read_delivery(hub: str, runs: list[VanRun], subscription: str) -> DeliveryView:
    """``GET /v1/routes/{id}``, ``/v1/parcels/{id}`` for every parcel of every manifest,
    ``/v1/exceptions?state=all`` and the subscription's deliveries by state."""
    routes: dict[str, dict[str, Any]] = {}
    parcels: dict[str, dict[str, Any]] = {}
    for run in runs:
        rid = str(run.scenario.manifest["route"])
        routes[rid] = _call(hub, f"/v1/routes/{rid}?fleet={FLEET}")
        for pid in parcels_of(run):
            parcels[pid] = _call(hub, f"/v1/parcels/{pid}?fleet={FLEET}")
    exceptions = _call(hub, f"/v1/exceptions?fleet={FLEET}&state=all&limit=1000")
    deliveries: dict[str, int] = {}
    if subscription:
        for state in ("pending", "delivered", "dead"):
            path = (
                f"/v1/fleets/{FLEET}/webhooks/{subscription}/deliveries?state={state}&limit=10000"
            )
            deliveries[state] = len(_call(hub, path))
    return DeliveryView(routes, parcels, list(reversed(exceptions)), deliveries)


def wait_delivery(
    hub: str, runs: list[VanRun], dispatch: Dispatch, script: LoadingScript, late: dict[str, str]
) -> DeliveryView:
    """Read the hub until its views pass the checks and every webhook is out (or 30 s)."""
    deadline = time.monotonic() + 30.0
    while True:
        view = read_delivery(hub, runs, dispatch.subscription)
        done = not check_delivery(view, runs, script, late, dispatch)
        if done or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def print_delivery(view: DeliveryView, runs: list[VanRun], dispatch: Dispatch) -> None:
    """Print each van's stops and parcels, the exceptions and what the dispatch system got."""
    for run in runs:
        rid = str(run.scenario.manifest["route"])
        route = view.routes[rid]
        print(
            f"\ndeliveries of acme/{run.scenario.van}, route {rid} (GET /v1/routes, /v1/parcels):"
        )
        for stop in route["stops"]:
            window = stop.get("window") or ["", ""]
            print(f"  stop {stop['id']:<11} {stop['status']:<9} window to {window[1]}")
            for pid in stop.get("parcels", []):
                p = view.parcels.get(pid, {})
                events = len(p.get("history", []))
                print(f"      {pid:<8} {p.get('status', '?'):<16} ({events} events in its history)")
    print("\nexceptions of acme (GET /v1/exceptions?state=all), in the order raised:")
    for exc in view.exceptions:
        raised = _raised(exc)
        ref = raised.get("ref", {})
        about = ref.get("parcel") or ref.get("stop") or ref.get("device") or ""
        print(f"  {exc['raised_at']}  {exc['type']:<10} {about:<11} {exc['state']}")
        print(f"      raised: {raised.get('reason')}")
        if exc["type"] == "device_stale":
            print(f"      ({REPLAY_STALE})")
        if exc.get("resolved"):
            resolution = (exc["resolved"].get("payload") or {}).get("resolution")
            print(f"      resolved {exc['resolved_at']}: {resolution}")
    got = dict(sorted(dispatch.signed.items()))
    print(
        f"\nthe dispatch system's webhook got {sum(got.values())} signed notices {got}, "
        f"{dispatch.unsigned} refused; the hub's queue for it: {view.deliveries}"
    )


def _raised(exc: dict[str, Any]) -> dict[str, Any]:
    """The exception as raised (the payload of its ``exception.raised`` notice: type, reason,
    ref, event)."""
    payload: dict[str, Any] = (exc.get("raised") or {}).get("payload") or {}
    return payload


def check_delivery(
    view: DeliveryView,
    runs: list[VanRun],
    script: LoadingScript,
    late: dict[str, str],
    dispatch: Dispatch,
) -> list[str]:
    """What is not as played: the misload raised and resolved, the missing parcel raised and
    left ``missing``, the late stop raised, every other parcel ``delivered``, each exception's
    raise and resolve pushed to the dispatch system with a good signature."""
    problems: list[str] = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for exc in view.exceptions:
        by_type.setdefault(exc["type"], []).append(exc)

    def about(kind: str, key: str, value: str) -> list[dict[str, Any]]:
        return [e for e in by_type.get(kind, []) if _raised(e).get("ref", {}).get(key) == value]

    if script.misloaded is not None:
        found = about("misload", "parcel", script.misloaded)
        if len(found) != 1 or found[0]["state"] != "resolved":
            problems.append(f"misload of {script.misloaded}: {found} (want raised and resolved)")
    if script.left_behind is not None:
        if len(about("missing", "parcel", script.left_behind)) != 1:
            problems.append(f"no missing exception for {script.left_behind}")
        status = view.parcels.get(script.left_behind, {}).get("status")
        if status != "missing":
            problems.append(f"{script.left_behind} (left behind) is {status}, not missing")
    for rid, sid in late.items():
        found = [
            e for e in about("late_risk", "stop", sid) if _raised(e)["ref"].get("route") == rid
        ]
        if len(found) != 1:
            problems.append(f"no late_risk exception for stop {sid} of {rid}")
    for run in runs:
        for pid in parcels_of(run):
            if pid == script.left_behind:
                continue
            status = view.parcels.get(pid, {}).get("status")
            if status != "delivered":
                problems.append(f"{pid} is {status}, not delivered")
    for exc in view.exceptions:
        want = ["exception.raised"] + (["exception.resolved"] if exc["state"] == "resolved" else [])
        if sorted(dispatch.exceptions.get(exc["id"], [])) != sorted(want):
            problems.append(f"webhook of {exc['id']}: {dispatch.exceptions.get(exc['id'])}")
    if dispatch.unsigned:
        problems.append(f"{dispatch.unsigned} webhooks without a good signature")
    if view.deliveries.get("pending") or view.deliveries.get("dead"):
        problems.append(f"webhook queue not empty: {view.deliveries}")
    if sum(dispatch.signed.values()) != view.deliveries.get("delivered"):
        problems.append(
            f"{sum(dispatch.signed.values())} webhooks received, the hub delivered "
            f"{view.deliveries.get('delivered')}"
        )
    return problems
