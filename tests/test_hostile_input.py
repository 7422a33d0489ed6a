"""Poison input at every boundary (issue 8): bounded JSON on the agent's API and the hub's ingest.

Each class of defect, from the bottom up: the bounded decoder and validator (pure), the hub's
ingest on a real SQLite timeline (examples, then hypothesis), the HTTP APIs in process on real
ports (409, 408, closed idle connections, strict query parameters), and finally the real
processes (agent, hub, mosquitto): hostile POSTs refused while good ones are accepted and
delivered, and a hostile MQTT client publishing straight to the hub.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.platform.health import HealthRegistry
from edge_agent.wire import topics
from edge_agent.wire.envelope import (
    SEQ_MAX,
    EnvelopeError,
    encode_batch,
    encode_envelope,
    parse_ts,
    validate_data,
    validate_envelope,
)
from edge_agent.wire.jsonbounds import INT_MAX, INT_MIN, JsonBoundsError, check, loads
from hub_bridge.api import build_app as hub_app
from hub_bridge.ingest import check_events
from hub_bridge.timeline import Timeline
from simulators.broker import Mosquitto
from tests.harness import (
    Proc,
    get,
    post,
    scan_event,
    timeline_rows,
    wait_for,
    write_agent_config,
    write_hub_config,
)
from tests.inproc import Served, agent_factory

NOW = parse_ts("2026-11-21T08:00:00.000Z").timestamp()
TOPIC = topics.parse("lm/v1/acme/van-1/events")

DEEP_980 = "[" * 980 + "]" * 980
BIG_INT = "1" + "0" * 5000
# the poison of issue 8, as JSON text (json.dumps cannot even write some of them)
POISON = {
    "deep": (DEEP_980, "nesting deeper than 32"),
    "nan": ("NaN", "NaN is not allowed"),
    "infinity": ("-Infinity", "-Infinity is not allowed"),
    "overflow": ("1e400", "inf is not allowed"),
    "surrogate": ('"\\ud800"', "lone surrogate"),
    "big-int": (BIG_INT, "5001 digits"),
    "int64+1": ("9223372036854775808", "64-bit"),
}


def envelope(seq: int, device: str = "van-1", **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "id": f"ev-{device}-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": device,
        "type": "device.health",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"ok": 1},
    }
    env.update(over)
    return env


def with_token(env: dict[str, Any], token: str, where: str = "data") -> str:
    """The envelope as JSON text with ``token`` (raw JSON) as the value at ``where``."""
    marker = "\x00POISON\x00"
    doc = json.loads(json.dumps(env))
    if where == "data":
        doc["data"] = {"x": {"y": [1, marker]}}
    else:
        doc[where] = marker
    return json.dumps(doc).replace(json.dumps(marker), token)


# -- the bounded decoder and the shared validator ---------------------------------------------


@pytest.mark.parametrize("name", list(POISON))
def test_bounded_json_refuses_poison_with_its_path(name: str) -> None:
    token, reason = POISON[name]
    doc = loads(f'{{"data": {{"a": [0, {{"b": {token}}}]}}}}')
    with pytest.raises(JsonBoundsError) as info:
        check(doc["data"], path="events[3].data")
    assert reason in info.value.reason
    if name == "deep":  # the 33rd container, wherever it is
        assert info.value.path.startswith("events[3].data.a[1].b[0][0]")
    else:
        assert info.value.path == "events[3].data.a[1].b"


def test_bounded_json_refuses_a_surrogate_key_and_names_it_escaped() -> None:
    with pytest.raises(JsonBoundsError) as info:
        check(loads('{"ok": {"\\udc00x": 1}}'), path="data")
    assert info.value.path == "data.ok.'\\udc00x'"  # escaped: safe to log, encode and store
    str(info.value).encode("utf-8")


def test_bounded_json_accepts_the_edges() -> None:
    edges = loads(
        json.dumps(
            {
                "int64": [INT_MIN, INT_MAX],
                "big_float": 1.5e308,
                "emoji": "\U0001f600",  # written by json.dumps as a surrogate pair: valid
                "größe": "ü",
                "deep": json.loads("[" * 31 + "]" * 31),  # 32 levels with the top object
            }
        )
    )
    check(edges)
    assert edges["emoji"] == "\U0001f600"


def test_text_that_is_not_json_is_one_error() -> None:
    for text, reason in (
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (("[" * 5000 + "]" * 5000).encode(), "nesting deeper"),  # past the parser's own limit
    ):
        with pytest.raises(JsonBoundsError, match=reason):
            loads(text)


def test_in_process_data_is_held_to_the_same_bounds() -> None:
    for data, reason in (
        ({"x": float("nan")}, "nan is not allowed"),
        ({"x": [2**70]}, "64-bit"),
        ({"x": "\ud800"}, "lone surrogate"),
        ({"x": object()}, "not a JSON value"),
    ):
        with pytest.raises(EnvelopeError, match=reason) as info:
            validate_data("device.health", data)
        assert info.value.path.startswith("data.x")
    validate_data("device.health", {"x": (1, 2.5, "a")})  # a tuple encodes as a list


def test_seq_is_bounded_to_what_json_and_sqlite_hold() -> None:
    validate_envelope(envelope(SEQ_MAX))
    for seq in (SEQ_MAX + 1, 2**63, 2**64):
        with pytest.raises(EnvelopeError) as info:
            validate_envelope(envelope(seq))
        assert info.value.path == "seq"
    notice = {"ranges": [[1, 2**63]], "count": 1, "reason": "size-cap"}
    with pytest.raises(EnvelopeError, match=r"data\.ranges"):
        validate_envelope(envelope(1, type="outbox.evicted", data=notice))


def test_an_unrepresentable_top_level_value_is_named() -> None:
    doc = loads(with_token(envelope(1), BIG_INT, "seq"))
    with pytest.raises(EnvelopeError) as info:
        validate_envelope(doc)
    assert info.value.path == "seq" and "5001 digits" in info.value.reason


# -- the hub's ingest on a real timeline --------------------------------------------------------


class Store:
    """A real timeline file driven from synchronous tests (hypothesis) through its own loop."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.timeline: Timeline = self.loop.run_until_complete(Timeline.open(path))
        self.devices = itertools.count(1)

    def ingest(self, topic: topics.TopicName, payload: bytes) -> tuple[Any, int | None]:
        """check_events, then what the bridge does: store, dead-letter; the new watermark."""
        check = check_events(topic, payload, NOW)
        for reject in check.rejects:
            # what the bridge writes for a reject must always encode
            json.dumps(reject.raw, default=str).encode()
            reject.reason.encode("utf-8")
            self.loop.run_until_complete(
                self.timeline.dead_letter(str(topic), reject.reason, b"raw")
            )
        if check.dead_letter is not None:
            check.dead_letter.encode("utf-8")
            return check, None
        result = self.loop.run_until_complete(
            self.timeline.store(
                topic.fleet,
                topic.device,
                check.events,
                check.flags,
                rejected_seqs=[r.seq for r in check.rejects if r.seq is not None],
            )
        )
        return check, result.watermark

    def close(self) -> None:
        self.loop.run_until_complete(self.timeline.close())
        self.loop.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("ingest") / "timeline.db")
    try:
        yield s
    finally:
        s.close()


