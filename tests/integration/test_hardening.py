"""Defects found in review, each pinned: crafted headers, text that PostgreSQL refuses,
concurrent repairs, a key Redis forgot, a release while a sale is being rebuilt."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import jwt
from multidict import CIMultiDict
from redis.asyncio import Redis

from seckill.context import open_context
from seckill.keys import KeySpace, idempotency_field
from seckill.reconcile import reconcile
from seckill.settings import Settings
from tests.support import Api, assert_error, unique, wait_until


async def test_a_forged_first_forwarded_line_does_not_hide_the_client(api: Api) -> None:
    sale = await api.create_sale(stock=20, address_rate_per_s=1, address_burst=1)
    path = f"{api.base}/api/v1/sales/{sale['id']}/purchase"
    statuses = []
    for i in range(2):
        # A forged line from the client, then the line a trusted proxy appended.
        headers = CIMultiDict([("X-Forwarded-For", f"6.6.6.{i}"),
                               ("X-Forwarded-For", "203.0.113.50")])
        headers.update(api.auth(unique("nat")))
        async with api.session.post(path, headers=headers, json={"quantity": 1}) as resp:
            statuses.append(resp.status)
    assert statuses == [202, 429]


async def test_crafted_purchase_token_and_pow_are_refused_not_errors(api: Api) -> None:
    sale = await api.create_sale(stock=5, requires_token=True, pow_bits=4)
    sid = sale["id"]
    for headers in ({"Purchase-Token": "pt1.1.9999999999999.n.\u00e9"},
                    {"Purchase-Token": "pt1.\u00b2.1.n.s"},
                    {"Purchase-Token": "pt1.1.1.n.s", "Purchase-Pow": "\u00e9" * 3}):
        status, body = await api.request("POST", f"/api/v1/sales/{sid}/purchase",
                                         user="crafty", json={"quantity": 1}, headers=headers)
        assert_error(status, body, 403, "invalid_purchase_token")
    _, issued = await api.request("POST", f"/api/v1/sales/{sid}/token", user="crafty")
    status, body = await api.request(
        "POST", f"/api/v1/sales/{sid}/purchase", user="crafty", json={"quantity": 1},
        headers={"Purchase-Token": issued["token"], "Purchase-Pow": "\u00e9"})
    assert_error(status, body, 403, "pow_required")
    assert (await api.stats(sid))["remaining"] == 5


async def test_text_postgresql_cannot_store_is_a_400(api: Api) -> None:
    for field in ("sku", "name", "description"):
        product = {"sku": unique("sku"), "name": "n", "price_cents": 1, field: "a\u0000b"}
        status, body = await api.request("POST", "/api/v1/admin/products", user="ops",
                                         operator=True, json=product)
        assert_error(status, body, 400, "invalid_request", {field})
    status, body = await api.request("GET", "/api/v1/admin/audit?target=sale%3A1%00",
                                     user="ops", operator=True)
    assert_error(status, body, 400, "invalid_request", {"target"})


async def test_a_user_id_with_control_characters_is_not_a_user(api: Api,
                                                               settings: Settings) -> None:
    token = jwt.encode({"sub": "ev\u0000il", "exp": 2_000_000_000}, settings.jwt_secret,
                       algorithm="HS256")
    async with api.session.get(f"{api.base}/api/v1/me/orders",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
        assert_error(resp.status, await resp.json(), 401, "unauthorized")


async def test_concurrent_repairs_correct_a_leak_once(api: Api, redis: Redis,
                                                      settings: Settings) -> None:
    sale = await api.create_sale(stock=10)
    keys = KeySpace(settings.redis_prefix).sale(int(sale["id"]))
    await redis.hincrby(keys.holders, "ghost", 1)  # a holding no order backs: a leaked unit
    await redis.hincrby(keys.state, "remaining", -1)
    async with open_context(settings) as one, open_context(settings) as two:
        await asyncio.gather(reconcile(one, int(sale["id"]), repair=True),
                             reconcile(two, int(sale["id"]), repair=True))
        report = await reconcile(one, int(sale["id"]), repair=False)
    assert report.consistent, report.problems
    assert (report.remaining, report.held_in_redis) == (10, 0)


async def test_an_order_for_a_key_redis_forgot_is_dropped_and_its_units_return(
        api: Api, redis: Redis, db: asyncpg.Pool, settings: Settings) -> None:
    sale = await api.create_sale(stock=5, per_user_limit=5)
    sid = sale["id"]
    keys = KeySpace(settings.redis_prefix).sale(int(sid))
    status, first = await api.purchase(sid, "forgetful", key="same")
    assert status == 202
    await api.wait_persisted(sid, 1)
    # Redis loses the key's answer (say, the last second before a power cut)...
    await redis.hdel(keys.idem, idempotency_field("forgetful", "same"))
    status, second = await api.purchase(sid, "forgetful", key="same")
    assert status == 202 and second["order_id"] != first["order_id"]

    # ...the second order cannot be stored next to the first: its units come back.
    async def settled() -> bool:
        stats = await api.stats(sid)
        return bool(stats["remaining"] == 4 and stats["reserved"] == 1)

    await wait_until(settled, what="the superseded order's units to return")
    rows = await db.fetch("SELECT order_id FROM orders WHERE sale_id = $1", int(sid))
    assert [r["order_id"] for r in rows] == [first["order_id"]]


async def test_a_cancel_while_the_sale_is_missing_returns_its_units_after_the_rebuild(
        api: Api, redis: Redis, settings: Settings) -> None:
    sale = await api.create_sale(stock=3, per_user_limit=2)
    sid = sale["id"]
    status, won = await api.purchase(sid, "bob", quantity=2)
    assert status == 202
    await api.wait_persisted(sid, 2)
    keys = KeySpace(settings.redis_prefix).sale(int(sid))
    await redis.delete(keys.state)  # Redis lost the sale; the cancel finds nothing to release
    status, _ = await api.request("POST", f"/api/v1/orders/{won['order_id']}/cancel",
                                  user="bob")
    assert status == 200

    async def rebuilt() -> bool:
        status, _ = await api.purchase(sid, "nudge")  # starts the rebuild; 503 meanwhile
        return status == 202

    await wait_until(rebuilt, timeout=30, what="the rebuild")
    await wait_until(lambda: _no_unreturned(api, sid), what="the cancel's units back")
    assert await redis.hgetall(keys.holders) == {"nudge": "1"}
    stats = await api.stats(sid)
    assert (stats["remaining"], stats["reserved"], stats["cancelled"]) == (2, 1, 2)


async def _no_unreturned(api: Api, sale_id: str) -> bool:
    stats = await api.stats(sale_id)
    return bool(stats["remaining"] + stats["reserved"] == 3)


async def test_every_key_of_a_sale_expires_after_it_ends(api: Api, redis: Redis,
                                                         settings: Settings) -> None:
    from workers.reconcile import reconcile_all

    sale = await api.create_sale(stock=3, per_user_limit=2)
    assert (await api.purchase(sale["id"], "keeper", key="k"))[0] == 202
    keys = KeySpace(settings.redis_prefix).sale(int(sale["id"]))
    async with open_context(settings) as ctx:
        await reconcile_all(ctx)
    for key in (keys.state, keys.holders, keys.idem):
        assert await redis.ttl(key) > 0, key


async def test_unreadable_requests_get_the_envelope(api: Api) -> None:
    """aiohttp refuses these before any handler runs; the answer is still our envelope."""
    status, body = await api.request("GET", "/api/v1/sales", headers={"X-Big": "a" * 9000})
    assert_error(status, body, 400, "invalid_request")
    host, port = api.base.removeprefix("http://").split(":")
    for raw in (b"GET /api/v1/sales HTTP/1.1\r\nHost: x\r\nX-Null: a\x00b\r\n\r\n",
                b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], head
        assert b"application/json" in head
        assert json.loads(payload)["error"] == "invalid_request"


async def test_head_is_answered_where_get_is(api: Api) -> None:
    async with api.session.head(f"{api.base}/healthz") as resp:
        assert resp.status == 200
    async with api.session.head(f"{api.base}/api/v1/sales") as resp:
        assert resp.status == 200


async def test_a_name_ending_in_a_newline_is_refused(api: Api) -> None:
    status, body = await api.request("POST", "/api/v1/admin/products", user="ops",
                                     operator=True,
                                     json={"sku": unique("sku"), "name": "abc\n",
                                           "price_cents": 1})
    assert_error(status, body, 400, "invalid_request", {"name"})
