"""A shopper's orders: reading them, paying, cancelling, and giving units back."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from redis.asyncio import Redis

from seckill import metrics
from seckill.catalog import utcnow
from seckill.errors import Conflict, SeckillError, order_not_found
from seckill.keys import KeySpace
from seckill.order_ids import sale_of_order
from seckill.resources import queries
from seckill.schemas import from_ms, rfc3339
from seckill.scripts import ReleaseCode, Scripts

Q = queries("orders")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    sale_id: int
    user_id: str
    quantity: int
    amount_cents: int
    status: str
    created_at: datetime
    pay_by: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Order:
        return cls(**dict(row))

    @classmethod
    def from_pending(cls, raw: str) -> Order:
        o = json.loads(raw)
        return cls(o["order_id"], int(o["sale_id"]), o["user_id"], int(o["quantity"]),
                   int(o["amount_cents"]), "pending", from_ms(int(o["created_ms"])),
                   from_ms(int(o["pay_by_ms"])))

    def to_json(self) -> dict[str, Any]:
        status = self.status
        if status == "created" and self.pay_by <= utcnow():
            status = "expired"  # past due; the sweeper is about to record it
        return {"order_id": self.order_id, "sale_id": str(self.sale_id),
                "user_id": self.user_id, "quantity": self.quantity,
                "amount_cents": self.amount_cents, "status": status,
                "created_at": rfc3339(self.created_at), "pay_by": rfc3339(self.pay_by)}


def order_pending() -> SeckillError:
    return Conflict("order_pending", "This order is still being recorded; try again shortly.",
                    retry_after=1)


@dataclass(frozen=True, slots=True)
class Orders:
    db: asyncpg.Pool
    redis: Redis
    keys: KeySpace
    scripts: Scripts

    async def get(self, order_id: str, user_id: str) -> Order:
        sale_id = sale_of_order(order_id)
        if sale_id is None:
            raise order_not_found()
        row = await self.db.fetchrow(Q["get_order"], order_id, user_id)
        if row is not None:
            return Order.from_row(row)
        raw = cast(str | None, await self.redis.hget(self.keys.sale(sale_id).orders, order_id))
        if raw is not None:
            pending = Order.from_pending(raw)
            if pending.user_id == user_id:
                return pending
        # The worker may have committed between the two reads.
        row = await self.db.fetchrow(Q["get_order"], order_id, user_id)
        if row is None:
            raise order_not_found()
        return Order.from_row(row)

    async def mine(self, user_id: str, limit: int = 200) -> list[Order]:
        return [Order.from_row(r) for r in await self.db.fetch(Q["user_orders"], user_id, limit)]

    async def pay(self, order_id: str, user_id: str) -> Order:
        if sale_of_order(order_id) is None:
            raise order_not_found()
        row = await self.db.fetchrow(Q["pay_order"], order_id, user_id)
        if row is not None:
            return Order.from_row(row)
        order = await self.get(order_id, user_id)
        match order.status:
            case "paid":
                return order
            case "pending":
                raise order_pending()
            case "cancelled":
                raise Conflict("order_cancelled", "This order was cancelled.")
        raise Conflict("order_expired", "This order was not paid in time.")

    async def cancel(self, order_id: str, user_id: str) -> Order:
        if sale_of_order(order_id) is None:
            raise order_not_found()
        row = await self.db.fetchrow(Q["cancel_order"], order_id, user_id)
        if row is not None:
            order = Order.from_row(row)
            await self.give_back([order])
            return order
        order = await self.get(order_id, user_id)
        match order.status:
            case "cancelled":
                return order
            case "pending":
                raise order_pending()
            case "paid":
                raise Conflict("order_paid", "This order is paid; it cannot be cancelled.")
        raise Conflict("order_expired", "This order was not paid in time.")

    async def give_back(self, orders: list[Order] | list[asyncpg.Record]) -> int:
        """Return the units of cancelled/expired orders to Redis, once each; then mark them.

        If Redis fails here, or has no state for the sale (a rebuild may be under way), the
        rows stay `units_returned = false` and the expiry worker's sweep retries; the release
        script ignores an order it has already released, and a rebuild counts such an order
        as released.
        """
        items = [_fields(o) for o in orders]
        codes = await asyncio.gather(*(
            self.scripts.release(self.keys.sale(sid), order_id=oid, user_id=uid, quantity=qty,
                                 sale_id=sid, channel=self.keys.restock_channel)
            for oid, sid, uid, qty in items))
        returned = [item[0] for item, code in zip(items, codes, strict=True)
                    if code is not ReleaseCode.NOT_LOADED]
        units = sum(item[3] for item, code in zip(items, codes, strict=True)
                    if code is ReleaseCode.RELEASED)
        if returned:
            await self.db.execute(Q["mark_returned"], returned)
        metrics.UNITS_RETURNED.inc(units)
        return units


def _fields(o: Order | asyncpg.Record) -> tuple[str, int, str, int]:
    if isinstance(o, Order):
        return o.order_id, o.sale_id, o.user_id, o.quantity
    return o["order_id"], o["sale_id"], o["user_id"], o["quantity"]
