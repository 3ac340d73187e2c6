"""Sales as shoppers browse them: definitions from PostgreSQL (cached), stock from Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from seckill.catalog import Q, Sale, SaleCache, open_sales, utcnow
from seckill.errors import sale_not_found
from seckill.sale_state import SaleState


@dataclass(slots=True)
class Browse:
    db: asyncpg.Pool
    cache: SaleCache
    state: SaleState
    list_ttl_s: float = 1.0
    _listed: tuple[float, list[Sale]] = field(default=(0.0, []))

    async def one(self, sale_id: int) -> dict[str, Any]:
        sale = await self.cache.get(sale_id)
        if sale is None:
            raise sale_not_found()
        remaining = await self._remaining([sale])
        return sale.to_json(remaining[sale.id], utcnow())

    async def open(self) -> list[dict[str, Any]]:
        expires, sales = self._listed
        if expires <= time.monotonic():
            sales = await open_sales(self.db)
            self._listed = (time.monotonic() + self.list_ttl_s, sales)
        now = utcnow()
        sales = [s for s in sales if not s.ended(now)]
        remaining = await self._remaining(sales)
        return [s.to_json(remaining[s.id], now) for s in sales]

    async def _remaining(self, sales: list[Sale]) -> dict[int, int]:
        if len(sales) == 1:
            found = {sales[0].id: await self.state.remaining_one(sales[0].id)}
        else:
            found = await self.state.remaining([s.id for s in sales])
        result: dict[int, int] = {}
        for sale in sales:
            value = found[sale.id]
            if value is None:
                # Redis lacks the sale: show what PostgreSQL knows while it is rebuilt.
                if not sale.cancelled and not sale.ended(utcnow()):
                    self.state.rebuild_soon(sale)
                units = await self.db.fetchrow(Q["sale_units"], sale.id)
                value = sale.stock - (units["persisted"] if units else 0)
            result[sale.id] = value
        return result
