"""The sold-out fast path: most of a flash sale's traffic arrives after the stock is gone.

Once Redis answers `sold_out` with nothing remaining, this process remembers the sale as
sold out together with the set of users holding units then. While the memory holds, a
request without an Idempotency-Key, for a quantity within the limit, from a user holding
nothing, inside the sale window, gets `409 sold_out` without touching Redis: exactly the
answer Redis would give, since every earlier refusal in the contract's order is ruled out.
The user's rate limit still comes first, from a local bucket with the sale's settings.
Sales with a waiting room, purchase tokens or an address limit never take this path.

The memory is dropped at once when units come back (the release script publishes the sale
id on the restock channel; every process listens), and in any case after `ttl_s`: the next
request asks Redis again, and the holders are reloaded only if the sale's restock count
moved (new holders can appear only after units came back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from seckill.keys import KeySpace

log = logging.getLogger(__name__)
# When this many users' buckets are held, the full ones are dropped (a user whose next
# attempt is not ahead of time has a full bucket: the same as no entry). At the default
# 5/s a newcomer's entry is full again 0.2 s after their attempt, so what stays is the
# users trying now; only if all of these are still running ahead is everything forgotten.
# The memory stays small, which the hot path is measurably faster for.
MAX_BUCKETS = 16_384


@dataclass(slots=True)
class _Entry:
    restocks: str
    holders: frozenset[str]
    per_user_limit: int
    starts_ms: int
    ends_ms: int
    until: float
    interval: float  # seconds per attempt at the sale's rate: 1 / rate; 0 = no limit
    tolerance: float  # how far ahead of time a burst may run: (burst - 1) / rate
    # The rate limit as GCRA, the token bucket's equal with one float a user: when the user's
    # next attempt is due at the steady rate (an attempt may come `tolerance` early).
    due: dict[str, float]


class SoldOutBoard:
    def __init__(self, redis: Redis, keys: KeySpace, *, ttl_s: float = 1.0) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl_s
        self._entries: dict[int, _Entry] = {}
        self._loading: set[int] = set()
        # Restock messages seen: an entry loaded while one arrived may be stale already.
        self._restocks_seen = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def refuses(self, sale_id: int, user_id: str, quantity: int) -> int | None:
        """None: ask Redis. 0: Redis would certainly answer sold_out. n > 0: rate limited,
        retry in n ms. (Inline on purpose: this is most of a flash sale's requests.)"""
        entry = self._entries.get(sale_id)
        if entry is None:
            return None
        now = time.time()
        if now > entry.until or not entry.starts_ms <= now * 1000 < entry.ends_ms \
                or quantity > entry.per_user_limit or user_id in entry.holders:
            return None
        if not entry.interval:
            return 0
        due = entry.due.get(user_id, now)
        if due < now:
            due = now
        # In whole microseconds: a time near 1.8e9 s is a float precise to about 0.2 us.
        wait_us = round((due - now - entry.tolerance) * 1_000_000)
        if wait_us > 0:  # less than one token left in the bucket
            return -(-wait_us // 1000)
        held = entry.due
        if len(held) >= MAX_BUCKETS:
            held = entry.due = {user: when for user, when in held.items() if when > now}
            if len(held) >= MAX_BUCKETS:
                held.clear()
        held[user_id] = due + entry.interval
        return 0

    def saw_sold_out(self, sale_id: int, remaining: int, restocks: str) -> None:
        """Redis answered sold_out; remember it if nothing at all remains."""
        if remaining != 0:
            return
        entry = self._entries.get(sale_id)
        if entry is not None and entry.restocks == restocks:
            entry.until = time.time() + self._ttl  # buckets and holders stay valid
            return
        if sale_id in self._loading:
            return
        self._loading.add(sale_id)
        task = asyncio.get_running_loop().create_task(self._load(sale_id, restocks))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, sale_id: int, restocks: str) -> None:
        keys = self._keys.sale(sale_id)
        seen = self._restocks_seen
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hmget(keys.state, "remaining", "restocks", "limit", "starts_ms", "ends_ms",
                       "cancelled", "u_rate", "u_burst", "a_rate", "token", "room")
            pipe.hkeys(keys.holders)
            (remaining, now_restocks, limit, starts, ends, cancelled, u_rate, u_burst, a_rate,
             token, room), holders = await pipe.execute()
            if remaining is None or int(remaining) != 0 or cancelled == "1" \
                    or (now_restocks or "0") != restocks \
                    or int(a_rate or 0) > 0 or token == "1" or room == "1" \
                    or self._restocks_seen != seen:
                return
            rate, burst = float(u_rate or 0), float(u_burst or 0)
            limited = rate > 0 and burst > 0
            self._entries[sale_id] = _Entry(
                restocks, frozenset(holders), int(limit), int(starts), int(ends),
                time.time() + self._ttl, 1 / rate if limited else 0.0,
                (burst - 1) / rate if limited else 0.0, {})
        except Exception as exc:  # the fast path is an optimisation: Redis still decides
            log.warning("could not load sold-out sale %s: %r", sale_id, exc)
        finally:
            self._loading.discard(sale_id)

    def forget(self, sale_id: int) -> None:
        self._restocks_seen += 1
        self._entries.pop(sale_id, None)

    async def listen(self) -> None:
        """Forget a sale as soon as any process gives units back (runs until cancelled)."""
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._keys.restock_channel)
                    self._entries.clear()  # anything may have happened while not listening
                    async for message in pubsub.listen():
                        with contextlib.suppress(ValueError, TypeError):
                            self.forget(int(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("restock listener lost its connection, reconnecting: %r", exc)
                self._entries.clear()
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
