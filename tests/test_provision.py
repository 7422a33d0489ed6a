"""``edge-agent provision``: the claim, the checks of the hub's answer, the device file, and the
command itself as a subprocess against a real hub (and a stand-in only where a real hub cannot
misbehave: a certificate for another key, a role other than asked, a 500)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.config import AgentConfig
from edge_agent.platform.units import parse_bytes
from edge_agent.platform.yamlconf import load_model
from edge_agent.provision import (
    Identity,
    Refused,
    UsageError,
    check_answer,
    device_config,
    parse_claim,
    render_config,
)
from hub_bridge import pki
from simulators.broker import Mosquitto, TlsFiles, free_port
from tests.harness import Proc, post, scan_event, timeline_rows, wait_for, write_hub_config

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "firmware_configs"
TOKEN = "A" * 21 + "b-_" + "9" * 19  # the shape of a claim token: 43 url-safe characters
NOW = dt.datetime.now(dt.UTC)


def _answer(ca: pki.Authority, public_key: Any, **override: Any) -> dict[str, Any]:
    cert = pki.issue_certificate(ca.cert, ca.key, public_key, "acme", "van-042")
    answer: dict[str, Any] = {
        "fleet": "acme",
        "device": "van-042",
        "role": "van",
        "certificate": pki.cert_pem(cert).decode(),
        "ca": pki.cert_pem(ca.cert).decode(),
        "broker": "mqtts://hub.example.net:8883",
        "hub_api": "https://hub.example.net",
    }
    answer.update(override)
    return answer


# ---------------------------------------------------------------------------------------------
# the claim text


def test_claim_text_and_bare_token() -> None:
    claim = parse_claim(f"lmclaim:https://hub.example.net:8443/api/#{TOKEN}", None)
    assert claim is not None
    assert (claim.hub_api, claim.token) == ("https://hub.example.net:8443/api", TOKEN)
    # --hub wins over the URL in the text (another route to the same hub)
    claim = parse_claim(f"lmclaim:https://hub.example.net#{TOKEN}", "http://10.0.0.5:8081")
    assert claim is not None
    assert claim.hub_api == "http://10.0.0.5:8081"
    claim = parse_claim(f"  {TOKEN}\n", "http://10.0.0.5:8081/")
    assert claim is not None
    assert (claim.hub_api, claim.token) == ("http://10.0.0.5:8081", TOKEN)
    assert parse_claim(None, None) is None


@pytest.mark.parametrize(
    ("claim", "hub", "says"),
    [
        (f"lmclaim:https://hub.example.net/{TOKEN}", None, "without '#TOKEN'"),
        (f"lmclaim:ftp://hub.example.net#{TOKEN}", None, "not an http:// or https://"),
        (f"lmclaim:#{TOKEN}", None, "not an http:// or https://"),
        ("lmclaim:https://hub.example.net#short", None, "not a claim token"),
        ("lmclaim:https://hub.example.net#" + "x" * 20 + "!" * 23, None, "not a claim token"),
        (TOKEN, None, "--hub URL is needed"),
        (TOKEN, "hub.example.net", "--hub"),
        (TOKEN, "http://hub.example.net:99999", "bad port"),
    ],
)
def test_claim_refused_with_the_reason(claim: str, hub: str | None, says: str) -> None:
    with pytest.raises(UsageError, match=None) as exc:
        parse_claim(claim, hub)
    assert says in str(exc.value)


# ---------------------------------------------------------------------------------------------
# the hub's answer


def test_a_good_answer_gives_the_identity() -> None:
    ca, key = pki.make_ca(), ec.generate_private_key(ec.SECP256R1())
    identity = check_answer(_answer(ca, key.public_key()), key, NOW)
    assert (identity.fleet, identity.device, identity.role) == ("acme", "van-042", "van")
    assert identity.name == "acme/van-042"
    assert identity.broker == "mqtts://hub.example.net:8883"
    assert identity.not_after > NOW + dt.timedelta(days=800)


def _other_ca_same_name() -> pki.Authority:
    # the same subject as the real CA but another key: only the signature tells them apart
    return pki.make_ca()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("another key", "for another key"),
        ("another ca", "signature does not verify"),
        ("ca missing", "not the CA"),
        ("not a ca", "not a CA"),
        ("names differ", "the answer says acme/van-043"),
        ("path in name", "not a DESIGN name"),
        ("bad role", "not van or station"),
        ("bad broker", "broker"),
        ("no certificate", "certificate: missing"),
        ("garbage certificate", "not a PEM certificate"),
        ("expired", "expired on"),
        ("not an object", "not a JSON object"),
    ],
)
def test_a_bad_answer_is_refused(case: str, says: str) -> None:
    ca, key = pki.make_ca(), ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    answer: object = _answer(ca, key.public_key())
    assert isinstance(answer, dict)
    if case == "another key":
        answer = _answer(ca, other_key.public_key())
    elif case == "another ca":
        answer["ca"] = pki.cert_pem(_other_ca_same_name().cert).decode()
    elif case == "ca missing":
        leaf = pki.issue_certificate(ca.cert, ca.key, other_key.public_key(), "acme", "x")
        answer["ca"] = pki.cert_pem(leaf).decode()
    elif case == "not a ca":
        # a leaf made to look like the issuer: same subject, signs, but no CA constraint
        fake = pki.issue_certificate(ca.cert, ca.key, other_key.public_key(), "acme", "van-042")
        answer = _answer(ca, key.public_key())
        answer["certificate"] = pki.cert_pem(_signed_by_leaf(fake, other_key, key)).decode()
        answer["ca"] = pki.cert_pem(fake).decode()
    elif case == "names differ":
        answer["device"] = "van-043"
    elif case == "path in name":
        answer["device"] = "../../etc/passwd"
    elif case == "bad role":
        answer["role"] = "truck"
    elif case == "bad broker":
        answer["broker"] = "http://hub.example.net"
    elif case == "no certificate":
        del answer["certificate"]
    elif case == "garbage certificate":
        answer["certificate"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    elif case == "expired":
        old = pki.issue_certificate(
            ca.cert, ca.key, key.public_key(), "acme", "van-042", days=1,
            now=NOW - dt.timedelta(days=3),
        )  # fmt: skip
        answer["certificate"] = pki.cert_pem(old).decode()
    elif case == "not an object":
        answer = [answer]
    with pytest.raises(Refused) as exc:
        check_answer(answer, key, NOW)
    assert says in str(exc.value)


def _signed_by_leaf(issuer: Any, issuer_key: Any, key: Any) -> Any:
    """A client certificate for ``key`` signed by a certificate that is not a CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme/van-042")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


