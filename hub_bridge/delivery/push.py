"""Webhooks: signed POSTs of notices from the durable queue, retried, in order per key.

Every notice the projector logs is queued, in the same transaction, for each subscription whose
filters take it (``hub_bridge.delivery.store``). ``WebhookWorker`` delivers the queue:

- one POST per notice, the body the notice's JSON exactly as the API and the stream show it;
- headers ``X-LM-Event`` (the notice's kind), ``X-LM-Delivery`` (the notice's id: the same
  notice retried has the same id, so a receiver de-duplicates on it) and ``X-LM-Signature``;
- a 2xx answer delivers it; anything else (another status, a 3xx too: redirects are not
  followed, or a receiver could point the hub elsewhere; a refused or dropped connection, an
  answer that is not HTTP or is cut off, no answer within ``timeout``) is retried after an
  exponential backoff with jitter, until ``max_attempts`` tries or ``max_age`` since it was
  queued, then it is dead: kept, listed by the API, and put back in the queue by
  ``POST .../retry``;
- per (subscription, key) in order: a notice waits until every earlier notice of the same key
  (the same parcel, the same route) is delivered or dead; different keys go in parallel, at most
  ``concurrency`` requests at once and ``per_subscription`` per subscriber, so a slow or failing
  receiver holds up only its own deliveries.

Signature (the scheme of Stripe's webhooks, in our words)::

    X-LM-Signature: t=1733212800,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``t`` is the Unix time of the attempt and ``v1`` the hex HMAC-SHA256 of ``f"{t}.{body}"`` keyed
with the subscription's secret, ``body`` the raw bytes received. A receiver recomputes it over
the raw body (before any JSON parsing), compares in constant time, and refuses a ``t`` more than
a few minutes away from its clock (a replayed request). ``verify`` does exactly that.

The requests go through one ``aiohttp.ClientSession`` per worker (``open_session``): kept-alive
connections, at most ``concurrency`` in use (``per_subscription`` is the worker's), TLS
verified against the system's trust store (or the ``tls`` context given), no proxies from the
environment, no cookies kept. An answer's body is read, at most ``BODY_MAX`` bytes, only to keep
the connection; a longer one, or one that ends only with the connection, closes it unread.

Delivery is at least once: a hub that dies between a receiver's 2xx and recording it sends that
notice again after the restart, with the same ``X-LM-Delivery``. With N hubs on PostgreSQL the
worker runs on the one holding the store's leader lock (``store.lead()``), like the projector.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
import aiohttp.abc
from yarl import URL

from edge_agent.platform.health import HealthRegistry
from hub_bridge.delivery.store import Delivery, DeliveryStore, Outcome, Subscription
from hub_bridge.store import StoreUnavailable

__all__ = [
    "BODY_MAX",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "PushSettings",
    "WebhookWorker",
    "open_session",
    "post",
    "retry_delay",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-LM-Signature"
EVENT_HEADER = "X-LM-Event"
DELIVERY_HEADER = "X-LM-Delivery"
BODY_MAX = 64 * 1024
"""Most bytes of an answer's body read (to keep its connection); past that it is closed."""
_ERROR_CHARS = 300
_RECORD_EVERY = 0.005  # seconds between commits of answers
_FLUSH_ON_STOP_S = 2.0  # at most this long recording the last answers when the worker stops
_SUBSCRIPTIONS_EVERY = 1.0  # seconds a read of the subscriptions is used (a new one waits that)


