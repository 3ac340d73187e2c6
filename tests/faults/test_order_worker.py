"""The order writer killed: mid-batch, and after its commit but before its ack.

Either way RabbitMQ redelivers what the dead worker held; the restarted worker stores what was
not committed and finds the rest already there (`ON CONFLICT DO NOTHING`): no win lost, no
order doubled.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from seckill.faultproxy import Mode
from seckill.schemas import to_ms
from tests.faults.figures import burst, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch, with_port
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


async def _rows(db: asyncpg.Pool, sale_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1",
                                 int(sale_id)))


async def _all_published(cluster: Cluster, sale_id: str, wins: int) -> None:
    """Every win confirmed by RabbitMQ: the outbox is empty."""
    async def empty() -> bool:
        return await cluster.outbox(sale_id) == 0

    await wait_until(empty, timeout=30, what=f"the outbox of {wins} wins to empty")


async def test_worker_sigkilled_mid_batch_then_restarted(cluster: Cluster,
                                                         fault_db: asyncpg.Pool) -> None:
    s = cluster.settings
    pg = await cluster.proxy(s.database_url, 5432)
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    worker = await cluster.worker("orders", env={
        "SECKILL_DATABASE_URL": with_port(s.database_url, pg.port)})
    sale = await api.create_sale(stock=400)
    sale_id = sale["id"]

    flowing = await burst(api, sale_id, shoppers(100))
    await wait_persisted(fault_db, won_ids(flowing), within_s=30)  # batches commit as usual

    pg.set_mode(Mode.BLACKHOLE)  # the next batch's INSERT goes out and hangs on the wire
    caught = await burst(api, sale_id, shoppers(200))
    await _all_published(cluster, sale_id, len(won_ids(caught)))

    async def all_delivered() -> bool:
        return await rabbit.ready() == 0

    await wait_until(all_delivered, timeout=30, what="the worker to take every message")
    await worker.kill()  # mid-batch: messages taken, INSERT in flight, nothing acked
    pg.set_mode(Mode.REFUSE)  # the half-done INSERT dies with its connection
    rows_at_kill = await _rows(fault_db, sale_id)

    async def requeued() -> bool:
        return await rabbit.consumers() == 0 and await rabbit.ready() > 0

    # Wins travel in batch messages: `redelivered` counts messages, each of many orders.
    await wait_until(requeued, timeout=30, what="RabbitMQ to requeue the dead worker's messages")
    redelivered = await rabbit.ready()
    assert rows_at_kill == len(won_ids(flowing)), "the stuck batch reached PostgreSQL"

    clock = Stopwatch()
    restarted = asyncio.create_task(cluster.worker("orders"))  # straight to PostgreSQL
    late = await burst(api, sale_id, shoppers(300))  # orders keep coming meanwhile
    await restarted
    attempts = flowing + caught + late
    wins = won_ids(attempts)
    await wait_persisted(fault_db, wins, within_s=60)
    drain_s = clock.lap()

    figures = await measure("worker SIGKILLed mid-batch", api=api, db=fault_db, sale=sale,
                            attempts=attempts,
                            redelivered=f"{redelivered} msgs ({len(won_ids(caught))} orders)",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            rows_at_kill=rows_at_kill)
    figures.check()
    assert figures.wins == figures.persisted == 400
    assert figures.dead_lettered == 0


async def test_worker_dies_after_commit_before_ack(cluster: Cluster,
                                                   fault_db: asyncpg.Pool) -> None:
    """The worker commits, its acks never reach RabbitMQ, it is killed: every message comes
    back, every redelivery is a no-op. Then the same messages published twice more: still
    one row each."""
    s = cluster.settings
    pg = await cluster.proxy(s.database_url, 5432)
    amqp = await cluster.proxy(s.amqp_url, 5672)
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    sale = await api.create_sale(stock=300)
    worker = await cluster.worker("orders", env={
        "SECKILL_DATABASE_URL": with_port(s.database_url, pg.port),
        "SECKILL_AMQP_URL": with_port(s.amqp_url, amqp.port)})

    pg.set_mode(Mode.BLACKHOLE)  # the worker takes messages but cannot commit yet
    attempts = await burst(api, sale["id"], shoppers(500))
    wins = won_ids(attempts)
    await _all_published(cluster, sale["id"], len(wins))

    async def all_delivered() -> bool:
        return await rabbit.ready() == 0

    await wait_until(all_delivered, timeout=30, what="the worker to take every message")
    amqp.set_mode(Mode.BLACKHOLE)  # from now on its acks go nowhere
    pg.set_mode(Mode.PASS)
    await wait_persisted(fault_db, wins, within_s=30)  # committed...
    await worker.kill()  # ...and killed before any ack arrived
    amqp.set_mode(Mode.REFUSE)  # the broker sees the connection die: it requeues everything

    async def requeued() -> bool:
        return await rabbit.consumers() == 0 and await rabbit.ready() > 0

    await wait_until(requeued, timeout=30, what="RabbitMQ to requeue every committed message")
    redelivered = await rabbit.ready()

    clock = Stopwatch()
    await cluster.worker("orders")

    async def drained() -> bool:
        return await rabbit.ready() == 0

    await wait_until(drained, timeout=30, what="the redeliveries to be consumed")
    drain_s = clock.lap()

    # The same orders published twice more, straight to the exchange.
    rows = await fault_db.fetch("SELECT * FROM orders WHERE sale_id = $1", int(sale["id"]))
    bodies = [json.dumps({
        "order_id": r["order_id"], "sale_id": str(r["sale_id"]), "user_id": r["user_id"],
        "quantity": r["quantity"], "amount_cents": r["amount_cents"],
        "created_ms": to_ms(r["created_at"]), "pay_by_ms": to_ms(r["pay_by"]),
        "idempotency_key": r["idempotency_key"] or ""}).encode() for r in rows]
    await rabbit.publish(*bodies, *bodies)
    # One consumer takes messages in order: once a later order is stored, so were these.
    sentinel = await api.create_sale(stock=1)
    later = await burst(api, sentinel["id"], shoppers(1))
    await wait_persisted(fault_db, won_ids(later), within_s=30)

    figures = await measure("worker dies after commit, before ack", api=api, db=fault_db,
                            sale=sale, attempts=attempts,
                            redelivered=f"{redelivered} msgs ({len(wins)} orders)",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            republished_twice=len(bodies))
    figures.check()
    assert figures.wins == figures.persisted == 300
    assert figures.dead_lettered == 0
