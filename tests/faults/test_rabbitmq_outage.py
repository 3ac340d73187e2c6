"""RabbitMQ cut off for seconds in the middle of a sale (refused, or a silent black hole).

Purchases do not need the broker: wins are still answered 202 and wait in the Redis outbox;
/readyz says RabbitMQ is down; once the broker is back the relay republishes the outbox and
every win is persisted.
"""

from __future__ import annotations

import asyncpg
import pytest

from seckill.faultproxy import Mode
from tests.faults.figures import burst, measure, shoppers, wait_persisted, waves, won_ids
from tests.faults.harness import Cluster, Stopwatch, with_port
from tests.support import Api, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

CUT_S = 4.0


async def _ready(api: Api) -> tuple[int, object]:
    return await api.request("GET", "/readyz")


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.BLACKHOLE], ids=lambda m: m.value)
async def test_rabbitmq_cut_off_mid_sale(cluster: Cluster, fault_db: asyncpg.Pool,
                                         mode: Mode) -> None:
    s = cluster.settings
    amqp = await cluster.proxy(s.amqp_url, 5672)
    via = {"SECKILL_AMQP_URL": with_port(s.amqp_url, amqp.port)}
    await cluster.worker("orders", "relay", env=via)
    door = await cluster.serve(env=via)
    api = await cluster.api(door)
    sale = await api.create_sale(stock=2000)
    sale_id = sale["id"]

    before = await burst(api, sale_id, shoppers(200))
    assert {a.status for a in before} == {202}

    amqp.set_mode(mode)

    async def reports_rabbitmq_down() -> bool:
        status, body = await _ready(api)
        return status == 503 and isinstance(body, dict) and "rabbitmq" in body["down"]

    await wait_until(reports_rabbitmq_down, timeout=15, what="/readyz to report rabbitmq down")
    outbox_peak = 0

    async def still_down() -> None:
        nonlocal outbox_peak
        assert await reports_rabbitmq_down(), await _ready(api)
        outbox_peak = max(outbox_peak, await cluster.outbox(sale_id))

    during = await waves(api, sale_id, seconds=CUT_S, size=60, pause_s=0.5, during=still_down)
    assert {a.status for a in during} == {202}, "wins are answered while RabbitMQ is away"
    assert outbox_peak > 0, "the wins of the cut wait in the Redis outbox"

    amqp.set_mode(Mode.PASS)
    clock = Stopwatch()

    async def ready() -> bool:
        return (await _ready(api))[0] == 200

    await wait_until(ready, timeout=30, what="/readyz to report ready again")
    after = await burst(api, sale_id, shoppers(200))
    attempts = before + during + after
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    drain_s = clock.lap()

    async def outbox_empty() -> bool:
        return await cluster.outbox(sale_id) == 0

    await wait_until(outbox_empty, timeout=30, what="the outbox to empty")
    rabbit = await cluster.rabbit()
    figures = await measure(f"RabbitMQ cut off ({mode.value}, {CUT_S:.0f} s)", api=api,
                            db=fault_db, sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            wins_during_cut=len(during), outbox_peak=outbox_peak)
    figures.check()
    assert figures.wins == figures.persisted == len(attempts)
    assert figures.dead_lettered == 0


async def test_front_door_starts_while_rabbitmq_is_away(cluster: Cluster,
                                                        fault_db: asyncpg.Pool) -> None:
    """The front door needs Redis and PostgreSQL to serve, not RabbitMQ: started while the
    broker is unreachable, it answers wins (they wait in the outbox), says what is down,
    and connects once the broker is back; every win is persisted."""
    s = cluster.settings
    amqp = await cluster.proxy(s.amqp_url, 5672)
    amqp.set_mode(Mode.REFUSE)
    await cluster.worker("orders", "relay")  # the workers reach RabbitMQ directly
    door = await cluster.serve(env={"SECKILL_AMQP_URL": with_port(s.amqp_url, amqp.port)})
    api = await cluster.api(door)
    status, body = await _ready(api)
    assert status == 503 and body["down"] == ["rabbitmq"], body
    sale = await api.create_sale(stock=300)
    wins = await burst(api, sale["id"], shoppers(150))
    assert {a.status for a in wins} == {202}

    amqp.set_mode(Mode.PASS)

    async def ready() -> bool:
        return (await _ready(api))[0] == 200

    await wait_until(ready, timeout=30, what="the front door to reach RabbitMQ")
    more = await burst(api, sale["id"], shoppers(100))
    attempts = wins + more
    clock = Stopwatch()
    await wait_persisted(fault_db, won_ids(attempts), within_s=60)
    figures = await measure("Front door started with RabbitMQ away", api=api, db=fault_db,
                            sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await (await cluster.rabbit()).dead(),
                            drain_s=clock.lap())
    figures.check()
    assert figures.wins == figures.persisted == 250
