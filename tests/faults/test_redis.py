"""Redis restarted mid-sale (data kept, script cache gone), and Redis losing one sale's keys.

A restart with the append-only file keeps the sale but forgets every loaded script: the
first EVALSHA after it meets NOSCRIPT, which the script runner absorbs (load, retry), so
purchases go on and the sale sells exactly its stock. A sale whose keys vanish is refused
with 503 overloaded (never decided from an empty state) until it is rebuilt from PostgreSQL;
then it sells exactly what is left, and earlier winners still hold their units.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from seckill.faultproxy import Mode
from seckill.scripts import Script
from tests.faults.figures import (
    Attempt,
    burst,
    buy,
    codes,
    measure,
    shoppers,
    until_answered,
    wait_persisted,
    won_ids,
)
from tests.faults.harness import Cluster, Stopwatch, drop_keys, eventually, with_port
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


async def test_redis_restarted_mid_sale_loses_its_script_cache(
        cluster: Cluster, fault_db: asyncpg.Pool) -> None:
    server = await cluster.private_redis()
    await cluster.worker("orders", "relay")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    redis = cluster.redis()
    purchase_sha = Script.load("purchase").sha
    sale = await api.create_sale(stock=600)
    sale_id = sale["id"]
    state = cluster.keys(sale_id).state

    first = await burst(api, sale_id, shoppers(200))
    assert {a.status for a in first} == {202}
    assert (await redis.script_exists(purchase_sha)) == [True]
    remaining_before = await redis.hget(state, "remaining")

    # Restarted between two waves of shoppers.
    await server.restart()  # SIGTERM (the AOF is flushed), then start on the same directory
    await redis.connection_pool.disconnect()  # the test's own client: no stale connection
    assert (await redis.script_exists(purchase_sha)) == [False], "the script cache survived"
    assert await redis.hget(state, "remaining") == remaining_before, "the sale was lost"

    clock = Stopwatch()
    second = await burst(api, sale_id, shoppers(200))
    # A pooled connection to the old server fails its first pipeline: those purchases are
    # refused with 503 overloaded (nothing decided); their retries go through.
    second_retries = await until_answered(api, sale_id, second)
    assert (await redis.script_exists(purchase_sha)) == [True], "NOSCRIPT was not reloaded"

    # Restarted again while purchases are in flight.
    answered = asyncio.Event()

    async def restart_when_busy() -> None:
        await answered.wait()
        await server.restart()

    async def crowd() -> list[Attempt]:
        async def shopper(user: str) -> Attempt:
            attempt = await buy(api, sale_id, user, f"k-{user}")
            answered.set()
            return attempt

        try:
            return list(await asyncio.gather(*(shopper(u) for u in shoppers(400))))
        finally:
            answered.set()

    third, _ = await asyncio.gather(crowd(), restart_when_busy())
    third_retries = await until_answered(api, sale_id, third)
    attempts = first + second + second_retries + third + third_retries
    for wave in (second, second_retries, third, third_retries):
        # A refusal, never an error: NOSCRIPT is absorbed, a dead connection is a 503.
        assert set(codes(wave)) <= {"won", "sold_out", "overloaded"}, codes(wave)
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    drain_s = clock.lap()

    figures = await measure("Redis restarted twice (script cache lost)", api=api,
                            db=fault_db, sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            redis_starts=server.starts,
                            refused_503_after_restart=codes(second).get("overloaded", 0),
                            refused_503_in_flight=codes(third).get("overloaded", 0))
    figures.check()
    assert figures.wins == figures.persisted == 600, "sells exactly its stock"


async def test_redis_loses_one_sales_keys(cluster: Cluster, fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders", "relay")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    redis = cluster.redis()
    sale = await api.create_sale(stock=300)
    sale_id = sale["id"]
    keys = cluster.keys(sale_id)

    first = await burst(api, sale_id, shoppers(150))
    assert {a.status for a in first} == {202}
    # Every key of the sale, while its orders are still on their way to PostgreSQL.
    await drop_keys(cluster.settings.redis_url, keys.state.rpartition(":")[0])
    assert not await redis.exists(keys.state)

    refused = await burst(api, sale_id, shoppers(100))
    # Refused with 503 until rebuilt (a wave slower than the rebuild may see it done).
    assert codes(refused).get("overloaded", 0) > 0, codes(refused)
    assert set(codes(refused)) <= {"overloaded", "won"}, codes(refused)
    assert {a.status for a in refused if a.code == "overloaded"} == {503}

    clock = Stopwatch()

    async def rebuilt() -> bool:
        return bool(await redis.exists(keys.state))

    await wait_until(rebuilt, timeout=60, what="the sale to be rebuilt in Redis")
    rebuild_s = clock.lap()

    replays = [await buy(api, sale_id, a.user, a.key) for a in first[:20]]
    assert [r.order_id for r in replays] == [a.order_id for a in first[:20]], \
        "idempotency keys survive the rebuild"
    again = await burst(api, sale_id, [a.user for a in first], keys=False)
    assert set(codes(again)) == {"limit_reached"}, \
        f"earlier winners still hold their unit after the rebuild: {codes(again)}"
    retried = await burst(api, sale_id, [a.user for a in refused if not a.won])  # same keys
    fresh = await burst(api, sale_id, shoppers(300))
    attempts = first + refused + replays + again + retried + fresh
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)

    async def settled() -> bool:
        stats = await api.stats(sale_id)
        return bool(stats["orders_persisted"] == stats["reserved"] == 300)

    await wait_until(settled, timeout=60, what="every reservation persisted")
    drain_s = clock.lap()
    figures = await measure("Redis lost one sale's keys", api=api, db=fault_db, sale=sale,
                            attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            refused_503=codes(refused).get("overloaded", 0),
                            rebuild_s=rebuild_s)
    figures.check()
    assert figures.wins == figures.persisted == 300, "no oversell: total wins == stock"


async def test_redis_loses_one_sales_keys_while_postgres_stalls(
        cluster: Cluster, fault_db: asyncpg.Pool) -> None:
    """The same loss while the order writer's commit is stuck (PostgreSQL stalls): the
    orders it took are in no queue count, and not yet in PostgreSQL; the rebuild must still
    count them, or their units are sold twice."""
    s = cluster.settings
    pg = await cluster.proxy(s.database_url, 5432)
    await cluster.worker("orders", "relay", env={
        "SECKILL_DATABASE_URL": with_port(s.database_url, pg.port)})
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    redis = cluster.redis()
    sale = await api.create_sale(stock=300)
    sale_id = sale["id"]
    keys = cluster.keys(sale_id)

    pg.set_mode(Mode.BLACKHOLE)  # the writer's INSERT hangs, as on a lock or a full disk
    first = await burst(api, sale_id, shoppers(150))
    assert {a.status for a in first} == {202}

    async def taken_by_the_writer() -> bool:
        return await cluster.outbox(sale_id) == 0 and await rabbit.ready() == 0

    await wait_until(taken_by_the_writer, timeout=30, what="the writer to take every order")
    await drop_keys(s.redis_url, keys.state.rpartition(":")[0])
    refused = await burst(api, sale_id, shoppers(50))
    assert {a.status for a in refused} == {503}, codes(refused)

    async def rebuilt() -> bool:
        return bool(await redis.exists(keys.state))

    # A correct rebuild waits for the stalled orders; the stall ends a little later anyway.
    rebuilt_during_stall = await eventually(rebuilt, within_s=5)
    pg.set_mode(Mode.PASS)
    clock = Stopwatch()
    await wait_until(rebuilt, timeout=60, what="the sale to be rebuilt in Redis")
    again = await burst(api, sale_id, [a.user for a in first], keys=False)
    fresh = await burst(api, sale_id, shoppers(300))
    attempts = first + refused + again + fresh
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    drain_s = clock.lap()
    figures = await measure("Redis lost one sale's keys, PostgreSQL stalled", api=api,
                            db=fault_db, sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            rebuilt_during_stall=rebuilt_during_stall)
    assert set(codes(again)) == {"limit_reached"}, \
        f"winners bought a second unit after the rebuild: {codes(again)}"
    figures.check()
    assert figures.wins == figures.persisted == 300


async def test_a_purchase_whose_answer_never_came_is_not_decided_twice(
        cluster: Cluster, fault_db: asyncpg.Pool) -> None:
    """Redis ran the purchase and its answer was lost on the way back. While the front door
    waited for it (5 s), the relay published the win from the outbox and the order worker
    stored it, dropping its pending record: the trace by which the script knows an attempt
    it has already decided. Sending the call again then would decide it a second time (a
    second unit for the same order); so a call that failed that late is not sent again,
    and the shopper hears 503, with the one order they won."""
    s = cluster.settings
    grace = {"SECKILL_OUTBOX_GRACE_MS": "200"}
    proxy = await cluster.proxy(s.redis_url, 6379)
    await cluster.worker("orders", "relay", env=grace)
    door = await cluster.serve(env={**grace,
                                    "SECKILL_REDIS_URL": with_port(s.redis_url, proxy.port)})
    api = await cluster.api(door)
    sale = await api.create_sale(stock=5, per_user_limit=2)
    sale_id = sale["id"]
    assert (await buy(api, sale_id, "warm-up")).status == 202  # script loaded, pool open

    proxy.set_mode(Mode.MUTE)
    answer = asyncio.create_task(buy(api, sale_id, "alice"))

    async def stored() -> bool:
        return bool(await fault_db.fetchval(
            "SELECT count(*) FROM orders WHERE sale_id = $1 AND user_id = 'alice'",
            int(sale_id)))

    await wait_until(stored, timeout=30, what="alice's win relayed and stored")
    proxy.set_mode(Mode.PASS)  # a call sent again from now on reaches Redis
    attempt = await asyncio.wait_for(answer, 30)
    assert (attempt.status, attempt.code) == (503, "overloaded"), attempt

    keys = cluster.keys(sale_id)
    redis = cluster.redis()
    assert await redis.hget(keys.holders, "alice") == "1"
    assert await redis.hget(keys.state, "remaining") == "3"  # warm-up's unit and alice's
    rows = await fault_db.fetch("SELECT user_id FROM orders WHERE sale_id = $1", int(sale_id))
    assert sorted(r["user_id"] for r in rows) == ["alice", "warm-up"]
