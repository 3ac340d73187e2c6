"""The application factory: routes, middleware, and every resource in a cleanup context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from seckill.appkeys import (
    AMQP,
    BROWSE,
    DB,
    KEYS,
    OPERATIONS,
    ORDERS,
    PUMP,
    PURCHASE_TOKENS,
    PURCHASES,
    REDIS,
    SALE_CACHE,
    SALE_STATE,
    SCRIPTS,
    SETTINGS,
    VERIFIER,
    WAITING_ROOM,
)
from seckill.auth import TokenVerifier
from seckill.broker import ConfirmedPublisher, Topology, queue_state
from seckill.browse import Browse
from seckill.catalog import SaleCache
from seckill.connections import open_amqp, open_db, open_redis
from seckill.keys import KeySpace
from seckill.operations import Operations
from seckill.orders import Orders
from seckill.outbox import OutboxPump
from seckill.purchase import Purchases
from seckill.purchase_tokens import PurchaseTokens
from seckill.sale_state import SaleState
from seckill.scripts import RateDefaults, Script, ScriptRunner, Scripts, resend_window
from seckill.settings import Settings
from seckill.soldout import SoldOutBoard
from seckill.waiting_room import WaitingRoom
from seckill.web import admin, health, protocol, shop
from seckill.web.middleware import UNMATCHED, guard, unmatched

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_redis(app[SETTINGS]) as redis:
        app[REDIS] = redis
        yield


async def _db_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_db(app[SETTINGS]) as db:
        app[DB] = db
        yield


async def _amqp_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_amqp(app[SETTINGS], wait=False) as connection:
        app[AMQP] = connection
        yield


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis, db = app[SETTINGS], app[REDIS], app[DB]
    keys = KeySpace(settings.redis_prefix)
    runner = ScriptRunner(redis, resend_within_s=resend_window(settings.outbox_grace_ms))
    scripts = Scripts(runner)
    cache = SaleCache(db)
    topology = Topology(settings.amqp_prefix, settings.delivery_limit)
    state = SaleState(redis, db, keys, scripts,
                      queue_state=lambda: queue_state(app[AMQP], topology))
    publisher = ConfirmedPublisher(app[AMQP], topology, settings.publish_timeout_s)
    pump = OutboxPump(publisher, runner, keys)
    app[KEYS], app[SCRIPTS], app[SALE_CACHE], app[SALE_STATE], app[PUMP] = (
        keys, scripts, cache, state, pump)
    app[OPERATIONS] = Operations(db, state, cache)
    board = SoldOutBoard(redis, keys, ttl_s=settings.sold_out_memory_ms / 1000)
    app[PURCHASES] = Purchases(
        scripts, keys, pump, cache, state, board,
        RateDefaults(settings.user_rate_per_s, settings.user_burst,
                     settings.address_rate_per_s, settings.address_burst),
        max_inflight=settings.max_inflight_purchases)
    app[WAITING_ROOM] = WaitingRoom(runner, keys, settings.jwt_secret.encode(),
                                    Script.load("join_room"), cache, state)
    app[ORDERS] = Orders(db, redis, keys, scripts)
    app[BROWSE] = Browse(db, cache, state)
    rebuilt = await state.rebuild_missing()
    if rebuilt:
        log.warning("rebuilding %d sales missing from Redis: %s", len(rebuilt), rebuilt)
    background = [asyncio.create_task(pump.run(), name="outbox-pump"),
                  asyncio.create_task(board.listen(), name="restock-listener")]
    yield
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await board.close()
    await pump.drain(settings.publish_timeout_s)
    await state.close()
    await runner.close()
    await publisher.close()


def create_app(settings: Settings) -> web.Application:
    protocol.install()
    app = web.Application(client_max_size=MAX_BODY,
                          handler_args={"max_field_size": 8190, "max_line_size": 8190})
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(settings.jwt_secret, leeway_s=settings.jwt_leeway_s)
    app[PURCHASE_TOKENS] = PurchaseTokens(settings.jwt_secret)
    app.cleanup_ctx.extend([_redis_ctx, _db_ctx, _amqp_ctx, _core_ctx])
    for table in (health.routes, shop.routes, admin.routes):
        for route in table:
            assert isinstance(route, web.RouteDef)
            guarded = guard(route.path, route.handler)
            app.router.add_route(route.method, route.path, guarded, **route.kwargs)
            if route.method == "GET":  # monitors and load balancers probe with HEAD
                app.router.add_route("HEAD", route.path, guarded)
    app.router.add_route("*", UNMATCHED, guard("unmatched", unmatched))
    return app
