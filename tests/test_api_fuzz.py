"""Both HTTP APIs fuzzed from their own OpenAPI documents (schemathesis): never a 5xx other than
the documented 503/507, every answer as documented (status, content type, schema).

The real aiohttp applications run on real ports, bound to real SQLite files (the agent's outbox,
the hub's timeline). Schema-valid and schema-violating requests both (positive and negative
generation); hostile bodies beyond what a schema can describe (NaN, lone surrogates, deep
nesting, huge integers, broken bytes) are generated with hypothesis directly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from edge_agent.api import openapi_document
from edge_agent.platform.health import HealthRegistry
from hub_bridge.api import OPENAPI
from hub_bridge.api import build_app as hub_app
from hub_bridge.timeline import Timeline
from tests.inproc import Served, agent_factory

MAX_BODY = 64 * 1024
MAX_BATCH = 20
DOCUMENTED_5XX = {503, 507}
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # a request the document says is invalid gets a 4xx
]
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

agent_schema = schemathesis.openapi.from_dict(openapi_document(MAX_BODY, MAX_BATCH))
agent_schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
hub_schema = schemathesis.openapi.from_dict(OPENAPI)
hub_schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


def stored(seq: int, device: str = "van-1") -> dict[str, Any]:
    """A valid envelope as the hub stores it."""
    return {
        "id": f"ev-{device}-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": device,
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": f"JJD{seq}", "symbology": "code128", "source": "x"},
    }


@pytest.fixture(scope="module")
def agent_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("agent") / "outbox.db"
    with Served(agent_factory(path, max_body=MAX_BODY, max_batch=MAX_BATCH)) as served:
        yield served.url


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("hub") / "timeline.db"

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        timeline = await Timeline.open(path)
        for device in ("van-1", "van-2"):
            events = [stored(s, device) for s in (1, 2, 4)]
            await timeline.store("acme", device, events, [[] for _ in events])
        return hub_app(timeline, HealthRegistry()), timeline.close

    with Served(make) as served:
        yield served.url


def assert_no_undocumented_5xx(status: int, body: bytes) -> None:
    assert status < 500 or status in DOCUMENTED_5XX, f"{status}: {body[:300]!r}"


@agent_schema.parametrize()
@FUZZ
def test_agent_api_from_its_openapi_document(case: schemathesis.Case, agent_url: str) -> None:
    response = case.call(base_url=agent_url, timeout=10)
    assert_no_undocumented_5xx(response.status_code, response.content)
    case.validate_response(response, checks=CHECKS)


@hub_schema.parametrize()
@FUZZ
def test_hub_api_from_its_openapi_document(case: schemathesis.Case, hub_url: str) -> None:
    response = case.call(base_url=hub_url, timeout=10)
    assert_no_undocumented_5xx(response.status_code, response.content)
    case.validate_response(response, checks=CHECKS)


# -- beyond the schema: hostile JSON texts and bytes ------------------------------------------

HOSTILE_TOKENS = [
    "NaN",
    "-Infinity",
    "1e400",
    "-" + "9" * 30,
    "1" + "0" * 5000,
    '"\\ud800"',
    '"a\\udfff"',
    '"\\ud83d\\ude00"',  # a valid pair: accepted
    "[" * 40 + "]" * 40,
    "[" * 1200 + "]" * 1200,
    '{"\\udc00": 1}',
    "9223372036854775807",
    "9223372036854775808",
    "1.5e308",
]


def post_raw(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"{url}/v1/events", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """An event or a batch with a hostile token where a value goes, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    token = draw(st.sampled_from(HOSTILE_TOKENS))
    kind = draw(st.sampled_from(["device.health", "scan", "gnss.fix", "exception.x"]))
    place = draw(st.sampled_from(["data", "nested", "list", "type", "ts", "ref", "id", "body"]))
    value = {
        "data": f'{{"v": {token}}}',
        "nested": f'{{"a": {{"b": [1, {token}]}}}}',
        "list": f'{{"xs": [{token}, {token}]}}',
    }.get(place, '{"v": 1}')
    fields = {"type": json.dumps(kind), "data": value}
    if place in ("type", "ts", "id"):
        fields[place] = token
    elif place == "ref":
        fields["ref"] = f'{{"stop": {token}}}'
    event = "{" + ",".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    if place == "body":
        event = token
    if draw(st.booleans()):
        good = json.dumps({"type": "device.health", "data": {"ok": 1}})
        event = f"[{good}, {event}]"
    return event.encode()


@given(body=hostile_bodies())
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_agent_api_hostile_bodies(body: bytes, agent_url: str) -> None:
    status, answer = post_raw(agent_url, body)
    assert status in (201, 400, 413), f"{status}: {answer[:300]!r} for {body[:200]!r}"
    doc = json.loads(answer)  # every answer is JSON
    if status == 400:
        assert doc["error"]
        answer.decode("utf-8")  # the error is valid UTF-8 (a surrogate is shown escaped)
