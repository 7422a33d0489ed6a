"""The one place that builds MQTT clients (aiomqtt over paho), for the uplink and the hub.

MQTT 5, a persistent session (clean start off, a session expiry), QoS 1 everywhere, and TLS from
``mqtts://`` or a ``tls:`` section (CA, client certificate and key). Credentials come from
``broker.username``/``password``, else from the URL's userinfo (``mqtt://user:pass@host``).

Two fixes over aiomqtt 2 on a lost connection (``Client``):

- a publish or subscribe waiting for the broker's answer when the connection drops fails at once
  with ``MqttError`` instead of waiting out its whole timeout (10 s without ingest at the hub, or
  without sending at an agent, after every broker restart);
- the exception of an unexpected disconnection is always retrieved, so asyncio never logs
  ``Future exception was never retrieved ... MqttCodeError('Unexpected disconnection')`` (it
  did whenever the connection dropped outside message iteration, e.g. during a publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar, cast

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.platform.settings import BrokerConfig

__all__ = ["Client", "connect_timeout", "make_client", "tls_context"]

T = TypeVar("T")


class Client(aiomqtt.Client):
    """``aiomqtt.Client`` that fails pending operations on a lost connection at once and never
    leaves the disconnection's exception unretrieved (see the module docstring)."""

    # aiomqtt funnels every wait for the broker (publish, subscribe, connect, disconnect)
    # through _wait_for and records the connection's end in the _disconnected future: the two
    # private names this class relies on (aiomqtt is pinned below 3; tests/test_hub_state.py
    # fails if either changes meaning).

    async def _wait_for(
        self,
        fut: Awaitable[T],
        timeout: float | None,  # noqa: ASYNC109 (aiomqtt's signature, overridden)
    ) -> T:
        # never asyncio.wait_for: on Python 3.11 it returns the result and drops a cancel that
        # lands in the same loop step as the broker's answer (a stopping agent then never stops)
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit == math.inf else limit
        lost = self._disconnected
        if fut is lost or fut is self._connected:
            own = cast("asyncio.Future[T]", fut)
            own.add_done_callback(_retrieve)  # whoever waits, its exception is never orphaned
            try:
                async with asyncio.timeout(deadline):
                    return await asyncio.shield(own)  # a cancelled wait leaves aiomqtt's future
            except TimeoutError:
                raise aiomqtt.MqttError("Operation timed out") from None
        op = asyncio.ensure_future(fut)
        try:
            async with asyncio.timeout(deadline):
                await asyncio.wait(
                    (op,) if lost.done() else (op, lost), return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            op.cancel()
            raise aiomqtt.MqttError("Operation timed out") from None
        except asyncio.CancelledError:
            op.cancel()
            raise
        if op.done():
            return op.result()
        op.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await op
        cause = lost.exception()
        raise aiomqtt.MqttError("Disconnected while waiting for the broker") from cause

    async def __aenter__(self) -> Client:
        # aiomqtt replaces a _disconnected future that is already done when the CONNACK comes:
        # a connection lost in that same instant (the broker dying, or another session with
        # our client id taking over) would leave its exception unread
        self._disconnected.add_done_callback(_retrieve)
        try:
            await super().__aenter__()
        except BaseException:
            # a failed or cancelled connect: never leave the reuse lock held or a half-open
            # connection behind, and never an unread disconnection
            if self._lock.locked():
                self._lock.release()
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._disconnected.add_done_callback(_retrieve)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            lost = self._disconnected
            if lost.done() and not lost.cancelled():
                lost.exception()  # marks it retrieved; the caller has its own MqttError


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


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
    client = Client(
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
    # paho starts its keepalive clock before the TCP connect: a connect slower than the
    # keepalive (a SYN retransmitted on a link coming back) is then dropped as dead right after
    # it succeeds, and the CONNACK wait runs out its whole timeout. Keep the connect shorter.
    client._client.connect_timeout = connect_timeout(broker.keepalive)
    return client


def connect_timeout(keepalive: float) -> float:
    """How long one TCP connect may take: below the keepalive, at most 5 s (paho's default)."""
    return max(0.5, min(5.0, keepalive / 2))
