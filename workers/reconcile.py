"""The reconcile worker: checks (and repairs) every open or just-ended sale on a schedule."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from seckill.reconcile import reconcile
from seckill.sale_state import KEEP_AFTER_END
from workers.base import Backoff, WorkerContext, wait_or_stop

log = logging.getLogger(__name__)
INTERVAL_S = 30.0

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
        report = await reconcile(ctx, row["id"], repair=True)
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


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    backoff = Backoff()
    while not stop.is_set():
        try:
            await reconcile_all(ctx, stop)
        except Exception as exc:
            log.warning("reconcile pass failed, retrying: %r", exc)
            await backoff.wait(stop)
            continue
        backoff.reset()
        await wait_or_stop(stop, INTERVAL_S)
