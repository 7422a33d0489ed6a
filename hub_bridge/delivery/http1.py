"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections per origin, nothing else.

Webhooks are many small POSTs to few receivers. aiohttp's client costs about 130 µs of CPU per
request here; this one about 35 µs (measured side by side against the same aiohttp server), which
is what lets one hub push a thousand notices a second. It does only what a webhook needs:
``http://`` and ``https://`` (the system's trust store, the host name checked), one request at a
time per connection, idle connections kept per origin and reused, the answer's status read and
its body read and dropped (``Content-Length``, chunked, or up to the close; at most
``BODY_MAX``, past which the connection is closed rather than drained). No redirects (a 3xx is
an answer like any other), no proxies, no cookies, no compression.

Errors::

    HttpError (Exception)      the receiver's answer is not HTTP/1.x, or too large to read
    OSError, TimeoutError      the connection could not be made, broke, or stalled

A request on a reused connection that breaks before any byte of an answer (the receiver closed
it while idle, as servers do after a keep-alive timeout) is sent again once on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import quote, urlsplit

__all__ = ["BODY_MAX", "HttpError", "HttpPool"]

BODY_MAX = 64 * 1024
"""Most of an answer's body read (to keep the connection); a longer one closes it."""
HEAD_MAX = 64 * 1024
"""The status line and headers of an answer, at most."""
_HEADERS_MAX = 100

Origin = tuple[str, str, int]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpError(Exception):
    """The receiver's answer cannot be read as HTTP/1.x."""


class _Stale(Exception):
    """A reused connection broke before any byte of the answer."""


@lru_cache(maxsize=1024)
def _target(url: str) -> tuple[Origin, bytes, str]:
    """(origin, the request's first line and Host header, shown URL) of a webhook URL."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: not an http(s) URL with a host")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    ascii_host = host if host.isascii() else host.encode("idna").decode()
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if parts.port is not None:
        shown += f":{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    head = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii")
    return (scheme, ascii_host, port), head, url


class HttpPool:
    """Keep-alive connections per origin; ``post`` one request, ``close`` them all."""

    def __init__(self, *, max_idle_per_origin: int = 64, tls: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle_per_origin
        self._idle: dict[Origin, list[Conn]] = {}
        self._tls = tls
        """For https: the system's trust store unless given (a private CA, in tests)."""
        self.opened = 0
        """Connections made (tests and health: a keep-alive that works makes few)."""

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> int:
        """POST ``body`` to ``url`` with ``headers``; the answer's status. Wrap it in a
        timeout: a connection cut by one is closed, never reused."""
        origin, head, _ = _target(url)
        lines = [head]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name}: a line break in its value")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"))
        request = b"".join(lines) + body
        idle = self._idle.get(origin)
        if idle:
            conn = idle.pop()
            try:
                return await self._exchange(origin, conn, request, reused=True)
            except _Stale:
                pass  # closed by the receiver while idle: once more on a new connection
        conn = await self._open(origin)
        try:
            return await self._exchange(origin, conn, request, reused=False)
        except _Stale as exc:  # not possible on a new connection, but keep the types honest
            raise OSError("the connection broke before an answer") from exc

    async def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()

    async def _open(self, origin: Origin) -> Conn:
        scheme, host, port = origin
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn = await asyncio.open_connection(
                host, port, ssl=self._tls, server_hostname=host, limit=HEAD_MAX
            )
        else:
            conn = await asyncio.open_connection(host, port, limit=HEAD_MAX)
        self.opened += 1
        return conn

    async def _exchange(self, origin: Origin, conn: Conn, request: bytes, *, reused: bool) -> int:
        reader, writer = conn
        keep = False
        try:
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
            except (ConnectionError, OSError) as exc:
                if reused:
                    raise _Stale() from exc
                raise
            if not line:
                if reused:
                    raise _Stale()
                raise ConnectionResetError("the receiver closed the connection without an answer")
            status, keep = await _answer(reader, line)
            return status
        except ValueError as exc:  # a line past the reader's limit, a bad number
            raise HttpError(f"unreadable answer: {exc}") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the receiver closed the connection mid-answer") from None
        finally:
            if keep and len(self._idle.setdefault(origin, [])) < self.max_idle:
                self._idle[origin].append(conn)
            else:
                with contextlib.suppress(Exception):
                    writer.close()


async def _answer(reader: asyncio.StreamReader, line: bytes) -> tuple[int, bool]:
    """Read one answer whose first line is ``line``: (status, whether the connection can be
    reused). 1xx interim answers are skipped."""
    while True:
        version, status = _status_line(line)
        length: int | None = None
        chunked = False
        close = version == b"HTTP/1.0"
        for _ in range(_HEADERS_MAX + 1):
            header = await reader.readline()
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                raise HttpError("the answer's headers were cut off")
            name, _, value = header.partition(b":")
            key = name.strip().lower()
            value = value.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif key == b"connection":
                close = b"close" in value if version != b"HTTP/1.0" else b"keep-alive" not in value
        else:
            raise HttpError(f"more than {_HEADERS_MAX} headers in the answer")
        if 100 <= status < 200:
            line = await reader.readline()
            continue
        if status in (204, 304):
            return status, not close
        if chunked:
            return status, not close and await _chunks(reader)
        if length is not None:
            if length > BODY_MAX or length < 0:
                return status, False  # not read: the connection goes
            await reader.readexactly(length)
            return status, not close
        # no length: the body ends with the connection
        await reader.read(BODY_MAX)
        return status, False


async def _chunks(reader: asyncio.StreamReader) -> bool:
    """Read and drop a chunked body; whether it ended within ``BODY_MAX``."""
    total = 0
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise HttpError("the chunked answer was cut off")
        size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            for _ in range(_HEADERS_MAX + 1):  # trailers, then the blank line
                if (await reader.readline()) in (b"\r\n", b"\n", b""):
                    return True
            return False
        total += size
        if total > BODY_MAX:
            return False
        await reader.readexactly(size + 2)


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return parts[0], int(parts[1])
