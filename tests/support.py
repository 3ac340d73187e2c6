"""Helpers shared by the tests: an isolated environment, a running stack, and an API client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

from seckill.auth import mint_token
from seckill.keys import KeySpace
from seckill.order_ids import new_order_id
from seckill.scripts import Attempt, PurchaseCode, ScriptRunner, Scripts
from seckill.settings import Settings

TEST_SECRET = "test-secret-" + "x" * 32


async def wait_until(check: Callable[[], Awaitable[Any]], *,
                     timeout: float = 15.0,  # noqa: ASYNC109
                     interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value (readiness, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def unique(prefix: str) -> str:
    """A name no other test uses: tests share one session's database and Redis prefix."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def redis_test_url() -> str:
    return os.environ.get("SECKILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


_SNAKE = re.compile(r"^[a-z]+(_[a-z]+)*$")


def assert_error(status: int, body: Any, expected_status: int, code: str,
                 fields: set[str] | None = None) -> None:
    """`body` is the error envelope of API.md with this status and code (and these fields)."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict), body
    assert body.get("error") == code, body
    assert _SNAKE.match(body["error"]), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert set(body) <= {"error", "message", "fields"}, body
    if fields is not None:
        assert isinstance(body.get("fields"), dict), body
        assert set(body["fields"]) == fields, body
        assert all(isinstance(v, str) and v for v in body["fields"].values()), body


async def make_pending(redis: Any, settings: Settings, sale_id: str, user: str, *,
                       quantity: int = 1) -> str:
    """Win a unit through the purchase script directly and keep the win out of RabbitMQ.

    The order sits in the sale's Redis `orders` hash as if the front door had died before
    publishing it; taking it off the outbox at once (long before the relay's grace period)
    means no worker ever persists it, so it stays `pending`.
    """
    keys = KeySpace(settings.redis_prefix).sale(int(sale_id))
    runner = ScriptRunner(redis)
    try:
        result = await Scripts(runner).purchase(
            keys, Attempt(int(sale_id), user, quantity, new_order_id(int(sale_id))))
    finally:
        await runner.close()
    assert result.code is PurchaseCode.WON, result
    assert await redis.zrem(keys.outbox, result.order_id) == 1
    return result.order_id


def _rabbitmqctl(*args: str) -> bool:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        return False
    done = subprocess.run([exe, *args], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


@dataclass
class Isolation:
    """One test session's own database, Redis key prefix and RabbitMQ vhost."""

    settings: Settings
    vhost: str | None

    @classmethod
    def create(cls) -> Isolation:
        tag = uuid.uuid4().hex[:10]
        base_db = os.environ.get("SECKILL_TEST_DATABASE_URL",
                                 "postgresql://postgres@127.0.0.1:5432/postgres")
        db_url = base_db.rsplit("/", 1)[0] + f"/seckill_test_{tag}"
        redis_url = os.environ.get("SECKILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        amqp_base = os.environ.get("SECKILL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        vhost: str | None = f"seckill-test-{tag}"
        if _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl(
                "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
            amqp_url = amqp_base.rstrip("/") + "/" + quote(vhost, safe="")
        else:  # no rabbitmqctl (not root): share the default vhost, unique names keep us apart
            vhost = None
            amqp_url = amqp_base
        settings = Settings(
            redis_url=redis_url, amqp_url=amqp_url, database_url=db_url,
            jwt_secret=TEST_SECRET, host="127.0.0.1", port=0,
            redis_prefix=f"t{tag}", amqp_prefix=f"seckill-t{tag}",
            expiry_interval_ms=100, outbox_grace_ms=500, order_batch_wait_ms=5,
            trusted_proxies=("127.0.0.1/32", "::1/128"))
        return cls(settings, vhost)

    async def destroy(self) -> None:
        from redis.asyncio import Redis

        redis = Redis.from_url(self.settings.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(f"{self.settings.redis_prefix}:*", 1000)]
            for i in range(0, len(keys), 1000):
                await redis.delete(*keys[i:i + 1000])
        finally:
            await redis.aclose()
        name = self.settings.database_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(self.settings.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        if self.vhost is not None:
            _rabbitmqctl("delete_vhost", self.vhost)


@contextlib.asynccontextmanager
async def isolated() -> AsyncIterator[Isolation]:
    """A migrated Isolation for the length of the block, removed afterwards."""
    from seckill.migrate import migrate

    iso = Isolation.create()
    await migrate(iso.settings.database_url)
    try:
        yield iso
    finally:
        await iso.destroy()


class Api:
    """A small client of the contract: tokens, requests, and sale set-up."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.base = base_url
        self.secret = secret
        self._tokens: dict[tuple[str, bool], str] = {}

    def token(self, user_id: str, *, operator: bool = False) -> str:
        key = (user_id, operator)
        if key not in self._tokens:
            self._tokens[key] = mint_token(self.secret, user_id, operator=operator, ttl_s=3600)
        return self._tokens[key]

    def auth(self, user_id: str, *, operator: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, operator=operator)}"}

    async def request(self, method: str, path: str, *, user: str | None = None,
                      operator: bool = False, json: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, payload, _ = await self.request_full(method, path, user=user, operator=operator,
                                                     json=json, data=data, headers=headers)
        return status, payload

    async def request_full(self, method: str, path: str, *, user: str | None = None,
                           operator: bool = False, json: Any = None, data: bytes | None = None,
                           headers: dict[str, str] | None = None
                           ) -> tuple[int, Any, dict[str, str]]:
        """Like `request`, also returning the response headers."""
        h = dict(headers or {})
        if user is not None:
            h.update(self.auth(user, operator=operator))
        async with self.session.request(method, self.base + path, json=json, data=data,
                                        headers=h) as resp:
            body = await resp.read()
            try:
                payload = await resp.json(content_type=None) if body else None
            except ValueError:
                payload = body.decode(errors="replace")
            return resp.status, payload, dict(resp.headers)

    async def create_product(self, price_cents: int = 10_000) -> dict[str, Any]:
        status, body = await self.request(
            "POST", "/api/v1/admin/products", user="ops", operator=True,
            json={"sku": f"SKU-{uuid.uuid4().hex[:12]}", "name": "Test product",
                  "price_cents": price_cents})
        assert status == 201, body
        return dict(body)

    async def create_sale(self, *, stock: int = 10, per_user_limit: int = 1,
                          payment_timeout_s: int = 900, starts_in_s: float = -1,
                          lasts_s: float = 3600, price_cents: int = 5_000,
                          product_price_cents: int = 10_000, **extra: Any) -> dict[str, Any]:
        """A sale; `extra` adds fields of the request (rate limits, tokens, waiting room)."""
        product = await self.create_product(product_price_cents)
        now = datetime.now(UTC)
        status, body = await self.request(
            "POST", "/api/v1/admin/sales", user="ops", operator=True, json={
                "product_id": product["id"], "sale_price_cents": price_cents, "stock": stock,
                "starts_at": (now + timedelta(seconds=starts_in_s)).isoformat(),
                "ends_at": (now + timedelta(seconds=starts_in_s + lasts_s)).isoformat(),
                "per_user_limit": per_user_limit, "payment_timeout_s": payment_timeout_s,
                **extra})
        assert status == 201, body
        return dict(body)

    async def purchase(self, sale_id: str, user: str, *, quantity: int | None = 1,
                       key: str | None = None) -> tuple[int, Any]:
        headers = {"Idempotency-Key": key} if key is not None else None
        return await self.request("POST", f"/api/v1/sales/{sale_id}/purchase", user=user,
                                  json=None if quantity is None else {"quantity": quantity},
                                  headers=headers)

    async def stats(self, sale_id: str) -> dict[str, Any]:
        status, body = await self.request("GET", f"/api/v1/admin/sales/{sale_id}/stats",
                                          user="ops", operator=True)
        assert status == 200, body
        return dict(body)

    async def order(self, order_id: str, user: str) -> tuple[int, Any]:
        return await self.request("GET", f"/api/v1/orders/{order_id}", user=user)

    async def wait_persisted(self, sale_id: str, units: int,
                             timeout: float = 30,  # noqa: ASYNC109
                             ) -> None:
        async def done() -> bool:
            return (await self.stats(sale_id))["orders_persisted"] == units

        await wait_until(done, timeout=timeout, what=f"{units} units persisted")
