"""From the Redis outbox to RabbitMQ: the front door's pump and the relay's sweep.

A win is in the sale's outbox (Redis) the moment the purchase script answers. The pump
publishes it right away, batched with the other wins of the moment into one confirmed
message; once RabbitMQ confirms, the entries leave the outbox. Whatever the pump could not
publish (broker down, process killed, pump full) stays in the outbox, and the relay
republishes entries older than a grace period. An order may therefore be published twice;
the order worker's `ON CONFLICT DO NOTHING` makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import cast

from redis.asyncio import Redis

from seckill import metrics
from seckill.broker import ConfirmedPublisher, PublishFailed
from seckill.keys import KeySpace
from seckill.scripts import ScriptRunner

log = logging.getLogger(__name__)

# (sale_id, order_id, order JSON)
Win = tuple[int, str, str]


class OutboxPump:
    """Publishes fresh wins in the background; memory stays bounded by `capacity`."""

    def __init__(self, publisher: ConfirmedPublisher, runner: ScriptRunner, keys: KeySpace, *,
                 capacity: int = 50_000, batch: int = 500) -> None:
        self._publisher = publisher
        self._runner = runner
        self._keys = keys
        self._queue: asyncio.Queue[Win] = asyncio.Queue(capacity)
        self._batch = batch

    def submit(self, sale_id: int, order_id: str, body: str) -> None:
        try:
            self._queue.put_nowait((sale_id, order_id, body))
        except asyncio.QueueFull:
            metrics.OUTBOX_DEFERRED.inc()  # the relay will publish it from the outbox

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            in_flight = asyncio.ensure_future(self._publish(self._take(batch)))
            try:
                await asyncio.shield(in_flight)
            except asyncio.CancelledError:
                # Stopping: let the batch in flight finish (confirm and leave the outbox).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(in_flight, self._publisher.timeout_s * 2)
                raise

    def _take(self, batch: list[Win]) -> list[Win]:
        while len(batch) < self._batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _publish(self, batch: list[Win]) -> None:
        try:
            await self._publisher.publish_orders([(oid, body) for _, oid, body in batch])
        except PublishFailed as exc:
            metrics.PUBLISH_FAILURES.inc(len(batch))
            log.warning("%d orders not confirmed by RabbitMQ; the relay will republish them "
                        "from the outbox: %s", len(batch), exc)
            # The broker is unwell: drop what waits in memory (it is in the outbox) and pause.
            while not self._queue.empty():
                self._queue.get_nowait()
                metrics.OUTBOX_DEFERRED.inc()
            await asyncio.sleep(0.5)
            return
        metrics.ORDERS_PUBLISHED.inc(len(batch))
        by_sale: dict[int, list[str]] = defaultdict(list)
        for sale_id, order_id, _ in batch:
            by_sale[sale_id].append(order_id)
        with contextlib.suppress(Exception):  # left in the outbox, the relay cleans it up
            # In the purchase scripts' pipelines: redis-py's own pipeline packs its
            # arguments in Python, which cost more than the publish.
            await asyncio.gather(*(self._runner.command("ZREM", self._keys.sale(sale_id).outbox,
                                                        *order_ids)
                                   for sale_id, order_ids in by_sale.items()))

    async def drain(self, timeout_s: float) -> None:
        """Publish what is queued, within a deadline (shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self._queue.empty():
                    await self._publish(self._take([]))


async def confirm_published(redis: Redis, keys: KeySpace,
                            items: list[tuple[int, str]]) -> None:
    by_sale: dict[int, list[str]] = defaultdict(list)
    for sale_id, order_id in items:
        by_sale[sale_id].append(order_id)
    pipe = redis.pipeline(transaction=False)
    for sale_id, order_ids in by_sale.items():
        pipe.zrem(keys.sale(sale_id).outbox, *order_ids)
    await pipe.execute()


async def relay_once(redis: Redis, keys: KeySpace, publisher: ConfirmedPublisher, *,
                     grace_ms: int, limit: int = 500) -> int:
    """Republish outbox entries older than `grace_ms`; returns how many were confirmed."""
    cutoff = int(time.time() * 1000) - grace_ms
    total = 0
    for raw_id in await redis.smembers(keys.active_sales):
        sale_id = int(raw_id)
        sk = keys.sale(sale_id)
        if not await redis.exists(sk.state):
            await redis.srem(keys.active_sales, raw_id)
            continue
        while True:
            order_ids = cast(list[str], await redis.zrangebyscore(sk.outbox, "-inf", cutoff,
                                                                  start=0, num=limit))
            if not order_ids:
                break
            bodies = cast(list[str | None], await redis.hmget(sk.orders, order_ids))
            found = [(oid, body) for oid, body in zip(order_ids, bodies, strict=True)
                     if body is not None]
            # A missing record means PostgreSQL has the order: the worker drops it only then.
            if found:
                await publisher.publish_orders(found)
                total += len(found)
            await confirm_published(redis, keys, [(sale_id, oid) for oid in order_ids])
            if len(order_ids) < limit:
                break
    if total:
        metrics.ORDERS_RELAYED.inc(total)
        log.info("relay republished %d orders from the outbox", total)
    return total