# ---------------------------------------------------------------------------------------------
# the device file


def _identity(role: str = "van", device: str = "van-042") -> Identity:
    return Identity(
        "acme", device, role, b"", b"", "mqtts://hub.example.net:8883", None,  # type: ignore[arg-type]
        NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("role", "profile"), [("van", "van-gateway.yaml"), ("station", "station.yaml")]
)
def test_device_file_from_the_profile(tmp_path: Path, role: str, profile: str) -> None:
    conf, state = tmp_path / "etc", tmp_path / "state"
    base = yaml.safe_load((PROFILES / profile).read_text())
    base["broker"]["username"], base["broker"]["password"] = "someone", "hunter2"
    data = device_config(base, _identity(role, "dev-7"), conf, state, from_profile=True)
    text = render_config(data, str(PROFILES / profile), NOW)
    cfg = load_model(AgentConfig, tmp_path / "dev-7.yaml", text)
    assert (cfg.device.id, cfg.device.fleet, cfg.device.role) == ("dev-7", "acme", role)
    assert cfg.broker.url == "mqtts://hub.example.net:8883"
    assert cfg.broker.tls is not None
    assert (cfg.broker.tls.ca, cfg.broker.tls.cert, cfg.broker.tls.key) == (
        conf / "ca.crt",
        conf / "device.crt",
        conf / "device.key",
    )
    assert cfg.broker.credentials == (None, None)
    assert cfg.outbox.path == state / "outbox.db"
    assert cfg.api.token_file == conf / "api-token"
    # the profile's own settings stay: its outbox cap, its devices
    assert cfg.outbox.max_bytes == parse_bytes(yaml.safe_load(
        (PROFILES / profile).read_text())["outbox"]["max_bytes"])  # fmt: skip
    if role == "station":
        assert cfg.station is not None
        assert cfg.station.plan == conf / "loadplan.json"  # moved with the config folder
    else:
        assert cfg.gnss is not None
    assert "hunter2" not in text


