"""Idempotency-Key: one order per (user, sale, key), whatever the retries and the sale's state.

Each test keeps a user's requests to one sale within the contract's default rate-limit burst
(10), so a rate limiter could not change the outcomes asserted here.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support import Api, assert_error, unique


async def order_rows(db: asyncpg.Pool, sale_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT order_id, user_id, quantity, idempotency_key FROM orders WHERE sale_id = $1 "
        "ORDER BY order_id", int(sale_id))


async def test_concurrent_replays_make_one_order(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=5)
    user, key = unique("retrier"), unique("key")

    results = await asyncio.gather(*(api.purchase(sale["id"], user, quantity=2, key=key)
                                     for _ in range(10)))

    assert [status for status, _ in results] == [202] * 10, results
    assert len({body["order_id"] for _, body in results}) == 1
    assert all(body["quantity"] == 2 and body["status"] == "pending" for _, body in results)
    await api.wait_persisted(sale["id"], 2)
    rows = await order_rows(db, sale["id"])
    assert [(r["order_id"], r["user_id"], r["quantity"], r["idempotency_key"]) for r in rows] \
        == [(results[0][1]["order_id"], user, 2, key)]
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"]) == (3, 2)


async def test_replay_after_sold_out_and_after_sale_cancelled(api: Api) -> None:
    sale = await api.create_sale(stock=1)
    alice, key = unique("alice"), unique("key")
    status, won = await api.purchase(sale["id"], alice, key=key)
    assert status == 202, won
    status, body = await api.purchase(sale["id"], unique("bob"))
    assert_error(status, body, 409, "sold_out")

    assert await api.purchase(sale["id"], alice, key=key) == (202, won)
    await api.wait_persisted(sale["id"], 1)
    assert await api.purchase(sale["id"], alice, key=key) == (202, won)

    status, body = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                     user="ops", operator=True)
    assert (status, body["status"]) == (200, "cancelled")
    assert await api.purchase(sale["id"], alice, key=key) == (202, won)
    status, body = await api.purchase(sale["id"], alice, key=unique("other"))
    assert_error(status, body, 409, "cancelled")


async def test_replay_of_a_cancelled_order_returns_it(api: Api) -> None:
    sale = await api.create_sale(stock=2)
    alice, key = unique("alice"), unique("key")
    status, won = await api.purchase(sale["id"], alice, key=key)
    assert status == 202, won
    await api.wait_persisted(sale["id"], 1)
    status, body = await api.request("POST", f"/api/v1/orders/{won['order_id']}/cancel",
                                     user=alice)
    assert (status, body["status"]) == (200, "cancelled")
    assert await api.purchase(sale["id"], alice, key=key) == (202, won)
    assert (await api.stats(sale["id"]))["remaining"] == 2


async def test_another_key_after_a_win_is_limit_reached(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=1)
    alice = unique("alice")
    status, won = await api.purchase(sale["id"], alice, key=unique("first"))
    assert status == 202, won
    status, body = await api.purchase(sale["id"], alice, key=unique("second"))
    assert_error(status, body, 409, "limit_reached")
    status, body = await api.purchase(sale["id"], alice)
    assert_error(status, body, 409, "limit_reached")
    await api.wait_persisted(sale["id"], 1)
    assert [r["order_id"] for r in await order_rows(db, sale["id"])] == [won["order_id"]]
    assert (await api.stats(sale["id"]))["remaining"] == 4


async def test_same_key_other_quantity_is_a_conflict(api: Api) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=3)
    alice, key = unique("alice"), unique("key")
    status, won = await api.purchase(sale["id"], alice, quantity=1, key=key)
    assert status == 202, won
    status, body = await api.purchase(sale["id"], alice, quantity=2, key=key)
    assert_error(status, body, 409, "idempotency_conflict")
    # A body without quantity means quantity 1: the same request as the first.
    status, body = await api.purchase(sale["id"], alice, quantity=None, key=key)
    assert (status, body) == (202, won)
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"]) == (4, 1)


async def test_keys_are_scoped_to_the_user(api: Api, db: asyncpg.Pool) -> None:
    sale = await api.create_sale(stock=5)
    key = unique("shared-key")
    alice, bob = unique("alice"), unique("bob")
    status_a, won_a = await api.purchase(sale["id"], alice, key=key)
    status_b, won_b = await api.purchase(sale["id"], bob, key=key)
    assert (status_a, status_b) == (202, 202), (won_a, won_b)
    assert won_a["order_id"] != won_b["order_id"]
    await api.wait_persisted(sale["id"], 2)
    rows = await order_rows(db, sale["id"])
    assert sorted((r["user_id"], r["order_id"], r["idempotency_key"]) for r in rows) == sorted(
        [(alice, won_a["order_id"], key), (bob, won_b["order_id"], key)])


async def test_keys_are_scoped_to_the_sale(api: Api) -> None:
    first, second = await api.create_sale(stock=1), await api.create_sale(stock=1)
    alice, key = unique("alice"), unique("key")
    status, won_first = await api.purchase(first["id"], alice, key=key)
    assert status == 202, won_first
    status, won_second = await api.purchase(second["id"], alice, key=key)
    assert status == 202, won_second
    assert won_second["sale_id"] == second["id"]
    assert won_first["order_id"] != won_second["order_id"]


async def test_a_refusal_is_not_remembered(api: Api) -> None:
    sale = await api.create_sale(stock=1)
    alice, bob, key = unique("alice"), unique("bob"), unique("key")
    status, won = await api.purchase(sale["id"], alice)
    assert status == 202, won
    status, body = await api.purchase(sale["id"], bob, key=key)
    assert_error(status, body, 409, "sold_out")
    await api.wait_persisted(sale["id"], 1)
    status, body = await api.request("POST", f"/api/v1/orders/{won['order_id']}/cancel",
                                     user=alice)
    assert status == 200, body
    assert (await api.stats(sale["id"]))["remaining"] == 1
    status, retried = await api.purchase(sale["id"], bob, key=key)
    assert status == 202, retried
    assert retried["order_id"] != won["order_id"]
    assert await api.purchase(sale["id"], bob, key=key) == (202, retried)


async def test_key_length_bounds(api: Api) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=5)
    alice = unique("alice")
    for bad in ("k" * 65, "k" * 1000, ""):
        status, body = await api.purchase(sale["id"], alice, key=bad)
        assert_error(status, body, 400, "invalid_request")
    assert (await api.stats(sale["id"]))["remaining"] == 5
    for good in ("k", "k" * 64):
        status, body = await api.purchase(sale["id"], alice, key=good)
        assert status == 202, body
        assert await api.purchase(sale["id"], alice, key=good) == (202, body)
    assert (await api.stats(sale["id"]))["remaining"] == 3