def test_the_hub_rejects_each_poisoned_envelope_alone_and_the_watermark_moves(
    store: Store,
) -> None:
    topic = topics.parse("lm/v1/acme/van-poison/events")
    texts = [json.dumps(envelope(1, "van-poison"))]
    for i, (token, _) in enumerate(POISON.values(), start=2):
        texts.append(with_token(envelope(i, "van-poison"), token))
    last = len(texts) + 1
    texts.append(json.dumps(envelope(2**63, "van-poison", id="huge-seq")))  # not accountable
    texts.append(json.dumps(envelope(last, "van-poison")))
    payload = encode_batch([t.encode() for t in texts])
    check, watermark = store.ingest(topic, payload)
    assert [e["seq"] for e in check.events] == [1, last]
    assert [r.seq for r in check.rejects] == [*range(2, last), None]
    assert "events[1]: data.x.y[1][0]" in check.rejects[0].reason  # the deep one, by its path
    assert "seq" in check.rejects[-1].reason
    assert watermark == last  # every readable seq stored or accounted: no stall
    # the same batch again (a device resending): nothing breaks, nothing moves back
    assert store.ingest(topic, payload)[1] == last


def test_a_document_deeper_than_the_parser_is_one_dead_letter(store: Store) -> None:
    payload = b'{"events": [' + b"[" * 3000 + b"]" * 3000 + b"]}"
    check, watermark = store.ingest(TOPIC, payload)
    assert "nesting" in (check.dead_letter or "") and watermark is None


