"""An order's life: pending, created, then paid, cancelled or expired; units come back once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from seckill.settings import Settings
from tests.support import Api, assert_error, make_pending, unique, wait_until

ORDER_FIELDS = {"order_id": str, "sale_id": str, "user_id": str, "quantity": int,
                "amount_cents": int, "status": str, "created_at": str, "pay_by": str}


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    when = datetime.fromisoformat(text)
    assert when.utcoffset() == timedelta(0), text
    return when


def assert_order_shape(order: dict[str, Any], *, timeout_s: int) -> None:
    assert set(order) == set(ORDER_FIELDS), order
    for name, kind in ORDER_FIELDS.items():
        assert type(order[name]) is kind, (name, order)
    assert order["status"] in {"pending", "created", "paid", "cancelled", "expired"}
    created, pay_by = parse_time(order["created_at"]), parse_time(order["pay_by"])
    assert pay_by - created == timedelta(seconds=timeout_s), order


async def buy(api: Api, sale: dict[str, Any], user: str, quantity: int = 1) -> dict[str, Any]:
    """Win `quantity` units and wait until PostgreSQL has the order."""
    status, won = await api.purchase(sale["id"], user, quantity=quantity)
    assert status == 202, won

    async def persisted() -> dict[str, Any] | None:
        status, order = await api.order(won["order_id"], user)
        assert status == 200, order
        return order if order["status"] != "pending" else None

    order = await wait_until(persisted, what=f"order {won['order_id']} persisted")
    assert order["status"] == "created", order
    return dict(order)


async def post(api: Api, order_id: str, action: str, user: str) -> tuple[int, Any]:
    return await api.request("POST", f"/api/v1/orders/{order_id}/{action}", user=user)


async def db_status(db: asyncpg.Pool, order_id: str) -> str | None:
    return await db.fetchval("SELECT status FROM orders WHERE order_id = $1", order_id)


async def test_pay_and_pay_again(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=3)
    alice = unique("alice")
    order = await buy(api, sale, alice)

    status, paid = await post(api, order["order_id"], "pay", alice)
    assert status == 200, paid
    assert paid == {**order, "status": "paid"}
    assert await post(api, order["order_id"], "pay", alice) == (200, paid)
    assert await api.order(order["order_id"], alice) == (200, paid)
    assert await db_status(db, order["order_id"]) == "paid"
    assert await api.stats(sale["id"]) == {
        "sale_id": sale["id"], "stock": 3, "remaining": 2, "reserved": 1,
        "orders_persisted": 1, "paid": 1, "cancelled": 0, "expired": 0}


async def test_cancel_gives_units_back_and_sold_out_turns_live(api: Api) -> None:
    sale = await api.create_sale(stock=1)
    alice, bob = unique("alice"), unique("bob")
    order = await buy(api, sale, alice)
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert (status, shown["status"], shown["remaining"]) == (200, "sold_out", 0)

    status, cancelled = await post(api, order["order_id"], "cancel", alice)
    assert status == 200, cancelled
    assert cancelled == {**order, "status": "cancelled"}
    assert await api.stats(sale["id"]) == {
        "sale_id": sale["id"], "stock": 1, "remaining": 1, "reserved": 0,
        "orders_persisted": 0, "paid": 0, "cancelled": 1, "expired": 0}
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert (status, shown["status"], shown["remaining"]) == (200, "live", 1)

    assert await post(api, order["order_id"], "cancel", alice) == (200, cancelled)
    assert (await api.stats(sale["id"]))["remaining"] == 1, "a second cancel gave units again"
    status, body = await post(api, order["order_id"], "pay", alice)
    assert_error(status, body, 409, "order_cancelled")

    bobs = await buy(api, sale, bob)
    assert bobs["status"] == "created"
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"], stats["orders_persisted"]) == (0, 1, 1)
    # The canceller holds nothing now, so the limit lets her try again: the sale is sold out.
    status, body = await api.purchase(sale["id"], alice)
    assert_error(status, body, 409, "sold_out")


async def test_cancel_of_a_paid_order_is_refused(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=2)
    alice = unique("alice")
    order = await buy(api, sale, alice)
    assert (await post(api, order["order_id"], "pay", alice))[0] == 200
    status, body = await post(api, order["order_id"], "cancel", alice)
    assert_error(status, body, 409, "order_paid")
    assert await db_status(db, order["order_id"]) == "paid"
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"], stats["paid"]) == (1, 1, 1)


async def test_unpaid_order_expires_and_its_units_come_back(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=1, payment_timeout_s=1)
    alice, bob = unique("alice"), unique("bob")
    order = await buy(api, sale, alice)

    async def expired() -> bool:
        return await db_status(db, order["order_id"]) == "expired"

    await wait_until(expired, what="the expiry sweeper")

    async def returned() -> dict[str, Any] | None:
        stats = await api.stats(sale["id"])
        return stats if stats["remaining"] == 1 else None

    stats = await wait_until(returned, what="the expired unit back on sale")
    assert stats == {"sale_id": sale["id"], "stock": 1, "remaining": 1, "reserved": 0,
                     "orders_persisted": 0, "paid": 0, "cancelled": 0, "expired": 1}
    assert await api.order(order["order_id"], alice) == (200, {**order, "status": "expired"})
    status, body = await post(api, order["order_id"], "pay", alice)
    assert_error(status, body, 409, "order_expired")
    status, body = await post(api, order["order_id"], "cancel", alice)
    assert_error(status, body, 409, "order_expired")
    assert await db_status(db, order["order_id"]) == "expired"

    status, won = await api.purchase(sale["id"], bob)
    assert status == 202, won
    assert (await api.stats(sale["id"]))["remaining"] == 0


async def _one_second_orders(api: Api, db: asyncpg.Pool, n: int, prefix: str
                             ) -> tuple[dict[str, Any], dict[str, str], list[asyncpg.Record]]:
    """n shoppers each win one unit of a sale paid within 1 s; waits until every order is
    persisted. Returns the sale, order id -> shopper, and the rows sorted by order id."""
    sale = await api.create_sale(stock=n, payment_timeout_s=1)
    users = [unique(f"{prefix}{i}") for i in range(n)]
    won = await asyncio.gather(*(api.purchase(sale["id"], u) for u in users))
    assert [s for s, _ in won] == [202] * n, won
    owner = {body["order_id"]: user for user, (_, body) in zip(users, won, strict=True)}

    async def all_rows() -> list[asyncpg.Record] | None:
        rows = await db.fetch("SELECT order_id, pay_by FROM orders WHERE sale_id = $1",
                              int(sale["id"]))
        return rows if len(rows) == n else None

    rows = await wait_until(all_rows, what="every order persisted")
    return sale, owner, sorted(rows, key=lambda r: r["order_id"])


async def test_payment_racing_expiry_ends_exactly_one_way(api: Api, db: asyncpg.Pool) -> None:
    n = 30
    sale, owner, rows = await _one_second_orders(api, db, n, "racer")

    async def pay_around_deadline(order_id: str, pay_by: datetime, offset_s: float
                                  ) -> tuple[float, float, int, Any]:
        # Aim at a moment relative to this order's own deadline: that moment is the race.
        await asyncio.sleep(max(0.0, pay_by.timestamp() + offset_s - time.time()))
        sent = time.time()
        status, body = await post(api, order_id, "pay", owner[order_id])
        return sent, time.time(), status, body

    offsets = [-0.3 + 0.6 * i / (n - 1) for i in range(n)]
    results = await asyncio.gather(*(pay_around_deadline(r["order_id"], r["pay_by"], off)
                                     for r, off in zip(rows, offsets, strict=True)))

    async def settled() -> dict[str, str] | None:
        found = await db.fetch("SELECT order_id, status FROM orders WHERE sale_id = $1",
                               int(sale["id"]))
        statuses = {r["order_id"]: r["status"] for r in found}
        return statuses if "created" not in statuses.values() else None

    statuses = await wait_until(settled, what="every order paid or expired")
    paid = 0
    margin = 0.005  # pay_by has millisecond precision; every clock here is this host's
    for row, (sent, answered, status, body) in zip(rows, results, strict=True):
        deadline = row["pay_by"].timestamp()
        if status == 200:
            assert body["status"] == "paid", body
            assert statuses[row["order_id"]] == "paid"
            assert sent < deadline + margin, "paid although asked after pay_by"
            paid += 1
        else:
            assert_error(status, body, 409, "order_expired")
            assert statuses[row["order_id"]] == "expired"
            assert answered > deadline - margin, "expired although paid before pay_by"
    assert 0 < paid < n, f"the race was not exercised: {paid} of {n} paid"

    async def balanced() -> dict[str, Any] | None:
        stats = await api.stats(sale["id"])
        return stats if stats["reserved"] == paid else None

    stats = await wait_until(balanced, what="expired units back on sale")
    assert stats == {"sale_id": sale["id"], "stock": n, "remaining": n - paid, "reserved": paid,
                     "orders_persisted": paid, "paid": paid, "cancelled": 0,
                     "expired": n - paid}


async def test_concurrent_cancels_give_units_back_once(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=3, per_user_limit=2)
    alice = unique("alice")
    order = await buy(api, sale, alice, quantity=2)
    results = await asyncio.gather(*(post(api, order["order_id"], "cancel", alice)
                                     for _ in range(20)))
    assert results == [(200, {**order, "status": "cancelled"})] * 20
    assert await api.stats(sale["id"]) == {
        "sale_id": sale["id"], "stock": 3, "remaining": 3, "reserved": 0,
        "orders_persisted": 0, "paid": 0, "cancelled": 2, "expired": 0}


async def test_pay_racing_cancel_ends_exactly_one_way(api: Api, db: asyncpg.Pool) -> None:
    for _ in range(5):
        sale = await api.create_sale(stock=1)
        alice = unique("alice")
        order = await buy(api, sale, alice)
        actions = ["pay", "cancel"] * 8
        results = await asyncio.gather(*(post(api, order["order_id"], a, alice)
                                         for a in actions))
        final = await db_status(db, order["order_id"])
        assert final in {"paid", "cancelled"}
        loser = {"paid": "cancel", "cancelled": "pay"}[final]
        for action, (status, body) in zip(actions, results, strict=True):
            if action == loser:
                assert_error(status, body, 409, f"order_{final}")
            else:
                assert (status, body) == (200, {**order, "status": final})
        stats = await api.stats(sale["id"])
        expected = (0, 1) if final == "paid" else (1, 0)
        assert (stats["remaining"], stats["reserved"]) == expected, stats


async def test_cancel_racing_expiry_gives_units_back_once(api: Api, db: asyncpg.Pool) -> None:
    n = 20
    sale, owner, rows = await _one_second_orders(api, db, n, "quitter")

    async def cancel_around_deadline(order_id: str, pay_by: datetime, offset_s: float
                                     ) -> tuple[float, float, int, Any]:
        await asyncio.sleep(max(0.0, pay_by.timestamp() + offset_s - time.time()))
        sent = time.time()
        status, body = await post(api, order_id, "cancel", owner[order_id])
        return sent, time.time(), status, body

    results = await asyncio.gather(*(
        cancel_around_deadline(r["order_id"], r["pay_by"], -0.2 + 0.4 * i / (n - 1))
        for i, r in enumerate(rows)))

    async def settled() -> dict[str, str] | None:
        found = await db.fetch("SELECT order_id, status FROM orders WHERE sale_id = $1",
                               int(sale["id"]))
        statuses = {r["order_id"]: r["status"] for r in found}
        return statuses if "created" not in statuses.values() else None

    statuses = await wait_until(settled, what="every order cancelled or expired")
    margin = 0.005
    for row, (sent, answered, status, body) in zip(rows, results, strict=True):
        deadline = row["pay_by"].timestamp()
        if status == 200:
            assert (body["status"], statuses[row["order_id"]]) == ("cancelled", "cancelled")
            assert sent < deadline + margin, "cancelled although asked after pay_by"
        else:
            assert_error(status, body, 409, "order_expired")
            assert statuses[row["order_id"]] == "expired"
            assert answered > deadline - margin, "expired although cancelled before pay_by"
    assert 0 < sum(1 for s in statuses.values() if s == "cancelled") < n, statuses
    cancelled = sum(1 for s in statuses.values() if s == "cancelled")

    async def all_back() -> dict[str, Any] | None:
        stats = await api.stats(sale["id"])
        return stats if stats["reserved"] == 0 else None

    stats = await wait_until(all_back, what="every unit back on sale")
    assert stats == {"sale_id": sale["id"], "stock": n, "remaining": n, "reserved": 0,
                     "orders_persisted": 0, "paid": 0, "cancelled": cancelled,
                     "expired": n - cancelled}


async def test_another_users_order_is_not_found(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=2)
    alice, mallory = unique("alice"), unique("mallory")
    order = await buy(api, sale, alice)
    status, body = await api.order(order["order_id"], mallory)
    assert_error(status, body, 404, "order_not_found")
    for action in ("pay", "cancel"):
        status, body = await post(api, order["order_id"], action, mallory)
        assert_error(status, body, 404, "order_not_found")
    assert await db_status(db, order["order_id"]) == "created"
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"], stats["paid"]) == (1, 1, 0)
    status, mine = await api.request("GET", "/api/v1/me/orders", user=mallory)
    assert (status, mine) == (200, {"orders": []})


async def test_my_orders_newest_first(api: Api) -> None:
    alice = unique("alice")
    sales = [await api.create_sale(stock=2, payment_timeout_s=300 + i) for i in range(3)]
    orders = [await buy(api, sale, alice) for sale in sales]
    await buy(api, sales[0], unique("someone-else"))
    status, mine = await api.request("GET", "/api/v1/me/orders", user=alice)
    assert status == 200, mine
    assert set(mine) == {"orders"}
    assert mine["orders"] == list(reversed(orders))
    for i, order in enumerate(orders):
        assert_order_shape(order, timeout_s=300 + i)


async def test_order_detail_shape(api: Api) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=3, price_cents=1_234,
                                 payment_timeout_s=600)
    alice = unique("alice")
    status, won = await api.purchase(sale["id"], alice, quantity=3)
    assert status == 202, won
    assert set(won) == {"order_id", "sale_id", "quantity", "status"}
    assert (won["sale_id"], won["quantity"], won["status"]) == (sale["id"], 3, "pending")

    status, early = await api.order(won["order_id"], alice)
    assert status == 200, early
    assert_order_shape(early, timeout_s=600)
    assert early["status"] in {"pending", "created"}
    await api.wait_persisted(sale["id"], 3)
    status, order = await api.order(won["order_id"], alice)
    assert status == 200, order
    assert_order_shape(order, timeout_s=600)
    assert order == {"order_id": won["order_id"], "sale_id": sale["id"], "user_id": alice,
                     "quantity": 3, "amount_cents": 3 * 1_234, "status": "created",
                     "created_at": early["created_at"], "pay_by": early["pay_by"]}
    created = parse_time(order["created_at"])
    assert abs(datetime.now(created.tzinfo) - created) < timedelta(seconds=30)


async def test_pending_order_cannot_be_paid_or_cancelled_yet(
        api: Api, redis: Redis, settings: Settings) -> None:
    sale = await api.create_sale(stock=3, price_cents=700, payment_timeout_s=900)
    alice = unique("alice")
    order_id = await make_pending(redis, settings, sale["id"], alice, quantity=1)

    status, order = await api.order(order_id, alice)
    assert status == 200, order
    assert_order_shape(order, timeout_s=900)
    assert (order["status"], order["amount_cents"], order["user_id"]) == ("pending", 700, alice)
    status, body = await api.order(order_id, unique("mallory"))
    assert_error(status, body, 404, "order_not_found")
    for action in ("pay", "cancel"):
        status, body, headers = await api.request_full(
            "POST", f"/api/v1/orders/{order_id}/{action}", user=alice)
        assert_error(status, body, 409, "order_pending")
        assert int(headers["Retry-After"]) >= 1, headers
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"], stats["orders_persisted"]) == (2, 1, 0)
    assert (await api.order(order_id, alice))[1]["status"] == "pending"
