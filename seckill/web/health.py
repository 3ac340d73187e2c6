"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from seckill.appkeys import AMQP, DB, REDIS
from seckill.openapi import document
from seckill.web.middleware import json_response

routes = web.RouteTableDef()
PROBE_TIMEOUT_S = 1.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response(request, {"status": "ok"})


async def _probe(check: Awaitable[object]) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check
    except Exception:
        return False
    return True


async def _amqp_ok(request: web.Request) -> None:
    connection = request.app[AMQP]
    if connection.is_closed:
        raise ConnectionError("AMQP connection closed")
    channel = await connection.channel()
    await channel.close()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    redis_ok, db_ok, amqp_ok = await asyncio.gather(
        _probe(request.app[REDIS].ping()),
        _probe(request.app[DB].fetchval("SELECT 1")),
        _probe(_amqp_ok(request)))
    checks = {"redis": redis_ok, "postgres": db_ok, "rabbitmq": amqp_ok}
    down = [name for name, ok in checks.items() if not ok]
    if down:
        return json_response(request, {
            "error": "not_ready", "message": "Not ready: " + ", ".join(down) + " down.",
            "down": down, "checks": {k: "ok" if v else "down" for k, v in checks.items()}}, 503)
    return json_response(request, {"status": "ready", "checks": {k: "ok" for k in checks}})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(request, document())
