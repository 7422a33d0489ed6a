"""Tenants of the hub API (issue 11, item 3): tokens scoped to fleets, checked on every route.

The configuration model and the token files first (pure, a fake clock for rotation). Then the
real hub API (aiohttp on a real port, a real SQLite timeline holding two fleets' events, dead
letters and commands), walked over every operation of the OpenAPI document it serves: with no
token, a wrong token, another fleet's token and the right token. An operation added to the API
without its access rule, or open without being listed here as open, fails the walk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from edge_agent.platform.health import HealthRegistry
from hub_bridge.api import ACCESS, DOCUMENT, SECURED_OPENAPI, build_app, check_scope
from hub_bridge.commands import CommandLimits
from hub_bridge.tenants import (
    OPEN,
    Tenants,
    TenantsConfig,
    TokenConfig,
    TokenError,
    bearer_of,
    check_listen,
    new_token,
)
from hub_bridge.timeline import Timeline
from hub_bridge.tokens_cli import token_main
from tests.inproc import Served
from tests.test_api_fuzz import CHECKS, FUZZ, assert_no_undocumented_5xx

OPS = secrets.token_urlsafe(32)
ACME = secrets.token_urlsafe(32)
OTHER = secrets.token_urlsafe(32)
READER = secrets.token_urlsafe(32)
WRONG = secrets.token_urlsafe(32)

OPEN_OPERATIONS = {
    ("GET", "/v1/health"),  # liveness: a probe has no token
    ("POST", "/v1/provision"),  # authorised by its one-time claim
    ("GET", "/v1/openapi.json"),
}
"""The only operations that answer without a token. Adding one here is a decision."""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def envelope(seq: int, fleet: str = "acme", device: str = "van-1") -> dict[str, Any]:
    return {
        "id": f"ev-{fleet}-{device}-{seq}",
        "seq": seq,
        "fleet": fleet,
        "device": device,
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": f"JJD{seq}", "symbology": "code128", "source": "x"},
    }


# -- configuration -------------------------------------------------------------------------------


def test_a_token_is_scoped_to_one_fleet_some_fleets_or_all() -> None:
    one = TokenConfig(name="a", fleet="acme", token_sha256=sha(ACME))
    some = TokenConfig(name="b", fleets=["acme", "zed"], token_sha256=sha(OTHER))
    every = TokenConfig(name="c", fleets="all", rights=["read", "admin"], token_sha256=sha(OPS))
    assert one.scope == frozenset({"acme"})
    assert one.rights == ["read"]  # least privilege unless said
    assert some.scope == frozenset({"acme", "zed"})
    assert every.scope is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"fleet": "acme"}, "token_sha256 or token_file"),
        ({"fleet": "acme", "token": ACME}, "Extra inputs are not permitted"),  # never in clear
        ({"token_sha256": "ab" * 32}, "fleet or fleets"),
        ({"fleet": "acme", "fleets": "all", "token_sha256": "ab" * 32}, "fleet or fleets"),
        ({"fleet": "ACME", "token_sha256": "ab" * 32}, "fleet"),
        ({"fleets": [], "token_sha256": "ab" * 32}, "at least one fleet"),
        ({"fleets": ["acme", "Bad!"], "token_sha256": "ab" * 32}, "is not a fleet id"),
        ({"fleet": "acme", "token_sha256": "xyz"}, "token_sha256"),
        ({"fleet": "acme", "rights": ["admin"], "token_sha256": "ab" * 32}, "fleets: all"),
        ({"fleet": "acme", "rights": ["delete"], "token_sha256": "ab" * 32}, "rights"),
    ],
)
def test_a_bad_token_entry_is_named(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        TokenConfig.model_validate({"name": "t", **fields})


def test_token_names_and_hashes_are_unique() -> None:
    a = {"name": "a", "fleet": "acme", "token_sha256": sha(ACME)}
    with pytest.raises(ValidationError, match="given twice"):
        TenantsConfig.model_validate({"tokens": [a, {**a, "token_sha256": sha(OTHER)}]})
    with pytest.raises(ValidationError, match="same token_sha256"):
        TenantsConfig.model_validate({"tokens": [a, {**a, "name": "b"}]})


def test_without_tokens_the_api_listens_on_loopback_only() -> None:
    none = TenantsConfig()
    assert none.build() is None
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.9"):
        check_listen(host, none)
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "hub.example"):
        with pytest.raises(ValueError, match=r"without tenants\.tokens"):
            check_listen(host, none)
    with_tokens = TenantsConfig(tokens=[TokenConfig(name="a", fleet="x", token_sha256=sha(ACME))])
    check_listen("0.0.0.0", with_tokens)


def test_a_new_token_and_its_hash_make_a_working_entry() -> None:
    token, digest = new_token()
    assert token != new_token()[0]
    config = TenantsConfig(tokens=[TokenConfig(name="n", fleet="acme", token_sha256=digest)])
    tenants = config.build()
    assert tenants is not None
    assert tenants.authenticate(f"Bearer {token}") is not None


def test_token_new_prints_the_token_and_the_entry_that_admits_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        token_main(["--name", "fastlane", "--fleet", "3pl-fast", "--rights", "read,write-events"])
        == 0
    )
    token, entry_line = capsys.readouterr().out.splitlines()
    entry = json.loads(entry_line.removeprefix("- "))
    assert entry == {
        "name": "fastlane",
        "fleet": "3pl-fast",
        "rights": ["read", "write-events"],
        "token_sha256": sha(token),
    }
    tenants = TenantsConfig.model_validate({"tokens": [entry]}).build()
    assert tenants is not None
    who = tenants.authenticate(f"Bearer {token}")
    assert who is not None
    assert (who.name, who.sees("3pl-fast"), who.can("write-events")) == ("fastlane", True, True)
    # into a file of its own: the entry names the file, the token is not printed
    out = tmp_path / "ops.token"
    assert (
        token_main(["--name", "ops", "--fleet", "all", "--rights", "read,admin", "--out", str(out)])
        == 0
    )
    (entry_line,) = capsys.readouterr().out.splitlines()
    entry = json.loads(entry_line.removeprefix("- "))
    assert (entry["fleets"], entry["token_file"]) == ("all", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    tenants = TenantsConfig.model_validate({"tokens": [entry]}).build()
    assert tenants is not None
    assert tenants.authenticate(f"Bearer {out.read_text().strip()}") is not None
    assert token_main(["--name", "ops", "--fleet", "all", "--out", str(out)]) == 2  # kept
    assert "File exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--fleet", "Acme!"], "fleet: String should match pattern"),
        (["--fleet", "acme", "--rights", "read,delete"], "rights.1: Input should be"),
        (["--fleet", "acme", "--rights", "admin"], "fleets: all"),
        (["--fleet", "acme", "--fleet", "all"], "give it alone"),
    ],
)
def test_token_new_refuses_a_bad_entry(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert token_main(["--name", "t", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no token made for an entry the hub would refuse
    assert error in captured.err


def test_bearer_headers_are_read_strictly() -> None:
    assert bearer_of(f"Bearer {ACME}") == ACME
    assert bearer_of(f"bearer   {ACME} ") == ACME
    for header in (None, "", ACME, f"Basic {ACME}", "Bearer short", "Bearer a b c d e f g h i j k"):
        assert bearer_of(header) is None


def test_a_token_matches_its_principal_only() -> None:
    tenants = Tenants.from_tokens(
        [("acme", frozenset({"acme"}), ["read"], ACME), ("ops", None, ["read", "admin"], OPS)]
    )
    acme = tenants.authenticate(f"Bearer {ACME}")
    assert acme is not None
    assert (acme.name, acme.sees("acme"), acme.sees("other"), acme.can("commands")) == (
        "acme",
        True,
        False,
        False,
    )
    ops = tenants.authenticate(f"Bearer {OPS}")
    assert ops is not None
    assert ops.operator
    assert ops.sees("anything")
    assert tenants.authenticate(f"Bearer {WRONG}") is None
    assert tenants.authenticate(f"Bearer {ACME[:-1]}") is None
    assert tenants.authenticate(None) is None


def test_a_token_file_is_read_and_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "acme.token"
    path.write_text(ACME + "\n")
    config = TenantsConfig(tokens=[TokenConfig(name="acme", fleet="acme", token_file=path)])
    tenants = config.build()
    assert tenants is not None
    now = [1000.0]
    tenants._clock = lambda: now[0]
    assert tenants.authenticate(f"Bearer {ACME}") is not None
    path.write_text(OTHER)  # rotated (another size: seen whatever the clock's granularity)
    assert tenants.authenticate(f"Bearer {ACME}") is not None  # within the reload interval
    now[0] += 2
    assert tenants.authenticate(f"Bearer {ACME}") is None
    assert tenants.authenticate(f"Bearer {OTHER}") is not None
    path.unlink()  # gone: the token stops working, the hub goes on
    now[0] += 2
    assert tenants.authenticate(f"Bearer {OTHER}") is None


@pytest.mark.parametrize(
    ("content", "error"),
    [(None, "No such file"), ("short", "16 to 512 characters"), ("a b" * 10, "RFC 6750")],
)
def test_a_bad_token_file_stops_the_start_naming_it(
    tmp_path: Path, content: str | None, error: str
) -> None:
    path = tmp_path / "t.token"
    if content is not None:
        path.write_text(content)
    config = TenantsConfig(tokens=[TokenConfig(name="carrier", fleet="acme", token_file=path)])
    with pytest.raises(TokenError, match=error) as info:
        config.build()
    assert "carrier" in str(info.value)
    assert str(path) in str(info.value)
    if content is not None:
        assert content not in str(info.value)  # the secret is never shown


# -- every route of the served API --------------------------------------------------------------


class Hub:
    def __init__(self, served: Served, command_id: str) -> None:
        self.served = served
        self.command_id = command_id

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.served.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    path = tmp_path_factory.mktemp("tenants") / "timeline.db"
    tenants = Tenants.from_tokens(
        [
            ("ops", None, ["read", "write-events", "commands", "admin"], OPS),
            ("acme", frozenset({"acme"}), ["read", "write-events", "commands"], ACME),
            ("other", frozenset({"other", "third"}), ["read", "write-events", "commands"], OTHER),
            ("reader", frozenset({"acme"}), ["read"], READER),
        ]
    )
    made: dict[str, str] = {}

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await Timeline.open(path)
        for fleet, device in (("acme", "van-1"), ("other", "van-9"), ("third", "van-3")):
            events = [envelope(s, fleet, device) for s in (1, 2, 4)]
            await timeline.store(fleet, device, events, [[] for _ in events])
            await timeline.dead_letter(f"lm/v1/{fleet}/{device}/events", "bad", b"x")
        await timeline.dead_letter("lm/v1/_hub/x/state", "not a device", b"x")
        made["acme"] = "cmd-acme-1"
        made["other"] = "cmd-other-1"
        limits = CommandLimits()
        await timeline.add_command("acme", "van-1", "report", "cmd-acme-1", "{}", limits)
        await timeline.add_command("other", "van-9", "report", "cmd-other-1", "{}", limits)
        return build_app(timeline, HealthRegistry(), tenants=tenants), timeline.close

    with Served(make) as served:
        yield Hub(served, made["acme"])


def operations(hub: Hub) -> list[tuple[str, str]]:
    """Every operation of the document the running hub serves."""
    status, doc, _ = hub.call("GET", "/v1/openapi.json")
    assert status == 200
    return sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops)


def request_for(hub: Hub, method: str, path: str, fleet: str) -> tuple[str, Any]:
    """A request a client of ``fleet`` would make on this operation (a valid one where it can
    be: the answer then shows the scope was checked, not the body)."""
    concrete = (
        path.replace("{fleet}", fleet)
        .replace("{device}", "van-1")
        .replace("{name}", "report")
        .replace("{id}", hub.command_id)
    )
    body: Any = None
    if method == "POST":
        body = {"claim": "x", "csr": "y"} if path == "/v1/provision" else {}
        if path == "/v1/fleets/{fleet}/events":
            body = {"events": [envelope(100, fleet)]}
    return concrete, body


def test_the_served_document_lists_every_route_with_its_rule(hub: Hub) -> None:
    ops = operations(hub)
    assert set(ops) == set(ACCESS)  # a route without a rule, or a rule without a route: fails
    _, doc, _ = hub.call("GET", "/v1/openapi.json")
    for method, path in ops:
        op = doc["paths"][path][method.lower()]
        if (method, path) in OPEN_OPERATIONS:
            assert {} in op["security"] or op["security"] == []
        else:
            assert "security" not in op  # the document's default: the bearer token
            assert {"401", "403"} <= set(op["responses"])
    assert doc["security"] == [{"bearer": []}]


def test_every_route_without_a_token_or_with_a_wrong_one(hub: Hub) -> None:
    for method, path in operations(hub):
        url, body = request_for(hub, method, path, "acme")
        for token in (None, WRONG):
            status, answer, headers = hub.call(method, url, token, body)
            where = f"{method} {path} with {'no' if token is None else 'a wrong'} token"
            if (method, path) in OPEN_OPERATIONS:
                assert status not in (401, 403), where
                continue
            assert status == 401, where
            assert headers["WWW-Authenticate"].startswith("Bearer realm="), where
            assert ('error="invalid_token"' in headers["WWW-Authenticate"]) == (token is not None)
            assert "bearer token" in answer["error"]


def test_every_route_with_the_right_token(hub: Hub) -> None:
    for method, path in operations(hub):
        url, body = request_for(hub, method, path, "acme")
        status, answer, _ = hub.call(method, url, ACME, body)
        assert status not in (401, 403), f"{method} {path}: {status} {answer}"
        if path != "/v1/provision":  # the made-up claim is refused by the endpoint itself
            assert status < 300, f"{method} {path}: {status} {answer}"


def test_every_route_with_another_fleets_token(hub: Hub) -> None:
    """A fleet named in the request outside the token's scope is 403; a listing is filtered to
    the token's fleets; a command looked up by id of another fleet is 404 (as if not there)."""
    for method, path in operations(hub):
        url, body = request_for(hub, method, path, "acme")
        status, answer, _ = hub.call(method, url, OTHER, body)
        where = f"{method} {path}: {status} {answer}"
        if "{fleet}" in path:
            assert status == 403, where
            assert "not scoped to fleet acme" in answer["error"], where
        elif path == "/v1/commands/{id}":
            assert status == 404, where
            assert answer == {"error": f"no command {hub.command_id}"}  # as an unknown id
        elif (method, path) in OPEN_OPERATIONS:
            assert status not in (401, 403), where
        else:
            assert status == 200, where
            assert "acme" not in json.dumps(answer), where  # a listing: nothing of acme
    status, answer, _ = hub.call("GET", "/v1/events?fleet=acme", OTHER)
    assert (status, answer["error"]) == (403, "token other is not scoped to fleet acme")
    status, answer, _ = hub.call("GET", "/v1/events?fleet=acme&fleet=other", OTHER)
    assert status == 403


