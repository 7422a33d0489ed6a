"""The MQTT client's waits (edge_agent/platform/mqtt.py) against a real mosquitto: a publish
waiting for its PUBACK and the message iterator end with ``MqttError`` as soon as the connection
is lost, a caller's own cancel stays a cancel, and a frozen broker ends in the client's timeout.

The waits run in the caller's task (no task per publish or per message): these tests hold the
behaviour that aiomqtt's task-based waits had, and that our fix of them added."""

from __future__ import annotations

import asyncio
import logging
import selectors
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomqtt
import pytest

from edge_agent.platform.mqtt import make_client
from edge_agent.platform.settings import BrokerConfig
from simulators.broker import Mosquitto


@pytest.fixture
def frozen(broker: Mosquitto) -> Iterator[Mosquitto]:
    """The broker, to be frozen by the test (SIGSTOP); thawed again at the end."""
    yield broker
    if broker.proc is not None and broker.proc.poll() is None:
        broker.proc.send_signal(signal.SIGCONT)


@pytest.fixture
async def client(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    c = make_client(BrokerConfig(url=broker.url, keepalive=60.0), "t-client", persistent=False)
    async with c:
        yield c


def freeze(broker: Mosquitto) -> None:
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)


async def test_a_publish_waiting_for_its_puback_fails_at_once_when_the_connection_drops(
    frozen: Mosquitto, client: aiomqtt.Client
) -> None:
    freeze(frozen)  # the PUBACK never comes
    publish = asyncio.create_task(client.publish("t/x", b"1", qos=1))
    await asyncio.sleep(0.3)
    assert not publish.done()
    started = time.monotonic()
    frozen.kill()  # the connection ends (the kernel closes the socket)
    with pytest.raises(aiomqtt.MqttError, match="Disconnected while waiting"):
        await asyncio.wait_for(publish, 5)
    assert time.monotonic() - started < 3  # not the client's 10 s timeout


async def test_a_cancel_of_the_caller_stays_a_cancel_and_the_client_goes_on(
    frozen: Mosquitto, client: aiomqtt.Client
) -> None:
    freeze(frozen)
    publish = asyncio.create_task(client.publish("t/x", b"1", qos=1))
    await asyncio.sleep(0.2)
    publish.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publish
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGCONT)
    await asyncio.wait_for(client.publish("t/x", b"2", qos=1), 5)  # the client still works
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # no stray cancel left behind


async def test_a_frozen_broker_ends_in_the_clients_timeout(
    frozen: Mosquitto, client: aiomqtt.Client
) -> None:
    client.timeout = 0.5
    freeze(frozen)
    started = time.monotonic()
    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        await client.publish("t/x", b"1", qos=1)
    assert 0.4 < time.monotonic() - started < 3


async def test_messages_queued_before_the_loss_come_first_then_the_error(
    broker: Mosquitto, client: aiomqtt.Client
) -> None:
    await client.subscribe("t/#", qos=1)
    for n in range(3):
        await client.publish(f"t/{n}", str(n).encode(), qos=1)
    messages = aiter(client.messages)
    first = await asyncio.wait_for(anext(messages), 5)
    assert first.payload == b"0"
    await asyncio.sleep(0.2)  # the other two are in the client's queue
    broker.kill()
    await asyncio.sleep(0.3)
    got = [(await anext(messages)).payload for _ in range(2)]
    assert got == [b"1", b"2"]
    with pytest.raises(aiomqtt.MqttError, match="Disconnected"):
        await asyncio.wait_for(anext(messages), 5)


async def test_the_iterator_waiting_for_a_message_ends_when_the_connection_drops(
    broker: Mosquitto, client: aiomqtt.Client
) -> None:
    await client.subscribe("t/#", qos=1)
    waiting = asyncio.create_task(anext(aiter(client.messages)))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = time.monotonic()
    broker.kill()
    with pytest.raises(aiomqtt.MqttError, match="Disconnected"):
        await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 3


async def test_a_message_is_delivered_to_the_waiting_iterator(
    broker: Mosquitto, client: aiomqtt.Client
) -> None:
    await client.subscribe("t/#", qos=1)
    waiting = asyncio.create_task(anext(aiter(client.messages)))
    await asyncio.sleep(0.1)
    await client.publish("t/y", b"hello", qos=1)
    message = await asyncio.wait_for(waiting, 5)
    assert message.payload == b"hello" and str(message.topic) == "t/y"


async def test_an_answer_and_the_connections_end_in_one_step_leave_no_stray_cancel() -> None:
    # no broker: the client's own futures, resolved in the order a busy loop may run them
    client = make_client(BrokerConfig(url="mqtt://127.0.0.1:1"), "t-race", persistent=False)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    async def broker_answer() -> str:
        return await answer

    lost = client._disconnected
    loop.call_soon(answer.set_result, "puback")  # the answer first ...
    loop.call_soon(lost.set_exception, aiomqtt.MqttError("gone"))  # ... the end in the same step
    assert await client._wait_for(broker_answer(), 5) == "puback"
    await asyncio.sleep(0.05)  # a cancel left over from the connection's end would land here
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    assert isinstance(lost.exception(), aiomqtt.MqttError)  # retrieved: no warning at exit


