"""Who may do what on the broker (DESIGN §2), proven against a real mosquitto.

The broker runs the shipped ``firmware_configs/mosquitto.conf`` (paths moved to temporary
folders, the listener to a free port) and, for the demo and other tests, the simulator's
``Mosquitto`` in the same mode; both read the shipped ``mosquitto.acl``. Certificates come from
the hub's PKI (``hub_bridge.pki``: ``init_ca`` for the CA, the hub and the broker, device
certificates issued as the provisioning endpoint issues them).

Every refusal is proven by what the other clients actually receive, never by a return code
alone: mosquitto 2.0 grants every subscription and filters what it delivers, and answers a
refused MQTT 3.1.1 publish with a plain PUBACK. To prove that nothing came without waiting for
a while, each check ends with a sentinel: a message the receiver may read, published after the
refused one was answered (PUBACK, SUBACK or CONNACK). mosquitto runs in one thread and queues
for each client in order, so whatever it would have delivered of the refused message would
have arrived before the sentinel.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import queue
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import load_agent_config
from edge_agent.wire import topics
from edge_agent.wire.limits import BATCH_MAX_BYTES
from hub_bridge import pki
from simulators.broker import Mosquitto, TlsFiles
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

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONF = ROOT / "firmware_configs" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "firmware_configs" / "mosquitto.acl"

FLEET = "acme"
HUB_STATE = topics.hub_state("hub")
MANIFEST = {
    "route": "r-1",
    "depot": {"lat": 52.5, "lon": 13.4, "radius_m": 80},
    "stops": [{"id": "s1", "lat": 52.51, "lon": 13.41, "radius_m": 60, "parcels": ["P1"]}],
}

Received = tuple[str, bytes, bool]
"""A message as a client got it: topic, payload, retained."""


# -- the fleet's certificates ----------------------------------------------------------------------


@dataclass
class Fleet:
    """The hub's PKI folder (``hub-bridge ca init``) and device certificates issued from it."""

    folder: Path
    authority: pki.Authority
    revoked: list[tuple[int, dt.datetime]] = field(default_factory=list)
    _devices: dict[str, TlsFiles] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.folder / pki.CA_CERT

    @property
    def crl(self) -> Path:
        return self.folder / pki.CRL

    @property
    def broker(self) -> TlsFiles:
        """The broker's server identity."""
        return TlsFiles(self.ca, self.folder / pki.BROKER_CERT, self.folder / pki.BROKER_KEY)

    @property
    def hub(self) -> TlsFiles:
        """The hub's client identity, CN ``_hub/hub``."""
        return TlsFiles(self.ca, self.folder / pki.HUB_CERT, self.folder / pki.HUB_KEY)

    def device(self, device: str, fleet: str = FLEET) -> TlsFiles:
        """A device's identity, CN ``{fleet}/{device}``, its key made here as on the device."""
        name = f"{fleet}.{device}"
        if name not in self._devices:
            key = pki.new_key()
            cert = pki.issue_certificate(
                self.authority.cert, self.authority.key, key.public_key(), fleet, device, 2
            )
            pki.write_private(self.folder / f"{name}.key", pki.key_pem(key))
            pki.write_public(self.folder / f"{name}.crt", pki.cert_pem(cert))
            self._devices[name] = TlsFiles(
                self.ca, self.folder / f"{name}.crt", self.folder / f"{name}.key"
            )
        return self._devices[name]

    def revoke(self, identity: TlsFiles) -> None:
        """Put the certificate on the CRL (as ``hub-bridge device revoke`` does)."""
        serial = pki.load_certificate(identity.cert).serial_number
        self.revoked.append((serial, dt.datetime.now(dt.UTC)))
        pki.write_crl(self.folder, self.authority, self.revoked)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    report = pki.init_ca(tmp_path / "pki")
    return Fleet(report.folder, report.authority)


# -- the broker ------------------------------------------------------------------------------------