def test_head_is_guarded_as_get_and_unknown_routes_are_404(hub: Hub) -> None:
    req = urllib.request.Request(hub.served.url + "/v1/events", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    info.value.close()
    assert info.value.code == 401
    req.add_header("Authorization", f"Bearer {ACME}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    for method, path, status in (("GET", "/v1/nowhere", 404), ("DELETE", "/v1/events", 405)):
        req = urllib.request.Request(hub.served.url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        info.value.close()
        assert info.value.code == status  # the router's answer: no operation to guard


def test_listings_are_the_tokens_fleets(hub: Hub) -> None:
    _, devices, _ = hub.call("GET", "/v1/devices", OTHER)
    assert sorted(d["fleet"] for d in devices) == ["other", "third"]
    _, devices, _ = hub.call("GET", "/v1/devices", OPS)
    assert sorted(d["fleet"] for d in devices) == ["acme", "other", "third"]
    _, events, _ = hub.call("GET", "/v1/events", OTHER)
    assert [(e["fleet"], e["seq"]) for e in events] == [
        ("other", 1),
        ("other", 2),
        ("other", 4),
        ("third", 1),
        ("third", 2),
        ("third", 4),
    ]
    _, events, _ = hub.call("GET", "/v1/events?limit=4", OTHER)  # the limit spans its fleets
    assert [(e["fleet"], e["seq"]) for e in events][-1] == ("third", 1)
    _, events, _ = hub.call("GET", "/v1/events?fleet=third&after_seq=1", OTHER)
    assert [(e["fleet"], e["seq"]) for e in events] == [("third", 2), ("third", 4)]
    _, dead, _ = hub.call("GET", "/v1/dead-letters", OTHER)
    assert sorted(d["topic"] for d in dead) == [
        "lm/v1/other/van-9/events",
        "lm/v1/third/van-3/events",
    ]
    _, dead, _ = hub.call("GET", "/v1/dead-letters?limit=1", OTHER)
    assert len(dead) == 1
    _, dead, _ = hub.call("GET", "/v1/dead-letters", OPS)
    assert len(dead) == 4  # the operator sees the hub's own too
    status, command, _ = hub.call("GET", "/v1/commands/cmd-acme-1", OPS)
    assert (status, command["fleet"]) == (200, "acme")


def test_rights_are_checked_besides_the_scope(hub: Hub) -> None:
    status, answer, _ = hub.call("POST", "/v1/devices/acme/van-1/commands/report", READER, {})
    assert (status, answer["error"]) == (403, "token reader lacks the right 'commands'")
    status, answer, _ = hub.call(
        "POST", "/v1/fleets/acme/events", READER, {"events": [envelope(200)]}
    )
    assert (status, answer["error"]) == (403, "token reader lacks the right 'write-events'")
    status, _, _ = hub.call("GET", "/v1/devices/acme/van-1/commands", READER)
    assert status == 200


def test_health_is_open_and_says_more_to_an_operator(hub: Hub) -> None:
    assert hub.call("GET", "/v1/health")[:2] == (200, {"status": "up"})
    assert hub.call("GET", "/v1/health", WRONG)[:2] == (200, {"status": "up"})
    assert hub.call("GET", "/v1/health", ACME)[:2] == (200, {"status": "up"})
    status, answer, _ = hub.call("GET", "/v1/health", OPS)
    assert status == 200
    assert answer["status"] == "up"
    assert answer["events"] >= 9
    assert "components" in answer


def test_a_route_without_an_access_rule_stops_the_hub(tmp_path: Path) -> None:
    """An operation added to the app without its rule: the app does not start, naming it; and
    were the check skipped, the guard fails closed (403 to everyone, the operator too)."""

    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"leak": True})

    async def run() -> None:
        timeline = await Timeline.open(tmp_path / "t.db")
        try:
            tenants = Tenants.from_tokens([("ops", None, ["read", "admin"], OPS)])
            app = build_app(timeline, HealthRegistry(), tenants=tenants)
            app.router.add_get("/v1/unguarded", secret)
            runner = web.AppRunner(app)
            with pytest.raises(RuntimeError, match="no access rule for GET /v1/unguarded"):
                await runner.setup()
            await runner.cleanup()
            app = build_app(timeline, HealthRegistry(), tenants=tenants)
            app[DOCUMENT]["paths"]["/v1/documented"] = {"get": {"summary": "x", "responses": {}}}
            runner = web.AppRunner(app)
            with pytest.raises(RuntimeError, match="no access rule for GET /v1/documented"):
                await runner.setup()
            await runner.cleanup()
            app = build_app(timeline, HealthRegistry(), tenants=tenants)
            app.router.add_get("/v1/unguarded", secret)
            app.on_startup.clear()  # the check skipped: the guard alone
            async with TestClient(TestServer(app)) as client:
                resp = await client.get("/v1/unguarded", headers={"Authorization": f"Bearer {OPS}"})
                assert resp.status == 403
                assert "no access rule" in (await resp.json())["error"]
        finally:
            await timeline.close()

    asyncio.run(run())


def test_operations_added_after_build_are_guarded_by_their_rules(tmp_path: Path) -> None:
    """How the delivery API joins (``add_delivery_routes(app, app[DOCUMENT], ...,
    check_scope=check_scope)`` with ``extra_access=DELIVERY_ACCESS``): the guard applies their
    rules, ``check_scope`` a fleet they read from elsewhere, the served document has them."""

    async def things(request: web.Request) -> web.Response:
        return web.json_response({"fleet": request.match_info["fleet"]})

    async def by_body(request: web.Request) -> web.Response:
        fleet = (await request.json())["fleet"]
        check_scope(request, fleet)
        return web.json_response({"fleet": fleet})

    async def run() -> None:
        timeline = await Timeline.open(tmp_path / "t.db")
        try:
            tenants = Tenants.from_tokens(
                [
                    ("acme", frozenset({"acme"}), ["read"], ACME),
                    ("hooks", frozenset({"acme"}), ["read", "webhooks"], OTHER),
                ]
            )
            extra = {
                ("GET", "/v1/fleets/{fleet}/things"): "read",
                ("POST", "/v1/by-body"): "webhooks",
            }
            app = build_app(timeline, HealthRegistry(), tenants=tenants, extra_access=extra)
            app.router.add_get("/v1/fleets/{fleet}/things", things)
            app.router.add_post("/v1/by-body", by_body)
            ok = {"200": {"description": "ok"}}
            app[DOCUMENT]["paths"]["/v1/fleets/{fleet}/things"] = {
                "get": {"summary": "things", "responses": dict(ok)}
            }
            app[DOCUMENT]["paths"]["/v1/by-body"] = {
                "post": {"summary": "by body", "responses": dict(ok)}
            }
            async with TestClient(TestServer(app)) as client:

                async def status(method: str, path: str, token: str | None, **kw: Any) -> int:
                    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                    async with client.request(method, path, headers=headers, **kw) as resp:
                        return resp.status

                assert await status("GET", "/v1/fleets/acme/things", None) == 401
                assert await status("GET", "/v1/fleets/acme/things", ACME) == 200
                assert await status("GET", "/v1/fleets/other/things", ACME) == 403
                body = {"json": {"fleet": "acme"}}
                assert await status("POST", "/v1/by-body", ACME, **body) == 403  # no right
                assert await status("POST", "/v1/by-body", OTHER, **body) == 200
                other = {"json": {"fleet": "other"}}
                assert await status("POST", "/v1/by-body", OTHER, **other) == 403
                resp = await client.get("/v1/openapi.json")
                doc = await resp.json()
                assert set(doc["paths"]["/v1/by-body"]["post"]["responses"]) == {
                    "200",
                    "401",
                    "403",
                }
                assert "'webhooks'" in doc["paths"]["/v1/by-body"]["post"]["description"]
        finally:
            await timeline.close()

    asyncio.run(run())


def test_a_hub_without_tokens_is_open_as_before(tmp_path: Path) -> None:
    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await Timeline.open(tmp_path / "open.db")
        await timeline.store("acme", "van-1", [envelope(1)], [[]])
        return build_app(timeline, HealthRegistry()), timeline.close

    with Served(make) as served:
        hub = Hub(served, "")
        status, health, _ = hub.call("GET", "/v1/health")
        assert (status, health["events"]) == (200, 1)
        assert hub.call("GET", "/v1/events")[1][0]["id"] == "ev-acme-van-1-1"
        status, answer, _ = hub.call("POST", "/v1/fleets/acme/events", None, envelope(2))
        assert (status, answer["stored"]) == (200, 1)
    assert OPEN.operator


# -- the secured document, fuzzed with a fleet's token ------------------------------------------

secured_schema = schemathesis.openapi.from_dict(SECURED_OPENAPI)
secured_schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("fuzz") / "timeline.db"
    tenants = Tenants.from_tokens([("acme", frozenset({"acme"}), RIGHTS_ALL, ACME)])

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await Timeline.open(path)
        await timeline.store("acme", "van-1", [envelope(1)], [[]])
        return build_app(timeline, HealthRegistry(), tenants=tenants), timeline.close

    with Served(make) as served:
        yield served.url


RIGHTS_ALL = ["read", "write-events", "commands"]


@secured_schema.auth()
class FleetToken:
    """The acme token on every generated request but those made to go without one."""

    def get(self, case: schemathesis.Case[Any], context: Any) -> str:
        return ACME

    def set(self, case: schemathesis.Case[Any], data: str, context: Any) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@secured_schema.parametrize()
@FUZZ
def test_the_secured_hub_from_its_document(case: schemathesis.Case[Any], fuzzed_hub: str) -> None:
    """Every answer of a hub with tokens as its document says (401/403 included), for a
    fleet's token on requests of any fleet."""
    response = case.call(base_url=fuzzed_hub, timeout=10)
    assert_no_undocumented_5xx(response.status_code, response.content)
    case.validate_response(response, checks=CHECKS)