HOSTILE_VALUES = [token for token, _ in POISON.values()] + [
    '"\\udfff\\ud800"',
    "[" * 33 + "]" * 33,
    "-" + "9" * 25,
    "1E999",
    '{"\\ud800": 1}',
    "null",
    "[]",
    '""',
    "true",
    "-0",
    "123456789012345678901234567890.5",
]
FIELDS = ["data", "id", "type", "ts", "clock", "ref", "extra"]


Poison = list[tuple[str, str] | None]
"""Per envelope of a batch: (field, hostile JSON text) to put in it, or None for a valid one."""

poisons: st.SearchStrategy[Poison] = st.lists(
    st.none() | st.tuples(st.sampled_from(FIELDS), st.sampled_from(HOSTILE_VALUES)),
    min_size=1,
    max_size=6,
)


def poisoned_batch(store: Store, poison: Poison) -> tuple[topics.TopicName, list[str]]:
    """Envelope texts of seqs 1..n for a device new to the store (never fleet, device or seq
    poisoned: those make a forgery, or an envelope whose seq cannot be accounted)."""
    device = f"van-f{next(store.devices)}"
    texts = []
    for seq, spec in enumerate(poison, start=1):
        env = envelope(seq, device, id=f"{device}-{seq}")
        texts.append(json.dumps(env) if spec is None else with_token(env, spec[1], spec[0]))
    return topics.parse(f"lm/v1/acme/{device}/events"), texts


INGEST_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@given(poison=poisons)
@INGEST_FUZZ
def test_ingest_fuzz_poisoned_batches_never_raise_and_never_stall(
    poison: Poison, store: Store
) -> None:
    topic, texts = poisoned_batch(store, poison)
    check, watermark = store.ingest(topic, encode_batch([t.encode() for t in texts]))
    assert check.dead_letter is None
    assert len(check.events) + len(check.rejects) == len(texts)
    assert watermark == len(texts), "a readable seq was neither stored nor accounted"


@given(
    poison=poisons,
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=8)), max_size=4),
)
@INGEST_FUZZ
def test_ingest_fuzz_mutated_bytes_never_raise(
    poison: Poison, cuts: list[tuple[int, bytes]], store: Store
) -> None:
    topic, texts = poisoned_batch(store, poison)
    payload = bytearray(encode_batch([t.encode() for t in texts]))
    for where, junk in cuts:  # overwrite bytes anywhere: seqs, identity, structure, UTF-8
        at = where % len(payload)
        payload[at : at + len(junk)] = junk
    check, watermark = store.ingest(topic, bytes(payload))
    for reject in check.rejects:
        assert reject.seq is None or 1 <= reject.seq <= SEQ_MAX
    if watermark is not None:
        assert 0 <= watermark <= SEQ_MAX


@given(payload=st.binary(max_size=3000))
@INGEST_FUZZ
def test_ingest_fuzz_random_bytes_never_raise(payload: bytes, store: Store) -> None:
    check, _ = store.ingest(TOPIC, payload)
    assert check.dead_letter is not None or check.events or check.rejects


# -- the HTTP APIs in process -----------------------------------------------------------------


def request(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_client_id_reused_for_another_event_is_409(tmp_path: Path) -> None:
    with Served(agent_factory(tmp_path / "outbox.db")) as api:
        url = f"{api.url}/v1/events"
        status, first = request(url, "POST", scan_event(1, "app-7"))
        assert status == 201
        assert request(url, "POST", scan_event(1, "app-7")) == (201, first)  # idempotent
        status, body = request(url, "POST", scan_event(2, "app-7"))
        assert status == 409, body
        assert "app-7" in body["error"]
        # in a batch too, all or nothing: the good event of the batch is not stored
        status, body = request(url, "POST", [scan_event(3), scan_event(4, "app-7")])
        assert status == 409 and "app-7" in body["error"]
        status, after = request(url, "POST", scan_event(5))
        assert status == 201 and after["seq"] == first["seq"] + 1


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks), time.monotonic() - start
        chunks.append(chunk)


