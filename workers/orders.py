"""The order writer: RabbitMQ -> PostgreSQL, in batches, idempotently, ack after commit.

Bounded prefetch; one multi-row `INSERT ... ON CONFLICT DO NOTHING` per batch; acks only
after the commit, so a crash redelivers and the redelivery is a no-op. A message that can
never be stored (malformed, or refused by a constraint) is rejected without requeue and
lands in the dead-letter queue. A transient PostgreSQL failure is retried with backoff while
the batch is held: nothing is dead-lettered for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from seckill import metrics
from seckill.broker import declare
from seckill.orders import Q
from seckill.purchase import sale_of_order
from seckill.schemas import MAX_CENTS, MAX_QUANTITY, from_ms
from workers.base import Backoff, WorkerContext

log = logging.getLogger(__name__)


class OrderMessage(msgspec.Struct):
    order_id: str
    sale_id: str | int
    user_id: str
    quantity: int
    amount_cents: int
    created_ms: int
    pay_by_ms: int
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    order_id: str
    sale_id: int
    user_id: str
    quantity: int
    amount_cents: int
    idempotency_key: str | None
    created_at: datetime
    pay_by: datetime


_decoder = msgspec.json.Decoder(OrderMessage)


class Poison(ValueError):
    """A message that no retry can store."""


def parse(body: bytes) -> Row:
    try:
        m = _decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Poison(str(exc)) from None
    sale_id = sale_of_order(m.order_id)
    if sale_id is None or str(sale_id) != str(m.sale_id):
        raise Poison(f"order id {m.order_id!r} does not belong to sale {m.sale_id!r}")
    if not 1 <= len(m.user_id) <= 64 or not 1 <= m.quantity <= MAX_QUANTITY \
            or not 0 <= m.amount_cents <= MAX_CENTS * MAX_QUANTITY \
            or m.pay_by_ms < m.created_ms or len(m.idempotency_key) > 64:
        raise Poison(f"order {m.order_id!r} has out-of-range fields")
    return Row(m.order_id, sale_id, m.user_id, m.quantity, m.amount_cents,
               m.idempotency_key or None, from_ms(m.created_ms), from_ms(m.pay_by_ms))


# Errors after which the same write can succeed later: keep the batch and retry.
TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


async def insert(db: asyncpg.Pool, rows: list[Row]) -> int:
    cols = list(zip(*((r.order_id, r.sale_id, r.user_id, r.quantity, r.amount_cents,
                       r.idempotency_key, r.created_at, r.pay_by) for r in rows), strict=True))
    inserted = await db.fetch(Q["insert_orders"], *cols)
    return len(inserted)


class OrderWriter:
    def __init__(self, ctx: WorkerContext, stop: asyncio.Event) -> None:
        self._ctx = ctx
        self._stop = stop
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def run(self) -> None:
        settings = self._ctx.settings
        channel = await self._ctx.amqp.channel()
        await channel.set_qos(prefetch_count=settings.consumer_prefetch)
        _, queue = await declare(channel, self._ctx.topology)
        tag = await queue.consume(self._on_message)
        try:
            while not self._stop.is_set():
                batch = await self._collect()
                if batch:
                    await self.handle(batch)
        finally:
            # Graceful drain: stop deliveries, store what was delivered, ack, then close.
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            rest: list[AbstractIncomingMessage] = []
            while not self._inbox.empty():
                rest.append(self._inbox.get_nowait())
            if rest:
                await self.handle(rest)
            with contextlib.suppress(Exception):
                await channel.close()

    async def _collect(self) -> list[AbstractIncomingMessage]:
        settings = self._ctx.settings
        stop_wait = asyncio.ensure_future(self._stop.wait())
        first = asyncio.ensure_future(self._inbox.get())
        try:
            await asyncio.wait({stop_wait, first}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not first.done():
            first.cancel()
            return []
        batch = [first.result()]
        deadline = asyncio.get_running_loop().time() + settings.order_batch_wait_ms / 1000
        while len(batch) < settings.order_batch_size:
            if self._inbox.empty():
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._inbox.get(), timeout))
                except TimeoutError:
                    break
            else:
                batch.append(self._inbox.get_nowait())
        return batch

    async def handle(self, batch: list[AbstractIncomingMessage]) -> None:
        good: list[tuple[AbstractIncomingMessage, Row]] = []
        for message in batch:
            try:
                good.append((message, parse(message.body)))
            except Poison as exc:
                await self._dead_letter(message, str(exc))
        if not good:
            return
        stored = await self._store(good)
        if stored is None:
            return
        await self._forget_pending([row for _, row in stored])
        for message, _ in stored:
            await _ack(message)

    async def _store(self, good: list[tuple[AbstractIncomingMessage, Row]]
                     ) -> list[tuple[AbstractIncomingMessage, Row]] | None:
        """Commit the rows; returns what was stored, None if given up on shutdown."""
        # Duplicate order ids inside one batch (a republished win) would abort unnest's insert.
        unique = list({row.order_id: row for _, row in good}.values())
        backoff = Backoff()
        while True:
            try:
                inserted = await insert(self._ctx.db, unique)
                metrics.ORDERS_PERSISTED.inc(inserted)
                metrics.ORDERS_DUPLICATE.inc(len(good) - inserted)
                return good
            except TRANSIENT as exc:
                if self._stop.is_set():
                    log.warning("PostgreSQL unavailable while stopping; %d messages go back "
                                "to the queue: %r", len(good), exc)
                    for message, _ in good:
                        with contextlib.suppress(Exception):
                            await message.nack(requeue=True)
                    return None
                log.warning("PostgreSQL unavailable, retrying %d orders: %r", len(good), exc)
                await backoff.wait(self._stop)
            except asyncpg.PostgresError as exc:
                log.warning("batch refused (%r); storing its orders one by one", exc)
                return await self._store_one_by_one(good)

    async def _store_one_by_one(self, good: list[tuple[AbstractIncomingMessage, Row]]
                                ) -> list[tuple[AbstractIncomingMessage, Row]]:
        stored = []
        for message, row in good:
            try:
                metrics.ORDERS_PERSISTED.inc(await insert(self._ctx.db, [row]))
            except TRANSIENT:
                # Back to the queue, to be retried by a later batch.
                await message.nack(requeue=True)
                continue
            except asyncpg.PostgresError as exc:
                await self._dead_letter(message, repr(exc))
                continue
            stored.append((message, row))
        return stored

    async def _forget_pending(self, rows: list[Row]) -> None:
        """Drop the Redis pending records of committed orders (best effort)."""
        by_sale: dict[int, list[str]] = defaultdict(list)
        for row in rows:
            by_sale[row.sale_id].append(row.order_id)
        try:
            pipe = self._ctx.redis.pipeline(transaction=False)
            for sale_id, order_ids in by_sale.items():
                pipe.hdel(self._ctx.keys.sale(sale_id).orders, *order_ids)
            await pipe.execute()
        except Exception as exc:
            log.warning("could not drop pending records from Redis: %r", exc)

    async def _dead_letter(self, message: AbstractIncomingMessage, why: str) -> None:
        log.error("dead-lettering message %s: %s", message.message_id, why)
        metrics.ORDERS_DEAD_LETTERED.inc()
        with contextlib.suppress(Exception):
            await message.reject(requeue=False)


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except Exception as exc:  # channel lost: the message is redelivered, and is a no-op then
        log.warning("ack of %s failed: %r", message.message_id, exc)


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    await OrderWriter(ctx, stop).run()
