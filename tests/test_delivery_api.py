"""The delivery API fuzzed from its own OpenAPI fragments (schemathesis): never an undocumented
5xx, every answer as documented (status, content type, schema), invalid requests refused.

The routes run on a real port over a real SQLite file holding a parcel, a route, exceptions and
a subscription, as the projector writes them. The stream is left out: it never ends by design
(tests/test_delivery_sse.py covers it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from hub_bridge.delivery.routes import OPENAPI_PATHS, OPENAPI_SCHEMAS, add_delivery_routes
from hub_bridge.delivery.store import Subscription, canonical_json
from hub_bridge.delivery.store_sqlite import SqliteDeliveryStore
from tests.delivery_rig import notice
from tests.inproc import Served

DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hub-bridge delivery", "version": "1"},
    "paths": dict(OPENAPI_PATHS),
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            **OPENAPI_SCHEMAS,
        }
    },
}
schema = schemathesis.openapi.from_dict(DOC).exclude(path="/v1/fleets/{fleet}/stream")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
PARCEL = {
    "parcel": "P1",
    "fleet": "acme",
    "status": "delivered",
    "route": "r-1",
    "stop": "s-1",
    "eta": None,
    "history": [
        {
            "ts": "2026-12-03T08:10:00.000Z",
            "status": "delivered",
            "event": {"id": "e-1", "type": "pod", "device": "van-1", "seq": 7},
            "applied": True,
        }
    ],
}
ROUTE = {
    "route": "r-1",
    "fleet": "acme",
    "vehicle": "van-1",
    "status": "active",
    "stops": [{"id": "s-1", "status": "departed", "eta": None, "window": None, "parcels": ["P1"]}],
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("hub") / "timeline.db"

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        store = await SqliteDeliveryStore.open(path)
        await store.add_subscription(
            Subscription("wh_0000000000000001", "acme", "http://127.0.0.1:9/x", "s" * 32, created=1)
        )
        raised = notice("acme", "exception.raised", "P9", 1, {"type": "misload", "id": "m:P9"})
        await store.log_notices(
            [raised],
            [
                ("parcel", "acme", "P1", canonical_json(PARCEL)),
                ("route", "acme", "r-1", canonical_json(ROUTE)),
            ],
            now=time.time(),
        )
        # aiohttp itself answers a request line over 8 KiB with a plain-text 400 before any
        # handler runs; the negative cases of long parameters are about the handlers
        app = web.Application(handler_args={"max_line_size": 1 << 20})
        add_delivery_routes(app, None, store=store)
        return app, store.close

    with Served(make) as served:
        yield served.url


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_delivery_api_from_its_openapi_fragments(case: schemathesis.Case, url: str) -> None:
    response = case.call(base_url=url, timeout=10)
    assert response.status_code < 500 or response.status_code == 503, response.content[:300]
    case.validate_response(response, checks=CHECKS)
