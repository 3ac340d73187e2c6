"""A sale's state in Redis: warm-up when scheduled, updates, and rebuilds from PostgreSQL.

Redis decides purchases, PostgreSQL keeps the record. When Redis lacks a sale (restarted
without persistence, flushed, keys expired) the sale is rebuilt from PostgreSQL plus any
surviving outbox entries; until then purchases of it are refused, never decided from an
empty state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NoReturn

import asyncpg
from redis.asyncio import Redis

from seckill.broker import QueueState
from seckill.catalog import Q, Sale, SaleCache, utcnow
from seckill.drain import wait_until_drained
from seckill.errors import Conflict, Overloaded, sale_not_found
from seckill.keys import KeySpace, idempotency_field
from seckill.scripts import Holdings, LoadCode, SaleDefinition, Scripts

log = logging.getLogger(__name__)

# Keys live on after the sale ends: idempotent replays are honoured at least this long.
KEEP_AFTER_END = timedelta(days=2)


def definition(sale: Sale) -> SaleDefinition:
    return SaleDefinition(
        stock=sale.stock, starts_ms=sale.starts_ms, ends_ms=sale.ends_ms,
        per_user_limit=sale.per_user_limit, cancelled=sale.cancelled,
        price_cents=sale.sale_price_cents, payment_timeout_s=sale.payment_timeout_s,
        expire_at_s=int((sale.ends_at + KEEP_AFTER_END).timestamp()),
        user_rate_per_s=sale.user_rate_per_s, user_burst=sale.user_burst,
        address_rate_per_s=sale.address_rate_per_s, address_burst=sale.address_burst,
        requires_token=sale.requires_token, pow_bits=sale.pow_bits,
        waiting_room=sale.waiting_room, admit_per_s=sale.admit_per_s)


class SaleState:
    def __init__(self, redis: Redis, db: asyncpg.Pool, keys: KeySpace, scripts: Scripts, *,
                 queue_state: Callable[[], Awaitable[QueueState | None]] | None = None) -> None:
        self._queue_state = queue_state
        self._drain: asyncio.Future[None] | None = None
        self._redis = redis
        self._db = db
        self._keys = keys
        self._scripts = scripts
        self._rebuilding: dict[int, asyncio.Task[bool]] = {}

    async def warm_up(self, sale: Sale) -> None:
        """Load a newly scheduled sale: full stock, nobody holding anything."""
        await self._scripts.load_sale(self._keys.sale(sale.id), definition(sale))
        await self._redis.sadd(self._keys.active_sales, str(sale.id))

    async def update(self, sale: Sale) -> LoadCode:
        code, _ = await self._scripts.load_sale(self._keys.sale(sale.id), definition(sale),
                                                update=True)
        await self._redis.publish(self._keys.restock_channel, str(sale.id))
        if code is LoadCode.NOT_LOADED:
            await self.rebuild(sale)
            return LoadCode.UPDATED
        return code

    async def remaining(self, sale_ids: list[int]) -> dict[int, int | None]:
        """Remaining units by sale; None where Redis has no state for the sale."""
        if not sale_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.hget(self._keys.sale(sale_id).state, "remaining")
        values = await pipe.execute()
        return {sid: (int(v) if v is not None else None)
                for sid, v in zip(sale_ids, values, strict=True)}

    async def remaining_one(self, sale_id: int) -> int | None:
        """One sale's remaining units, batched with the purchases of the same moment."""
        return await self._scripts.remaining(self._keys.sale(sale_id))

    async def held(self, sale_id: int) -> int:
        values = await self._redis.hvals(self._keys.sale(sale_id).holders)
        return sum(int(v) for v in values)

    async def rebuild(self, sale: Sale) -> bool:
        """Rebuild a sale missing from Redis; True when this call wrote the state."""
        keys = self._keys.sale(sale.id)
        await self._wait_for_drain()
        # Pending orders first, then PostgreSQL: an order committed in between is seen twice
        # (and counted once), never missed.
        pending_raw = await self._redis.hvals(keys.orders)
        rows = await self._db.fetch(Q["sale_orders"], sale.id)
        orders: dict[str, tuple[str, int, str, str | None]] = {}
        for raw in pending_raw:
            o = json.loads(raw)
            orders[o["order_id"]] = (o["user_id"], int(o["quantity"]), "pending",
                                     o.get("idempotency_key") or None)
        for r in rows:
            orders[r["order_id"]] = (r["user_id"], r["quantity"], r["status"],
                                     r["idempotency_key"])
        holders: dict[str, int] = {}
        idem: dict[str, str] = {}
        released: list[str] = []
        for order_id, (user, qty, status, key) in orders.items():
            if status in ("cancelled", "expired"):
                released.append(order_id)
            else:
                holders[user] = holders.get(user, 0) + qty
            if key:
                idem[idempotency_field(user, key)] = f"{order_id}:{qty}"
        code, remaining = await self._scripts.load_sale(
            keys, definition(sale), holdings=Holdings(holders, idem, released))
        await self._redis.sadd(self._keys.active_sales, str(sale.id))
        if code is LoadCode.CREATED:
            await self._redis.publish(self._keys.restock_channel, str(sale.id))
            log.warning("rebuilt sale %s in Redis from PostgreSQL: %d held, %d remaining",
                        sale.id, sum(holders.values()), remaining)
            return True
        return False

    async def _wait_for_drain(self) -> None:
        """Let orders in flight reach PostgreSQL first (see seckill.drain); concurrent
        rebuilds share one wait."""
        if self._queue_state is None:
            return
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(
                wait_until_drained(self._redis, self._keys, self._queue_state))
        await asyncio.shield(self._drain)

    def rebuild_soon(self, sale: Sale) -> None:
        """Start one rebuild of the sale in the background, unless one is running."""
        if sale.id in self._rebuilding:
            return
        task = asyncio.get_running_loop().create_task(self.rebuild(sale))
        self._rebuilding[sale.id] = task

        def done(t: asyncio.Task[bool]) -> None:
            self._rebuilding.pop(sale.id, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("rebuilding sale %s failed: %r", sale.id, t.exception())

        task.add_done_callback(done)

    async def rebuild_missing(self) -> list[int]:
        """At startup: start rebuilding every scheduled or live sale that Redis lacks.

        The rebuilds run in the background (they may wait for orders in flight); until one
        is done, purchases of that sale are refused with 503."""
        rows = await self._db.fetch(Q["open_sales"], 100_000)
        sales = [Sale.from_row(r) for r in rows]
        present = await self.remaining([s.id for s in sales])
        missing = [sale for sale in sales if present[sale.id] is None]
        for sale in missing:
            self.rebuild_soon(sale)
        return [sale.id for sale in missing]

    async def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        tasks = list(self._rebuilding.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)




async def refuse_missing(cache: SaleCache, state: SaleState, sale_id: int) -> NoReturn:
    """Redis has no state for this sale: unknown (404), over (409), or rebuilt now (503)."""
    sale = await cache.get(sale_id)
    if sale is None:
        raise sale_not_found()
    if sale.cancelled:
        raise Conflict("cancelled", "This sale has been cancelled.")
    if sale.ended(utcnow()):
        raise Conflict("ended", "This sale has ended.")
    state.rebuild_soon(sale)
    raise Overloaded("This sale is being restored; try again in a moment.", retry_after=1)
