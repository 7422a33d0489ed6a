"""``POST /v1/fleets/{fleet}/events`` (issue 11, item 4): a carrier's system posting envelopes.

The real hub API on a real port over each timeline backend (SQLite, a private PostgreSQL), the
carrier with its own token (scoped to its fleet, rights read and write-events). What is checked:
what the answer says of each envelope and of each device's watermark, what the timeline then
holds (``GET /v1/events``) and what was dead-lettered (``GET /v1/dead-letters``): duplicates,
reordering, rejects with their seq accounted for, a forged fleet, garbage, oversize, another
carrier's token.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from hub_bridge.api import build_app
from hub_bridge.backends import open_timeline
from hub_bridge.carriers.intake import EVENTS_MAX
from hub_bridge.tenants import Tenants
from tests.inproc import Served

FAST = secrets.token_urlsafe(32)
SLOW = secrets.token_urlsafe(32)
OPS = secrets.token_urlsafe(32)
MAX_BYTES = 64 * 1024


def env(seq: int, device: str = "truck-1", fleet: str = "fastlane", **over: Any) -> dict[str, Any]:
    out = {
        "id": f"fl-{device}-{seq}",
        "seq": seq,
        "fleet": fleet,
        "device": device,
        "type": "pod",
        "ts": "2026-11-21T09:00:00.000Z",
        "clock": "ntp",
        "data": {"parcel": f"P{seq}", "kind": "none"},
        "ref": {"parcel": f"P{seq}"},
    }
    return out | over


class Carrier:
    def __init__(self, url: str) -> None:
        self.url = url

    def raw(
        self, path: str, body: bytes, token: str | None = FAST, method: str = "POST"
    ) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body or None, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def post(self, body: Any, token: str | None = FAST, fleet: str = "fastlane") -> tuple[int, Any]:
        return self.raw(f"/v1/fleets/{fleet}/events", json.dumps(body).encode(), token)

    def get(self, path: str, token: str = FAST) -> Any:
        status, answer = self.raw(path, b"", token, "GET")
        assert status == 200, answer
        return answer


@pytest.fixture
def carrier(timeline_url: str) -> Iterator[Carrier]:
    """The hub API on each timeline backend (SQLite, a private PostgreSQL)."""
    tenants = Tenants.from_tokens(
        [
            ("fastlane", frozenset({"fastlane"}), ["read", "write-events"], FAST),
            ("slowpoke", frozenset({"slowpoke"}), ["read", "write-events"], SLOW),
            ("ops", None, ["read", "write-events", "commands", "admin"], OPS),
        ]
    )

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await open_timeline(timeline_url)
        app = build_app(timeline, HealthRegistry(), tenants=tenants, max_batch_bytes=MAX_BYTES)
        return app, timeline.close

    with Served(make) as served:
        yield Carrier(served.url)


def statuses(answer: dict[str, Any]) -> list[tuple[Any, str]]:
    return [(e["seq"], e["status"]) for e in answer["events"]]


def test_one_envelope_a_batch_or_an_array(carrier: Carrier) -> None:
    status, answer = carrier.post(env(1))
    assert status == 200
    assert answer == {
        "stored": 1,
        "duplicates": 0,
        "rejected": 0,
        "events": [{"id": "fl-truck-1-1", "seq": 1, "device": "truck-1", "status": "stored"}],
        "watermarks": {"truck-1": 1},
    }
    assert carrier.post({"events": [env(2), env(3)]})[1]["watermarks"] == {"truck-1": 3}
    assert carrier.post([env(4)])[1]["watermarks"] == {"truck-1": 4}
    stored = carrier.get("/v1/events?fleet=fastlane")
    assert [e["seq"] for e in stored] == [1, 2, 3, 4]
    assert stored[0] == env(1)  # stored as sent, the contract's envelope


def test_the_same_id_twice_is_stored_once(carrier: Carrier) -> None:
    status, answer = carrier.post([env(1), env(1), env(2)])
    assert status == 200
    assert statuses(answer) == [(1, "stored"), (1, "duplicate"), (2, "stored")]
    assert (answer["stored"], answer["duplicates"]) == (2, 1)
    # a carrier that resends a whole request (its answer was lost): everything is a duplicate
    status, again = carrier.post([env(1), env(2)])
    assert statuses(again) == [(1, "duplicate"), (2, "duplicate")]
    assert again["watermarks"] == {"truck-1": 2}
    # the same event under a new seq (an importer that numbered it again): a duplicate, its new
    # seq accounted for so the watermark goes over it
    status, renumbered = carrier.post([env(3, id="fl-truck-1-1"), env(4)])
    assert statuses(renumbered) == [(3, "duplicate"), (4, "stored")]
    assert renumbered["watermarks"] == {"truck-1": 4}
    assert [e["id"] for e in carrier.get("/v1/events")] == [
        "fl-truck-1-1",
        "fl-truck-1-2",
        "fl-truck-1-4",
    ]


def test_out_of_order_seqs_are_returned_in_seq_order(carrier: Carrier) -> None:
    _status, answer = carrier.post([env(5), env(2), env(1)])
    assert statuses(answer) == [(5, "stored"), (2, "stored"), (1, "stored")]
    assert answer["watermarks"] == {"truck-1": 2}  # 3 and 4 still missing
    devices = carrier.get("/v1/devices")
    assert [(d["device"], d["watermark"], d["missing"]) for d in devices] == [
        ("truck-1", 2, [[3, 4]])
    ]
    _, later = carrier.post([env(4), env(3)])
    assert later["watermarks"] == {"truck-1": 5}
    assert [e["seq"] for e in carrier.get("/v1/events")] == [1, 2, 3, 4, 5]


def test_devices_of_one_request_each_have_their_watermark(carrier: Carrier) -> None:
    _, answer = carrier.post([env(1, "truck-2"), env(1), env(2, "truck-2"), env(3)])
    assert answer["watermarks"] == {"truck-1": 1, "truck-2": 2}


def test_an_invalid_envelope_is_rejected_alone_and_its_seq_accounted(carrier: Carrier) -> None:
    bad_type = env(2, type="teleport")
    bad_data = env(3, data={"parcel": "P3", "kind": "hologram"})
    nan = b'{"parcel": "P4", "kind": "none", "lat": NaN}'
    batch = json.dumps([env(1), bad_type, bad_data, "not an envelope", env(5, device="Bad!")])
    body = (
        batch[:-1]
        + ","
        + json.dumps(env(4)).replace(json.dumps(env(4)["data"]), nan.decode())
        + "]"
    )
    status, answer = carrier.raw("/v1/fleets/fastlane/events", body.encode())
    assert status == 200
    assert statuses(answer) == [
        (1, "stored"),
        (2, "rejected"),
        (3, "rejected"),
        (None, "rejected"),
        (5, "rejected"),
        (4, "rejected"),
    ]
    errors = [e.get("error", "") for e in answer["events"]]
    assert errors[0] == ""
    assert errors[1].startswith("events[1]: ") and "teleport" in errors[1]
    assert errors[2].startswith("events[2]: ") and "data.kind" in errors[2]
    assert errors[3] == "events[3]: not an object (an envelope is a JSON object)"
    assert errors[4].startswith("events[4]: device: must match")
    assert errors[5].startswith("events[5]: ") and "NaN" in errors[5]
    # the rejects of truck-1 are accounted for: its watermark is not held up by them
    assert answer["watermarks"] == {"truck-1": 4}
    dead = carrier.get("/v1/dead-letters")
    reasons = sorted(d["reason"] for d in dead)
    assert len(reasons) == 5
    assert all(d["topic"].startswith("lm/v1/fastlane/") for d in dead)
    # the same request again: nothing new is dead-lettered for the seqs rejected already
    carrier.raw("/v1/fleets/fastlane/events", body.encode())
    again = carrier.get("/v1/dead-letters")
    assert sum(d["count"] for d in again) == sum(d["count"] for d in dead) + 2  # the seq-less


def test_a_seq_taken_by_another_id_is_rejected(carrier: Carrier) -> None:
    carrier.post(env(1))
    _status, answer = carrier.post([env(1, id="another"), env(2)])
    assert statuses(answer) == [(1, "rejected"), (2, "stored")]
    assert "seq 1 is stored with another id" in answer["events"][0]["error"]
    assert any("stored with another id" in d["reason"] for d in carrier.get("/v1/dead-letters"))


def test_a_forged_fleet_refuses_the_whole_request(carrier: Carrier) -> None:
    status, answer = carrier.post([env(1), env(2, fleet="slowpoke")])
    assert status == 400
    assert answer["error"] == "forged: events[1] says fleet 'slowpoke', the path 'fastlane'"
    assert carrier.get("/v1/events", OPS) == []  # nothing of it stored
    dead = carrier.get("/v1/dead-letters")
    assert [(d["topic"], d["reason"]) for d in dead] == [
        ("lm/v1/fastlane/+/events", answer["error"])
    ]
    status, answer = carrier.post([{"id": "x"}])  # no fleet at all: not this fleet's either
    assert (status, answer["error"]) == (
        400,
        "forged: events[0] says fleet <NoneType>, the path 'fastlane'",
    )


def test_another_carriers_token_is_refused(carrier: Carrier) -> None:
    status, answer = carrier.post(env(1), token=SLOW)
    assert (status, answer["error"]) == (403, "token slowpoke is not scoped to fleet fastlane")
    status, answer = carrier.post(env(1, fleet="slowpoke"), token=SLOW, fleet="slowpoke")
    assert status == 200
    assert carrier.get("/v1/events", FAST) == []
    assert carrier.get("/v1/dead-letters", FAST) == []  # a refused token leaves no trace
    assert carrier.post(env(1), token=None)[0] == 401


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "the body is not JSON"),
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[]", "empty batch"),
        (b'{"events": []}', "empty batch"),
        (b'{"events": {}}', "events: must be a list"),
        (b"42", "the body must be an envelope"),
        (b'"x"', "the body must be an envelope"),
        (b"[" * 5000 + b"]" * 5000, "the body is not JSON"),
    ],
)
def test_garbage_is_a_400_naming_what(carrier: Carrier, body: bytes, error: str) -> None:
    status, answer = carrier.raw("/v1/fleets/fastlane/events", body)
    assert status == 400
    assert answer["error"].startswith(error)


def test_deep_nesting_fails_its_envelope_only(carrier: Carrier) -> None:
    deep = json.dumps(env(2, data={"parcel": "P2", "kind": "none", "x": [[[[0]]]] * 1}))
    deep = deep.replace("[[[[0]]]]", "[" * 40 + "0" + "]" * 40)
    body = f"[{json.dumps(env(1))}, {deep}, {'[' * 900}{']' * 900}]".encode()
    status, answer = carrier.raw("/v1/fleets/fastlane/events", body)
    assert status == 200
    assert statuses(answer) == [(1, "stored"), (2, "rejected"), (None, "rejected")]
    assert "deeper than" in answer["events"][1]["error"]
    assert answer["watermarks"] == {"truck-1": 2}


def test_oversize_is_a_413(carrier: Carrier) -> None:
    big = [env(i, data={"parcel": "P" * 200, "kind": "none"}) for i in range(1, 400)]
    status, answer = carrier.post(big)
    assert status == 413
    assert f"more than {MAX_BYTES}" in answer["error"]
    assert carrier.get("/v1/events", OPS) == []
    assert next(d["reason"] for d in carrier.get("/v1/dead-letters")).startswith("oversize")
    many = b"[" + b",".join([b"1"] * (EVENTS_MAX + 1)) + b"]"
    status, answer = carrier.raw("/v1/fleets/fastlane/events", many)
    assert (status, answer["error"]) == (413, f"{EVENTS_MAX + 1} envelopes, more than {EVENTS_MAX}")


def test_a_bad_path_or_query_is_named(carrier: Carrier) -> None:
    status, answer = carrier.raw("/v1/fleets/fastlane/events?x=1", json.dumps(env(1)).encode())
    assert (status, answer["error"]) == (400, "x: unknown parameter (this operation takes none)")
    status, answer = carrier.raw("/v1/fleets/Fast!/events", b"{}", OPS)
    assert status == 400
    assert answer["error"].startswith("fleet: must match")
