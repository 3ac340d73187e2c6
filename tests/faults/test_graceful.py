"""Graceful shutdown: SIGTERM stops a process without losing what it took on.

The front door stops accepting, answers the requests it has, and publishes the wins still in
its pump before it exits (no relay runs here, so only that drain can deliver them). The order
writer stops consuming, commits and acks what it holds, and exits; nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.faults.figures import Attempt, buy, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


async def test_front_door_sigterm_answers_and_drains(cluster: Cluster,
                                                     fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders")  # no relay: the pump's drain alone must deliver the wins
    door = await cluster.serve()
    api = await cluster.api(door)
    sale = await api.create_sale(stock=400)
    answered = 0
    enough = asyncio.Event()

    async def shopper(user: str) -> Attempt:
        nonlocal answered
        attempt = await buy(api, sale["id"], user, f"k-{user}")
        if attempt.won:
            answered += 1
            if answered >= 100:
                enough.set()
        return attempt

    async def crowd() -> list[Attempt]:
        try:
            return list(await asyncio.gather(*(shopper(u) for u in shoppers(600))))
        finally:
            enough.set()

    async def terminate() -> None:
        await enough.wait()
        await door.proc.stop()

    attempts, _ = await asyncio.gather(crowd(), terminate())
    assert door.proc.process.returncode == 0, door.proc.tail()
    assert all(a.status is None or a.status in (202, 409) for a in attempts), \
        {a.status for a in attempts}
    clock = Stopwatch()
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    assert await cluster.outbox(sale["id"]) == 0, "the pump drained before exiting"
    figures = await measure("Front door SIGTERM mid-burst", api=await cluster.api(
        await cluster.serve()), db=fault_db, sale=sale, attempts=attempts,
        redelivered="n/a", dead_lettered=await (await cluster.rabbit()).dead(),
        drain_s=clock.lap(), unanswered=sum(a.status is None for a in attempts))
    figures.check()


async def test_order_writer_sigterm_commits_what_it_holds(cluster: Cluster,
                                                          fault_db: asyncpg.Pool) -> None:
    writer = await cluster.worker("orders", "relay")
    door = await cluster.serve()
    api = await cluster.api(door)
    sale = await api.create_sale(stock=600)
    first = list(await asyncio.gather(*(buy(api, sale["id"], u) for u in shoppers(300))))
    await writer.stop()  # SIGTERM while orders flow
    assert writer.process.returncode == 0, writer.tail()
    rabbit = await cluster.rabbit()

    async def no_consumer() -> bool:
        return await rabbit.consumers() == 0

    await wait_until(no_consumer, what="the writer's consumer to be gone")
    second = list(await asyncio.gather(*(buy(api, sale["id"], u) for u in shoppers(300))))
    await cluster.worker("orders", "relay")
    clock = Stopwatch()
    attempts = first + second
    assert all(a.won for a in attempts)
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    figures = await measure("Order writer SIGTERM while orders flow", api=api, db=fault_db,
                            sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=clock.lap())
    figures.check()
    assert await rabbit.dead() == 0
