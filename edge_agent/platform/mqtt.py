"""The one place that builds MQTT clients (aiomqtt over paho), for the uplink and the hub.

MQTT 5, a persistent session (clean start off, a session expiry), QoS 1 everywhere, and TLS from
``mqtts://`` or a ``tls:`` section (CA, client certificate and key). Credentials come from
``broker.username``/``password``, else from the URL's userinfo (``mqtt://user:pass@host``).

Fixes over aiomqtt 2 (``Client``), first on a lost connection:

- a publish or subscribe waiting for the broker's answer when the connection drops fails at once
  with ``MqttError`` instead of waiting out its whole timeout (10 s without ingest at the hub, or
  without sending at an agent, after every broker restart);
- the exception of an unexpected disconnection is always retrieved, so asyncio never logs
  ``Future exception was never retrieved ... MqttCodeError('Unexpected disconnection')`` (it
  did whenever the connection dropped outside message iteration, e.g. during a publish).

And on a working one: a packet queued on the event loop's thread is written in the same turn
(no self-pipe wake-up and EPOLLOUT wait per publish and per PUBACK), and a SUBACK or UNSUBACK
that comes after its wait timed out is not logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.platform.settings import BrokerConfig

__all__ = ["Client", "connect_timeout", "make_client", "tls_context"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Client(aiomqtt.Client):
    """``aiomqtt.Client`` that fails pending operations on a lost connection at once and never
    leaves the disconnection's exception unretrieved (see the module docstring)."""

    # aiomqtt funnels every wait for the broker (publish, subscribe, connect, disconnect)
    # through _wait_for and records the connection's end in the _disconnected future: the two
    # private names this class relies on (aiomqtt is pinned below 3; tests/test_hub_state.py
    # fails if either changes meaning).

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiomqtt registers the socket with the loop from paho's connect thread, by its fd
        # number, a step later; a connection that ends in between leaves a closed (or reused)
        # fd to register: see _SocketGuard
        self._loop_thread = threading.get_ident()  # aiomqtt's __init__ takes the running loop
        self._loop = cast("asyncio.AbstractEventLoop", _SocketGuard(self._loop, self._client))
        self._write_pending = False

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        # paho has bytes to send (a publish, a PUBACK). aiomqtt always goes through
        # call_soon_threadsafe and add_writer: a wake-up of the loop through its self-pipe, two
        # epoll_ctl calls and a turn waiting for EPOLLOUT on a socket that is nearly always
        # writable, twice per event an agent sends (its publish, its PUBACK of the ack). On
        # the loop's own thread the bytes are written later in this same turn instead; from
        # paho's connect thread (the CONNECT) the loop is woken to write them. Either way the
        # socket is watched only for what did not fit, by a writer that removes itself once
        # paho has nothing left (_write_ready): no writer outlives what it was added for.
        if self._write_pending:
            return  # a write is coming: it takes whatever paho holds by then
        self._write_pending = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._write_now)
        else:
            self._loop.call_soon_threadsafe(self._write_now)

    def _write_now(self) -> None:
        """Write what paho holds now; watch its socket for writing if some is left."""
        self._write_pending = False
        self._write_ready()  # without a socket paho writes nothing and nothing is watched

    def _write_ready(self) -> None:
        """Write what paho holds; watch the socket while some is left, and only then."""
        sock = self._client.socket()
        try:
            self._client.loop_write()
        except Exception as exc:  # as aiomqtt's own writer: a failed write ends the connection
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
        if sock is None or self._client.socket() is not sock:
            return  # closed meanwhile: paho's close took its socket off the loop
        if self._client.want_write():
            self._loop.add_writer(sock.fileno(), self._write_ready)
        else:
            self._loop.remove_writer(sock.fileno())

    def _on_subscribe(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Properties | None = None,
    ) -> None:
        fut = _waiting(self._pending_subscribes, mid, "SUBACK")
        if fut is not None and not fut.done():
            fut.set_result(reason_codes)

    def _on_unsubscribe(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Properties | None = None,
    ) -> None:
        done = _waiting(self._pending_unsubscribes, mid, "UNSUBACK")
        if done is not None:
            done.set()

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
        # The broker's answer is awaited in this task, not in a task of its own raced against
        # the connection's end with asyncio.wait: that cost three turns of the event loop per
        # publish, most of an agent's CPU on a trickle of events. The connection's end cancels
        # this task instead (the way asyncio.timeout ends a wait), told apart from any other
        # cancel by its flag.
        task = asyncio.current_task()
        assert task is not None
        ended = False
        waiting = True  # False once this wait is over: a late callback must cancel nothing

        def on_lost(_lost: asyncio.Future[Any]) -> None:
            # scheduled when the connection ends; it may run after the wait returned (the
            # answer and the end in one step), and then it must leave the task alone
            nonlocal ended
            if waiting:
                ended = True
                task.cancel()

        if not lost.done():
            lost.add_done_callback(on_lost)
        try:
            async with asyncio.timeout(deadline):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        except asyncio.CancelledError:
            if not ended or task.uncancel() > 0:
                raise  # a cancel of the caller's own (too): it goes on
            cause = lost.exception() if not lost.cancelled() else None
            raise aiomqtt.MqttError("Disconnected while waiting for the broker") from cause
        finally:
            waiting = False
            lost.remove_done_callback(on_lost)

    @property
    def messages(self) -> aiomqtt.client.MessagesIterator:
        """The incoming messages, as aiomqtt's iterator gives them, without its task per
        message (the wait is ``_wait_for``'s: ``MqttError`` once the connection ends)."""
        return _Messages(self)

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


