"""The front door SIGKILLed in the middle of a burst, then restarted on the same port.

Every win it answered 202 is persisted (the relay publishes what its pump never did); wins it
decided but never answered are persisted too, or released by `seckill reconcile --repair`; a
shopper who retries with the same Idempotency-Key gets the order Redis decided for them; and
no unit leaks.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.faults.figures import Attempt, buy, codes, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch, free_port
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

STOCK = 600
KILL_AFTER_WINS = 80


async def test_front_door_sigkilled_during_burst(cluster: Cluster,
                                                 fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders", "relay")
    port = free_port()
    door = await cluster.serve(port=port)
    api = await cluster.api(door)
    sale = await api.create_sale(stock=STOCK)
    sale_id = sale["id"]

    answered_wins = 0
    enough = asyncio.Event()

    async def shopper(user: str) -> Attempt:
        nonlocal answered_wins
        attempt = await buy(api, sale_id, user, f"k-{user}")
        if attempt.won:
            answered_wins += 1
            if answered_wins >= KILL_AFTER_WINS:
                enough.set()
        return attempt

    killed_at = datetime.now(UTC)

    async def killer() -> None:
        nonlocal killed_at
        await enough.wait()
        await door.proc.kill()
        killed_at = datetime.now(UTC)

    async def crowd() -> list[Attempt]:
        try:
            return list(await asyncio.gather(*(shopper(u) for u in shoppers(1000))))
        finally:
            enough.set()  # never leave the killer waiting

    first, _ = await asyncio.gather(crowd(), killer())
    unanswered = [a for a in first if a.status is None]
    assert unanswered, f"the kill came too late to cut any request off: {codes(first)}"
    assert not [a for a in first if a.status not in (None, 202, 409)], codes(first)

    # The front door comes back on the same port; shoppers retry with the same keys.
    door = await cluster.serve(port=port)
    api = await cluster.api(door)
    clock = Stopwatch()
    retries = list(await asyncio.gather(*(buy(api, sale_id, a.user, a.key)
                                          for a in unanswered)))
    assert not [r for r in retries if r.status not in (202, 409)], codes(retries)
    replays = list(await asyncio.gather(*(buy(api, sale_id, a.user, a.key)
                                          for a in first if a.won)))
    assert [r.order_id for r in replays] == [a.order_id for a in first if a.won], \
        "a replayed key must return the same order"

    # Settle: the relay republishes what the dead pump never confirmed.
    attempts = first + retries + replays
    wins = won_ids(attempts)
    await wait_persisted(fault_db, wins, within_s=60)

    async def settled() -> bool:
        stats = await api.stats(sale_id)
        return await cluster.outbox(sale_id) == 0 \
            and stats["orders_persisted"] == stats["reserved"]

    await wait_until(settled, timeout=60, what="every reservation persisted")
    drain_s = clock.lap()

    code, report = await cluster.reconcile_cli(sale_id, repair=True)
    assert code == 0 and report["consistent"], report

    # A retry after the restart gets exactly the order Redis decided for that key.
    rows = {r["user_id"]: r for r in await fault_db.fetch(
        "SELECT order_id, user_id, created_at FROM orders WHERE sale_id = $1", int(sale_id))}
    for retry in retries:
        if retry.won:
            assert rows[retry.user]["order_id"] == retry.order_id, retry
        else:
            assert retry.user not in rows, ("a refused retry, yet the first attempt won",
                                            retry, rows[retry.user])
    # Won in Redis before the kill, never answered: the retry replayed them.
    decided_unanswered = sum(1 for a in unanswered
                             if a.user in rows and rows[a.user]["created_at"] < killed_at)

    rabbit = await cluster.rabbit()
    figures = await measure("front door SIGKILLed mid-burst", api=api, db=fault_db, sale=sale,
                            attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            unanswered=len(unanswered),
                            won_unanswered=decided_unanswered,
                            retried_202=sum(r.won for r in retries),
                            reconcile_repaired=len(report["repaired"]))
    figures.check()
    assert figures.persisted == figures.stats["orders_persisted"] == STOCK
    assert figures.dead_lettered == 0
