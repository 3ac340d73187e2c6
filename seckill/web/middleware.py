"""Every error as the envelope of API.md, and request metrics by route."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import msgspec
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from seckill import metrics
from seckill.appkeys import SETTINGS
from seckill.errors import SeckillError

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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=_encode(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, code: str, message: str, *,
                   fields: dict[str, str] | None = None,
                   retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(body, status, headers)


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


@web.middleware
async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = _route(request)
    try:
        if route in _SELF_BOUNDED:
            response = await handler(request)
        else:
            async with asyncio.timeout(request.app[SETTINGS].request_timeout_s):
                response = await handler(request)
    except SeckillError as exc:
        response = error_response(exc.status, exc.code, exc.message, fields=exc.fields,
                                  retry_after=exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        if exc.status == 404:
            message = "There is nothing at this address."
        elif exc.status == 405:
            message = f"{request.method} is not allowed here."
        else:
            message = exc.reason or "The request was refused."
        response = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except _UNAVAILABLE as exc:
        log.warning("backing service unavailable on %s %s: %r", request.method, request.path,
                    exc)
        response = error_response(503, "overloaded",
                                  "A backing service is unavailable; try again shortly.",
                                  retry_after=1)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal_error",
                                  "Something went wrong on our side; the request may be retried.")
    _count(request.method, route, response.status, time.perf_counter() - started)
    return response


# The purchase waits only on Redis, whose client bounds every wait (pool and socket
# timeouts): an asyncio.timeout per request would cost it ~5% of its throughput.
_SELF_BOUNDED = frozenset({"/api/v1/sales/{sale_id}/purchase"})

_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _count(method: str, route: str, status: int, seconds: float) -> None:
    """Request metrics, with the labelled children looked up once (they are hot)."""
    key = (method, route, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (metrics.REQUESTS.labels(method, route, str(status)),
                                 metrics.LATENCY.labels(route))
    pair[0].inc()
    pair[1].observe(seconds)
