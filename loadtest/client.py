"""A small asynchronous client of the HTTP contract, for setting up sales and reading stats."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp

from seckill.auth import mint_token

OPERATOR = "loadtest-operator"
T = TypeVar("T")


async def poll(check: Callable[[], Awaitable[T]], done: Callable[[T], bool], *,
               timeout_s: float, interval_s: float = 0.05) -> T:
    """Call `check` until `done(value)` or the deadline; returns the last value either way."""
    deadline = time.monotonic() + timeout_s
    value = await check()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        value = await check()
    return value


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.secret = secret
        self._tokens: dict[tuple[str, bool], str] = {}

    def token(self, user_id: str, *, operator: bool = False) -> str:
        key = (user_id, operator)
        if key not in self._tokens:
            self._tokens[key] = mint_token(self.secret, user_id, operator=operator,
                                           ttl_s=4 * 3600)
        return self._tokens[key]

    async def call(self, method: str, path: str, *, user: str | None = None,
                   operator: bool = False, json: Any = None) -> tuple[int, Any]:
        headers = {}
        if operator:
            user = user or OPERATOR
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user, operator=operator)}"
        async with self.session.request(method, self.base + path, json=json,
                                        headers=headers) as resp:
            body = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, body

    async def schedule_sale(self, *, stock: int, per_user_limit: int = 1,
                            starts_in_s: float = -1.0, lasts_s: float = 4 * 3600,
                            payment_timeout_s: int = 3600, title: str | None = None,
                            **defences: Any) -> dict[str, Any]:
        """A new product on sale; `defences` are further SaleIn fields (user_rate_per_s,
        requires_token, waiting_room, ...), sent as given."""
        status, product = await self.call(
            "POST", "/api/v1/admin/products", operator=True,
            json={"sku": f"LT-{uuid.uuid4().hex[:16]}", "name": "Load-test product",
                  "price_cents": 10_000})
        if status != 201:
            raise RuntimeError(f"creating a product: {status} {product}")
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "product_id": product["id"], "sale_price_cents": 5_000, "stock": stock,
            "starts_at": (now + timedelta(seconds=starts_in_s)).isoformat(),
            "ends_at": (now + timedelta(seconds=starts_in_s + lasts_s)).isoformat(),
            "per_user_limit": per_user_limit, "payment_timeout_s": payment_timeout_s}
        if title:
            body["title"] = title
        body.update(defences)
        status, sale = await self.call("POST", "/api/v1/admin/sales", operator=True, json=body)
        if status != 201:
            raise RuntimeError(f"scheduling a sale: {status} {sale}")
        return dict(sale)

    async def stats(self, sale_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/admin/sales/{sale_id}/stats",
                                       operator=True)
        if status != 200:
            raise RuntimeError(f"stats of sale {sale_id}: {status} {body}")
        return dict(body)

    async def buy(self, sale_id: str, user: str) -> tuple[int, Any]:
        return await self.call("POST", f"/api/v1/sales/{sale_id}/purchase", user=user,
                               json={"quantity": 1})

    async def wait_settled(self, sale_id: str, *, timeout_s: float = 60.0,
                           interval_s: float = 0.05) -> dict[str, Any]:
        """Poll the stats until every held unit is in PostgreSQL (or the deadline passes)."""
        return await poll(lambda: self.stats(sale_id),
                          lambda s: bool(s["orders_persisted"] == s["reserved"]),
                          timeout_s=timeout_s, interval_s=interval_s)
