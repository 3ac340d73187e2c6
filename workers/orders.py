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
import os
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from seckill import metrics
from seckill.broker import declare
from seckill.drain import beacon
from seckill.order_ids import sale_of_order
from seckill.orders import Q
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


# Times an order may carry (2020 .. 2100): anything else is not one of ours.
EARLIEST_MS = 1_577_836_800_000
LATEST_MS = 4_102_444_800_000

_decode_order = msgspec.json.Decoder(OrderMessage).decode
_decode_batch = msgspec.json.Decoder(list[msgspec.Raw]).decode


class Poison(ValueError):
    """A message (or an order in it) that no retry can store."""


def parse_order(raw: bytes) -> Row:
    try:
        m = _decode_order(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Poison(str(exc)) from None
    sale_id = sale_of_order(m.order_id)
    if sale_id is None or str(sale_id) != str(m.sale_id):
        raise Poison(f"order id {m.order_id!r} does not belong to sale {m.sale_id!r}")
    if not 1 <= len(m.user_id) <= 64 or not 1 <= m.quantity <= MAX_QUANTITY \
            or not 0 <= m.amount_cents <= MAX_CENTS * MAX_QUANTITY \
            or not EARLIEST_MS <= m.created_ms <= m.pay_by_ms <= LATEST_MS \
            or len(m.idempotency_key) > 64:
        raise Poison(f"order {m.order_id!r} has out-of-range fields")
    return Row(m.order_id, sale_id, m.user_id, m.quantity, m.amount_cents,
               m.idempotency_key or None, from_ms(m.created_ms), from_ms(m.pay_by_ms))


def parse_message(body: bytes) -> tuple[list[Row], list[tuple[bytes, str]]]:
    """A message holds one order (a JSON object) or a batch (a JSON array of orders).

    Returns the good rows and the poison orders (raw JSON, why); raises Poison when the
    message as a whole is not one of the two shapes.
    """
    if body.lstrip()[:1] != b"[":
        return [parse_order(body)], []
    try:
        elements = _decode_batch(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Poison(str(exc)) from None
    rows: list[Row] = []
    poison: list[tuple[bytes, str]] = []
    for raw in elements:
        try:
            rows.append(parse_order(bytes(raw)))
        except Poison as exc:
            poison.append((bytes(raw), str(exc)))
    return rows, poison


def refused_for_good(exc: BaseException) -> bool:
    """PostgreSQL refused the data itself (SQLSTATE class 22, data exception, or 23,
    integrity violation): no retry can store it. Anything else (connection lost, read-only
    standby, lock timeout, shutdown...) may pass later, so the batch is kept and retried."""
    return isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "")[:2] in ("22", "23")


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
        # Messages received and not yet acked, nacked or rejected (told by the beacon).
        self._holding = 0
        self._id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._holding += 1
        self._inbox.put_nowait(message)

    async def run(self) -> None:
        settings = self._ctx.settings
        channel = await self._ctx.amqp.channel()
        await channel.set_qos(prefetch_count=settings.consumer_prefetch)
        _, queue = await declare(channel, self._ctx.topology)
        beacon_stop = asyncio.Event()
        consuming = False
        beacon_task = asyncio.create_task(beacon(self._ctx.redis, self._ctx.keys, self._id,
                                                 lambda: self._holding, lambda: consuming,
                                                 beacon_stop))
        tag = await queue.consume(self._on_message)
        consuming = True
        try:
            while not self._stop.is_set():
                batch = await self._collect()
                if batch:
                    await self.handle(batch)
        finally:
            # Graceful drain: stop deliveries, store what was delivered, ack, then close.
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            consuming = False
            rest: list[AbstractIncomingMessage] = []
            while not self._inbox.empty():
                rest.append(self._inbox.get_nowait())
            if rest:
                await self.handle(rest)
            with contextlib.suppress(Exception):
                await channel.close()
            beacon_stop.set()
            await beacon_task

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
        orders = _orders_in(batch[0])
        deadline = asyncio.get_running_loop().time() + settings.order_batch_wait_ms / 1000
        while orders < settings.order_batch_size:
            if self._inbox.empty():
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    message = await asyncio.wait_for(self._inbox.get(), timeout)
                except TimeoutError:
                    break
            else:
                message = self._inbox.get_nowait()
            batch.append(message)
            orders += _orders_in(message)
        return batch

    async def handle(self, batch: list[AbstractIncomingMessage]) -> None:
        try:
            await self._handle(batch)
        finally:
            self._holding -= len(batch)

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        parsed: list[tuple[AbstractIncomingMessage, list[Row], list[tuple[bytes, str]]]] = []
        for message in batch:
            try:
                rows, poison = parse_message(message.body)
            except Poison as exc:
                await self._reject(message, str(exc))
                continue
            parsed.append((message, rows, poison))
        rows = [row for _, message_rows, _ in parsed for row in message_rows]
        refused = await self._store(rows) if rows else {}
        if refused is None:  # stopping while PostgreSQL is down: everything goes back
            for message, _, _ in parsed:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
            return
        await self._forget_pending([r for r in rows if r.order_id not in refused])
        if refused:
            await self._give_back([r for r in rows if r.order_id in refused])
        for message, message_rows, poison in parsed:
            dead = poison + [(_row_json(r), refused[r.order_id]) for r in message_rows
                             if refused.get(r.order_id)]
            if dead and not await self._dead_letter_orders(message, dead):
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                continue
            await _ack(message)

    async def _store(self, rows: list[Row]) -> dict[str, str] | None:
        """Commit the rows. Returns the orders PostgreSQL refused (order_id -> why), or None
        when stopping during an outage."""
        # A republished win may appear twice in one batch; one INSERT must not see it twice.
        unique = list({row.order_id: row for row in rows}.values())
        try:
            inserted = await self._insert(unique)
        except asyncpg.PostgresError as exc:  # refused for good (see _insert)
            log.warning("batch refused (%r); storing its orders one by one", exc)
            return await self._store_one_by_one(unique)
        if inserted is None:
            return None
        metrics.ORDERS_PERSISTED.inc(inserted)
        metrics.ORDERS_DUPLICATE.inc(len(rows) - inserted)
        return {}

    async def _insert(self, rows: list[Row]) -> int | None:
        """Insert with retries while PostgreSQL is unavailable; None if told to stop."""
        backoff = Backoff()
        while True:
            try:
                return await insert(self._ctx.db, rows)
            except Exception as exc:
                if refused_for_good(exc):
                    raise
                if self._stop.is_set():
                    log.warning("PostgreSQL unavailable while stopping; %d orders go back to "
                                "the queue: %r", len(rows), exc)
                    return None
                log.warning("PostgreSQL unavailable, retrying %d orders: %r", len(rows), exc)
                await backoff.wait(self._stop)

    async def _store_one_by_one(self, rows: list[Row]) -> dict[str, str] | None:
        refused: dict[str, str] = {}
        for row in rows:
            try:
                inserted = await self._insert([row])
            except asyncpg.UniqueViolationError as exc:
                # Another order of this (sale, user, Idempotency-Key) is stored: Redis had lost
                # the key's answer and sold twice. The later order is dropped, its units
                # given back.
                log.error("order %s duplicates an Idempotency-Key already ordered (%s); its "
                          "units go back on sale", row.order_id, exc.constraint_name)
                metrics.ORDERS_SUPERSEDED.inc()
                refused[row.order_id] = ""
                continue
            except asyncpg.PostgresError as exc:
                refused[row.order_id] = repr(exc)
                continue
            if inserted is None:
                return None
            metrics.ORDERS_PERSISTED.inc(inserted)
        return refused

    async def _dead_letter_orders(self, message: AbstractIncomingMessage,
                                  dead: list[tuple[bytes, str]]) -> bool:
        """Send poison orders of a batch to the dead-letter queue, one message each."""
        try:
            for raw, why in dead:
                log.error("dead-lettering an order of message %s: %s", message.message_id, why)
                await self._ctx.publisher.publish(f"dead:{message.message_id}", raw, dead=True)
                metrics.ORDERS_DEAD_LETTERED.inc()
        except Exception as exc:
            log.warning("could not dead-letter (will retry the message): %r", exc)
            return False
        return True

    async def _give_back(self, rows: list[Row]) -> None:
        """Units of orders PostgreSQL refused for good go back on sale (and their pending
        records go, so reconcile does not republish them)."""
        keys = self._ctx.keys
        try:
            await asyncio.gather(*(
                self._ctx.scripts.release(keys.sale(r.sale_id), order_id=r.order_id,
                                          user_id=r.user_id, quantity=r.quantity,
                                          sale_id=r.sale_id, channel=keys.restock_channel)
                for r in rows))
        except Exception as exc:
            log.warning("could not give back the units of %d refused orders: %r", len(rows),
                        exc)

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

    async def _reject(self, message: AbstractIncomingMessage, why: str) -> None:
        log.error("dead-lettering message %s: %s", message.message_id, why)
        metrics.ORDERS_DEAD_LETTERED.inc()
        with contextlib.suppress(Exception):
            await message.reject(requeue=False)


def _orders_in(message: AbstractIncomingMessage) -> int:
    """About how many orders a message carries (for sizing a batch; never parsed twice)."""
    return max(1, message.body.count(b'"order_id"'))


def _row_json(row: Row) -> bytes:
    return msgspec.json.encode({
        "order_id": row.order_id, "sale_id": str(row.sale_id), "user_id": row.user_id,
        "quantity": row.quantity, "amount_cents": row.amount_cents,
        "created_ms": int(row.created_at.timestamp() * 1000),
        "pay_by_ms": int(row.pay_by.timestamp() * 1000),
        "idempotency_key": row.idempotency_key or ""})


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except Exception as exc:  # channel lost: the message is redelivered, and is a no-op then
        log.warning("ack of %s failed: %r", message.message_id, exc)


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    await OrderWriter(ctx, stop).run()
