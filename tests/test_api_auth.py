"""The local API on the van's Wi-Fi (issue 10, item 4): a bearer token for every client but
loopback, rotated without a restart, and rate limits per client address.

The token buckets and the guard are checked first with a fake clock (exact refusals and
``Retry-After`` values, a bounded table under a flood of addresses). Then real agent processes
listening on every address: the "phone" is a thread of this test that joined a network
namespace behind a veth pair (``tests.netns``), so the agent sees it at a real non-loopback
address; a second client is this process reaching the agent through the root end of the link
(again not loopback); loopback is 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge_agent.api import LOOPBACK, BearerToken, Guard, client_key, openapi_document
from edge_agent.config import ApiConfig, RateConfig, load_agent_config
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.ratelimit import RateLimiter, parse_rate, retry_after
from edge_agent.platform.yamlconf import ConfigError
from simulators.broker import free_port
from tests.harness import ROOT, Proc, get, scan_event, write_agent_config
from tests.netns import NetnsUnavailable, VanNet

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def new_token() -> str:
    """A token as ``edge-agent provision`` makes one: 32 random bytes, url-safe base64."""
    return secrets.token_urlsafe(32)


# -- token buckets (pure, fake clock) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("50/s", 50.0), ("10/min", 10 / 60), ("600/h", 600 / 3600), ("2/d", 2 / 86400),
     (" 1.5 / sec ", 1.5), (20, 20.0), (0.5, 0.5)],
)  # fmt: skip
def test_rates_are_read_with_their_unit(text: object, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize(
    ("text", "error"),
    [("50", "not a rate"), ("50/fortnight", "unknown unit"), ("0/s", "above zero"),
     (-1, "above zero"), (True, "boolean"), ([1], "number or COUNT/UNIT")],
)  # fmt: skip
def test_bad_rates_are_named(text: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_rate(text)


def test_a_bucket_gives_its_burst_then_one_token_per_period() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_keys=10)
    assert [limiter.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 100.0) == pytest.approx(0.5)  # one token every half second
    assert limiter.take("a", 100.25) == pytest.approx(0.25)  # a refusal takes nothing
    assert limiter.take("a", 100.5) == 0.0
    assert limiter.take("b", 100.5) == 0.0  # another key has its own bucket
    # long idle refills up to the burst, not beyond
    assert [limiter.take("a", 1000.0) for _ in range(4)][-1] == pytest.approx(0.5)
    assert limiter.peek("a", 1000.0) == pytest.approx(0.5)
    assert limiter.take("a", 999.0) == pytest.approx(0.5)  # a clock going back refills nothing


def test_peek_never_adds_a_key() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    assert limiter.peek("new", 0.0) == 0.0
    assert "new" not in limiter and len(limiter) == 0


def test_the_table_stays_bounded_and_forgets_the_least_recent_first() -> None:
    limiter = RateLimiter(rate=1 / 3600, burst=2, max_keys=100)
    limiter.take("drained", 0.0)
    limiter.take("drained", 0.0)
    assert limiter.take("drained", 0.0) > 3000  # refused for about an hour
    for i in range(99):  # fills the table: the drained client is still remembered
        limiter.take(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(limiter) == 100 and limiter.evicted == 0
    assert limiter.take("drained", 2.0) > 3000
    for i in range(100_000):  # a flood of addresses: the table never grows past its bound
        limiter.take(("flood", i), 3.0)
        assert len(limiter) <= 100
    assert limiter.evicted == 100_000  # every new key past the bound evicted one
    assert "drained" not in limiter
    assert limiter.take("drained", 4.0) == 0.0  # evicted: it starts again full (the price)


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.01, 2), (3599.2, 3600)])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_retry_after_never_overflows() -> None:
    assert retry_after(float("inf")) == 86400


# -- who is loopback, and the key of a client ----------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "loopback", "key"),
    [
        ("127.0.0.1", True, LOOPBACK),
        ("127.0.0.2", True, LOOPBACK),
        ("::1", True, LOOPBACK),
        ("::ffff:127.0.0.1", True, LOOPBACK),  # a dual-stack socket's view of IPv4 loopback
        ("192.0.2.7", False, "192.0.2.7"),
        ("::ffff:192.0.2.7", False, "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", False, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", False, "2001:db8:1:2::/64"),  # the same host's /64
        ("fe80::1%wlan0", False, "fe80::/64"),
        (None, False, "unknown"),
    ],
)
def test_client_keys(peer: str | None, loopback: bool, key: str) -> None:
    assert client_key(peer) == (loopback, key)


# -- the configuration ---------------------------------------------------------------------------


def agent_yaml(tmp_path: Path, api: str) -> Path:
    path = tmp_path / "van.yaml"
    path.write_text(
        "device: {id: van-042, fleet: acme}\n"
        f"outbox: {{path: {tmp_path / 'outbox.db'}}}\n"
        "# the local API\n"
        f"api: {api}\n"
    )
    return path


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.0.2.7", "van-042.local"])
def test_a_network_listen_address_without_a_token_is_refused(tmp_path: Path, host: str) -> None:
    path = agent_yaml(tmp_path, f'{{listen: "{host}:8080"}}')
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value).startswith(f"{path}:4: api.listen: {host.strip('[]')} is not a loopback")
    assert "api.token_file" in str(info.value) and "api.token" in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "[::1]", "localhost", ""])
def test_loopback_needs_no_token(tmp_path: Path, host: str) -> None:
    assert load_agent_config(agent_yaml(tmp_path, f'{{listen: "{host}:8080"}}')).api.token is None


def test_a_token_file_or_a_token_opens_the_network(tmp_path: Path) -> None:
    token = new_token()
    by_file = load_agent_config(agent_yaml(tmp_path, '{listen: "0.0.0.0:8080", token_file: t}'))
    assert by_file.api.token_file == Path("t")
    inline = load_agent_config(
        agent_yaml(tmp_path, f'{{listen: "0.0.0.0:8080", token: "{token}"}}')
    )
    assert inline.api.token is not None and inline.api.token.get_secret_value() == token
    assert token not in repr(inline) and token not in json.dumps(inline.model_dump(mode="json"))


def test_both_a_token_and_a_token_file_is_one_too_many(tmp_path: Path) -> None:
    api = f'{{listen: "0.0.0.0:8080", token_file: t, token: "{new_token()}"}}'
    with pytest.raises(ConfigError, match=r":4: api.listen: .*one of them, not both"):
        load_agent_config(agent_yaml(tmp_path, api))


@pytest.mark.parametrize(
    ("token", "error"),
    [("short-but-secret", None), ("x" * 15, "must be 16 to 512 characters"),
     ("has spaces in the token!!", "may hold only"), ("ünïcode-token-1234", "may hold only")],
)  # fmt: skip
def test_a_weak_or_malformed_token_is_refused_without_quoting_it(
    tmp_path: Path, token: str, error: str | None
) -> None:
    path = agent_yaml(tmp_path, f'{{listen: "0.0.0.0:8080", token: "{token}"}}')
    if error is None:
        config = load_agent_config(path).api.token
        assert config is not None and config.get_secret_value() == token
        return
    with pytest.raises(ConfigError, match=f"api.token: {error}") as info:
        load_agent_config(path)
    assert token not in info.value.message  # (the file's path holds the test's name)


def test_rate_limits_are_configured_with_units(tmp_path: Path) -> None:
    api = "{rate: {per_client: 5/s, burst: 20, failed_auth: 3/min, clients: 64}}"
    rate = load_agent_config(agent_yaml(tmp_path, api)).api.rate
    assert (rate.per_client, rate.burst, rate.clients) == (5.0, 20, 64)
    assert rate.failed_auth == pytest.approx(0.05) and rate.limit_loopback is False
    with pytest.raises(ConfigError, match=r":4: api.rate.per_client: '5' is not a rate"):
        load_agent_config(agent_yaml(tmp_path, '{rate: {per_client: "5"}}'))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_the_agent_refuses_to_start_on_a_network_without_a_token(tmp_path: Path) -> None:
    path = agent_yaml(tmp_path, '{listen: "0.0.0.0:0"}')
    for command in ("run", "config"):
        done = run_cli(command, "--config", str(path))
        assert done.returncode == 2, done.stderr
        assert re.match(rf"{re.escape(str(path))}:4: api.listen: 0.0.0.0 ", done.stderr)
    assert not (tmp_path / "outbox.db").exists()  # refused before anything was opened


def test_edge_agent_config_masks_the_token(tmp_path: Path) -> None:
    token = new_token()
    done = run_cli(
        "config",
        "--config",
        str(agent_yaml(tmp_path, f'{{listen: "0.0.0.0:1", token: "{token}"}}')),
    )
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout
    assert json.loads(done.stdout)["api"]["token"] == "***"


# -- the token file --------------------------------------------------------------------------------


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` as a rotation does: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def test_the_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    first, second, third = new_token(), new_token(), new_token()
    replace_file(path, first + "\n")
    token = BearerToken(path=path)
    assert token.matches(first) and not token.matches(second)
    replace_file(path, second)
    token.refresh()
    assert token.matches(second) and not token.matches(first)
    # rewritten in place at once, same size: within the file system's timestamp granularity
    # the stat may not change at all; a young file is read every time
    path.write_text(third)
    token.refresh()
    assert token.matches(third) and not token.matches(second)


@pytest.mark.parametrize(
    ("content", "state", "detail"),
    [
        (None, "token-missing", "no such file"),
        (b"", "token-empty", "empty"),
        (b"  \n", "token-empty", "empty"),
        (b"\xff" * 20, "token-invalid", "not ASCII"),
        (b"a" * 5000, "token-invalid", "over 4096 bytes"),
        (b"too-short", "token-invalid", "16 to 512"),
    ],
)
def test_a_token_file_that_holds_no_token_lets_nobody_in(
    tmp_path: Path, content: bytes | None, state: str, detail: str
) -> None:
    path = tmp_path / "api-token"
    if content is not None:
        path.write_bytes(content)
    token = BearerToken(path=path)
    assert (token.state, token.usable) == (state, False)
    assert detail in token.detail and str(path) in token.detail
    assert not token.matches("")


def test_a_fifo_in_place_of_the_token_file_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    os.mkfifo(path)
    token = BearerToken(path=path)
    assert token.state == "token-invalid" and "not a regular file" in token.detail


# -- the guard (fake clock) ------------------------------------------------------------------------


@dataclass
class FakeClock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


def guard(**rate: Any) -> tuple[Guard, HealthRegistry, FakeClock, str]:
    token = new_token()
    health, clock = HealthRegistry(), FakeClock()
    config = ApiConfig(listen="0.0.0.0:8080", token=token, rate=RateConfig(**rate))
    return Guard(config, health, now=clock), health, clock, token


def status(answer: Any) -> int:
    return 0 if answer is None else int(answer.status)


def test_the_guard_limits_each_address_and_says_when_to_come_back() -> None:
    g, health, clock, token = guard(per_client="2/s", burst=3)
    auth = f"Bearer {token}"
    assert [status(g.check("192.0.2.7", auth)) for _ in range(4)] == [0, 0, 0, 429]
    refused = g.check("192.0.2.7", auth)
    assert refused is not None and refused.headers["Retry-After"] == "1"
    assert status(g.check("192.0.2.8", auth)) == 0  # another address is not affected
    assert all(status(g.check("127.0.0.1", None)) == 0 for _ in range(100))  # loopback exempt
    clock.t += 0.5
    assert status(g.check("192.0.2.7", auth)) == 0
    assert health.counters("api") == {"rate-limited": 2}


def test_loopback_may_be_limited_too() -> None:
    g, _, _, _ = guard(per_client="1/min", burst=2, limit_loopback=True)
    assert [status(g.check("::1", None)) for _ in range(3)] == [0, 0, 429]
    refused = g.check("127.0.0.5", None)  # all of loopback is one client
    assert refused is not None and refused.headers["Retry-After"] == "60"


def test_failed_guesses_lock_the_address_out_even_for_the_right_token() -> None:
    g, health, clock, token = guard(failed_auth="1/min", failed_auth_burst=3)
    wrong = f"Bearer {new_token()}"
    assert [status(g.check("192.0.2.7", wrong)) for _ in range(3)] == [401, 401, 401]
    locked = g.check("192.0.2.7", f"Bearer {token}")
    assert status(locked) == 429 and locked is not None and locked.headers["Retry-After"] == "60"
    assert status(g.check("192.0.2.8", f"Bearer {token}")) == 0
    clock.t += 60
    assert status(g.check("192.0.2.7", f"Bearer {token}")) == 0
    assert health.counters("api") == {"auth-refused": 3, "rate-limited": 1}


def test_the_guard_tracks_a_bounded_number_of_addresses() -> None:
    g, _, _, token = guard(clients=256)
    for i in range(50_000):  # an IPv6 host walking its /64 is one client
        assert status(g.check(f"2001:db8::{i:x}", f"Bearer {token}")) in (0, 429)
    assert len(g.requests) == 1
    for i in range(50_000):  # a flood of IPv4 addresses: the table stays at its bound
        g.check(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "Bearer wrong-token-wrong-token")
    assert len(g.requests) == 256 and len(g.failures) == 256
    assert g.requests.evicted == 50_000 + 1 - 256


def test_the_openapi_document_declares_the_bearer_scheme_and_the_refusals() -> None:
    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {} in doc["security"] and {"bearer": []} in doc["security"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "WWW-Authenticate" in responses["401"]["headers"], (path, method)
            assert "Retry-After" in responses["429"]["headers"], (path, method)


# -- real agents, a phone on the Wi-Fi -------------------------------------------------------------


@pytest.fixture
def van_net() -> Iterator[VanNet]:
    """The van's Wi-Fi: a namespace behind a veth pair; a skip only if this machine cannot make
    one (``LM_REQUIRE_NETNS=1``, set on CI, turns that into a failure)."""
    try:
        net = VanNet.create()
    except NetnsUnavailable as exc:
        if os.environ.get("LM_REQUIRE_NETNS") == "1":
            pytest.fail(f"LM_REQUIRE_NETNS=1 but {exc}")
        pytest.skip(str(exc))
    try:
        yield net
    finally:
        net.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def call(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request on a new connection."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn.request(method, path, None if body is None else json.dumps(body), hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw))
    finally:
        conn.close()


class Phone:
    """A client on the van's Wi-Fi: its requests run in a thread that joined the van's network
    namespace, so they leave from the van's address."""

    def __init__(self, net: VanNet) -> None:
        self.net = net
        self.address = net.van_addr
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]] | None] = queue.Queue()
        self._ready: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="phone", daemon=True)
        self._thread.start()
        problem = self._ready.get(timeout=10)
        if problem is not None:
            raise problem

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{self.net.name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only
                    raise OSError(ctypes.get_errno(), "setns into the van's namespace")
            finally:
                os.close(fd)
        except BaseException as exc:
            self._ready.put(exc)
            return
        self._ready.put(None)
        while (job := self._jobs.get()) is not None:
            fn, out = job
            try:
                out.put((True, fn()))
            except BaseException as exc:
                out.put((False, exc))

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the phone's thread; its result, or its exception raised here."""
        out: queue.Queue[Any] = queue.Queue()
        self._jobs.put((fn, out))
        ok, value = out.get(timeout=30)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def call(self, port: int, method: str, path: str, **kw: Any) -> Answer:
        """An HTTP request from the phone to the agent, reached at the root end of the link."""
        return self.run(lambda: call(self.net.host_addr, port, method, path, **kw))

    def post(self, port: int, token: str | None, i: int = 0, **kw: Any) -> Answer:
        return self.call(port, "POST", "/v1/events", body=scan_event(i), token=token, **kw)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(10)


@pytest.fixture
def phone(van_net: VanNet) -> Iterator[Phone]:
    p = Phone(van_net)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start a real agent listening on every address (no broker: it keeps trying, the API runs)."""
    procs: list[Proc] = []

    def start(**api: Any) -> Proc:
        cfg = write_agent_config(
            tmp_path, f"mqtt://127.0.0.1:{free_port()}", api={"listen": "0.0.0.0:0", **api}
        )
        proc = Proc("edge_agent", cfg, tmp_path / "agent.log")
        procs.append(proc)
        proc.start()
        return proc

    yield start
    for proc in procs:
        assert proc.stop() == 0, (tmp_path / "agent.log").read_text()[-3000:]


def api_health(port: int) -> dict[str, Any]:
    """The agent's API component, asked from loopback."""
    component: dict[str, Any] = get(port, "/v1/health")["components"]["api"]
    return component


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "api-token"
    replace_file(path, token + "\n")
    return path


def test_a_phone_needs_the_token_and_loopback_does_not(
    tmp_path: Path, start_agent: Callable[..., Proc], phone: Phone
) -> None:
    token = new_token()
    agent = start_agent(token_file=str(token_file(tmp_path, token)))
    port = agent.api_port
    assert port is not None

    bare = phone.post(port, None)
    assert bare.status == 401 and bare.headers["www-authenticate"] == 'Bearer realm="edge-agent"'
    assert "Bearer" in bare.body["error"]
    wrong = phone.post(port, new_token())
    assert wrong.status == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="edge-agent", error="invalid_token"'
    basic = phone.post(port, None, headers={"Authorization": f"Basic {token}"})
    assert basic.status == 401
    # a forwarding header is the client's word: it changes nothing
    forged = phone.post(port, None, headers={"X-Forwarded-For": "127.0.0.1"})
    assert forged.status == 401
    assert phone.call(port, "GET", "/v1/health").status == 401  # health too

    accepted = phone.post(port, token, 1)
    assert accepted.status == 201 and accepted.body["seq"] >= 1
    assert phone.call(port, "GET", "/v1/health", token=token).status == 200

    local = call("127.0.0.1", port, "POST", "/v1/events", body=scan_event(2))
    assert local.status == 201 and local.body["seq"] == accepted.body["seq"] + 1
    health = api_health(port)
    assert health["state"] == "ok" and health["access"] == "token file"
    assert health["counters"]["auth-refused"] == 5
    assert health["counters"]["accepted"] == 2


def test_a_rotated_token_works_at_once_without_a_restart(
    tmp_path: Path, start_agent: Callable[..., Proc], phone: Phone
) -> None:
    old, new, newer = new_token(), new_token(), new_token()
    path = token_file(tmp_path, old)
    agent = start_agent(token_file=str(path))
    port = agent.api_port
    assert port is not None and agent.proc is not None
    pid = agent.proc.pid
    assert phone.post(port, old).status == 201

    replace_file(path, new + "\n")
    assert phone.post(port, old).status == 401
    assert phone.post(port, new).status == 201

    path.unlink()  # a botched rotation: nobody but loopback gets in, and health says why
    missing = phone.post(port, new)
    assert missing.status == 401 and "no usable API token" in missing.body["error"]
    health = api_health(port)
    assert health["state"] == "token-missing" and str(path) in health["problem"]
    assert call("127.0.0.1", port, "POST", "/v1/events", body=scan_event(3)).status == 201

    path.write_text("")
    assert phone.post(port, new).status == 401
    assert api_health(port)["state"] == "token-empty"

    replace_file(path, newer + "\n")
    assert phone.post(port, newer).status == 201
    assert api_health(port)["state"] == "ok"
    assert agent.proc.poll() is None and agent.proc.pid == pid  # the same process throughout


def test_a_flooding_client_gets_429_and_the_others_do_not(
    tmp_path: Path, start_agent: Callable[..., Proc], phone: Phone, van_net: VanNet
) -> None:
    token = new_token()
    # one request an hour once the burst is spent: no refill during the test, exact counts
    agent = start_agent(
        token_file=str(token_file(tmp_path, token)), rate={"per_client": "1/h", "burst": 5}
    )
    port = agent.api_port
    assert port is not None

    flood = [phone.post(port, token, i) for i in range(12)]
    assert [a.status for a in flood] == [201] * 5 + [429] * 7
    retry = {int(a.headers["retry-after"]) for a in flood[5:]}
    assert all(3500 < r <= 3600 for r in retry), retry
    assert "per client" in flood[-1].body["error"]

    # another client on the network (this process, at the root end of the link) is not affected
    other = [
        call(van_net.host_addr, port, "POST", "/v1/events", body=scan_event(100 + i), token=token)
        for i in range(5)
    ]
    assert [a.status for a in other] == [201] * 5
    # nor is loopback (exempt by default)
    local = [
        call("127.0.0.1", port, "POST", "/v1/events", body=scan_event(200 + i)) for i in range(20)
    ]
    assert {a.status for a in local} == {201}
    counters = api_health(port)["counters"]
    assert counters["rate-limited"] == 7 and counters["accepted"] == 5 + 5 + 20


def test_guessing_the_token_locks_the_address_out(
    tmp_path: Path, start_agent: Callable[..., Proc], phone: Phone, van_net: VanNet
) -> None:
    token = new_token()
    agent = start_agent(
        token_file=str(token_file(tmp_path, token)),
        rate={"failed_auth": "1/h", "failed_auth_burst": 3},
    )
    port = agent.api_port
    assert port is not None
    guesses = [phone.post(port, new_token()) for _ in range(3)]
    assert [a.status for a in guesses] == [401, 401, 401]
    locked = phone.post(port, token)  # even the right token, now: a guess must not be told apart
    assert locked.status == 429 and 3500 < int(locked.headers["retry-after"]) <= 3600
    assert "failed authentications" in locked.body["error"]
    other = call(van_net.host_addr, port, "POST", "/v1/events", body=scan_event(9), token=token)
    assert other.status == 201
    counters = api_health(port)["counters"]
    assert counters["auth-refused"] == 3 and counters["rate-limited"] == 1