def sign(secret: str, body: bytes, t: int) -> str:
    """The ``X-LM-Signature`` value of ``body`` sent at Unix time ``t``."""
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``
    (what a receiver runs; any ``v1`` of the header may match, for secret rotation)."""
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            t = int(value)
        elif name == "v1":
            macs.append(value)
    if t is None or not macs or abs(now - t) > tolerance:
        return False
    expected = sign(secret, body, t).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, m) for m in macs)


def retry_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before retry ``attempt`` + 1 (``attempt`` failures so far, at least 1).

    Exponential, capped, with "equal jitter": between half and all of ``base * 2**(attempt-1)``,
    so receivers coming back from an outage are not hit by every hub's retries at once, and a
    retry never comes right after the failure.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 32))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True, slots=True)
class PushSettings:
    """How webhooks are delivered (the hub's ``delivery.webhooks`` keys)."""

    max_attempts: int = 12
    """Tries of one notice before it is dead."""
    max_age: float = 24 * 3600.0
    """Seconds after it was queued that a notice is dead even with tries left."""
    backoff_base: float = 2.0
    backoff_cap: float = 3600.0
    timeout: float = 10.0
    """Seconds for one attempt: connect, send, and the answer's status."""
    concurrency: int = 64
    """Requests in flight at once, over every subscriber."""
    per_subscription: int = 32
    """Requests in flight at once to one subscriber."""
    poll: float = 1.0
    """Seconds between looks at the queue when nothing wakes the worker (another hub's
    projector queued something, a retry came due)."""
    retention: float = 2 * 86400.0
    """Delivered and dead deliveries, and the notices (what a stream resumes from), are kept
    this long; a delivery still pending is kept, with its notice, until it is done."""
    views_retention: float = 90 * 86400.0
    """A parcel's or route's answer, and a resolved exception, are kept this long after their
    last change (then the API answers 404)."""
    allow_private: bool = True
    """Whether receivers may be on loopback, private, link-local or other non-public addresses.
    The hub's configuration says no by default (``delivery.webhooks.allow_private``): a tenant
    must not make the hub reach into its own network. Checked when the connection is made
    (``PublicResolver``), so a name that later resolves inward is refused too."""


def is_public_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is a public unicast address: not loopback, private,
    link-local, multicast, reserved or unspecified (an IPv4-mapped IPv6 address as its IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's threaded resolver keeping only public addresses: a receiver whose name
    resolves only inward cannot be connected to (``OSError`` naming the host)."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        """The public addresses of ``host``."""
        resolved = await self._inner.resolve(host, port, family)
        found = [r for r in resolved if is_public_address(r["host"])]
        if not found:
            # with an errno, so that aiohttp's connector error shows the reason (its strerror)
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"{host}: no public address (delivery.webhooks.allow_private is off)",
            )
        return found

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def open_session(
    settings: PushSettings, tls: ssl.SSLContext | None = None, user_agent: str | None = None
) -> aiohttp.ClientSession:
    """The HTTP client of one webhook worker (call it on the running event loop; close it).

    Connections kept alive and reused, ``settings.concurrency`` at most in use at once (the
    worker keeps to ``settings.per_subscription`` per subscription); ``settings.timeout`` for
    one request (connect, send, the answer and its body); https verified with ``tls`` or
    aiohttp's default context (the system's trust store, the host name checked). No proxies
    from the environment, no cookies, no compressed answers asked for (the body is dropped).
    """
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency,
        # no cap per host here: the worker caps each subscription itself, and subscriptions of
        # different fleets may share a host (one receiving service), where a cap per host
        # would let a slow one hold up the others (test_a_slow_receiver_...)
        limit_per_host=0,
        ssl=tls if tls is not None else True,
        resolver=None if settings.allow_private else PublicResolver(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        headers={"User-Agent": user_agent} if user_agent else None,
        trust_env=False,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def _url(url: str) -> URL:
    """A webhook URL parsed once (it is the same for every notice of a subscription)."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r}: not an http(s) URL with a host")
    return parsed


async def post(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], body: bytes
) -> int:
    """POST ``body`` to ``url``; the answer's status (a 3xx is returned, not followed).

    A connection that broke before any answer (most often a kept one the receiver closed while
    idle, as servers do after their keep-alive timeout) is tried once more at once: a webhook
    is idempotent by contract (the receiver de-duplicates on ``X-LM-Delivery``), so sending it
    again is safe, and cheaper than waiting out a backoff. Raises ``aiohttp.ClientError`` when
    the connection cannot be made or breaks, or the answer is not HTTP or is cut off
    (``ValueError`` for a line break in a header: aiohttp refuses them), ``TimeoutError`` past
    the session's timeout (per request).
    """
    target = _url(url)
    for again in (True, False):
        try:
            async with session.post(target, data=body, headers=headers, allow_redirects=False) as r:
                await _drain(r)
                return r.status
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if not again or isinstance(exc, aiohttp.ClientConnectorError):
                raise  # a second break, or no connection made at all: the receiver's fault
    raise AssertionError("unreachable")


async def _drain(r: aiohttp.ClientResponse) -> None:
    """Read and drop the body of ``r`` if that keeps its connection, at most ``BODY_MAX`` bytes:
    a body declared longer, one that ends only with the connection, or one that runs past the
    cap closes the connection unread (a receiver cannot make the hub hold megabytes)."""
    content = r.content
    if content.at_eof():
        return
    length = r.content_length
    chunked = "chunked" in r.headers.get("Transfer-Encoding", "").lower()
    if (length is None and not chunked) or (length is not None and length > BODY_MAX):
        r.close()
        return
    total = 0
    while total <= BODY_MAX:
        chunk = await content.read(BODY_MAX + 1 - total)
        if not chunk:
            return
        total += len(chunk)
    r.close()