class ShippedMosquitto(Mosquitto):
    """mosquitto running ``firmware_configs/mosquitto.conf`` itself: only its paths (to the
    test's PKI folder, the shipped ACL and a data folder), its listener (a free loopback port)
    and the user to run as are changed."""

    def __init__(self, fleet: Fleet, data: Path) -> None:
        super().__init__(tls=fleet.broker, crl=fleet.crl, use_identity_as_username=True)
        self.fleet = fleet
        self.data = data
        data.mkdir(parents=True, exist_ok=True)

    def config_text(self) -> str:
        text = SHIPPED_CONF.read_text()
        for old, new in {
            "\nlistener 8883\n": f"\nlistener {self.port} {self.host}\n",
            "/etc/mosquitto/certs/": f"{self.fleet.folder}/",
            "/etc/mosquitto/mosquitto.acl": str(SHIPPED_ACL),
            "/var/lib/mosquitto/": f"{self.data}/",
        }.items():
            assert old in text, f"the shipped mosquitto.conf no longer has {old.strip()!r}"
            text = text.replace(old, new)
        # mosquitto started by root becomes the "mosquitto" user, who cannot read tmp_path
        return f"{text}\nuser {getpass.getuser()}\n"

    def terminate(self) -> None:
        """SIGTERM (``systemctl stop``): mosquitto saves its persistence file and exits."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        self.proc = None


@pytest.fixture(params=["shipped-conf", "simulator"])
def fleet_broker(
    request: pytest.FixtureRequest, fleet: Fleet, tmp_path: Path
) -> Iterator[Mosquitto]:
    """The fleet's broker: the shipped configuration, and the simulator's equivalent mode."""
    broker: Mosquitto
    if request.param == "shipped-conf":
        broker = ShippedMosquitto(fleet, tmp_path / "mosquitto-data")
    else:
        broker = Mosquitto(
            tls=fleet.broker,
            acl=SHIPPED_ACL,
            crl=fleet.crl,
            use_identity_as_username=True,
            use_username_as_clientid=True,
        )
    with broker:
        yield broker


# -- an MQTT client that records what it gets ------------------------------------------------------


class Probe:
    """A paho client with a certificate (or none), recording every message and every answer.

    Its network loop (paho's thread) never reconnects: a refused or dropped connection stays
    dropped, as the tests need to see it."""

    def __init__(
        self,
        broker: Mosquitto,
        ca: Path,
        identity: TlsFiles | None,
        *,
        client_id: str = "",
        will: tuple[str, bytes] | None = None,
        protocol: MQTTProtocolVersion = paho.MQTTv5,
        persistent: bool = False,
    ) -> None:
        self.broker = broker
        self.protocol = protocol
        self.persistent = persistent
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        ctx = ssl.create_default_context(cafile=str(ca))
        if identity is not None:
            ctx.load_cert_chain(str(identity.cert), str(identity.key))
        self.client.tls_set_context(ctx)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.answered = threading.Event()
        self.connack: str | None = None
        self.lost = threading.Event()
        self._answers: dict[int, list[str]] = {}
        self._cond = threading.Condition()
        self._started = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # paho's callbacks, in the loop's thread

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connack = str(rc)
        self.answered.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.lost.set()
        self.answered.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _answer(self, mid: int, codes: list[str]) -> None:
        with self._cond:
            self._answers[mid] = codes
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        # 0x10 "No matching subscribers" is a success: accepted, nobody listening right now
        self._answer(mid, ["Success" if rc == 0x10 else str(rc)])

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: list[Any], _p: Any) -> None:
        self._answer(mid, [str(rc) for rc in rcs])

    def _wait_answer(self, mid: int, what: str) -> list[str]:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._answers or self.lost.is_set(), 10):
                raise AssertionError(f"no answer from the broker to {what}")
            if mid not in self._answers:
                raise AssertionError(f"the connection was lost waiting for the answer to {what}")
            return self._answers.pop(mid)

    # the test's side

    def connect(self) -> bool:
        """Connect; True once the broker accepted (CONNACK success), False if it refused or
        dropped the connection (a failed TLS handshake among them)."""
        props = None
        kwargs: dict[str, Any] = {}
        if self.protocol == paho.MQTTv5:
            kwargs["clean_start"] = not self.persistent
            if self.persistent:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 3600
        try:
            self.client.connect(
                self.broker.host, self.broker.port, keepalive=30, properties=props, **kwargs
            )
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        self._started = True
        if not self.answered.wait(10):
            raise AssertionError("the broker neither accepted nor refused the connection")
        return self.connack == "Success" and not self.lost.is_set()

    def subscribe(self, *filters: str) -> list[str]:
        """Subscribe (QoS 1) and return the SUBACK's reason codes."""
        rc, mid = self.client.subscribe([(f, 1) for f in filters])
        assert rc == paho.MQTT_ERR_SUCCESS and mid is not None
        return self._wait_answer(mid, f"SUBSCRIBE {filters}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> str:
        """Publish (QoS 1) and return the PUBACK's reason code (MQTT 5), once it came."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish to {topic}: {info.rc}"
        return self._wait_answer(info.mid, f"PUBLISH {topic}")[0]

    def until(self, topic: str, payload: bytes, timeout: float = 10.0) -> list[Received]:
        """Every message received before the sentinel ``(topic, payload)``, which must come."""
        seen: list[Received] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{payload!r} on {topic} never came; before: {seen}") from None
            if message[:2] == (topic, payload):
                return seen
            seen.append(message)

    def drop_link(self) -> None:
        """End the TCP connection without an MQTT DISCONNECT, as a van losing its link does."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # under TLS: no close_notify either
        assert self.lost.wait(10)

    def close(self) -> None:
        """Disconnect cleanly (no will) if still connected; stop the loop. Idempotent."""
        if self._started and not self.lost.is_set():
            self.client.disconnect()
            self.lost.wait(5)
        self.client.loop_stop()
        self._started = False
        # paho leaves its socket and its wake-up socket pair open when its thread ended by
        # itself (a lost connection): close them here, not in the garbage collector
        self.client._reset_sockets()


@pytest.fixture
def connect(fleet: Fleet, fleet_broker: Mosquitto) -> Iterator[Any]:
    """``connect(identity, **options)``: a connected Probe on the fleet broker (closed after)."""
    probes: list[Probe] = []

    def make(identity: TlsFiles | None, **options: Any) -> Probe:
        probe = Probe(fleet_broker, fleet.ca, identity, **options)
        probes.append(probe)
        assert probe.connect(), f"{identity} could not connect: {fleet_broker.log[-500:]}"
        return probe

    yield make
    for probe in probes:
        probe.close()


def ev(device: str) -> str:
    return topics.events(FLEET, device)


def st(device: str) -> str:
    return topics.state(FLEET, device)


def ack(device: str) -> str:
    return topics.ack(FLEET, device)


def cmd(device: str, name: str = "manifest") -> str:
    return topics.cmd(FLEET, device, name)


def cmd_ack(device: str) -> str:
    return topics.cmd_ack(FLEET, device)


HUB_FILTERS = (  # what the hub bridge subscribes to (hub_bridge/bridge.py)
    f"$share/hubs/{topics.PREFIX}/+/+/events",
    f"{topics.PREFIX}/+/+/state",
    f"{topics.PREFIX}/+/+/cmd-ack",
)


def device_filters(device: str) -> tuple[str, ...]:
    """What an agent subscribes to (edge_agent/uplink.py)."""
    return ack(device), topics.cmd(FLEET, device, "+"), topics.HUB_STATE_FILTER


NOT_AUTHORIZED = "Not authorized"


def not_its_own(seen: list[Received], device: str) -> list[Received]:
    """The messages in ``seen`` that ``device`` may not read (DESIGN §2)."""
    own = f"{topics.PREFIX}/{FLEET}/{device}/"
    return [
        m
        for m in seen
        if not (m[0] == ack(device) or m[0].startswith(f"{own}cmd/"))
        and not (m[0].startswith(f"{topics.PREFIX}/_hub/") and m[0].endswith("/state"))
    ]


# -- devices ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_van_cannot_publish_as_another_van(
    fleet: Fleet, connect: Any, fleet_broker: Mosquitto, protocol: MQTTProtocolVersion
) -> None:
    hub = connect(fleet.hub)
    hub.subscribe(*HUB_FILTERS)
    van_b = connect(fleet.device("van-b"))
    assert van_b.publish(st("van-b"), b"b-birth", retain=True) == "Success"
    assert hub.until(st("van-b"), b"b-birth") == []
    van_a = connect(fleet.device("van-a"), protocol=protocol)
    answers = [
        van_a.publish(ev("van-b"), b'{"events": ["forged"]}'),
        van_a.publish(st("van-b"), b"forged-offline", retain=True),
        van_a.publish(cmd_ack("van-b"), b'{"id": "c-1", "ok": true}'),
    ]
    if protocol == paho.MQTTv5:
        assert answers == [NOT_AUTHORIZED] * 3
    else:
        assert answers == ["Success"] * 3  # MQTT 3.1.1 cannot say: what arrives tells
    assert van_a.publish(ev("van-a"), b"sentinel") == "Success"
    assert hub.until(ev("van-a"), b"sentinel") == []
    # and nothing of it was retained: a fresh subscriber gets van B's own birth
    hub.close()
    again = connect(fleet.hub)
    again.subscribe(st("van-b"))
    assert again.messages.get(timeout=10) == (st("van-b"), b"b-birth", True)
    assert van_b.publish(st("van-b"), b"b-sentinel") == "Success"
    assert again.until(st("van-b"), b"b-sentinel") == []


def test_a_van_cannot_read_another_vans_acks_or_commands(fleet: Fleet, connect: Any) -> None:
    hub = connect(fleet.hub)
    assert hub.publish(ack("van-b"), b'{"seq": 7}', retain=True) == "Success"
    assert hub.publish(ack("van-a"), b'{"seq": 3}', retain=True) == "Success"
    van_b = connect(fleet.device("van-b"))
    van_b.subscribe(ack("van-b"), topics.cmd(FLEET, "van-b", "+"))
    assert van_b.until(ack("van-b"), b'{"seq": 7}') == []  # its own, retained
    van_a = connect(fleet.device("van-a"))
    # granted (mosquitto 2.0 filters on delivery): what matters is that nothing comes
    van_a.subscribe(ack("van-b"), topics.cmd(FLEET, "van-b", "+"), f"lm/v1/{FLEET}/+/ack")
    van_a.subscribe(ack("van-a"))
    seen = van_a.until(ack("van-a"), b'{"seq": 3}')
    seen += van_a.until(ack("van-a"), b'{"seq": 3}')  # retained for each filter it matches
    assert not_its_own(seen, "van-a") == []  # B's retained ack never came
    van_a.subscribe(topics.cmd(FLEET, "van-a", "+"))
    assert hub.publish(cmd("van-b"), b'{"id": "for-b"}') == "Success"
    assert hub.publish(ack("van-b"), b'{"seq": 8}', retain=True) == "Success"
    assert hub.publish(cmd("van-a"), b'{"id": "for-a"}') == "Success"
    assert van_a.until(cmd("van-a"), b'{"id": "for-a"}') == []
    assert van_b.until(ack("van-b"), b'{"seq": 8}') == [(cmd("van-b"), b'{"id": "for-b"}', False)]


def test_a_van_cannot_publish_acks_commands_or_hub_state(fleet: Fleet, connect: Any) -> None:
    hub = connect(fleet.hub)
    hub.subscribe(*HUB_FILTERS)
    van_b = connect(fleet.device("van-b"))
    van_b.subscribe(*device_filters("van-b"))
    van_a = connect(fleet.device("van-a"))
    van_a.subscribe(*device_filters("van-a"))
    forged = [
        (ack("van-b"), b'{"seq": 999999}', True),
        (ack("van-a"), b'{"seq": 999999}', True),  # not even its own: only the hub acks
        (cmd("van-b"), b'{"id": "forged"}', False),
        (cmd("van-a"), b'{"id": "forged"}', False),
        (HUB_STATE, b'{"state": "offline"}', True),
        (topics.hub_state("hub-2"), b'{"state": "online"}', True),
    ]
    for topic, payload, retain in forged:
        assert van_a.publish(topic, payload, retain=retain) == NOT_AUTHORIZED, topic
    assert hub.publish(HUB_STATE, b'{"state": "online"}', retain=True) == "Success"
    for probe in (van_a, van_b, hub):
        assert probe.until(HUB_STATE, b'{"state": "online"}') == []
    # nothing was retained either: van B connecting again finds no ack, and the hub's own
    # state alone (retained messages come in the order of the subscriptions)
    van_b.close()
    van_b = connect(fleet.device("van-b"))
    van_b.subscribe(ack("van-b"))
    van_b.subscribe(topics.HUB_STATE_FILTER)
    assert van_b.until(HUB_STATE, b'{"state": "online"}') == []
    van_b.subscribe(topics.cmd(FLEET, "van-b", "+"))
    assert hub.publish(cmd("van-b"), b"sentinel") == "Success"
    assert van_b.until(cmd("van-b"), b"sentinel") == []


def test_a_van_cannot_subscribe_to_everything(fleet: Fleet, connect: Any) -> None:
    hub = connect(fleet.hub)
    assert hub.publish(ack("van-b"), b'{"seq": 5}', retain=True) == "Success"
    van_b = connect(fleet.device("van-b"))
    assert van_b.publish(st("van-b"), b"b-birth", retain=True) == "Success"
    van_a = connect(fleet.device("van-a"))
    van_a.subscribe(
        "#",
        "lm/v1/#",
        "lm/v1/+/+/events",
        "lm/v1/+/+/state",
        f"lm/v1/{FLEET}/+/cmd/+",
        "$share/snoop/lm/v1/#",
        "$SYS/#",
    )
    assert van_b.publish(ev("van-b"), b'{"events": []}') == "Success"
    assert van_b.publish(cmd_ack("van-b"), b'{"id": "c", "ok": true}') == "Success"
    assert hub.publish(cmd("van-b"), b'{"id": "for-b"}') == "Success"
    assert hub.publish(ack("van-b"), b'{"seq": 6}', retain=True) == "Success"
    assert hub.publish(cmd("van-a"), b"sentinel") == "Success"
    seen = van_a.until(cmd("van-a"), b"sentinel")
    assert not_its_own(seen, "van-a") == []  # not one retained or live message of B


def test_a_will_on_another_devices_topic_is_never_published(
    fleet: Fleet, connect: Any, fleet_broker: Mosquitto
) -> None:
    hub = connect(fleet.hub)
    hub.subscribe(*HUB_FILTERS)
    # a will on its own state works under the ACL (the agent's "offline")
    van_c = connect(fleet.device("van-c"), will=(st("van-c"), b"c-lost"))
    van_c.drop_link()
    assert hub.until(st("van-c"), b"c-lost") == []
    # a will on another's is accepted at CONNECT (mosquitto 2.0.11) but never published
    van_a = connect(fleet.device("van-a"), will=(st("van-b"), b"b-forged-offline"))
    van_a.drop_link()
    # once mosquitto accepted van A again (same identity, so the same client id), the old
    # connection is gone and its will was either published or dropped
    again = connect(fleet.device("van-a"))
    assert again.publish(ev("van-a"), b"sentinel") == "Success"
    assert hub.until(ev("van-a"), b"sentinel") == []


def test_a_van_cannot_take_over_another_vans_session(fleet: Fleet, connect: Any) -> None:
    van_a = connect(fleet.device("van-a"), client_id="edge-acme-van-a", persistent=True)
    van_a.subscribe(topics.cmd(FLEET, "van-a", "+"))
    hub = connect(fleet.hub)
    for client_id in ("edge-acme-van-a", "acme/van-a"):
        # the broker takes the client id from the certificate: B gets a session of its own
        van_b = connect(fleet.device("van-b"), client_id=client_id, persistent=True)
        van_b.subscribe(topics.cmd(FLEET, "van-b", "+"))
        assert hub.publish(cmd("van-a"), b'{"id": "for-a"}') == "Success"
        assert hub.publish(cmd("van-b"), b"sentinel") == "Success"
        assert van_b.until(cmd("van-b"), b"sentinel") == []
        assert van_a.until(cmd("van-a"), b'{"id": "for-a"}') == []  # A was never cut off
        assert not van_a.lost.is_set()
        van_b.close()


def test_without_the_client_id_from_the_certificate_a_van_cuts_another_off(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Why the shipped configuration sets use_username_as_clientid."""
    with Mosquitto(
        tls=fleet.broker, acl=SHIPPED_ACL, crl=fleet.crl, use_identity_as_username=True
    ) as broker:
        van_a = Probe(broker, fleet.ca, fleet.device("van-a"), client_id="edge-acme-van-a")
        van_b = Probe(broker, fleet.ca, fleet.device("van-b"), client_id="edge-acme-van-a")
        try:
            assert van_a.connect()
            assert van_b.connect()
            assert van_a.lost.wait(10), "van A was not taken over"
        finally:
            van_a.close()
            van_b.close()


# -- identity: certificates and the CRL ------------------------------------------------------------


def test_only_a_certificate_of_the_fleet_ca_connects(
    fleet: Fleet, fleet_broker: Mosquitto, tmp_path: Path
) -> None:
    other = pki.make_ca("someone else's CA")
    key = pki.new_key()
    cert = pki.issue_certificate(other.cert, other.key, key.public_key(), FLEET, "van-a", 2)
    pki.write_private(tmp_path / "stranger.key", pki.key_pem(key))
    pki.write_public(tmp_path / "stranger.crt", pki.cert_pem(cert))
    stranger = TlsFiles(fleet.ca, tmp_path / "stranger.crt", tmp_path / "stranger.key")
    for identity, accepted in ((None, False), (stranger, False), (fleet.device("van-a"), True)):
        probe = Probe(fleet_broker, fleet.ca, identity)
        try:
            assert probe.connect() is accepted, identity
        finally:
            probe.close()


def test_a_revoked_van_cannot_connect_once_the_broker_reads_the_crl(
    fleet: Fleet, fleet_broker: Mosquitto, connect: Any
) -> None:
    van_a, van_b = fleet.device("van-a"), fleet.device("van-b")
    hub = connect(fleet.hub)
    hub.subscribe(*HUB_FILTERS)
    fleet.revoke(van_a)
    # mosquitto does not watch the file: until it reads it again, van A still connects
    still = connect(van_a)
    fleet_broker.reload()  # SIGHUP (systemctl reload mosquitto): 2.0.11 reads the CRL again
    refused = Probe(fleet_broker, fleet.ca, van_a)
    try:
        assert not refused.connect()
    finally:
        refused.close()
    assert connect(van_b).publish(ev("van-b"), b"b-after-reload") == "Success"
    # the connection van A had open before the reload stays up (and may publish)
    assert still.publish(ev("van-a"), b"a-open-connection") == "Success"
    assert hub.until(ev("van-a"), b"a-open-connection") == [(ev("van-b"), b"b-after-reload", False)]
    # a restart cuts it, and it cannot come back
    fleet_broker.restart()
    assert still.lost.wait(10)
    for identity, accepted in ((van_a, False), (van_b, True)):
        probe = Probe(fleet_broker, fleet.ca, identity)
        try:
            assert probe.connect() is accepted, identity
        finally:
            probe.close()


def test_a_crl_past_its_next_update_refuses_every_device(
    fleet: Fleet, fleet_broker: Mosquitto
) -> None:
    """Why the hub's CRL runs as long as its CA (hub_bridge.pki.make_crl)."""
    now = dt.datetime.now(dt.UTC)
    lapsed = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(fleet.authority.cert.subject)
        .last_update(now - dt.timedelta(days=2))
        .next_update(now - dt.timedelta(days=1))
        .sign(fleet.authority.key, hashes.SHA256())
    )
    pki.write_public(fleet.crl, lapsed.public_bytes(serialization.Encoding.PEM))
    fleet_broker.reload()
    probe = Probe(fleet_broker, fleet.ca, fleet.device("van-b"))
    try:
        assert not probe.connect()
    finally:
        probe.close()
    pki.write_crl(fleet.folder, fleet.authority, [])  # a CRL made by the hub: all back
    fleet_broker.reload()
    probe = Probe(fleet_broker, fleet.ca, fleet.device("van-b"))
    try:
        assert probe.connect()
    finally:
        probe.close()


# -- the hub ---------------------------------------------------------------------------------------


def test_the_hub_reads_every_device_and_publishes_acks_and_commands(
    fleet: Fleet, connect: Any
) -> None:
    hub = connect(fleet.hub)
    hub.subscribe(*HUB_FILTERS)
    van_a = connect(fleet.device("van-a"))
    van_a.subscribe(*device_filters("van-a"))
    assert van_a.publish(st("van-a"), b"a-birth", retain=True) == "Success"
    assert van_a.publish(cmd_ack("van-a"), b'{"id": "c", "ok": true}') == "Success"
    assert van_a.publish(ev("van-a"), b"a-events") == "Success"
    assert hub.until(ev("van-a"), b"a-events") == [
        (st("van-a"), b"a-birth", False),  # live, not from the retained store
        (cmd_ack("van-a"), b'{"id": "c", "ok": true}', False),
    ]
    assert hub.publish(ack("van-a"), b'{"seq": 1}', retain=True) == "Success"
    assert hub.publish(cmd("van-a"), b'{"id": "c"}') == "Success"
    # but it cannot speak for a device, nor for another hub instance
    assert hub.publish(ev("van-a"), b"hub-forged") == NOT_AUTHORIZED
    assert hub.publish(topics.hub_state("hub-2"), b'{"state": "offline"}') == NOT_AUTHORIZED
    assert hub.publish(HUB_STATE, b'{"state": "online"}', retain=True) == "Success"
    assert van_a.until(HUB_STATE, b'{"state": "online"}') == [
        (ack("van-a"), b'{"seq": 1}', False),
        (cmd("van-a"), b'{"id": "c"}', False),
    ]
    assert van_a.publish(ev("van-a"), b"sentinel") == "Success"
    assert hub.until(ev("van-a"), b"sentinel") == [(HUB_STATE, b'{"state": "online"}', False)]


def test_the_shipped_broker_keeps_retained_acks_across_a_restart(
    fleet: Fleet, tmp_path: Path
) -> None:
    broker = ShippedMosquitto(fleet, tmp_path / "data")
    with broker:
        hub = Probe(broker, fleet.ca, fleet.hub)
        assert hub.connect()
        assert hub.publish(ack("van-a"), b'{"seq": 42}', retain=True) == "Success"
        hub.close()
        broker.terminate()
        assert (tmp_path / "data" / "mosquitto.db").exists()
        broker.start()
        van_a = Probe(broker, fleet.ca, fleet.device("van-a"))
        try:
            assert van_a.connect()
            van_a.subscribe(ack("van-a"))
            assert van_a.messages.get(timeout=10) == (ack("van-a"), b'{"seq": 42}', True)
        finally:
            van_a.close()


def test_the_shipped_broker_takes_the_largest_batch_but_no_huge_packet(
    fleet: Fleet, tmp_path: Path
) -> None:
    with ShippedMosquitto(fleet, tmp_path / "data") as broker:
        hub = Probe(broker, fleet.ca, fleet.hub)
        van_a = Probe(broker, fleet.ca, fleet.device("van-a"), protocol=paho.MQTTv311)
        van_b = Probe(broker, fleet.ca, fleet.device("van-b"))
        try:
            assert hub.connect() and van_a.connect() and van_b.connect()
            hub.subscribe(*HUB_FILTERS)
            batch = b"x" * BATCH_MAX_BYTES  # the contract's largest batch (and command)
            assert van_a.publish(ev("van-a"), batch) == "Success"
            assert hub.until(ev("van-a"), batch) == []
            # beyond max_packet_size (1 MiB) mosquitto cuts the client off (an MQTT 5 client
            # is told the limit in the CONNACK and does not even send it; 3.1.1 cannot be)
            van_a.client.publish(ev("van-a"), b"x" * (1 << 20), qos=1)
            assert van_a.lost.wait(10)
            assert van_b.publish(ev("van-b"), b"sentinel") == "Success"
            assert hub.until(ev("van-b"), b"sentinel") == []
        finally:
            for probe in (hub, van_a, van_b):
                probe.close()


def listener_port(conf: str) -> int:
    ports = [int(line.split()[1]) for line in conf.splitlines() if line.startswith("listener ")]
    assert len(ports) == 1, f"one listener expected in the shipped mosquitto.conf: {ports}"
    return ports[0]


@pytest.mark.parametrize("profile", ["van-gateway.yaml", "station.yaml"])
def test_the_device_profiles_connect_to_the_shipped_listener(profile: str) -> None:
    broker = load_agent_config(ROOT / "firmware_configs" / profile).broker
    assert broker.url.startswith("mqtts://"), broker.url
    assert broker.port == listener_port(SHIPPED_CONF.read_text())
    assert broker.tls is not None and broker.tls.cert and broker.tls.key and broker.tls.ca


# -- the real agent and hub through the fleet broker -----------------------------------------------


def hub_call(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def tls_section(identity: TlsFiles) -> dict[str, str]:
    return {"ca": str(identity.ca), "cert": str(identity.cert), "key": str(identity.key)}


def test_an_agent_and_the_hub_work_end_to_end_under_the_acl(
    fleet: Fleet, fleet_broker: Mosquitto, tmp_path: Path
) -> None:
    assert fleet_broker.url.startswith("mqtts://")
    hub = Proc(
        "hub_bridge",
        write_hub_config(tmp_path, fleet_broker.url, broker={"tls": tls_section(fleet.hub)}),
        tmp_path / "hub.log",
    )
    agent_cfg = write_agent_config(
        tmp_path,
        fleet_broker.url,
        device="van-a",
        broker={"tls": tls_section(fleet.device("van-a"))},
        trips={"zones": []},
    )
    agent = Proc("edge_agent", agent_cfg, tmp_path / "agent.log")
    hub.start()
    agent.start()
    try:
        assert agent.api_port is not None and hub.api_port is not None
        hub_port = hub.api_port

        def van_a_state() -> str | None:
            devices = get(hub_port, "/v1/devices")
            return next((d["state"] for d in devices if d["device"] == "van-a"), None)

        # events out, the ack watermark back: the agent's outbox drains
        status, body = post(agent.api_port, scan_event(1))
        assert status == 201
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db, "van-a")) == 1, 20, "the event in the timeline")
        assert timeline_rows(db, "van-a")[0][1] == body["id"]
        wait_for(
            lambda: get(agent.api_port or 0, "/v1/health")["queue"]["depth"] == 0,
            20,
            "the hub's ack to reach the agent",
        )
        # the birth on its state topic
        wait_for(lambda: van_a_state() == "online", 20, "the agent's birth at the hub")
        # a command down, its answer up
        status, queued = hub_call(
            hub_port, f"/v1/devices/{FLEET}/van-a/commands/manifest", MANIFEST
        )
        assert status == 202
        wait_for(
            lambda: get(hub_port, f"/v1/commands/{queued['id']}")["status"] == "ok",
            20,
            "the agent's answer to the manifest",
        )
        # the will, published by the broker for the agent it lost
        agent.kill()
        wait_for(lambda: van_a_state() == "offline", 20, "the agent's will at the hub")
    finally:
        agent.stop()
        hub.stop()


