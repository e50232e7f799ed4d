"""A lean HTTP/1.1 client for JSON POSTs: keep-alive connections on asyncio protocols, one write per request.

The OpenAI backend's hot path for plain http:// endpoints (a self-hosted fleet of vLLM or SGLang
servers, where one client keeps hundreds of requests per second in flight). A general client spends
1.5-4 ms of CPU per request (pool scans, stream wrappers, a write for the head and another for the
body); this one parses the response in `data_received` and hands back bytes. https:// and proxied
endpoints go through httpx2 instead (see openai.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


class TransportFailure(Exception):
    """No HTTP response: `kind` is "timeout" or "connection"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    content: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time (no pipelining)."""

    def __init__(self, max_bytes: int = 1 << 62) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.received = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.length: int | None = None  # None with chunked False: body runs until the server closes
        self.chunked = False
        self.body = bytearray()
        self.in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.in_body and self.length is None and not self.chunked:
                self._finish()
            else:
                self.waiter.set_exception(TransportFailure("connection", f"connection closed: {exc or 'by the server'}"))

    def send(self, data: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self._reset()
        self.transport.write(data)
        return self.waiter

    def abort(self, error: TransportFailure) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self.abort(TransportFailure("connection", f"malformed HTTP response: {e}"))
            return
        except OverflowError as e:
            self.abort(TransportFailure("oversize", f"{e}, over the {self.max_bytes:,} allowed"))
            return
        if len(self.body) + len(self.buffer) > self.max_bytes + 65536:  # chunked or unsized: count as it comes
            self.abort(TransportFailure("oversize", f"response body over the {self.max_bytes:,} bytes allowed"))

    def _parse(self) -> None:
        if not self.in_body:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            self.status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            if 100 <= self.status < 200:  # an interim response: the real one follows
                self._reset()
                self._parse()
                return
            self.in_body = True
            self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if "content-length" in self.headers:
                self.length = int(self.headers["content-length"])
                if self.length > self.max_bytes:
                    raise OverflowError(f"response body of {self.length:,} bytes")
            elif self.status in (204, 304):
                self.length = 0
        if self.chunked:
            self._parse_chunks()
        elif self.length is None:  # the body runs until the server closes
            self.body += self.buffer
            self.buffer.clear()
        elif len(self.buffer) >= self.length:
            self.body = self.buffer[: self.length]
            del self.buffer[: self.length]
            self._finish()

    def _parse_chunks(self) -> None:
        while True:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self.buffer[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0 and self.buffer[line_end + 2:line_end + 4] != b"\r\n":
                    return
                self.buffer.clear()
                self._finish()
                return
            if len(self.buffer) < line_end + 2 + size + 2:
                return
            self.body += self.buffer[line_end + 2:line_end + 2 + size]
            del self.buffer[: line_end + 2 + size + 2]

    def _finish(self) -> None:
        if self.headers.get("connection", "").lower() == "close":
            self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(HttpResponse(self.status, self.headers, bytes(self.body)))
        self.in_body = False


class Http1Endpoint:
    """POSTs to one URL over a stack of idle keep-alive connections (the caller bounds concurrency)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float, max_bytes: int = 1 << 62):
        parts = urlsplit(url)
        self.max_bytes = max_bytes
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url}: the lean client speaks plain http:// only")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout_s = timeout_s
        host = self.host if self.port == 80 else f"{self.host}:{self.port}"
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {host}\r\n{fixed}"
        self._idle: list[_Connection] = []

    async def post(self, content: bytes, headers: Mapping[str, str]) -> HttpResponse:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = f"{self._head}{extra}content-length: {len(content)}\r\n\r\n".encode("latin-1") + content
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, data)
            except TransportFailure as e:
                if e.kind != "connection" or conn.received:
                    raise
                # The server closed this idle connection as we wrote: nothing was processed, use a new one.
        return await self._exchange(await self._connect(), data)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Connection(self.max_bytes), self.host, self.port), self.timeout_s)
        except asyncio.TimeoutError:
            raise TransportFailure("timeout", f"connect to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise TransportFailure("connection", f"cannot connect to {self.host}:{self.port}: {e}") from None
        return conn

    async def _exchange(self, conn: _Connection, data: bytes) -> HttpResponse:
        waiter = conn.send(data)
        timer = asyncio.get_running_loop().call_later(
            self.timeout_s, conn.abort, TransportFailure("timeout", f"no answer within {self.timeout_s:g}s"))
        try:
            response = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
        if not conn.closed:
            self._idle.append(conn)
        return response

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
