"""Answers written as finished bytes (seckill.web.wire) are byte for byte aiohttp's own, and
aiohttp's path still answers whatever they would not be exact for."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from seckill.web import wire
from tests.support import Api, unique

BODY = b'{"order_id":"01JD0000000000000000000000-1","status":"pending"}'
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def _app(*, hook: bool = False) -> web.Application:
    app = web.Application()

    def route(answer: Callable[[web.Request], web.StreamResponse]
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            return answer(request)
        return handler

    for status in (200, 202, 409, 429):
        retry = 3 if status == 429 else None
        headers = {"Retry-After": str(retry)} if retry is not None else None
        app.router.add_post(f"/aiohttp/{status}", route(
            lambda r, s=status, h=headers: web.Response(body=BODY, status=s, headers=h,
                                                        content_type="application/json")))
        app.router.add_post(f"/wire/{status}", route(
            lambda r, s=status, ra=retry: wire.WireResponse(s, BODY, ra)))
        app.router.add_route("*", f"/answer/{status}", route(
            lambda r, s=status, ra=retry: wire.answer(r, BODY, s, ra)))
    if hook:
        async def mark(request: web.Request, response: web.StreamResponse) -> None:
            response.headers["X-Hooked"] = "1"
        app.on_response_prepare.append(mark)
    return app


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    runners: list[web.AppRunner] = []

    async def start(*, hook: bool = False) -> int:
        runner = web.AppRunner(_app(hook=hook), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


class Connection:
    """A raw HTTP/1.x client connection: what is written on the wire, unparsed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def exchange(self, method: str, path: str, *, version: str = "1.1",
                       headers: str = "", body: bytes = b"{}") -> bytes:
        self.writer.write(f"{method} {path} HTTP/{version}\r\nHost: t\r\n{headers}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        rest = b""
        if length and method != "HEAD":
            rest = await self.reader.readexactly(int(length.group(1)))
        return head + rest

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _same_second(raw: bytes) -> bytes:
    return DATE.sub(b"\r\nDate: -\r\n", raw)


@pytest.mark.parametrize("status", [200, 202, 409, 429])
async def test_the_bytes_are_aiohttps_own(server: Callable[..., Awaitable[int]],
                                          status: int) -> None:
    conn = await Connection.open(await server())
    try:
        theirs = await conn.exchange("POST", f"/aiohttp/{status}")
        ours = await conn.exchange("POST", f"/wire/{status}")
    finally:
        await conn.close()
    assert _same_second(ours) == _same_second(theirs)
    assert ours.startswith(f"HTTP/1.1 {status} ".encode()) and ours.endswith(BODY)
    assert (b"Retry-After: 3\r\n" in ours) == (status == 429)


async def test_the_date_is_aiohttps_format(server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server())
    try:
        raw = await conn.exchange("POST", "/wire/202")
    finally:
        await conn.close()
    date = DATE.search(raw)
    assert date is not None
    assert re.fullmatch(rb"\r\nDate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                        rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                        rb"\d\d:\d\d:\d\d GMT\r\n", date.group(0))


async def test_a_keep_alive_connection_serves_one_answer_after_another(
        server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server())
    try:
        answers = [await conn.exchange("POST", "/answer/202") for _ in range(5)]
    finally:
        await conn.close()
    assert all(a.startswith(b"HTTP/1.1 202 Accepted\r\n") and a.endswith(BODY) for a in answers)
    assert not any(b"Connection:" in a for a in answers)


async def test_connection_close_gets_aiohttps_answer_and_a_closed_connection(
        server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server())
    try:
        raw = await conn.exchange("POST", "/answer/409", headers="Connection: close\r\n")
        assert raw.startswith(b"HTTP/1.1 409 Conflict\r\n") and raw.endswith(BODY)
        assert b"\r\nConnection: close\r\n" in raw
        assert await conn.closed_by_server()
    finally:
        await conn.close()


async def test_http_1_0_gets_a_1_0_answer(server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server())
    try:
        raw = await conn.exchange("POST", "/answer/202", version="1.0")
        assert raw.startswith(b"HTTP/1.0 202 Accepted\r\n") and raw.endswith(BODY)
        assert await conn.closed_by_server()
    finally:
        await conn.close()


async def test_head_gets_no_body(server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server())
    try:
        raw = await conn.exchange("HEAD", "/answer/200", body=b"")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n")
        after = await conn.exchange("POST", "/answer/202")  # the connection is still in step
        assert after.startswith(b"HTTP/1.1 202 Accepted\r\n") and after.endswith(BODY)
    finally:
        await conn.close()


async def test_an_on_response_prepare_hook_still_runs(
        server: Callable[..., Awaitable[int]]) -> None:
    conn = await Connection.open(await server(hook=True))
    try:
        raw = await conn.exchange("POST", "/answer/202")
    finally:
        await conn.close()
    assert b"\r\nX-Hooked: 1\r\n" in raw and raw.endswith(BODY)


async def test_the_purchase_paths_answer_on_the_wire(api: Api) -> None:
    """The real app's win, its sold-out answers (from Redis and from the fast path) and a
    refusal with Retry-After, read as bytes from one keep-alive connection."""
    sale = await api.create_sale(stock=1, user_rate_per_s=1, user_burst=1)
    path = f"/api/v1/sales/{sale['id']}/purchase"
    port = int(api.base.rsplit(":", 1)[1])
    conn = await Connection.open(port)
    try:
        def auth(user: str) -> str:
            return f"Authorization: {api.auth(user)['Authorization']}\r\n" \
                   "Content-Type: application/json\r\n"

        won = await conn.exchange("POST", path, headers=auth(unique("w")),
                                  body=b'{"quantity":1}')
        sold_out = [await conn.exchange("POST", path, headers=auth(unique("s")),
                                        body=b'{"quantity":1}') for _ in range(3)]
        flooder = unique("f")
        await conn.exchange("POST", path, headers=auth(flooder), body=b'{"quantity":1}')
        limited = await conn.exchange("POST", path, headers=auth(flooder),
                                      body=b'{"quantity":1}')
    finally:
        await conn.close()
    assert won.startswith(b"HTTP/1.1 202 Accepted\r\n") and b'"status":"pending"' in won
    for raw in sold_out:
        assert raw.startswith(b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n")
        assert raw.endswith(b'{"error":"sold_out","message":"This sale is sold out."}')
    assert limited.startswith(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n")
    assert b'"error":"rate_limited"' in limited


def test_a_client_that_stops_reading_gets_aiohttps_path() -> None:
    """Paused writes (the client's window is full) go through aiohttp's writer, which waits
    for the client to read rather than buffer without bound."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    protocol = mock.Mock(writing_paused=False)
    request = make_mocked_request("POST", "/", protocol=protocol, app=web.Application())
    assert wire.applies(request)
    protocol.writing_paused = True
    assert not wire.applies(request)
