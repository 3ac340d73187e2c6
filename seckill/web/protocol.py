"""Errors aiohttp answers before any handler runs (unreadable requests: over-long or invalid
headers, malformed request lines) also get the error envelope, and a one-line log.

aiohttp renders those in `RequestHandler.handle_error` as plain text and logs a traceback
for what is only a client's mistake. It offers no hook, so `install()` replaces that method
(once, for every server of the process: all of them are ours).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from seckill.web.middleware import error_response

log = logging.getLogger(__name__)
_original = web_protocol.RequestHandler.handle_error


def _handle_error(self: web_protocol.RequestHandler, request: BaseRequest, status: int = 500,
                  exc: BaseException | None = None, message: str | None = None
                  ) -> StreamResponse:
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        return _original(self, request, status, exc, message)
    log.info("unreadable request from %s: %s", request.remote,
             str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if request.writer.output_size > 0:
        raise ConnectionError("a response was already sent; cannot send the error")
    return error_response(status, "invalid_request",
                          "The request could not be read: its request line or headers are "
                          "malformed or too long (at most 8190 bytes each).")


def install() -> None:
    handler: Any = web_protocol.RequestHandler
    if handler.handle_error is not _handle_error:
        handler.handle_error = _handle_error
