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
FULL_EVERY_S = 600.0  # a big sale is inspected user by user this often, whatever its glance

_RECENT = """
SELECT id, ends_at FROM sales
WHERE cancelled_at IS NULL AND starts_at <= now() AND ends_at > now() - interval '10 minutes'
ORDER BY id
"""


class FullChecks:
    """When each sale may be glanced at instead of inspected user by user.

    A big sale's glance (see `seckill.reconcile.glance`) sees totals only; a full
    inspection, which holds Redis ~120 ms at 200,000 holders, comes every `every_s` (the
    first one `every_s` after the worker first sees the sale) and whenever the glance has
    a doubt."""

    def __init__(self, every_s: float = FULL_EVERY_S) -> None:
        self._every = every_s
        self._due: dict[int, float] = {}

    def may_glance(self, sale_id: int, now: float) -> bool:
        return now < self._due.setdefault(sale_id, now + self._every)

    def inspected(self, sale_id: int, now: float) -> None:
        self._due[sale_id] = now + self._every

    def keep_only(self, sale_ids: set[int]) -> None:
        self._due = {s: due for s, due in self._due.items() if s in sale_ids}


async def reconcile_all(ctx: WorkerContext, stop: asyncio.Event | None = None,
                        checks: FullChecks | None = None) -> int:
    """One pass over live and recently ended sales; returns how many needed a repair.
    Without `checks`, every sale is inspected in full."""
    repaired = 0
    loop = asyncio.get_running_loop()
    rows = await ctx.db.fetch(_RECENT)
    if checks is not None:
        checks.keep_only({row["id"] for row in rows})
    for row in rows:
        if stop is not None and stop.is_set():
            break
        await _expire_keys(ctx, row["id"], row["ends_at"])
        glance = checks is not None and checks.may_glance(row["id"], loop.time())
        report = await reconcile(ctx, row["id"], repair=True, glance_first=glance)
        if checks is not None and report.inspected:
            checks.inspected(row["id"], loop.time())
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
    checks = FullChecks()
    while not stop.is_set():
        waiting = await wait_for_quiet_queue(lambda: queue_ready(ctx), stop, INTERVAL_S)
        if stop.is_set():
            break
        if waiting:
            log.info("reconcile pass after waiting %.0f s: %d orders still queued",
                     INTERVAL_S, waiting)
        try:
            await reconcile_all(ctx, stop, checks)
        except Exception as exc:
            log.warning("reconcile pass failed, retrying: %r", exc)
            await backoff.wait(stop)
            continue
        backoff.reset()
        await wait_or_stop(stop, INTERVAL_S)
