"""The reconcile worker: checks (and repairs) every open or just-ended sale on a schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from seckill.reconcile import queue_ready, reconcile
from seckill.sale_state import KEEP_AFTER_END
from workers.base import Backoff, WorkerContext, wait_or_stop

log = logging.getLogger(__name__)
INTERVAL_S = 30.0
QUIET_POLL_S = 0.5  # how often a deferred pass asks the order queue again

_RECENT = """
SELECT id, ends_at FROM sales
WHERE cancelled_at IS NULL AND starts_at <= now() AND ends_at > now() - interval '10 minutes'
ORDER BY id
"""


async def reconcile_all(ctx: WorkerContext, stop: asyncio.Event | None = None) -> int:
    """One pass over live and recently ended sales; returns how many needed a repair."""
    repaired = 0
    for row in await ctx.db.fetch(_RECENT):
        if stop is not None and stop.is_set():
            break
        await _expire_keys(ctx, row["id"], row["ends_at"])
        report = await reconcile(ctx, row["id"], repair=True, glance_first=True)
        if report.repaired:
            repaired += 1
            log.warning("reconcile sale %s: %s; now %s", report.sale_id,
                        "; ".join(report.repaired),
                        "consistent" if report.consistent else "; ".join(report.problems))
    return repaired


async def _expire_keys(ctx: WorkerContext, sale_id: int, ends_at: datetime) -> None:
    """Keys written after the warm-up (holders, outbox, ...) get the state's lifetime too."""
    keys = ctx.keys.sale(sale_id)
    when = int((ends_at + KEEP_AFTER_END).timestamp())
    pipe = ctx.redis.pipeline(transaction=False)
    for key in [*keys.all(), keys.used_tokens, keys.room]:
        pipe.expireat(key, when)
    await pipe.execute()


async def wait_for_quiet_queue(ready: Callable[[], Awaitable[int | None]],
                               stop: asyncio.Event, bound_s: float,
                               poll_s: float = QUIET_POLL_S) -> int | None:
    """Wait until the order queue holds no ready message, for `bound_s` at most.

    A pass reads every order of every live sale: on a sale of 100,000 orders that is a
    second of this process' CPU, taken from the order writer it shares the loop with. While
    the queue holds a backlog (workers restarted into one, or behind), the writer comes
    first; and a pass could not republish a lost win then anyway (it may be in the queue).
    Returns the ready messages last seen (0: quiet; None: RabbitMQ could not be asked, so
    the pass goes ahead and meets the outage itself). The bound keeps repairs coming when
    the queue never drains (no order worker running).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while True:
        waiting = await ready()
        if not waiting or stop.is_set() or loop.time() >= deadline:
            return waiting
        await wait_or_stop(stop, min(poll_s, max(0.0, deadline - loop.time())))


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    backoff = Backoff()
    while not stop.is_set():
        waiting = await wait_for_quiet_queue(lambda: queue_ready(ctx), stop, INTERVAL_S)
        if stop.is_set():
            break
        if waiting:
            log.info("reconcile pass after waiting %.0f s: %d orders still queued",
                     INTERVAL_S, waiting)
        try:
            await reconcile_all(ctx, stop)
        except Exception as exc:
            log.warning("reconcile pass failed, retrying: %r", exc)
            await backoff.wait(stop)
            continue
        backoff.reset()
        await wait_or_stop(stop, INTERVAL_S)