def test_slow_clients_are_timed_out(tmp_path: Path) -> None:
    factory = agent_factory(tmp_path / "outbox.db", body_timeout=0.5, idle_timeout=0.5)
    with Served(factory) as api:
        # a body trickled a byte at a time: the bound is on the whole body, not per chunk
        with socket.create_connection(("127.0.0.1", api.port)) as sock:
            sock.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: van\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n"
            )
            stop = threading.Event()

            def trickle() -> None:
                while not stop.wait(0.05):
                    try:
                        sock.send(b" ")
                    except OSError:
                        return

            thread = threading.Thread(target=trickle)
            thread.start()
            try:
                answer, took = read_until_closed(sock, 5)
            finally:
                stop.set()
                thread.join()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"within 0.5 s" in answer
        assert took < 3
        # headers that never end, and a connection that never says anything: closed
        for opening in (b"POST /v1/events HTTP/1.1\r\nHost: v", b""):
            with socket.create_connection(("127.0.0.1", api.port)) as sock:
                sock.sendall(opening)
                answer, took = read_until_closed(sock, 5)
            assert took < 3, "a silent client held its connection"
        # the API still serves
        assert request(f"{api.url}/v1/events", "POST", scan_event(1))[0] == 201


def test_a_broken_chunked_body_is_refused_not_500_and_not_held(tmp_path: Path) -> None:
    with Served(agent_factory(tmp_path / "outbox.db", body_timeout=0.5)) as api:
        # with the headers, aiohttp's parser answers 400; a moment later, aiohttp 3.14 never
        # ends the body it was reading: the body timeout still ends the request
        for pause, status in ((0.0, b"400"), (0.2, b"408")):
            head = b"POST /v1/events HTTP/1.1\r\nHost: van\r\nTransfer-Encoding: chunked\r\n\r\n"
            broken = b"zz\r\n{}\r\n0\r\n\r\n"
            with socket.create_connection(("127.0.0.1", api.port)) as sock:
                if pause:
                    sock.sendall(head)
                    time.sleep(pause)
                    sock.sendall(broken)
                else:
                    sock.sendall(head + broken)
                answer, took = read_until_closed(sock, 5)
            assert answer.split(b" ", 2)[1] == status, answer[:200]
            assert took < 3


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("hubq") / "timeline.db"

    async def make() -> Any:
        timeline = await Timeline.open(path)
        events = [envelope(s) for s in (1, 2, 3)]
        await timeline.store("acme", "van-1", events, [[] for _ in events])
        return hub_app(timeline, HealthRegistry()), timeline.close

    with Served(make) as served:
        yield served.url


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("/v1/events?limit=%C2%B2", "limit"),  # "²": str.isdigit() says yes, int() says no
        ("/v1/events?limit=%D9%A3", "limit"),  # "٣", an Arabic-Indic three
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=-1", "limit"),
        ("/v1/events?limit=10001", "limit"),
        ("/v1/events?limit=1e3", "limit"),
        ("/v1/events?limit=", "limit"),
        ("/v1/events?limit=1&limit=2", "limit"),
        ("/v1/events?after_seq=" + "9" * 30, "after_seq"),
        ("/v1/events?after_seq=%20%201", "after_seq"),
        ("/v1/events?device=VAN-1", "device"),
        ("/v1/events?fleet=%ED%A0%80", "fleet"),
        ("/v1/events?devcie=van-1", "devcie"),
        ("/v1/dead-letters?limit=%C2%B2", "limit"),
        ("/v1/devices?x=1", "x"),
        ("/v1/health?verbose", "verbose"),
    ],
)
def test_hub_query_parameters_are_parsed_strictly(hub_url: str, query: str, name: str) -> None:
    status, body = request(hub_url + query)
    assert status == 400
    assert body["error"].startswith(f"{name}: "), body


def test_hub_query_parameters_that_are_right_still_work(hub_url: str) -> None:
    status, events = request(f"{hub_url}/v1/events?fleet=acme&device=van-1&after_seq=1&limit=1")
    assert status == 200 and [e["seq"] for e in events] == [2]
    assert request(f"{hub_url}/v1/dead-letters?limit=10000")[0] == 200


# -- through the real processes ---------------------------------------------------------------


