"""The lean HTTP/1.1 client against a loopback server that answers with scripted raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cotgen.backends.http1 import Http1Endpoint, TransportFailure

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'


class RawServer:
    """Answers the i-th request with script[i]; `None` closes the connection without answering, `"hang"` waits."""

    def __init__(self, script: list[bytes | str | None], close_idle_after: float | None = None):
        self.script = list(script)
        self.connections = 0
        self.requests: list[bytes] = []
        self.close_idle_after = close_idle_after

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.script.pop(0) if self.script else OK
                if answer is None:
                    break
                if answer == "hang":
                    await asyncio.sleep(30)
                writer.write(answer)  # type: ignore[arg-type]
                await writer.drain()
                if b"connection: close" in answer.lower() or answer.startswith(b"HTTP/1.0"):  # type: ignore[union-attr]
                    break
                if self.close_idle_after is not None:
                    await asyncio.sleep(self.close_idle_after)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serve(server: RawServer, timeout_s: float = 5.0) -> AsyncIterator[Http1Endpoint]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    endpoint = Http1Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", {"authorization": "Bearer k"}, timeout_s)
    try:
        yield endpoint
    finally:
        await endpoint.aclose()
        srv.close()


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_reuses_one_connection_and_sends_head_and_body() -> None:
    async def main() -> None:
        server = RawServer([])
        async with serve(server) as ep:
            for _ in range(3):
                r = await ep.post(b'{"a": 1}', {"x-cotgen-request-keys": "k1"})
                assert (r.status, r.content, r.headers["content-type"]) == (200, b'{"ok": true}', "application/json")
        assert server.connections == 1
        first = server.requests[0].decode()
        assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
        assert "authorization: Bearer k\r\n" in first and "x-cotgen-request-keys: k1\r\n" in first
        assert first.endswith('content-length: 8\r\n\r\n{"a": 1}')
    run(main())


def test_chunked_interim_and_until_close_bodies() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5;ext=1\r\n{\"a\":\r\n4\r\n 12}\r\n0\r\nx-trailer: t\r\n\r\n")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    until_close = b"HTTP/1.0 200 OK\r\n\r\n{\"b\": 2}"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"

    async def main() -> None:
        server = RawServer([chunked, interim, no_content, until_close])
        async with serve(server) as ep:
            assert (await ep.post(b"{}", {})).content == b'{"a": 12}'
            assert (await ep.post(b"{}", {})).content == b'{"ok": true}'
            assert (await ep.post(b"{}", {})).status == 204
            assert (await ep.post(b"{}", {})).content == b'{"b": 2}'
            assert (await ep.post(b"{}", {})).status == 200
        assert server.connections == 2, "a body that runs until close ends its connection"
    run(main())


def test_connection_close_and_idle_connections_closed_by_the_server() -> None:
    close = b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\nretry-after: 2\r\ncontent-length: 2\r\n\r\n{}"

    async def main() -> None:
        server = RawServer([close], close_idle_after=0.05)
        async with serve(server) as ep:
            r = await ep.post(b"{}", {})
            assert (r.status, r.headers["retry-after"]) == (429, "2")
            await asyncio.sleep(0.2)  # the server has closed the next connection's idle keep-alive too
            assert (await ep.post(b"{}", {})).status == 200
            await asyncio.sleep(0.2)
            assert (await ep.post(b"{}", {})).status == 200
        assert server.connections == 3
    run(main())


def test_a_reused_connection_dropped_before_answering_is_retried_once_on_a_new_one() -> None:
    async def main() -> None:
        server = RawServer([OK, None])
        async with serve(server) as ep:
            assert (await ep.post(b"{}", {})).status == 200
            assert (await ep.post(b"{}", {})).status == 200, "the drop came on a reused connection"
        assert server.connections == 2
    run(main())


@pytest.mark.parametrize(("script", "kind"), [(["hang"], "timeout"), ([None], "connection"),
                                              ([b"HTTP/1.1 abc\r\n\r\n"], "connection")])
def test_failures_are_transport_failures(script: list, kind: str) -> None:
    async def main() -> None:
        async with serve(RawServer(script), timeout_s=0.3) as ep:
            with pytest.raises(TransportFailure) as err:
                await ep.post(b"{}", {})
            assert err.value.kind == kind
    run(main())


def test_refused_connection() -> None:
    async def main() -> None:
        ep = Http1Endpoint("http://127.0.0.1:9/v1/chat/completions", {}, 1.0)
        with pytest.raises(TransportFailure, match="cannot connect") as err:
            await ep.post(b"{}", {})
        assert err.value.kind == "connection"
    run(main())
