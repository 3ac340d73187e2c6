"""Products and sales as PostgreSQL keeps them, and the sale as shoppers see it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from seckill.resources import queries
from seckill.schemas import rfc3339, to_ms

Q = queries("sales")


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    sku: str
    name: str
    price_cents: int
    description: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Product:
        return cls(row["id"], row["sku"], row["name"], row["price_cents"], row["description"],
                   row["created_at"])

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "sku": self.sku, "name": self.name,
                "price_cents": self.price_cents, "description": self.description,
                "created_at": rfc3339(self.created_at)}


@dataclass(frozen=True, slots=True)
class Sale:
    id: int
    product_id: int
    title: str
    sale_price_cents: int
    stock: int
    starts_at: datetime
    ends_at: datetime
    per_user_limit: int
    payment_timeout_s: int
    cancelled_at: datetime | None
    user_rate_per_s: int
    user_burst: int
    address_rate_per_s: int
    address_burst: int
    requires_token: bool
    pow_bits: int
    waiting_room: bool
    admit_per_s: int
    sku: str
    product_name: str
    product_price_cents: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Sale:
        return cls(**dict(row))

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    def started(self, now: datetime) -> bool:
        return now >= self.starts_at

    def ended(self, now: datetime) -> bool:
        return now >= self.ends_at

    def status(self, remaining: int, now: datetime) -> str:
        if self.cancelled:
            return "cancelled"
        if self.ended(now):
            return "ended"
        if remaining <= 0:
            return "sold_out"
        if self.started(now):
            return "live"
        return "scheduled"

    def to_json(self, remaining: int, now: datetime) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "title": self.title,
            "product": {"id": str(self.product_id), "sku": self.sku, "name": self.product_name,
                        "price_cents": self.product_price_cents},
            "sale_price_cents": self.sale_price_cents,
            "stock": self.stock,
            "remaining": remaining,
            "starts_at": rfc3339(self.starts_at),
            "ends_at": rfc3339(self.ends_at),
            "per_user_limit": self.per_user_limit,
            "payment_timeout_s": self.payment_timeout_s,
            "status": self.status(remaining, now),
            "server_time": rfc3339(now),
            "rate_limits": {"user_per_s": self.user_rate_per_s, "user_burst": self.user_burst,
                            "address_per_s": self.address_rate_per_s,
                            "address_burst": self.address_burst},
            "requires_token": self.requires_token,
            "pow_bits": self.pow_bits,
            "waiting_room": self.waiting_room,
            "admit_per_s": self.admit_per_s,
        }

    @property
    def starts_ms(self) -> int:
        return to_ms(self.starts_at)

    @property
    def ends_ms(self) -> int:
        return to_ms(self.ends_at)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def insert_product(db: asyncpg.Pool, sku: str, name: str, price_cents: int,
                         description: str) -> Product | None:
    """The new product, or None when the sku is taken."""
    try:
        row = await db.fetchrow(Q["insert_product"], sku, name, price_cents, description)
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None
    return Product.from_row(row)


async def get_product(db: asyncpg.Pool | asyncpg.Connection, product_id: int) -> Product | None:
    row = await db.fetchrow(Q["get_product"], product_id)
    return Product.from_row(row) if row else None


async def get_sale(db: asyncpg.Pool | asyncpg.Connection, sale_id: int) -> Sale | None:
    row = await db.fetchrow(Q["get_sale"], sale_id)
    return Sale.from_row(row) if row else None


async def open_sales(db: asyncpg.Pool, limit: int = 500) -> list[Sale]:
    return [Sale.from_row(r) for r in await db.fetch(Q["open_sales"], limit)]


class SaleCache:
    """Sale definitions kept in memory for a short while: the hot read paths skip PostgreSQL.

    Only reads go through it; every write path reads PostgreSQL under a row lock.
    """

    def __init__(self, db: asyncpg.Pool, ttl_s: float = 1.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: dict[int, tuple[float, Sale | None]] = {}
        self._loading: dict[int, asyncio.Future[Sale | None]] = {}

    async def get(self, sale_id: int) -> Sale | None:
        hit = self._entries.get(sale_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # One query per sale at a time: when an entry lapses under load, the requests that
        # find it stale share the same read instead of each asking PostgreSQL.
        loading = self._loading.get(sale_id)
        if loading is None:
            loading = self._loading[sale_id] = asyncio.ensure_future(self._load(sale_id))
            loading.add_done_callback(lambda _: self._loading.pop(sale_id, None))
        return await asyncio.shield(loading)

    async def _load(self, sale_id: int) -> Sale | None:
        sale = await get_sale(self._db, sale_id)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[sale_id] = (time.monotonic() + self._ttl, sale)
        return sale

    def put(self, sale: Sale) -> None:
        self._entries[sale.id] = (time.monotonic() + self._ttl, sale)

    def forget(self, sale_id: int) -> None:
        self._entries.pop(sale_id, None)
