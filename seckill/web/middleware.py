"""Every error as the envelope of API.md, and request metrics by route."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from seckill import metrics
from seckill.appkeys import SETTINGS
from seckill.errors import SeckillError
from seckill.hot_metrics import Count
from seckill.web import wire

log = logging.getLogger(__name__)

# Failures of Redis, PostgreSQL or the network: the client may retry, nothing was decided.
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
)
_encode = msgspec.json.encode

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 411: "length_required",
    413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    429: "rate_limited", 431: "headers_too_large",
}


def json_response(request: web.Request, body: Any, status: int = 200) -> web.StreamResponse:
    return wire.answer(request, _encode(body), status)


def envelope(code: str, message: str, fields: dict[str, str] | None = None) -> bytes:
    """The error envelope's bytes; the same few refusals (sold_out above all) encoded once."""
    if fields:
        return _encode({"error": code, "message": message, "fields": fields})
    body = _ENVELOPES.get((code, message))
    if body is None:
        body = _encode({"error": code, "message": message})
        if len(_ENVELOPES) < MAX_ENVELOPES:
            _ENVELOPES[code, message] = body
    return body


def error_response(status: int, code: str, message: str, *,
                   fields: dict[str, str] | None = None,
                   retry_after: int | None = None) -> web.Response:
    """The envelope as a plain web.Response, for answers made without a request at hand."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(body=envelope(code, message, fields), status=status, headers=headers,
                        content_type="application/json")


def refusal_response(request: web.Request, exc: SeckillError) -> web.StreamResponse:
    return wire.answer(request, envelope(exc.code, exc.message, exc.fields), exc.status,
                       exc.retry_after)


MAX_ENVELOPES = 1024
_ENVELOPES: dict[tuple[str, str], bytes] = {}


AtOnce = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]
_AT_ONCE: dict[Handler, AtOnce] = {}


def answers_at_once(answer: AtOnce) -> Handler:
    """A handler that returns its response itself when it has it at once, else an awaitable
    of it. The guard calls it directly, so what is answered at once needs no coroutine of
    the handler's own (the sold-out refusals, most of a flash sale's requests); to anything
    else it is an ordinary handler."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = answer(request)
        return response if isinstance(response, web.StreamResponse) else await response

    _AT_ONCE[handler] = answer
    return handler


def guard(route: str, handler: Handler) -> Handler:
    """Wrap a handler: every error as the envelope, a bound on its time, request metrics.

    A wrapper per route rather than an aiohttp middleware: the middleware machinery costs
    the purchase path about a tenth of its throughput.
    """
    bounded = route not in _SELF_BOUNDED
    call = _AT_ONCE.get(handler, handler)  # an at-once handler: its own answer, no wrapper
    # The route's labelled children, looked up once (they are hot).
    latency = metrics.LATENCY.labels(route)
    counts: dict[tuple[str, int], Count] = {}

    async def guarded(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            # Looked up before the call, so that nothing can fail between it and the await.
            limit = request.app[SETTINGS].request_timeout_s if bounded else None
            answer = call(request)
            if isinstance(answer, web.StreamResponse):
                response = answer
            elif limit is None:
                response = await answer
            else:
                async with asyncio.timeout(limit):
                    response = await answer
        except SeckillError as exc:
            response = refusal_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(request, exc.status, exc.reason)
        except _UNAVAILABLE as exc:
            log.warning("backing service unavailable on %s %s: %r", request.method,
                        request.path, exc)
            response = error_response(503, "overloaded",
                                      "A backing service is unavailable; try again shortly.",
                                      retry_after=1)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = error_response(
                500, "internal_error",
                "Something went wrong on our side; the request may be retried.")
        key = (request.method, response.status)
        count = counts.get(key)
        if count is None:
            count = counts[key] = metrics.REQUESTS.labels(key[0], route, str(key[1]))
        count.value += 1
        latency.observe(time.perf_counter() - started)
        return response

    return guarded


def _http_error(request: web.Request, status: int, reason: str | None,
                allow: list[str] | None = None) -> web.Response:
    code = _HTTP_CODES.get(status, "http_error")
    if status == 404:
        message = "There is nothing at this address."
    elif status == 405:
        message = f"{request.method} is not allowed here."
    else:
        message = reason or "The request was refused."
    response = error_response(status, code, message)
    if allow:
        response.headers["Allow"] = ", ".join(sorted(allow))
    return response


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The last route: 405 with Allow when another route has this path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == UNMATCHED:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        return _http_error(request, 405, None, sorted(allowed))
    return _http_error(request, 404, None)


UNMATCHED = "/{tail:.*}"

# The purchase waits only on Redis, whose client bounds every wait (pool and socket
# timeouts): an asyncio.timeout per request would cost it ~5% of its throughput.
_SELF_BOUNDED = frozenset({"/api/v1/sales/{sale_id}/purchase"})
