"""A lean HTTP/1.1 client for calls to apps over plain `http://`.

Calling the app is most of what a replica does per step, and aiohttp's request machinery (request
and response objects, payload registry, a body-writer task, cookie and trace hooks, timer
contexts) cost about as much of the server's CPU as the events API and the store put together.
This client does only what a call needs: one keep-alive connection pool per host and port, the
request head and body written at once, the answer parsed by httptools (the parser uvicorn uses).

The executor uses it for POSTs to `http://` URLs; `https://`, redirects and everything else keep
going through aiohttp. Its errors say what aiohttp's would, so a failed call is classified,
logged and counted the same way (see `lockgate.engine.executor.FAILURE_REASONS`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
import zlib
from collections import deque
from typing import Callable

import httptools
from yarl import URL


class AppConnectError(OSError):
    """No connection could be opened to the app (`refused`: nothing listens there)."""

    def __init__(self, host: str, port: int, cause: BaseException | None) -> None:
        self.refused = isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED
        super().__init__(getattr(cause, "errno", None) or errno.EHOSTUNREACH,
                         f"Cannot connect to host {host}:{port} [{cause or 'no address'}]")


class AppConnectionLost(Exception):
    """The connection broke before the app's answer was complete.

    `reused`: it had carried an earlier request; `answered`: the answer's head had arrived."""

    def __init__(self, message: str, *, reused: bool, answered: bool) -> None:
        super().__init__(message)
        self.reused = reused
        self.answered = answered


class Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = True
        self.served = 0  # requests answered on it
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._name = b""
        self._body: list[bytes] = []
        self._head_done = False
        self._sized = False  # Content-Length or chunked: the end of the body is known

    # -- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: an idle connection the app should not write to
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(AppConnectionLost(f"the app's answer is not valid HTTP: {exc}", reused=self.served > 0,
                                         answered=self._head_done))
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.alive = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done and not self._sized:  # the body ran until the app closed the connection
            self.on_message_complete()
            return
        self._fail(AppConnectionLost(
            "Server disconnected" if exc is None else f"{exc.__class__.__name__}: {exc}",
            reused=self.served > 0, answered=self._head_done))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        self._headers[key] = value.decode("utf-8", "surrogateescape")
        if key == "content-length" or (key == "transfer-encoding" and b"chunked" in value.lower()):
            self._sized = True

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            body = b"".join(self._body)
            encoding = self._headers.get("content-encoding", "").strip().lower()
            if encoding in ("gzip", "deflate") and body:
                try:
                    body = zlib.decompress(body, 47 if encoding == "gzip" else zlib.MAX_WBITS)
                except zlib.error as exc:
                    self._fail(AppConnectionLost(f"the app's {encoding} body does not decompress: {exc}",
                                                 reused=self.served > 0, answered=True))
                    self.close()
                    return
            try:
                keep = self.parser.should_keep_alive()
            except Exception:
                keep = False
            if not keep:
                self.alive = False
            waiter.set_result(Answer(status, self._headers, body))

    # --

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> Answer:
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None


Target = tuple[str, int, bytes]  # host, port, the request line and Host header


def target_of(url: URL) -> Target:
    """What a request to `url` needs, worked out once per URL."""
    host = url.raw_host or ""
    port = url.port or 80
    host_header = url.raw_authority.rsplit("@", 1)[-1] if url.explicit_port else host
    if ":" in host and not host_header.startswith("["):
        host_header = f"[{host_header}]"
    head = f"POST {url.raw_path_qs or '/'} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
    return host.strip("[]"), port, head


class AppHttpClient:
    def __init__(self, *, keepalive_s: float, connect_timeout_s: float, limit: int,
                 socket_factory: Callable[[tuple], socket.socket] | None = None) -> None:
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.socket_factory = socket_factory
        self._idle: dict[tuple[str, int], deque[tuple[_Connection, float]]] = {}
        self._slots = asyncio.Semaphore(limit)
        self._all: set[_Connection] = set()
        self.closed = False

    async def post(self, target: Target, headers: dict[str, str], body: bytes, *, fresh: bool = False) -> Answer:
        """POST `body`; raises AppConnectError, AppConnectionLost or TimeoutError (from the caller's
        timeout). `fresh`: on a new connection, whatever the pool holds."""
        host, port, head = target
        lines = [head]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"the {name} header holds a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"Accept: */*\r\nContent-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        request = b"".join(lines)
        async with self._slots:
            connection = None if fresh else self._pooled(host, port)
            if connection is None:
                connection = await self._open(host, port)
            try:
                answer = await connection.exchange(request)
            except BaseException:
                connection.close()
                self._all.discard(connection)
                raise
            connection.served += 1
            if connection.alive and not self.closed:
                self._idle.setdefault((host, port), deque()).append((connection, time.monotonic()))
            else:
                connection.close()
                self._all.discard(connection)
            return answer

    def _pooled(self, host: str, port: int) -> _Connection | None:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            connection, since = idle.pop()  # the most recently used: the least likely to be closed by now
            if connection.alive and now - since <= self.keepalive_s:
                return connection
            connection.close()
            self._all.discard(connection)
        return None

    async def _open(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            addresses = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        except ValueError:
            try:
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise AppConnectError(host, port, exc) from exc
        last: BaseException | None = None
        for info in addresses:
            sock = None
            try:
                if self.socket_factory is not None:
                    sock = self.socket_factory(info)
                else:
                    sock = socket.socket(info[0], info[1], info[2])
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                async with asyncio.timeout(self.connect_timeout_s):
                    await loop.sock_connect(sock, info[4])
                _, connection = await loop.create_connection(_Connection, sock=sock)
            except (OSError, TimeoutError) as exc:
                if sock is not None:
                    sock.close()
                last = exc
                continue
            self._all.add(connection)
            return connection
        if isinstance(last, TimeoutError):  # as aiohttp's sock_connect timeout: the call timed out
            raise TimeoutError(f"connecting to {host}:{port} took longer than {self.connect_timeout_s} s")
        raise AppConnectError(host, port, last)

    async def close(self) -> None:
        self.closed = True
        for connection in list(self._all):
            connection.close()
        self._all.clear()
        self._idle.clear()
