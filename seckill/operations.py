"""What operators do: products, scheduling, patching and cancelling sales, and stats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from seckill.catalog import Product, Q, Sale, SaleCache, get_product, insert_product, utcnow
from seckill.errors import Conflict, InvalidRequest, sale_not_found
from seckill.sale_state import SaleState
from seckill.schemas import ProductIn, SaleIn, SalePatch, parse_id
from seckill.scripts import LoadCode

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Operations:
    db: asyncpg.Pool
    state: SaleState
    cache: SaleCache

    async def create_product(self, body: ProductIn) -> Product:
        product = await insert_product(self.db, body.sku, body.name, body.price_cents,
                                       body.description)
        if product is None:
            raise Conflict("duplicate_sku", f"A product with sku {body.sku!r} already exists.")
        return product

    async def schedule_sale(self, body: SaleIn) -> Sale:
        product_id = parse_id(body.product_id)
        if product_id is None:
            raise InvalidRequest("product_id is not a product id.", {"product_id": "malformed"})
        product = await get_product(self.db, product_id)
        if product is None:
            raise InvalidRequest("No product has this id.", {"product_id": "unknown product"})
        _check_sale(body.sale_price_cents, product.price_cents, body)
        title = body.title if body.title else product.name
        async with self.db.acquire() as conn, conn.transaction():
            sale_id = await conn.fetchval(
                Q["insert_sale"], product_id, title, body.sale_price_cents, body.stock,
                body.starts_at, body.ends_at, body.per_user_limit, body.payment_timeout_s)
            row = await conn.fetchrow(Q["get_sale"], sale_id)
            sale = Sale.from_row(_found(row))
            # Warm-up inside the transaction: a sale PostgreSQL has is always loadable.
            await self.state.warm_up(sale)
        self.cache.put(sale)
        return sale

    async def patch_sale(self, sale_id: int, patch: SalePatch) -> Sale:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["lock_sale"], sale_id)
            if row is None:
                raise sale_not_found()
            sale = Sale.from_row(row)
            now = utcnow()
            if sale.cancelled or sale.started(now):
                raise Conflict("sale_started",
                               "This sale has started, ended or been cancelled; "
                               "it can no longer be changed.")
            merged = SaleIn(
                product_id=sale.product_id,
                sale_price_cents=_pick(patch.sale_price_cents, sale.sale_price_cents),
                stock=_pick(patch.stock, sale.stock),
                starts_at=_pick(patch.starts_at, sale.starts_at),
                ends_at=_pick(patch.ends_at, sale.ends_at),
                title=_pick(patch.title, sale.title),
                per_user_limit=_pick(patch.per_user_limit, sale.per_user_limit),
                payment_timeout_s=_pick(patch.payment_timeout_s, sale.payment_timeout_s))
            _check_sale(merged.sale_price_cents, sale.product_price_cents, merged)
            await conn.execute(Q["update_sale"], sale_id, merged.title or sale.product_name,
                               merged.sale_price_cents, merged.stock, merged.starts_at,
                               merged.ends_at, merged.per_user_limit, merged.payment_timeout_s)
            updated = Sale.from_row(_found(await conn.fetchrow(Q["get_sale"], sale_id)))
            if await self.state.update(updated) is LoadCode.BELOW_HELD:
                raise Conflict("sale_started", "Units of this sale are already held.")
        self.cache.put(updated)
        return updated

    async def cancel_sale(self, sale_id: int) -> Sale:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["lock_sale"], sale_id)
            if row is None:
                raise sale_not_found()
            await conn.execute(Q["cancel_sale"], sale_id)
            sale = Sale.from_row(_found(await conn.fetchrow(Q["get_sale"], sale_id)))
            await self.state.update(sale)
        self.cache.put(sale)
        return sale

    async def stats(self, sale_id: int) -> dict[str, Any]:
        sale = await self.cache.get(sale_id)
        if sale is None:
            raise sale_not_found()
        remaining = (await self.state.remaining([sale_id]))[sale_id]
        held = await self.state.held(sale_id)
        units = await self.db.fetchrow(Q["sale_units"], sale_id)
        assert units is not None
        return {
            "sale_id": str(sale_id), "stock": sale.stock,
            "remaining": remaining if remaining is not None else sale.stock - units["persisted"],
            "reserved": held if remaining is not None else units["persisted"],
            "orders_persisted": units["persisted"], "paid": units["paid"],
            "cancelled": units["cancelled"], "expired": units["expired"],
        }


def _pick(new: T | None, old: T) -> T:
    return old if new is None else new


def _check_sale(sale_price: int, product_price: int, body: SaleIn) -> None:
    fields: dict[str, str] = {}
    if sale_price > product_price:
        fields["sale_price_cents"] = "above the product's price"
    if body.ends_at <= body.starts_at:
        fields["ends_at"] = "must be after starts_at"
    if fields:
        raise InvalidRequest("The sale is not valid: " + "; ".join(
            f"{k} {v}" for k, v in fields.items()) + ".", fields)


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    assert row is not None, "the row was written in this transaction"
    return row
