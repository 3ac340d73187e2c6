"""The oversell template: stock K, N ≫ K concurrent buyers, exactly K wins and K order rows."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from typing import Any

import asyncpg

from tests.support import Api, unique, wait_until


async def rows_of(db: asyncpg.Pool, sale_id: str) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(quantity), 0) AS units FROM orders "
        "WHERE sale_id = $1", int(sale_id))
    assert row is not None
    return row["n"], row["units"]


async def wait_rows(db: asyncpg.Pool, sale_id: str, rows: int, units: int) -> None:
    async def done() -> bool:
        return await rows_of(db, sale_id) == (rows, units)

    await wait_until(done, timeout=30, what=f"{rows} order rows ({units} units) in PostgreSQL")


async def test_exactly_stock_many_buyers_win(api: Api, db: asyncpg.Pool) -> None:
    stock, buyers = 50, 600
    sale = await api.create_sale(stock=stock)
    users = [unique(f"crowd{i}") for i in range(buyers)]
    for user in users:  # mint tokens up front: the requests then start together
        api.token(user)

    results = await asyncio.gather(*(api.purchase(sale["id"], u) for u in users))

    wins = {u: body for u, (status, body) in zip(users, results, strict=True) if status == 202}
    refusals = Counter((status, body["error"]) for status, body in results if status != 202)
    assert len(wins) == stock
    assert refusals == {(409, "sold_out"): buyers - stock}
    for body in wins.values():
        assert body["sale_id"] == sale["id"]
        assert body["quantity"] == 1
        assert body["status"] == "pending"
    assert len({b["order_id"] for b in wins.values()}) == stock

    await wait_rows(db, sale["id"], stock, stock)
    rows = await db.fetch("SELECT order_id, user_id, quantity FROM orders WHERE sale_id = $1",
                          int(sale["id"]))
    assert {r["order_id"]: r["user_id"] for r in rows} == {
        b["order_id"]: u for u, b in wins.items()}
    stats = await api.stats(sale["id"])
    assert stats == {"sale_id": sale["id"], "stock": stock, "remaining": 0, "reserved": stock,
                     "orders_persisted": stock, "paid": 0, "cancelled": 0, "expired": 0}
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert status == 200
    assert (shown["remaining"], shown["status"]) == (0, "sold_out")


async def test_mixed_quantities_never_exceed_stock_or_limit(api: Api, db: asyncpg.Pool) -> None:
    stock, limit = 120, 3
    rng = random.Random(20_261_125)
    sale = await api.create_sale(stock=stock, per_user_limit=limit)
    # (user, quantity) per request: lone buyers of 1 to 3 units, and greedy buyers who fire
    # 2 to 4 concurrent requests whose quantities add up past the limit.
    requests: list[tuple[str, int]] = []
    greedy: set[str] = set()
    for i in range(220):
        requests.append((unique(f"lone{i}"), rng.randint(1, limit)))
    for i in range(50):
        user = unique(f"greedy{i}")
        greedy.add(user)
        requests += [(user, rng.randint(1, limit)) for _ in range(rng.randint(2, 4))]
    rng.shuffle(requests)
    for user, _ in requests:
        api.token(user)

    results = await asyncio.gather(*(api.purchase(sale["id"], u, quantity=q)
                                     for u, q in requests))

    won: dict[str, int] = defaultdict(int)
    orders: dict[str, tuple[str, int]] = {}
    outcomes: Counter[str] = Counter()
    for (user, qty), (status, body) in zip(requests, results, strict=True):
        if status == 202:
            assert body["quantity"] == qty
            won[user] += qty
            orders[body["order_id"]] = (user, qty)
            outcomes["won"] += 1
        else:
            assert status == 409, body
            assert body["error"] in {"sold_out", "limit_reached"}, body
            if body["error"] == "limit_reached":
                assert user in greedy, "a lone buyer of <= limit units cannot reach the limit"
            outcomes[body["error"]] += 1
    assert sum(won.values()) <= stock
    assert max(won.values()) <= limit
    assert outcomes["limit_reached"] > 0 and outcomes["sold_out"] > 0, outcomes

    # Big quantities may leave a unit or two that nobody asked for in time: sweep them up.
    for i in range(stock - sum(won.values()) + 1):
        user = unique(f"sweeper{i}")
        status, body = await api.purchase(sale["id"], user, quantity=1)
        if status != 202:
            assert (status, body["error"]) == (409, "sold_out"), body
            break
        won[user] += 1
        orders[body["order_id"]] = (user, 1)
    assert sum(won.values()) == stock

    await wait_rows(db, sale["id"], len(orders), stock)
    rows = await db.fetch("SELECT order_id, user_id, quantity FROM orders WHERE sale_id = $1",
                          int(sale["id"]))
    assert {r["order_id"]: (r["user_id"], r["quantity"]) for r in rows} == orders
    per_user = await db.fetch(
        "SELECT user_id, sum(quantity) AS units FROM orders WHERE sale_id = $1 "
        "GROUP BY user_id", int(sale["id"]))
    assert {r["user_id"]: r["units"] for r in per_user} == dict(won)
    assert all(r["units"] <= limit for r in per_user)
    stats: dict[str, Any] = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"], stats["orders_persisted"]) == (0, stock, stock)