class WebhookWorker:
    """Delivers the webhook queue of ``store`` until cancelled. ``wake()`` when notices were
    queued (the projector does), so they go out at once rather than at the next poll."""

    def __init__(
        self,
        store: DeliveryStore,
        settings: PushSettings | None = None,
        *,
        health: HealthRegistry | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        user_agent: str = "lastmile-hub-webhooks/1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or PushSettings()
        self.health = health or HealthRegistry()
        self._clock = clock
        self._rand = rand
        self._user_agent = user_agent
        self._tls = tls
        """For https: aiohttp's default (the system's trust store) unless given (a private CA)."""
        self._wake = asyncio.Event()
        self._busy: set[tuple[str, str]] = set()  # (subscription, key): out, or not recorded
        self._busy_per_sub: Counter[str] = Counter()
        self._out_per_sub: Counter[str] = Counter()  # requests in flight
        self._done: list[tuple[Outcome, str]] = []  # answered, to be recorded, with the key
        self._answered = asyncio.Event()
        self._epoch = 0  # commits of answers so far
        self._freed: dict[tuple[str, str], int] = {}  # keys freed by the commit of that epoch
        self._subs: list[Subscription] | None = None
        self._subs_at = 0.0
        self._failing: set[str] = set()  # subscriptions whose last attempt failed (for logs)
        self._turn = 0
        self._last_prune = 0.0

    def wake(self) -> None:
        """Look at the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; requests in flight are cancelled with it (and retried by
        the next run: they were not recorded as delivered)."""
        # the tasks end (cancelled with the run) before the session closes
        try:
            async with (
                open_session(self.settings, self._tls, self._user_agent) as http,
                asyncio.TaskGroup() as tg,
            ):
                await self._serve(http, tg)
        finally:
            await self._flush_on_stop()

    async def _flush_on_stop(self) -> None:
        # Answers already received are recorded before the worker goes (bounded in time):
        # otherwise the next leader sends them again. A receiver sees a duplicate only for a
        # request cut off in flight, which de-duplicating by the delivery id absorbs.
        if not self._done:
            return
        try:
            async with asyncio.timeout(_FLUSH_ON_STOP_S):
                await self._flush()
        except (TimeoutError, StoreUnavailable) as exc:
            log.warning("webhooks: %d answers not recorded at stop: %s", len(self._done), exc)

    async def _serve(self, http: aiohttp.ClientSession, tg: asyncio.TaskGroup) -> None:
        s = self.settings
        # answers are recorded by a task of their own: a commit never holds up requests
        # to other keys, and many answers go in one commit
        tg.create_task(self._recorder(), name="webhook recorder")
        while True:
            self._wake.clear()
            try:
                # one hub delivers (the store's leader, as for the projector): N workers
                # on one queue would send notices twice and out of order
                if not await self.store.lead():
                    self.health.set_state("webhooks", "standby")
                    await asyncio.sleep(s.poll * 5)
                    continue
                await self._dispatch(http, tg)
                wait = await self._wait_time()
                await self._prune()
                self.health.set_state("webhooks", "ok")
            except StoreUnavailable as exc:
                self.health.set_state("webhooks", "store-unavailable", error=str(exc)[:200])
                wait = s.poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _recorder(self) -> None:
        while True:
            await self._answered.wait()
            self._answered.clear()
            try:
                await self._flush()
                # a moment for more answers to come: one commit for many of them (the
                # commits of the bridge and the projector want the same lock)
                await asyncio.sleep(_RECORD_EVERY)
            except StoreUnavailable as exc:
                self.health.set_state("webhooks", "store-unavailable", error=str(exc)[:200])
                await asyncio.sleep(self.settings.poll)
                self._answered.set()  # try again
                continue
            self._wake.set()  # their keys are free: the next notices of them can go

    async def _flush(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        try:
            await self.store.record([o for o, _ in done])
        except BaseException:
            self._done[:0] = done  # recorded on the next turn; the keys stay busy meanwhile
            raise
        # a read of the queue begun before this commit may still see these as pending: the
        # epoch tells the dispatcher to skip their keys in such a read
        self._epoch += 1
        for o, key in done:
            self._busy.discard((o.sub, key))
            self._busy_per_sub[o.sub] -= 1
            self._freed[(o.sub, key)] = self._epoch

    async def _subscriptions(self) -> list[Subscription]:
        now = time.monotonic()
        if self._subs is None or now - self._subs_at >= _SUBSCRIPTIONS_EVERY:
            self._subs = [sub for sub in await self.store.subscriptions() if sub.active]
            self._subs_at = now
        return self._subs

    async def _dispatch(self, http: aiohttp.ClientSession, tg: asyncio.TaskGroup) -> None:
        s = self.settings
        subs = await self._subscriptions()
        first = self._epoch
        if not subs:
            return
        self._turn = (self._turn + 1) % len(subs)
        now = self._clock()
        for sub in subs[self._turn :] + subs[: self._turn]:  # a new first each turn: fairness
            total = sum(self._out_per_sub.values())
            spare = min(s.per_subscription - self._out_per_sub[sub.id], s.concurrency - total)
            if spare <= 0:
                continue
            # busy heads (out, or answered and not recorded yet) come back too: ask for enough
            # to find ``spare`` others
            began = self._epoch
            due = await self.store.due(sub, now, spare + self._busy_per_sub[sub.id])
            for d in due:
                if spare <= 0:
                    break
                if (d.sub, d.key) in self._busy or self._freed.get((d.sub, d.key), 0) > began:
                    continue  # out, or freed by a commit this read may not have seen
                self._busy.add((d.sub, d.key))
                self._busy_per_sub[d.sub] += 1
                self._out_per_sub[d.sub] += 1
                spare -= 1
                tg.create_task(self._attempt(http, d, sub), name=f"webhook {d.sub} {d.notice}")
        # reads begin one at a time, here: what was freed before this one began is seen by all
        # the next ones
        self._freed = {k: e for k, e in self._freed.items() if e > first}

    async def _wait_time(self) -> float:
        s = self.settings
        if self._busy:
            return s.poll  # a request out: its answer wakes the worker
        nxt = await self.store.next_due()
        if nxt is None:
            return s.poll
        # due already: it waits for a request out (its key's, or a free slot), whose end wakes
        return min(s.poll, max(nxt - self._clock(), 0.0)) if nxt > self._clock() else s.poll

    async def _prune(self) -> None:
        now = self._clock()
        if now - self._last_prune < 3600.0:
            return
        self._last_prune = now
        s = self.settings
        n = await self.store.prune(now - s.retention, now - s.views_retention)
        if n:
            self.health.count("webhooks", "pruned", n)

    async def _attempt(self, http: aiohttp.ClientSession, d: Delivery, sub: Subscription) -> None:
        body = d.body.encode()
        t = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: d.kind,
            DELIVERY_HEADER: d.notice,
            SIGNATURE_HEADER: sign(d.secret, body, t),
        }
        status: int | None = None
        error: str | None = None
        try:
            host = _url(d.url).host or ""
            if not self.settings.allow_private and _is_ip(host) and not is_public_address(host):
                # an address literal is not resolved, so the resolver above never sees it
                raise OSError(f"{host}: not a public address (delivery.webhooks.allow_private)")
            status = await post(http, d.url, headers, body)  # the session's timeout bounds it
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = (f"{type(exc).__name__}: {exc}")[:_ERROR_CHARS]
        except Exception as exc:  # a receiver must never stop the worker
            log.exception("webhook %s to %s", d.notice, d.url)
            error = (f"{type(exc).__name__}: {exc}")[:_ERROR_CHARS]
        self._done.append((self._outcome(d, status, error), d.key))
        self._out_per_sub[d.sub] -= 1
        self._log(sub, error)
        self._answered.set()
        self._wake.set()  # a free slot: another key may go

    def _outcome(self, d: Delivery, status: int | None, error: str | None) -> Outcome:
        s = self.settings
        now = self._clock()
        if error is None:
            self.health.count("webhooks", "delivered")
            return Outcome(d.sub, d.notice, now, True, status=status)
        tries = d.attempts + 1
        if tries >= s.max_attempts or now - d.created >= s.max_age:
            self.health.count("webhooks", "dead")
            return Outcome(d.sub, d.notice, now, False, dead=True, status=status, error=error)
        self.health.count("webhooks", "retried")
        delay = retry_delay(tries, s.backoff_base, s.backoff_cap, self._rand)
        # never scheduled past the deadline: the last try happens at max_age, not after it
        next_at = min(now + delay, d.created + s.max_age)
        return Outcome(d.sub, d.notice, now, False, next_at=next_at, status=status, error=error)

    def _log(self, sub: Subscription, error: str | None) -> None:
        # transitions only: a receiver down for a day logs twice, not once per retry
        if error is not None and sub.id not in self._failing:
            self._failing.add(sub.id)
            log.warning("webhook %s (%s, fleet %s) failing: %s", sub.id, sub.url, sub.fleet, error)
        elif error is None and sub.id in self._failing:
            self._failing.discard(sub.id)
            log.info("webhook %s (%s) delivering again", sub.id, sub.url)