def test_an_existing_file_keeps_its_outbox_and_edits(tmp_path: Path) -> None:
    existing = {
        "device": {"id": "van-041", "fleet": "old", "role": "van"},
        "broker": {"url": "mqtt://old:1883", "keepalive": "10s"},
        "outbox": {"path": "/data/outbox.db", "max_bytes": "64MiB"},
        "api": {"listen": "127.0.0.1:9000", "token": "x" * 20},
        "gnss": {"source": "socket://127.0.0.1:2947"},
    }
    data = device_config(existing, _identity(), tmp_path, tmp_path / "s", from_profile=False)
    cfg = load_model(AgentConfig, tmp_path / "f.yaml", render_config(data, "f", NOW))
    assert cfg.outbox.path == Path("/data/outbox.db")  # moving it would orphan its events
    assert cfg.broker.keepalive == 10.0
    assert cfg.api.listen == "127.0.0.1:9000"
    assert (cfg.api.token, cfg.api.token_file) == (None, tmp_path / "api-token")
    assert cfg.gnss is not None
    assert cfg.device.id == "van-042"
    assert existing["device"]["id"] == "van-041"  # the input is not changed in place


# ---------------------------------------------------------------------------------------------
# the command, as a technician runs it


def provision(
    *args: str, path_prefix: str | None = None, path: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``edge-agent provision ARGS`` in a subprocess, as a technician runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env.get('PATH', '')}"
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "provision", *args],
        input=stdin or "",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def snapshot(*folders: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under the folders: (mode, uid, content); folders too (mode, uid, b"")."""
    seen: dict[str, tuple[int, int, bytes]] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in [folder, *sorted(folder.rglob("*"))]:
            st = path.stat()
            body = path.read_bytes() if path.is_file() else b""
            seen[str(path)] = (stat.S_IMODE(st.st_mode), st.st_uid, body)
    return seen


def service_user() -> tuple[str, int]:
    """The --user the tests pass and the owner expected: nobody when root, else ourselves."""
    if os.geteuid() == 0:
        return "nobody", pwd.getpwnam("nobody").pw_uid
    return "nobody", os.geteuid()


class StandIn:
    """A hub's ``POST /v1/provision`` that can be told to misbehave, for what a real hub never
    does (it signs the CSR's key, for the claim's device and role)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.ca = pki.make_ca()
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body})
                status, answer = outer.answer(body)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, body: dict[str, Any]) -> tuple[int, object]:
        if self.mode == "500":
            return 500, {"error": "database is locked"}
        key: Any = pki.parse_csr(body["csr"]).public_key()
        role = "van"
        if self.mode == "another key":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        elif self.mode == "station":
            role = "station"
        cert = pki.issue_certificate(self.ca.cert, self.ca.key, key, "acme", "van-042")
        return 201, {
            "fleet": "acme",
            "device": "van-042",
            "role": role,
            "certificate": pki.cert_pem(cert).decode(),
            "ca": pki.cert_pem(self.ca.cert).decode(),
            "broker": "mqtts://127.0.0.1:8883",
            "hub_api": self.url,
        }

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A config folder and a state folder that do not exist yet, as on a fresh device."""
    return tmp_path / "etc" / "edge-agent", tmp_path / "var" / "edge-agent"


def _args(conf: Path, state: Path, *more: str) -> list[str]:
    user, _ = service_user()
    return ["--config-dir", str(conf), "--state-dir", str(state), "--user", user, *more]


@pytest.mark.parametrize(
    ("mode", "role", "code", "says"),
    [
        ("another key", None, 1, "for another key"),
        ("station", "van", 1, "the claim is for a station and --role says van"),
        ("500", None, 3, "the hub failed (500): database is locked"),
    ],
)
def test_a_bad_answer_writes_nothing(
    dirs: tuple[Path, Path], mode: str, role: str | None, code: int, says: str
) -> None:
    conf, state = dirs
    with StandIn(mode) as hub:
        more = ["--role", role] if role else []
        done = provision(*_args(conf, state, "--claim", f"lmclaim:{hub.url}#{TOKEN}", *more))
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert len(hub.requests) == 1
    assert hub.requests[0]["path"] == "/v1/provision"
    assert hub.requests[0]["body"]["claim"] == TOKEN
    assert "PRIVATE KEY" not in json.dumps(hub.requests)  # only the CSR travels
    assert snapshot(conf.parent, state.parent) == {}


def test_an_unreachable_hub_is_exit_3_and_writes_nothing(dirs: tuple[Path, Path]) -> None:
    conf, state = dirs
    done = provision(
        *_args(conf, state, "--hub", f"http://127.0.0.1:{free_port()}"), "--claim", TOKEN
    )
    assert done.returncode == 3, done.stderr
    assert "cannot reach the hub" in done.stderr
    assert snapshot(conf.parent, state.parent) == {}


def test_nothing_is_sent_when_the_device_file_could_not_be_written(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    conf, state = dirs
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    bad = (PROFILES / "van-gateway.yaml").read_text().replace("watchdog:", "watchdgo:")
    (profiles / "van-gateway.yaml").write_text(bad)
    (profiles / "station.yaml").write_text((PROFILES / "station.yaml").read_text())
    with StandIn("good") as hub:
        done = provision(
            *_args(conf, state, "--claim", f"lmclaim:{hub.url}#{TOKEN}"),
            "--profiles", str(profiles), "--no-enable",
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "van-gateway.yaml would not load" in done.stderr
    assert "gnss.watchdgo: unknown key" in done.stderr
    assert hub.requests == []  # the claim is not spent on a profile the agent refuses
    assert snapshot(conf.parent, state.parent) == {}


def test_a_key_that_is_not_ours_to_replace_is_left_alone(dirs: tuple[Path, Path]) -> None:
    conf, state = dirs
    conf.mkdir(parents=True)
    (conf / "device.key").write_bytes(pki.key_pem(rsa.generate_private_key(65537, 2048)))
    before = snapshot(conf)
    with StandIn("good") as hub:
        done = provision(*_args(conf, state, "--claim", f"lmclaim:{hub.url}#{TOKEN}"))
    assert done.returncode == 2, done.stderr
    assert "not an EC P-256 key" in done.stderr
    assert hub.requests == []
    assert snapshot(conf) == before


def test_without_systemctl_it_says_what_to_run(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    conf, state = dirs
    empty = tmp_path / "bin"
    empty.mkdir()
    with StandIn("good") as hub:
        done = provision(
            *_args(conf, state, "--claim", f"lmclaim:{hub.url}#{TOKEN}"), path=str(empty)
        )
    assert done.returncode == 0, done.stderr
    assert "service: no systemctl here: start the agent with `systemctl enable --now " in (
        done.stdout
    )
    assert done.stdout.splitlines()[-1] == f"next: edge-agent doctor --config {conf}/van-042.yaml"


@pytest.mark.parametrize(("fails", "code"), [(False, 0), (True, 4)])
def test_the_unit_is_enabled_with_systemctl(
    dirs: tuple[Path, Path], tmp_path: Path, fails: bool, code: int
) -> None:
    conf, state = dirs
    bin_dir, calls = tmp_path / "bin", tmp_path / "systemctl.calls"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        + ('echo "Failed to enable unit: Access denied" >&2\nexit 1\n' if fails else "exit 0\n")
    )
    fake.chmod(0o755)
    with StandIn("good") as hub:
        done = provision(
            *_args(conf, state, "--claim", f"lmclaim:{hub.url}#{TOKEN}"), path_prefix=str(bin_dir)
        )
    assert done.returncode == code, done.stderr
    assert calls.read_text() == "enable --now edge-agent@van-042.service\n"
    if fails:
        assert "FAILED: systemctl enable --now edge-agent@van-042.service: Failed to enable" in (
            done.stdout
        )
    else:
        assert "service: edge-agent@van-042.service enabled and started" in done.stdout
    # the identity is there either way: a second run needs no claim, only the unit
    assert (conf / "van-042.yaml").is_file()


# ---------------------------------------------------------------------------------------------
# against a real hub: hub-bridge ca init, a mosquitto with the CA's broker certificate that
# requires client certificates, the hub with its own, claims from hub-bridge claim create


class Hub:
    """A running fleet: the CA folder, the TLS broker, the hub process and its files."""

    def __init__(self, folder: Path, broker: Mosquitto, proc: Proc, config: Path) -> None:
        self.folder = folder
        self.broker = broker
        self.proc = proc
        self.config = config
        self.timeline = folder / "timeline.db"

    def claim(self, device: str, role: str = "van", ttl: str = "10m") -> str:
        """``hub-bridge claim create ... --json``: the lmclaim: text."""
        done = hub_cli(
            "claim", "create", "--config", str(self.config), "--fleet", "acme",
            "--device", device, "--role", role, "--ttl", ttl, "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        text: str = json.loads(done.stdout)["claim"]
        return text


def hub_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``hub-bridge ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "hub_bridge", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One fleet for the module's tests (each claims its own device)."""
    folder = tmp_path_factory.mktemp("hub")
    pki_dir = folder / "pki"
    done = hub_cli("ca", "init", "--dir", str(pki_dir))
    assert done.returncode == 0, done.stderr
    tls = TlsFiles(ca=pki_dir / "ca.crt", cert=pki_dir / "broker.crt", key=pki_dir / "broker.key")
    with Mosquitto(tls=tls) as broker:
        client = {
            "ca": str(tls.ca),
            "cert": str(pki_dir / "hub.crt"),
            "key": str(pki_dir / "hub.key"),
        }
        config = write_hub_config(
            folder,
            broker.url,
            broker={"tls": client},
            pki={"dir": str(pki_dir), "broker_url": broker.url},
        )
        proc = Proc("hub_bridge", config, folder / "hub.log")
        proc.start()
        try:
            yield Hub(folder, broker, proc, config)
        finally:
            proc.stop()


