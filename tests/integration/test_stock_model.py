"""A stateful Hypothesis model of a sale's stock, run against the real Lua scripts.

Purchases, cancellations and expiries (both release an order), replays and restocks are
driven in random order; after every step Redis must agree with a plain-Python model and keep
the invariants: remaining + held == stock, remaining >= 0, nobody above the limit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)
from redis.asyncio import Redis

from seckill.keys import KeySpace
from seckill.order_ids import new_order_id
from seckill.scripts import (
    Attempt,
    LoadCode,
    PurchaseCode,
    ReleaseCode,
    SaleDefinition,
    ScriptRunner,
    Scripts,
)
from tests.support import redis_test_url

SALE_ID = 1
LIMIT = 3
USERS = st.sampled_from(["ann", "ben", "cat", "dan", "eve"])
KEYS = st.none() | st.sampled_from(["k1", "k2", "k3"])


class StockMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        # Rules are synchronous: each machine drives its own loop and its own client.
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(redis_test_url(), decode_responses=True)
        self.runner = ScriptRunner(self.redis)
        self.scripts = Scripts(self.runner)
        self.space = KeySpace(f"hyp-{uuid.uuid4().hex[:10]}")
        self.keys = self.space.sale(SALE_ID)
        seconds, _ = self.run(self.redis.time())
        self.stock = 6
        self.definition = SaleDefinition(
            stock=self.stock, starts_ms=seconds * 1000 - 60_000,
            ends_ms=seconds * 1000 + 3_600_000,
            per_user_limit=LIMIT, cancelled=False, price_cents=100, payment_timeout_s=900,
            expire_at_s=seconds + 3600, user_rate_per_s=0, user_burst=0)
        assert self.run(self.scripts.load_sale(self.keys, self.definition)) == (
            LoadCode.CREATED, self.stock)
        # The model.
        self.remaining = self.stock
        self.held: dict[str, int] = defaultdict(int)
        self.won: dict[str, tuple[str, int]] = {}  # order_id -> (user, quantity)
        self.released: set[str] = set()
        self.idem: dict[tuple[str, str], tuple[str, int]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def close() -> None:
            await self.runner.close()
            keys = [k async for k in self.redis.scan_iter(f"{self.space.prefix}:*")]
            if keys:
                await self.redis.delete(*keys)
            await self.redis.aclose()

        try:
            self.run(close())
        finally:
            self.loop.close()

    # --------------------------------------------------------------------------- rules

    @rule(target=orders, user=USERS, quantity=st.integers(1, LIMIT + 1), key=KEYS)
    def purchase(self, user: str, quantity: int, key: str | None) -> Any:
        result = self.run(self.scripts.purchase(
            self.keys, Attempt(SALE_ID, user, quantity, new_order_id(SALE_ID), key)))
        prior = self.idem.get((user, key)) if key else None
        if prior is not None:
            expected = (PurchaseCode.REPLAY if prior[1] == quantity
                        else PurchaseCode.IDEMPOTENCY_CONFLICT)
            assert (result.code, result.order_id, result.quantity) == (expected, *prior)
            return multiple()
        if self.held[user] + quantity > LIMIT:
            assert result.code is PurchaseCode.LIMIT_REACHED
            return multiple()
        if self.remaining < quantity:
            assert result.code is PurchaseCode.SOLD_OUT
            return multiple()
        assert (result.code, result.quantity) == (PurchaseCode.WON, quantity)
        self.remaining -= quantity
        self.held[user] += quantity
        self.won[result.order_id] = (user, quantity)
        if key:
            self.idem[(user, key)] = (result.order_id, quantity)
        return result.order_id

    def _release(self, order_id: str) -> None:
        user, quantity = self.won[order_id]
        code = self.run(self.scripts.release(
            self.keys, order_id=order_id, user_id=user, quantity=quantity, sale_id=SALE_ID,
            channel=self.space.restock_channel))
        if order_id in self.released:
            assert code is ReleaseCode.ALREADY
            return
        assert code is ReleaseCode.RELEASED
        self.released.add(order_id)
        self.remaining += quantity
        self.held[user] -= quantity

    @rule(order_id=orders)
    def cancel(self, order_id: str) -> None:
        self._release(order_id)

    @rule(order_id=consumes(orders))
    def expire(self, order_id: str) -> None:
        self._release(order_id)

    @rule(extra=st.integers(-4, 4))
    def restock(self, extra: int) -> None:
        """An operator changes the stock: refused when fewer units than are held."""
        stock = self.stock + extra
        if stock < 1:
            return
        self.definition = SaleDefinition(**{**_fields(self.definition), "stock": stock})
        code, remaining = self.run(self.scripts.load_sale(self.keys, self.definition,
                                                          update=True))
        held = sum(self.held.values())
        if stock < held:
            assert code is LoadCode.BELOW_HELD
            return
        assert (code, remaining) == (LoadCode.UPDATED, stock - held)
        self.stock, self.remaining = stock, stock - held

    # ---------------------------------------------------------------------- invariants

    @invariant()
    def redis_agrees_with_the_model(self) -> None:
        state, holders = self.run(self._read())
        remaining, stock = int(state["remaining"]), int(state["stock"])
        held = {user: int(units) for user, units in holders.items()}
        assert remaining >= 0
        assert remaining + sum(held.values()) == stock
        assert all(0 < units <= LIMIT for units in held.values()), held
        assert (stock, remaining) == (self.stock, self.remaining)
        assert held == {u: n for u, n in self.held.items() if n}

    async def _read(self) -> tuple[dict[str, str], dict[str, str]]:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.state)
        pipe.hgetall(self.keys.holders)
        state, holders = await pipe.execute()
        return state, holders


def _fields(definition: SaleDefinition) -> dict[str, Any]:
    return {name: getattr(definition, name) for name in SaleDefinition.__dataclass_fields__}


TestStockModel = StockMachine.TestCase
TestStockModel.settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                                   database=None,
                                   suppress_health_check=[HealthCheck.too_slow])
