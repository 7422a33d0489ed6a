"""The one place that builds MQTT clients (aiomqtt over paho), for the uplink and the hub.

MQTT 5, a persistent session (clean start off, a session expiry), QoS 1 everywhere, and TLS from
``mqtts://`` or a ``tls:`` section (CA, client certificate and key).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import BrokerConfig

__all__ = ["make_client", "tls_context"]


def tls_context(broker: BrokerConfig) -> ssl.SSLContext | None:
    """An SSL context for the broker, or None for plain TCP."""
    if not broker.use_tls:
        return None
    tls = broker.tls
    ctx = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
    if tls is not None and tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    if tls is not None and tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_client(
    broker: BrokerConfig,
    identifier: str,
    *,
    will: aiomqtt.Will | None = None,
    persistent: bool = True,
    max_inflight: int = 64,
    **kwargs: Any,
) -> aiomqtt.Client:
    """An MQTT 5 client for ``broker`` with a persistent session named ``identifier``."""
    username, password = broker.credentials
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        props.SessionExpiryInterval = int(broker.session_expiry)
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=broker.client_id or identifier,
        username=username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        keepalive=int(broker.keepalive),
        will=will,
        properties=props,
        tls_context=tls_context(broker),
        max_inflight_messages=max_inflight,
        timeout=10,
        # small acks and batches must not wait for Nagle and delayed ACKs (about 40 ms each way)
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **kwargs,
    )