def test_a_fresh_van_is_provisioned_and_its_event_reaches_the_timeline(
    hub: Hub, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    conf, state = dirs
    _, uid = service_user()
    claim = hub.claim("van-101")
    started = time.monotonic()
    done = provision(*_args(conf, state, "--claim", claim, "--no-enable"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(": " in line for line in lines)  # one "step: what" line per step, plain text
    assert "certificate: acme/van-101 (van)" in done.stdout
    files = snapshot(conf)
    modes = {Path(p).name: (mode, owner) for p, (mode, owner, _) in files.items()}
    assert modes == {
        "edge-agent": (0o750, uid),  # the agent may replace its device file (cmd/config)
        "device.key": (0o600, uid),
        "api-token": (0o600, uid),
        "device.crt": (0o644, uid),
        "ca.crt": (0o644, uid),
        "van-101.yaml": (0o640, uid),
    }
    assert snapshot(state)[str(state)][:2] == (0o700, uid)
    assert files[str(conf / "ca.crt")][2] == (hub.folder / "pki" / "ca.crt").read_bytes()
    token = files[str(conf / "api-token")][2].strip()
    assert len(token) == 43
    # the hub recorded the certificate it issued, for this device's key
    key = pki.load_private_key(conf / "device.key")
    cert = pki.load_certificate(conf / "device.crt")
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert pki.issued_by(cert, pki.load_certificate(hub.folder / "pki" / "ca.crt"))

    # the agent's own loader and `edge-agent config` accept the file as written
    shown = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "--config", str(conf / "van-101.yaml")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    effective = json.loads(shown.stdout)
    assert effective["broker"]["url"] == hub.broker.url
    assert effective["device"] == {"id": "van-101", "fleet": "acme", "role": "van"}

    # a technician's edits for this test bench: the API on a free loopback port, no GNSS
    # receiver; then the agent runs on the provisioned identity over mutual TLS
    device_file = conf / "van-101.yaml"
    data = yaml.safe_load(device_file.read_text())
    data["api"]["listen"] = f"127.0.0.1:{free_port()}"
    data["uplink"] = {"ack_timeout": "3s", "backoff_max": "1s"}
    del data["gnss"]
    device_file.write_text(yaml.safe_dump(data))
    agent = Proc("edge_agent", device_file, tmp_path / "agent.log")
    agent.start()
    try:
        assert agent.api_port is not None
        status, body = post(agent.api_port, scan_event(1))
        assert status == 201, body
        wait_for(lambda: timeline_rows(hub.timeline, "van-101") != [], 30, "the first event")
        elapsed = time.monotonic() - started
    finally:
        agent.stop()
    rows = timeline_rows(hub.timeline, "van-101")
    assert [row[1] for row in rows] == [body["id"]]
    # the figure, not an assertion (a shared machine): claim to the first event in the timeline
    print(f"provision to first event in the timeline: {elapsed:.2f} s")

    # the edits survive a renewal with a new claim (the key is kept, the outbox not moved)
    before_key = (conf / "device.key").read_bytes()
    again = provision(
        *_args(conf, state, "--claim", hub.claim("van-101"), "--renew", "--no-enable")
    )
    assert again.returncode == 0, again.stderr
    assert "updated (provisioned fields; the rest kept)" in again.stdout
    assert (conf / "device.key").read_bytes() == before_key
    kept = yaml.safe_load(device_file.read_text())
    assert kept["api"]["listen"] == data["api"]["listen"]
    assert "gnss" not in kept
    assert pki.load_certificate(conf / "device.crt").serial_number != cert.serial_number


def test_a_rerun_is_idempotent_and_needs_no_claim(hub: Hub, dirs: tuple[Path, Path]) -> None:
    conf, state = dirs
    claim = hub.claim("van-102")
    # the claim read from standard input (scanned from the QR code), not from argv
    first = provision(*_args(conf, state, "--claim", "-", "--no-enable"), stdin=claim + "\n")
    assert first.returncode == 0, first.stderr
    files = snapshot(conf, state)
    for more in ([], ["--claim", claim]):  # without a claim, and with the spent one
        again = provision(*_args(conf, state, *more, "--no-enable"))
        assert again.returncode == 0, again.stderr
        assert "holds this key: no claim needed" in again.stdout
        assert ("the one given was not used" in again.stdout) == bool(more)
        assert snapshot(conf, state) == files
    # a key loosened by hand (or made before the service user existed) is put right
    (conf / "device.key").chmod(0o644)
    fixed = provision(*_args(conf, state, "--no-enable"))
    assert fixed.returncode == 0, fixed.stderr
    assert "owner: set" in fixed.stdout
    assert "device.key" in fixed.stdout
    assert snapshot(conf, state) == files


@pytest.mark.parametrize("how", ["used", "expired", "unknown"])
def test_a_claim_refused_by_the_hub_writes_nothing(
    hub: Hub, dirs: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    conf, state = dirs
    device = f"van-2{len(how)}{how[0]}"
    claim = hub.claim(device)
    if how == "used":
        other = tmp_path / "other"
        spent = provision(*_args(other / "etc", other / "var", "--claim", claim, "--no-enable"))
        assert spent.returncode == 0, spent.stderr
    elif how == "expired":
        with sqlite3.connect(hub.timeline) as db:  # the hub's own store: as if an hour had passed
            db.execute("UPDATE claims SET expires = 0 WHERE device = ?", (device,))
    else:
        claim = claim[: -len(TOKEN)] + TOKEN
    done = provision(*_args(conf, state, "--claim", claim, "--no-enable"))
    assert done.returncode == 1, done.stderr
    assert "the hub refused (403)" in done.stderr
    assert snapshot(conf.parent, state.parent) == {}
