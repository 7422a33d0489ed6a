"""The carrier adapter layer (issue 11, item 4): a generic tracking export into envelopes, and
``hub-bridge carrier import`` posting them to a real hub API (real port, real SQLite timeline,
the carrier's scoped token read from a file).

Pure conversion first: CSV, JSON and JSON Lines give the same envelopes; statuses map to the
registry's types; ids are deterministic; every bad row is named by its line (or item) with the
reason, and the rest goes on. Then imports end to end: the timeline holds the export in event-time
order per vehicle, a second import of the same export stores nothing, a later export with new rows
stores only those, the watermark covers everything.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.wire.envelope import validate_envelope
from hub_bridge.api import build_app
from hub_bridge.carriers.adapter import Draft, event_id, normal_status, number
from hub_bridge.carriers.cli import import_main
from hub_bridge.carriers.generic import Columns, GenericTracking
from hub_bridge.tenants import Tenants
from hub_bridge.timeline import Timeline
from tests.inproc import Served

TOKEN = secrets.token_urlsafe(32)

CSV = """tracking_number,status,timestamp,lat,lon,vehicle,stop,signature,recipient
JJD001,Picked up,2026-11-21T07:00:00Z,,,,,,
JJD001,Out for delivery,2026-11-21T08:00:00+01:00,52.52,13.40,VAN 7,,,
JJD001,Arrived,2026-11-21T09:10:00Z,52.53,13.41,VAN 7,S-12,,
JJD001,Delivered,2026-11-21T09:12:30.250Z,52.53,13.41,VAN 7,S-12,J. Doe,
JJD002,Not home,1795770000,,,van-7,S-13,,
"""
ROWS = [
    {"tracking_number": "JJD001", "status": "Picked up", "timestamp": "2026-11-21T07:00:00Z"},
    {
        "tracking_number": "JJD001",
        "status": "Out for delivery",
        "timestamp": "2026-11-21T08:00:00+01:00",
        "lat": 52.52,
        "lon": 13.40,
        "vehicle": "VAN 7",
    },
    {
        "tracking_number": "JJD001",
        "status": "Arrived",
        "timestamp": "2026-11-21T09:10:00Z",
        "lat": "52.53",
        "lon": "13.41",
        "vehicle": "VAN 7",
        "stop": "S-12",
    },
    {
        "tracking_number": "JJD001",
        "status": "Delivered",
        "timestamp": "2026-11-21T09:12:30.250Z",
        "lat": 52.53,
        "lon": 13.41,
        "vehicle": "VAN 7",
        "stop": "S-12",
        "signature": "J. Doe",
    },
    {
        "tracking_number": "JJD002",
        "status": "Not home",
        "timestamp": 1795770000,
        "vehicle": "van-7",
        "stop": "S-13",
    },
]


def convert(fmt: str, text: str, **kw: Any) -> Any:
    return GenericTracking(fmt, "fastlane", **kw).convert(text, "fastlane")  # type: ignore[arg-type]


def test_a_csv_export_becomes_envelopes_of_the_registry() -> None:
    out = convert("csv", CSV)
    assert out.bad == []
    assert out.rows == 5
    envs = [d.envelope for d in out.drafts]
    assert [(e["type"], e["device"], e["ts"]) for e in envs] == [
        ("scan", "feed", "2026-11-21T07:00:00.000Z"),
        ("trip.depart", "van-7", "2026-11-21T07:00:00.000Z"),  # +01:00 made UTC
        ("trip.arrive", "van-7", "2026-11-21T09:10:00.000Z"),
        ("pod", "van-7", "2026-11-21T09:12:30.250Z"),
        ("exception.failed_attempt", "van-7", "2026-11-27T09:00:00.000Z"),  # Unix seconds
    ]
    scan, depart, arrive, pod, failed = envs
    assert scan["data"] == {
        "status": "Picked up",
        "text": "JJD001",
        "symbology": "carrier",
        "source": "fastlane",
    }
    assert depart["ref"] == {"parcel": "JJD001", "vehicle": "VAN 7"}  # leaving the depot
    assert arrive["ref"] == {"parcel": "JJD001", "vehicle": "VAN 7", "stop": "S-12"}
    assert arrive["data"] == {"status": "Arrived", "zone": "S-12", "lat": 52.53, "lon": 13.41}
    assert pod["data"] == {
        "status": "Delivered",
        "parcel": "JJD001",
        "kind": "signature",
        "recipient": "J. Doe",
        "lat": 52.53,
        "lon": 13.41,
    }
    assert failed["ref"]["stop"] == "S-13"
    for e in envs:
        assert "seq" not in e
        assert e["fleet"] == "fastlane"
        validate_envelope({**e, "seq": 1})  # the contract's own validator


def test_json_and_json_lines_give_the_same_envelopes() -> None:
    from_csv = [d.envelope for d in convert("csv", CSV).drafts]
    for doc in (ROWS, {"events": ROWS}, {"shipments": ROWS}):
        assert [d.envelope for d in convert("json", json.dumps(doc)).drafts] == from_csv
    lines = "\n".join(json.dumps(r) for r in ROWS) + "\n\n"
    jsonl = convert("jsonl", lines)
    assert [d.envelope for d in jsonl.drafts] == from_csv
    assert [d.where for d in jsonl.drafts] == [f"line {n}" for n in range(1, 6)]


def test_ids_are_deterministic_and_distinct() -> None:
    first = [d.envelope["id"] for d in convert("csv", CSV).drafts]
    assert first == [d.envelope["id"] for d in convert("csv", CSV).drafts]
    assert len(set(first)) == 5
    assert first[0] == event_id("fastlane", "JJD001", "PICKED_UP", "2026-11-21T07:00:00.000Z")
    # the status is compared normalised: its spelling does not make another event
    assert event_id("c", "t", "Out for delivery", "x") == event_id(
        "c", "t", "OUT-FOR-DELIVERY", "x"
    )
    assert normal_status(" out-for delivery ") == "OUT_FOR_DELIVERY"
    assert event_id("other", "JJD001", "PICKED_UP", "2026-11-21T07:00:00.000Z") != first[0]


def test_columns_and_statuses_are_configurable() -> None:
    text = "AWB;Code;When\n"  # a carrier's own names (and a semicolon would not be CSV here)
    text = "AWB,Code,When\nX1,OFD,2026-11-21T08:00:00Z\nX2,HANDED_OVER,2026-11-21T09:00:00Z\n"
    cols = Columns({"tracking_number": "AWB", "status": "Code", "timestamp": "When"})
    out = convert(
        "csv", text, columns=cols, status_types={"ofd": "trip.depart", "Handed over": "pod"}
    )
    assert out.bad == []
    assert [d.envelope["type"] for d in out.drafts] == ["trip.depart", "pod"]
    with pytest.raises(ValueError, match="unknown column"):
        Columns({"weight": "W"})
    with pytest.raises(ValueError, match=r"status OFD: 'trip\.teleport' is not an event type"):
        convert("csv", text, status_types={"ofd": "trip.teleport"})


def test_every_bad_row_is_named_with_its_line_and_the_rest_goes_on() -> None:
    text = (
        "tracking_number,status,timestamp,lat,lon,vehicle\n"
        "JJD1,Delivered,2026-11-21T09:00:00Z,,,\n"  # line 2: good
        ",Delivered,2026-11-21T09:00:00Z,,,\n"  # 3: no tracking number
        "JJD3,Teleported,2026-11-21T09:00:00Z,,,\n"  # 4: unknown status
        "JJD4,Delivered,yesterday,,,\n"  # 5: bad time
        "JJD5,Delivered,2026-11-21T09:00:00Z,95,13,\n"  # 6: latitude out of range
        "JJD6,Delivered,2026-11-21T09:00:00Z,52.5,,\n"  # 7: half a position
        "JJD7,Delivered,2026-11-21T09:00:00Z,x,y,\n"  # 8: not a number
        "JJD8,Delivered\n"  # 9: short row
        'JJD9,"Tele\nported",2026-11-21T09:00:00Z,,,\n'  # 10-11: a quoted field on two lines
        "JJD10,Delivered,2026-11-21T09:00:00Z,,,!!!\n"  # 12: no device id in the vehicle
        "JJD11,Delivered,2026-11-21T09:00:00Z,NaN,13,\n"  # 13: NaN
        "\n"
        "JJD12,Delivered,2026-11-21T09:00:00Z,,,\n"  # 15: good
    )
    out = convert("csv", text)
    assert [d.where for d in out.drafts] == ["line 2", "line 15"]
    assert [str(b) for b in out.bad] == [
        "line 3: tracking_number: missing or empty",
        "line 4: status: 'Teleported' is not a known status (map it with --status STATUS=TYPE)",
        "line 5: timestamp: 'yesterday' is not an ISO 8601 time or Unix seconds",
        "line 6: lat: 95 is not from -90 to 90",
        "line 7: lat and lon: give both or neither",
        "line 8: lat: 'x' is not a number",
        "line 9: 2 fields, the header has 6",
        "line 10: status: 'Tele\\nported' is not a known status (map it with --status STATUS=TYPE)",
        "line 12: vehicle: '!!!' does not make a device id",
        "line 13: lat: NaN is not from -90 to 90",
    ]
    assert out.rows == 12


@pytest.mark.parametrize(
    ("fmt", "text", "bad"),
    [
        ("json", "{not json", ["file: not JSON: Expecting property name"]),
        ("json", '{"x": 1}', ['file: expected a JSON array, or {"events": [...]}']),
        ("json", "[1, NaN]", ["file: not JSON: NaN is not a JSON number"]),
        ("json", "[" * 5000 + "]" * 5000, ["file: not JSON: maximum recursion"]),
        ("json", '[1, {"status": true}]', ["item 1: not a JSON object", "item 2: status:"]),
        ("jsonl", '{"a": 1}\n[1]\n{bad\n', ["line 1: tracking_number:", "line 2: not a JSON"]),
        ("csv", "", ["file: empty: no header line"]),
        ("csv", "a,a\n1,2\n", ["file: line 1: a column name is given twice"]),
    ],
)
def test_a_feed_that_cannot_be_read_is_a_bad_row_not_a_crash(
    fmt: str, text: str, bad: list[str]
) -> None:
    out = convert(fmt, text)
    assert out.drafts == []
    got = [str(b) for b in out.bad]
    assert all(g.startswith(b) for g, b in zip(got, bad, strict=False)), got
    assert len(got) >= len(bad)


def test_seqs_go_on_from_the_hub_in_event_time_order() -> None:
    drafts = [
        Draft("line 2", {"device": "a", "ts": "2026-11-21T09:00:00.000Z", "id": "late"}),
        Draft("line 3", {"device": "b", "ts": "2026-11-21T08:00:00.000Z", "id": "b1"}),
        Draft("line 4", {"device": "a", "ts": "2026-11-21T08:00:00.000Z", "id": "early"}),
        Draft("line 5", {"device": "a", "ts": "2026-11-21T08:00:00.000Z", "id": "early-too"}),
    ]
    envs = number(drafts, {"a": 41})
    assert [(e["device"], e["seq"], e["id"]) for e in envs] == [
        ("a", 41, "early"),
        ("a", 42, "early-too"),  # equal times keep the feed's order
        ("a", 43, "late"),
        ("b", 1, "b1"),
    ]


# -- import into a real hub ----------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    tenants = Tenants.from_tokens(
        [
            ("fastlane", frozenset({"fastlane"}), ["read", "write-events"], TOKEN),
            ("ops", None, ["read"], TOKEN[::-1]),
        ]
    )

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await Timeline.open(tmp_path / "timeline.db")
        return build_app(timeline, HealthRegistry(), tenants=tenants), timeline.close

    with Served(make) as served:
        yield served.url


def run_import(
    hub: str, tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    export = tmp_path / "export.csv"
    export.write_text(text)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    code = import_main(
        ["--fleet", "fastlane", "--token-file", str(token), "--hub", hub, *extra, str(export)]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def timeline(hub: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(hub + "/v1/events", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_an_import_again_stores_nothing_twice(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, err = run_import(hub, tmp_path, CSV, capsys, "--batch", "2")
    assert (code, err) == (0, "")
    assert summary == {
        "rows": 5,
        "converted": 5,
        "bad_rows": 0,
        "stored": 5,
        "duplicates": 0,
        "rejected": 0,
        "requests": 3,
        "watermarks": {"feed": 1, "van-7": 4},
    }
    stored = timeline(hub)
    assert [(e["device"], e["seq"], e["type"]) for e in stored] == [
        ("feed", 1, "scan"),
        ("van-7", 1, "trip.depart"),
        ("van-7", 2, "trip.arrive"),
        ("van-7", 3, "pod"),
        ("van-7", 4, "exception.failed_attempt"),
    ]
    # the same export again: every event is there already, the watermark covers the new seqs
    code, again, err = run_import(hub, tmp_path, CSV, capsys)
    assert (code, err) == (0, "")
    assert (again["stored"], again["duplicates"], again["rejected"]) == (0, 5, 0)
    assert again["watermarks"] == {"feed": 2, "van-7": 8}
    assert timeline(hub) == stored
    # a later export holding the old rows and new ones: only the new ones are stored
    later = CSV + "JJD002,Delivered,2026-11-21T10:00:00Z,,,van-7,S-13,,A. Roe\n"
    code, third, _ = run_import(hub, tmp_path, later, capsys)
    assert (code, third["stored"], third["duplicates"]) == (0, 1, 5)
    assert third["watermarks"] == {"feed": 3, "van-7": 13}
    assert [e["data"].get("recipient") for e in timeline(hub)][-1] == "A. Roe"
    assert len(timeline(hub)) == 6


def test_an_import_reports_bad_rows_and_still_stores_the_rest(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CSV + "JJD3,Teleported,2026-11-21T09:00:00Z,,,,,,\n"
    code, summary, err = run_import(hub, tmp_path, text, capsys)
    assert code == 1
    assert (summary["stored"], summary["bad_rows"]) == (5, 1)
    assert (
        err == f"{tmp_path / 'export.csv'}:line 7: status: 'Teleported' is not a known status"
        " (map it with --status STATUS=TYPE)\n"
    )


def test_an_import_that_cannot_run_says_why(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_import(hub, tmp_path, CSV, capsys, "--fleet", "slowpoke")
    assert code == 2
    assert "403 token fastlane is not scoped to fleet slowpoke" in err
    code, _, err = run_import("http://127.0.0.1:9", tmp_path, CSV, capsys)
    assert code == 2
    assert "refused" in err.lower()
    code, _, err = run_import(hub, tmp_path, CSV, capsys, "--format", "json")
    assert code == 2
    export = tmp_path / "export.csv"
    assert err == f"{export}:file: not JSON: Expecting value: line 1 column 1 (char 0)\n"
    (tmp_path / "token").write_text("short")
    code = import_main(
        [
            "--fleet",
            "f",
            "--token-file",
            str(tmp_path / "token"),
            "--hub",
            hub,
            str(tmp_path / "export.csv"),
        ]
    )
    assert code == 2
    assert "the token must be 16 to 512 characters" in capsys.readouterr().err


def test_a_dry_run_prints_the_envelopes(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "e.csv"
    export.write_text(CSV)
    code = import_main(
        [
            "--fleet",
            "fastlane",
            "--token-file",
            "/nonexistent",
            "--hub",
            hub,
            "--dry-run",
            str(export),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2  # the token file is read first, dry or not
    assert "/nonexistent" in err
    token = tmp_path / "token"
    token.write_text(TOKEN)
    code = import_main(
        ["--fleet", "fastlane", "--token-file", str(token), "--hub", hub, "--dry-run", str(export)]
    )
    out, err = capsys.readouterr()
    envs = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(e["device"], e["seq"]) for e in envs][:2] == [("feed", 1), ("van-7", 1)]
    assert timeline(hub) == []