async def test_a_socket_closed_before_the_loop_watches_it_is_left_alone() -> None:
    # aiomqtt asks the loop to watch paho's socket from the connect thread, a step later; a
    # connection that ended in between leaves a closed fd: nothing may fail in the loop
    client = make_client(BrokerConfig(url="mqtt://127.0.0.1:1"), "t-guard", persistent=False)
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    loop.call_soon_threadsafe(client._loop.add_reader, fd, lambda: None)
    loop.call_soon_threadsafe(client._loop.add_writer, fd, lambda: None)
    await asyncio.sleep(0.05)
    assert errors == []


async def test_a_publish_from_the_loop_is_written_without_waking_the_loop_through_its_pipe(
    broker: Mosquitto, client: aiomqtt.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiomqtt goes through call_soon_threadsafe and add_writer for every packet paho has to
    # send: a self-pipe wake-up and two epoll changes per publish and per PUBACK
    loop = asyncio.get_running_loop()
    threadsafe: list[Any] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        threadsafe.append(callback)
        return real(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    await client.subscribe("t/#", qos=1)
    messages = aiter(client.messages)
    for n in range(20):
        await asyncio.wait_for(client.publish(f"t/{n}", str(n).encode(), qos=1), 5)
    got = [(await asyncio.wait_for(anext(messages), 5)).payload for _ in range(20)]
    assert got == [str(n).encode() for n in range(20)]  # and each was PUBACKed by the client
    assert threadsafe == []


async def test_a_publish_larger_than_the_sockets_buffer_is_written_whole(
    broker: Mosquitto, client: aiomqtt.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what does not fit in the socket at once is written as the socket drains (add_writer)
    watched: list[int] = []
    guard = client._loop
    real_add_writer = guard.add_writer

    def add_writer(fd: int, callback: Any, *args: Any) -> None:
        watched.append(fd)
        real_add_writer(fd, callback, *args)

    monkeypatch.setattr(guard, "add_writer", add_writer)
    sock = client._client.socket()
    assert sock is not None
    room = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    payload = bytes(range(256)) * (4 * room // 256 + 1)
    await client.subscribe("big/#", qos=1)
    messages = aiter(client.messages)
    publishes = [client.publish(f"big/{n}", payload[n:], qos=1) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*publishes), 20)
    got = [(await asyncio.wait_for(anext(messages), 20)).payload for _ in range(3)]
    assert got == [payload[n:] for n in range(3)]
    assert not client._client.want_write()
    assert watched and set(watched) == {sock.fileno()}  # the rest went out as the socket drained


async def test_a_suback_after_its_subscribe_stopped_waiting_is_not_an_error(
    frozen: Mosquitto, client: aiomqtt.Client, caplog: pytest.LogCaptureFixture
) -> None:
    # a subscribe that timed out on a slow broker gets its SUBACK later: aiomqtt logged that
    # as an error with a traceback, on every such connection of a van
    freeze(frozen)
    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        await client.subscribe("late/#", qos=1, timeout=0.3)
    assert frozen.proc is not None
    with caplog.at_level(logging.DEBUG):
        frozen.proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(client.subscribe("next/#", qos=1), 5)  # the late SUBACK first
        await asyncio.wait_for(client.unsubscribe("next/#"), 5)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("SUBACK" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)


async def test_no_writer_outlives_what_it_was_added_for(
    broker: Mosquitto, client: aiomqtt.Client
) -> None:
    # a writer left on a socket with nothing to write fires on every turn of the loop (the
    # socket is always writable): the agent's loop would spin until the connection ended
    await client.subscribe("w/#", qos=1)
    messages = aiter(client.messages)
    sock = client._client.socket()
    assert sock is not None
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]

    def watched_for_writing() -> bool:
        key = selector.get_map().get(sock.fileno())
        return key is not None and bool(key.events & selectors.EVENT_WRITE)

    big = b"x" * (4 * sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    await asyncio.wait_for(client.publish("w/big", big, qos=1), 20)  # needs the writer
    await asyncio.wait_for(client.publish("w/small", b"s", qos=1), 5)
    # from another thread, as paho's connect thread queues the CONNECT
    info = await asyncio.to_thread(client._client.publish, "w/thread", b"t", 1)
    await asyncio.wait_for(asyncio.to_thread(info.wait_for_publish, 5), 6)
    got = {str(m.topic): m.payload for m in [await anext(messages) for _ in range(3)]}
    assert got == {"w/big": big, "w/small": b"s", "w/thread": b"t"}
    await asyncio.sleep(0.05)
    assert not watched_for_writing()