# -- the agent's own check -------------------------------------------------------------------------


def test_the_agent_ignores_commands_on_another_devices_topic(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Defence in depth, on a plain broker without the ACL: a session left with a wider
    subscription under the agent's client id delivers another van's command; the agent
    neither applies nor answers it, and counts it."""
    rogue = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="edge-acme-van-042", protocol=paho.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    rogue.on_subscribe = lambda *_: subscribed.set()
    rogue.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    rogue.loop_start()
    rogue.subscribe([(topics.cmd(FLEET, "van-b", "+"), 1), (f"lm/v1/{FLEET}/van-042/cmd/x/y", 1)])
    assert subscribed.wait(10)
    rogue.disconnect()
    rogue.loop_stop()
    rogue._reset_sockets()  # as in Probe.close

    answers: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    hub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    hub.on_message = lambda _c, _u, m: answers.put((m.topic, json.loads(m.payload)))
    hub.connect("127.0.0.1", broker.port)
    hub.loop_start()
    hub.subscribe(f"lm/v1/{FLEET}/+/cmd-ack", qos=1)
    agent = Proc(
        "edge_agent",
        write_agent_config(tmp_path, broker.url, trips={"zones": []}),
        tmp_path / "agent.log",
    )
    agent.start()
    try:

        def send(topic: str, body: dict[str, Any]) -> None:
            hub.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

        def answered(cid: str) -> bool:  # the agent subscribes once connected: probe until then
            send(cmd("van-042", "probe"), {"id": cid})
            try:
                return bool(answers.get(timeout=0.3)[1]["id"] == cid)
            except queue.Empty:
                return False

        wait_for(lambda: answered("probe"), 20, "the agent answering commands", poll=0.1)
        while not answers.empty():
            answers.get()
        send(cmd("van-b"), {**MANIFEST, "id": "stolen"})
        send(f"lm/v1/{FLEET}/van-042/cmd/x/y", {**MANIFEST, "id": "nested"})
        send(cmd("van-042", "probe"), {"id": "after"})
        got = answers.get(timeout=10)
        assert got[0] == cmd_ack("van-042") and got[1]["id"] == "after"  # nothing before it
        assert agent.api_port is not None
        health = get(agent.api_port, "/v1/health")["components"]
        assert health["uplink"]["counters"]["foreign-command"] == 2
        assert "manifest-applied" not in health.get("trips", {}).get("counters", {})
    finally:
        hub.loop_stop()
        hub.disconnect()
        hub._reset_sockets()
        agent.stop()
