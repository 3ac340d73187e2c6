"""PostgreSQL unreachable from the order writer for 10 s while orders keep coming.

The writer holds its batch and retries with backoff: nothing is dropped, nothing is
dead-lettered, and everything is persisted once PostgreSQL answers again.
"""

from __future__ import annotations

import asyncpg
import pytest

from seckill.faultproxy import Mode
from tests.faults.figures import burst, measure, shoppers, wait_persisted, waves, won_ids
from tests.faults.harness import Cluster, Stopwatch, with_port

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

OUTAGE_S = 10.0


async def test_postgres_unreachable_while_orders_flow(cluster: Cluster,
                                                      fault_db: asyncpg.Pool) -> None:
    s = cluster.settings
    pg = await cluster.proxy(s.database_url, 5432)
    await cluster.worker("orders", env={
        "SECKILL_DATABASE_URL": with_port(s.database_url, pg.port)})
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    sale = await api.create_sale(stock=3000)
    sale_id = sale["id"]

    before = await burst(api, sale_id, shoppers(200))
    await wait_persisted(fault_db, won_ids(before), within_s=30)  # orders are flowing

    pg.set_mode(Mode.REFUSE)  # every connection of the writer reset, new ones refused
    rows_at_cut = await fault_db.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1",
                                          int(sale_id))

    async def nothing_lands() -> None:
        rows = await fault_db.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1",
                                       int(sale_id))
        assert rows == rows_at_cut, "the writer reached PostgreSQL through a dead link"
        assert await rabbit.dead() == 0

    during = await waves(api, sale_id, seconds=OUTAGE_S, size=40, pause_s=0.5,
                         during=nothing_lands)
    assert {a.status for a in during} == {202}

    pg.set_mode(Mode.PASS)
    clock = Stopwatch()
    after = await burst(api, sale_id, shoppers(200))
    attempts = before + during + after
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    drain_s = clock.lap()

    figures = await measure(f"PostgreSQL unreachable {OUTAGE_S:.0f} s", api=api, db=fault_db,
                            sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            wins_during_outage=len(during))
    figures.check()
    assert figures.wins == figures.persisted == len(attempts)
    assert figures.dead_lettered == 0
