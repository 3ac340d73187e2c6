"""Small JSON answers written to the connection as finished bytes.

aiohttp builds every response from a header multidict: content type and length, date and
server filled in, each header checked and serialised, then the status line, headers and
body joined and written. For the purchase path's answers (a 202 with the order, a 409 sold
out: most of a flash sale's traffic) that machinery cost the front door more CPU than
everything seckill itself does for the request. A `WireResponse` writes the bytes aiohttp
would write, header for header and in the same order, from a head template per status: the
date is formatted once a second, and only the body, its length and a Retry-After vary.

It is used only where that is exactly aiohttp's answer: an HTTP/1.1 keep-alive request
other than HEAD, on a connection whose writes are not paused (a client that stops reading
gets aiohttp's own path, which waits for it), in an app without `on_response_prepare`
hooks. Anything else gets an ordinary `web.Response` with the same status, headers and body.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11


class _Clock:
    """The Date header's value (RFC 9110's IMF-fixdate), formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.value = formatdate(second, usegmt=True).encode()
            self.second = second
        return self.value


_clock = _Clock()


def _head(status: int) -> bytes:
    """A response head as aiohttp writes it for a JSON body: "%b" for extra header lines
    (they come first, as headers given to web.Response do), "%d" for the body's length and
    "%b" for the date."""
    server = SERVER_SOFTWARE.replace("%", "%%")
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n%b"
            "Content-Type: application/json\r\nContent-Length: %d\r\n"
            f"Date: %b\r\nServer: {server}\r\n\r\n").encode()


_HEADS: dict[int, bytes] = {}


class WireResponse(web.StreamResponse):
    """A complete small JSON response, written in one piece when aiohttp prepares it."""

    _keep_alive = True  # made only for keep-alive requests (see `answer`)

    def __init__(self, status: int, body: bytes, retry_after: int | None = None) -> None:
        super().__init__(status=status)
        self._wire_body = body
        self._retry_after = retry_after

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client has gone")
        head = _HEADS.get(self._status)
        if head is None:
            head = _HEADS[self._status] = _head(self._status)
        body = self._wire_body
        extra = b"" if self._retry_after is None else b"Retry-After: %d\r\n" % self._retry_after
        data = head % (extra, len(body), _clock.now()) + body
        transport.write(data)
        request.writer.output_size += len(data)  # what aiohttp counts as sent, as it would
        self._eof_sent = True
        self._body_length = len(body)
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def applies(request: web.Request) -> bool:
    """Whether a WireResponse is exactly what aiohttp would write for this request."""
    protocol = request.protocol
    return (request.version == HttpVersion11 and request.keep_alive
            and request.method != "HEAD" and protocol is not None
            and not protocol.writing_paused and not request.app.on_response_prepare)


def answer(request: web.Request, body: bytes, status: int = 200,
           retry_after: int | None = None) -> web.StreamResponse:
    """A JSON answer: finished bytes where they are exactly aiohttp's, else web.Response."""
    if applies(request):
        return WireResponse(status, body, retry_after)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(body=body, status=status, headers=headers,
                        content_type="application/json")
