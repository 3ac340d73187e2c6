"""What operators do: products, scheduling, patching and cancelling sales, stats, audit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from seckill.catalog import Product, Q, Sale, SaleCache, get_product, insert_product, utcnow
from seckill.errors import Conflict, InvalidRequest, sale_not_found
from seckill.sale_state import SaleState
from seckill.schemas import ProductIn, SaleIn, SalePatch, parse_id, rfc3339
from seckill.scripts import LoadCode

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# The sale columns written by insert_sale / update_sale, after the id or product id.
_SALE_FIELDS = ("title", "sale_price_cents", "stock", "starts_at", "ends_at", "per_user_limit",
                "payment_timeout_s", "user_rate_per_s", "user_burst", "address_rate_per_s",
                "address_burst", "requires_token", "pow_bits", "waiting_room", "admit_per_s")


@dataclass(frozen=True, slots=True)
class Operations:
    db: asyncpg.Pool
    state: SaleState
    cache: SaleCache

    async def create_product(self, body: ProductIn, actor: str) -> Product:
        product = await insert_product(self.db, body.sku, body.name, body.price_cents,
                                       body.description)
        if product is None:
            raise Conflict("duplicate_sku", f"A product with sku {body.sku!r} already exists.")
        await self._audit(self.db, actor, "create_product", f"product:{product.id}",
                          msgspec.to_builtins(body))
        return product

    async def schedule_sale(self, body: SaleIn, actor: str) -> Sale:
        product_id = parse_id(body.product_id)
        if product_id is None:
            raise InvalidRequest("product_id is not a product id.", {"product_id": "malformed"})
        product = await get_product(self.db, product_id)
        if product is None:
            raise InvalidRequest("No product has this id.", {"product_id": "unknown product"})
        _check_sale(product.price_cents, body)
        title = body.title if body.title else product.name
        async with self.db.acquire() as conn, conn.transaction():
            values = [title if f == "title" else getattr(body, f) for f in _SALE_FIELDS]
            sale_id = await conn.fetchval(Q["insert_sale"], product_id, *values)
            sale = Sale.from_row(_found(await conn.fetchrow(Q["get_sale"], sale_id)))
            await self._audit(conn, actor, "schedule_sale", f"sale:{sale_id}",
                              msgspec.to_builtins(body))
            # Warm-up inside the transaction: a sale PostgreSQL has is always loadable.
            await self.state.warm_up(sale)
        self.cache.put(sale)
        return sale

    async def patch_sale(self, sale_id: int, patch: SalePatch, actor: str) -> Sale:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["lock_sale"], sale_id)
            if row is None:
                raise sale_not_found()
            sale = Sale.from_row(row)
            if sale.cancelled or sale.started(utcnow()):
                raise Conflict("sale_started",
                               "This sale has started, ended or been cancelled; "
                               "it can no longer be changed.")
            changes = {f: v for f in _SALE_FIELDS
                       if (v := getattr(patch, f)) is not None}
            merged = SaleIn(product_id=sale.product_id,
                            **{f: changes.get(f, getattr(sale, f)) for f in _SALE_FIELDS})
            _check_sale(sale.product_price_cents, merged)
            values = [getattr(merged, f) for f in _SALE_FIELDS]
            values[0] = merged.title or sale.product_name
            await conn.execute(Q["update_sale"], sale_id, *values)
            updated = Sale.from_row(_found(await conn.fetchrow(Q["get_sale"], sale_id)))
            if await self.state.update(updated) is LoadCode.BELOW_HELD:
                raise Conflict("sale_started", "Units of this sale are already held.")
            await self._audit(conn, actor, "patch_sale", f"sale:{sale_id}",
                              msgspec.to_builtins(changes))
        self.cache.put(updated)
        return updated

    async def cancel_sale(self, sale_id: int, actor: str) -> Sale:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["lock_sale"], sale_id)
            if row is None:
                raise sale_not_found()
            await conn.execute(Q["cancel_sale"], sale_id)
            sale = Sale.from_row(_found(await conn.fetchrow(Q["get_sale"], sale_id)))
            await self.state.update(sale)
            await self._audit(conn, actor, "cancel_sale", f"sale:{sale_id}", {})
        self.cache.put(sale)
        return sale

    async def stats(self, sale_id: int) -> dict[str, Any]:
        sale = await self.cache.get(sale_id)
        if sale is None:
            raise sale_not_found()
        remaining = (await self.state.remaining([sale_id]))[sale_id]
        held = await self.state.held(sale_id)
        units = _found(await self.db.fetchrow(Q["sale_units"], sale_id))
        return {
            "sale_id": str(sale_id), "stock": sale.stock,
            "remaining": remaining if remaining is not None else sale.stock - units["persisted"],
            "reserved": held if remaining is not None else units["persisted"],
            "orders_persisted": units["persisted"], "paid": units["paid"],
            "cancelled": units["cancelled"], "expired": units["expired"],
        }

    async def audit_trail(self, target: str | None, limit: int = 200) -> list[dict[str, Any]]:
        rows = await self.db.fetch(Q["audit_trail"], target, limit)
        return [{"id": str(r["id"]), "at": rfc3339(r["at"]), "actor": r["actor"],
                 "action": r["action"], "target": r["target"],
                 "details": json.loads(r["details"])} for r in rows]

    @staticmethod
    async def _audit(db: asyncpg.Pool | PoolConnectionProxy[Any], actor: str, action: str,
                     target: str, details: Any) -> None:
        await db.execute(Q["audit"], actor, action, target,
                         msgspec.json.encode(details).decode())


def _check_sale(product_price: int, body: SaleIn) -> None:
    fields: dict[str, str] = {}
    if body.sale_price_cents > product_price:
        fields["sale_price_cents"] = "above the product's price"
    if body.ends_at <= body.starts_at:
        fields["ends_at"] = "must be after starts_at"
    for name in ("starts_at", "ends_at"):
        if not EARLIEST <= getattr(body, name) <= LATEST:
            fields[name] = "must be between 2000 and 2100"
    if body.pow_bits and not body.requires_token:
        fields["pow_bits"] = "a proof of work needs requires_token"
    if body.user_rate_per_s and not body.user_burst:
        fields["user_burst"] = "must be at least 1 when user_rate_per_s is set"
    if body.address_rate_per_s and not body.address_burst:
        fields["address_burst"] = "must be at least 1 when address_rate_per_s is set"
    if fields:
        raise InvalidRequest("The sale is not valid: " + "; ".join(
            f"{k} {v}" for k, v in fields.items()) + ".", fields)


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    assert row is not None, "the row was read in this transaction"
    return row