class _SocketGuard:
    """The event loop as aiomqtt uses it, with ``add_reader`` and ``add_writer`` done only for
    the socket the paho client holds now.

    aiomqtt asks the loop to watch the socket from paho's connect thread, by fd number, and the
    loop does it a step later. A connection that ends in that step (a broker dying as it
    accepts) closes the socket first: the loop then fails with EBADF in a callback (an
    unhandled error in the log), or watches whatever socket took the number since. Everything
    else goes to the loop unchanged."""

    def __init__(self, loop: asyncio.AbstractEventLoop, paho_client: Any) -> None:
        self._loop = loop
        self._paho = paho_client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    def _holds(self, fd: int) -> bool:
        sock = self._paho.socket()
        return sock is not None and sock.fileno() == fd

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        """Watch ``fd`` for reading if it is still the client's socket."""
        if self._holds(fd):
            self._loop.add_reader(fd, callback, *args)

    def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        """Watch ``fd`` for writing if it is still the client's socket."""
        if self._holds(fd):
            self._loop.add_writer(fd, callback, *args)


class _Messages(aiomqtt.client.MessagesIterator):
    """aiomqtt's message iterator, each message awaited in the caller's task.

    aiomqtt races a new task per message against the connection's end (``asyncio.wait``):
    three turns of the event loop for each ack an agent gets. Messages already queued come
    first, as there; then a lost connection raises ``MqttError``."""

    _client: Client

    async def __anext__(self) -> aiomqtt.Message:
        client = self._client
        queue = client._queue  # aiomqtt's own queue, the one its iterator reads
        if not queue.empty():
            return queue.get_nowait()
        lost = client._disconnected
        if lost.done():
            cause = None if lost.cancelled() else lost.exception()
            raise aiomqtt.MqttError("Disconnected during message iteration") from cause
        return await client._wait_for(queue.get(), math.inf)


def _waiting(pending: dict[int, T], mid: int, answer: str) -> T | None:
    """The wait for the broker's ``answer`` to ``mid``, taken out of ``pending``; None when
    that wait is already over (it timed out, or its caller was cancelled): normal on a slow
    broker, where aiomqtt logged an error with a traceback."""
    waiting = pending.pop(mid, None)
    if waiting is None:
        log.debug("%s %d after its wait ended: ignored", answer, mid)
    return waiting


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