def post_raw(port: int, body: bytes) -> tuple[int, Any]:
    """POST bytes as they are (json.dumps cannot write a 5000-digit integer)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_poisoned_posts_get_400_while_good_ones_get_201_and_reach_the_hub(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    port = agent.api_port or 0
    good: dict[str, int] = {}
    statuses: list[int] = []
    stop = threading.Event()

    def post_good() -> None:  # concurrent good POSTs share group commits with the poison
        i = 0
        while not stop.is_set():
            i += 1
            status, body = post(port, scan_event(i))
            statuses.append(status)
            if status == 201:
                good[body["id"]] = body["seq"]

    threads = [threading.Thread(target=post_good) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for _ in range(3):
            for name, (token, reason) in POISON.items():
                for body in (
                    f'{{"type": "device.health", "data": {{"x": {token}}}}}',
                    f'[{{"type": "scan", "data": {{"text": "a", "symbology": "b",'
                    f' "source": "c"}}}}, {{"type": "exception.note", "data": {{"x": {token}}}}}]',
                ):
                    status, answer = post_raw(port, body.encode())
                    assert status == 400, (name, status, answer)
                    assert reason in answer["error"]
                    assert answer["error"].startswith(("data.x", "events[1].data.x"))
        stop.set()
        for t in threads:
            t.join()
        assert set(statuses) == {201}, f"good POSTs got {sorted(set(statuses))}"
        assert len(good) > 10
        last = get(port, "/v1/health")["queue"]["last_seq"]
        assert last >= max(good.values())
        wait_for(
            lambda: get(hub.api_port or 0, "/v1/devices")[0]["watermark"] == last,
            30,
            "the hub's watermark to reach the agent's last seq",
        )
        wait_for(lambda: get(port, "/v1/health")["queue"]["depth"] == 0, 30, "the outbox drained")
        stored = {i: s for s, i, _ in timeline_rows(tmp_path / "timeline.db")}
        assert all(stored.get(i) == s for i, s in good.items()), "an accepted event is missing"
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        agent.stop()
        hub.stop()


def test_a_hostile_mqtt_client_is_dead_lettered_and_the_hub_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = "lm/v1/acme/van-1/events"
    try:
        time.sleep(0.3)  # let the hub's subscription settle before publishing
        texts = [json.dumps(envelope(1))]
        texts.append(with_token(envelope(2), DEEP_980))
        texts.append(with_token(envelope(3), BIG_INT))
        texts.append(with_token(envelope(4), "NaN"))
        texts.append(with_token(envelope(5), '"\\ud800"'))
        texts.append(json.dumps(envelope(2**63, id="huge-seq")))
        texts.append(json.dumps(envelope(6)))
        client.publish(topic, encode_batch([t.encode() for t in texts]), qos=1).wait_for_publish(5)
        # a message the parser cannot read at all, then a good batch: the hub goes on
        deep = b'{"events": [' + b"[" * 3000 + b"]" * 3000 + b"]}"
        client.publish(topic, deep, qos=1).wait_for_publish(5)
        client.publish(topic, encode_batch([encode_envelope(envelope(7))]), qos=1)
        api = hub.api_port or 0
        wait_for(
            lambda: [d["watermark"] for d in get(api, "/v1/devices")] == [7], 20, "watermark 7"
        )
        assert [s for s, _, _ in timeline_rows(tmp_path / "timeline.db")] == [1, 6, 7]
        reasons = [d["reason"] for d in get(api, "/v1/dead-letters")]
        for needle in ("nesting deeper than 32", "5001 digits", "NaN", "surrogate", "seq"):
            assert any(needle in r for r in reasons), f"no dead letter says {needle!r}"
        assert any(r.startswith("nesting deeper") for r in reasons)  # the unreadable message
        assert hub.proc is not None and hub.proc.poll() is None, "the hub died"
        assert "Traceback" not in (tmp_path / "hub.log").read_text()
    finally:
        client.loop_stop()
        client.disconnect()
        hub.stop()


async def test_a_client_cannot_post_the_agents_own_notices(tmp_path: Path) -> None:
    """An ``outbox.evicted`` from a client would make the hub account seqs the agent still
    holds: refused with 400, nothing stored."""
    from edge_agent.api import parse_submission
    from edge_agent.clock import Clock
    from edge_agent.wire.envelope import EnvelopeError

    notice = {
        "type": "outbox.evicted",
        "data": {"ranges": [[1, 5]], "count": 5, "reason": "size-cap"},
    }
    with pytest.raises(EnvelopeError, match="agent's own"):
        parse_submission(Clock("system"), notice, 10)
    scan = {"type": "scan", "data": {"text": "JJD1", "symbology": "code128", "source": "h"}}
    with pytest.raises(EnvelopeError, match=r"events\[1\]\.type"):
        parse_submission(Clock("system"), [scan, notice], 10)
