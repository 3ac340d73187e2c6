"""`seckill reconcile`: compare a sale across Redis, RabbitMQ and PostgreSQL, and repair it.

What each holds:
- Redis: stock, remaining, who holds how many units, the outbox of unconfirmed wins, the
  pending records of wins PostgreSQL does not have yet, the set of released orders;
- RabbitMQ: order messages in flight (only their number can be read);
- PostgreSQL: the orders, with their statuses.

Redis' expected holding for a user is the units of every order it knows of (pending records
and PostgreSQL orders won before the snapshot) that is pending, created or paid, or that is
cancelled/expired but not yet released. Repairs are idempotent: republishing a pending order
(the order worker ignores duplicates), giving back unreturned units (the release script
remembers released orders), rebuilding a sale that Redis lost, and correcting holdings by
deltas (so purchases made meanwhile are kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from seckill.broker import queue_state
from seckill.catalog import Q, Sale, get_sale
from seckill.context import WorkerContext, open_context
from seckill.sale_state import SaleState
from seckill.schemas import from_ms, parse_id, to_ms
from seckill.scripts import AdjustCode
from seckill.settings import Settings

log = logging.getLogger(__name__)

HELD = ("pending", "created", "paid")
ORPHAN_AGE_MS = 10_000  # a pending record older than this, not in PostgreSQL: republish it
LOCK_TTL_S = 120  # one repair of a sale at a time; a second one skips the sale
GLANCE_ABOVE_HOLDERS = 10_000  # a sale with more holders gets the cheap check first


@dataclass
class Report:
    sale_id: str
    redis_state: str = "ok"
    stock: int = 0
    remaining: int | None = None
    held_in_redis: int = 0
    held_expected: int = 0
    orders: dict[str, int] = field(default_factory=dict)
    pending_in_redis: int = 0
    outbox: int = 0
    queue_ready: int | None = None
    orphaned: list[str] = field(default_factory=list)
    holder_deltas: dict[str, int] = field(default_factory=dict)
    unreturned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    glanced: bool = False  # passed `glance`: not inspected user by user
    inspected: bool = False  # made by `inspect`: every holder and order compared

    @property
    def consistent(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["glanced"], out["inspected"]  # the worker's concern
        out["consistent"] = self.consistent
        return out


async def queue_ready(ctx: WorkerContext) -> int | None:
    state = await queue_state(ctx.amqp, ctx.topology)
    return None if state is None else state.messages


async def inspect(ctx: WorkerContext, sale: Sale) -> tuple[Report, dict[str, Any]]:
    keys = ctx.keys.sale(sale.id)
    report = Report(str(sale.id), stock=sale.stock, inspected=True)
    snap = await ctx.scripts.snapshot(keys)
    rows = await ctx.db.fetch(Q["sale_orders"], sale.id)
    report.queue_ready = await queue_ready(ctx)
    report.outbox = len(snap.outbox)
    report.pending_in_redis = len(snap.pending)
    for r in rows:
        report.orders[r["status"]] = report.orders.get(r["status"], 0) + r["quantity"]
    in_pg = {r["order_id"] for r in rows}

    pending = [json.loads(raw) for raw in snap.pending]
    # While messages wait in the queue (workers down or behind), a pending win may be among
    # them: republishing would only pile duplicates on the backlog.
    report.orphaned = [] if report.queue_ready != 0 else sorted(
        p["order_id"] for p in pending
        if p["order_id"] not in in_pg and p["order_id"] not in snap.outbox
        and snap.now_ms - int(p["created_ms"]) > ORPHAN_AGE_MS)
    report.unreturned = sorted(r["order_id"] for r in rows
                               if r["status"] in ("cancelled", "expired")
                               and not r["units_returned"])
    if report.orphaned:
        report.problems.append(f"{len(report.orphaned)} won orders are neither in PostgreSQL "
                               "nor in the outbox (lost in flight?)")

    if not snap.exists:
        report.redis_state = "missing"
        report.problems.append("Redis has no state for this sale")
        return report, {"pending": pending, "rows": rows}

    # What Redis should hold, by user.
    status: dict[str, tuple[str, int, str]] = {}
    for p in pending:
        status[p["order_id"]] = (p["user_id"], int(p["quantity"]), "pending")
    for r in rows:
        if to_ms(r["created_at"]) <= snap.now_ms:
            status[r["order_id"]] = (r["user_id"], r["quantity"], r["status"])
    expected: dict[str, int] = {}
    for order_id, (user, qty, st) in status.items():
        if st in HELD or order_id not in snap.released:
            expected[user] = expected.get(user, 0) + qty
    report.remaining = snap.remaining
    report.held_in_redis = sum(snap.holders.values())
    report.held_expected = sum(expected.values())
    for user in set(expected) | set(snap.holders):
        delta = expected.get(user, 0) - snap.holders.get(user, 0)
        if delta:
            report.holder_deltas[user] = delta
    if report.holder_deltas:
        report.problems.append(
            f"holdings differ for {len(report.holder_deltas)} users "
            f"(Redis {report.held_in_redis} units, orders {report.held_expected})")
    if snap.remaining + report.held_in_redis != sale.stock:
        report.problems.append(f"remaining {snap.remaining} + held {report.held_in_redis} "
                               f"!= stock {sale.stock}")
    if snap.remaining < 0:
        report.problems.append("remaining is negative")
    if report.unreturned:
        report.problems.append(f"{len(report.unreturned)} cancelled/expired orders have not "
                               "given their units back")
    return report, {"pending": pending, "rows": rows}


async def glance(ctx: WorkerContext, sale: Sale) -> Report | None:
    """The cheap check of a big sale: the whole of it, never user by user.

    `inspect` reads every holder in one script, which keeps Redis from purchases for
    ~120 ms on 200,000 holders, and every order row into this process: a pass every 30 s
    may not cost a live sale that. The glance compares Redis' units held (stock -
    remaining, at the tally's instant) with the units of the orders won before that
    instant (PostgreSQL's, read in one statement, plus the pending records it does not
    have), and looks for lost and unreturned orders as `inspect` does. A report when all
    agree; None when the sale needs `inspect`: small, missing, or any doubt. The reads are
    not one instant, so whatever could have been counted on one side only is doubt: an
    order of the tally's millisecond the tally did not see pending (one it saw was won
    before it and counts), a closed order whose units are not back, and any give-back or
    repair after the tally (each moves `restocks`). Repairs come from `inspect`'s
    one-instant snapshot alone.

    What it cannot see: holdings that are wrong user by user while the total is right
    (the holders hash is only counted). `workers.reconcile` inspects a big sale in full
    every FULL_EVERY_S whatever its glance says.
    """
    keys = ctx.keys.sale(sale.id)
    # Asked first, to keep the reads after the tally close together: a win confirmed
    # meanwhile only makes a lost order look lost, which is doubt.
    queued = await queue_ready(ctx)
    tally = await ctx.scripts.tally(keys)
    if (not tally.exists or tally.holders <= GLANCE_ABOVE_HOLDERS or tally.remaining < 0
            or tally.stock != sale.stock):
        return None
    pending = [json.loads(raw) for raw in tally.pending]
    # The tally's millisecond as the order worker stores a win's time (`from_ms`).
    orders = await ctx.db.fetchrow(Q["sale_glance"], sale.id, from_ms(tally.now_ms),
                                   from_ms(tally.now_ms + 1), [p["order_id"] for p in pending])
    if orders is None or orders["unreturned"] or orders["at_cutoff"]:
        return None
    stored = set(orders["stored"])
    unstored = [p for p in pending if p["order_id"] not in stored]
    if queued == 0 and any(p["order_id"] not in tally.outbox
                           and tally.now_ms - int(p["created_ms"]) > ORPHAN_AGE_MS
                           for p in unstored):
        return None
    if int(await ctx.redis.hget(keys.state, "restocks") or 0) != tally.restocks:
        return None
    held = sale.stock - tally.remaining
    expected = int(orders["held"]) + sum(int(p["quantity"]) for p in unstored)
    if expected != held:
        return None
    return Report(str(sale.id), stock=sale.stock, remaining=tally.remaining,
                  held_in_redis=held, held_expected=expected, pending_in_redis=len(pending),
                  outbox=len(tally.outbox), queue_ready=queued, glanced=True)


async def reconcile(ctx: WorkerContext, sale_id: int, *, repair: bool,
                    glance_first: bool = False) -> Report:
    """`glance_first`: a big sale that passes `glance` is not inspected user by user."""
    sale = await get_sale(ctx.db, sale_id)
    if sale is None:
        report = Report(str(sale_id), redis_state="unknown")
        report.problems.append("no sale has this id")
        return report
    if glance_first:
        quick = await glance(ctx, sale)
        if quick is not None:
            return quick
    if not repair:
        return (await inspect(ctx, sale))[0]
    # One repair of a sale at a time, across processes: deltas applied twice would oversell.
    lock = ctx.redis.lock(ctx.keys.sale(sale.id).tag + ":reconcile", timeout=LOCK_TTL_S,
                          blocking_timeout=0)
    if not await lock.acquire():
        report = Report(str(sale_id))
        report.problems.append("another reconcile of this sale is running")
        return report
    try:
        return await _repair(ctx, sale)
    finally:
        with contextlib.suppress(Exception):
            await lock.release()


async def _repair(ctx: WorkerContext, sale: Sale) -> Report:
    report, seen = await inspect(ctx, sale)
    if report.consistent:
        return report
    keys = ctx.keys.sale(sale.id)
    done: list[str] = []

    if report.orphaned:
        bodies = {p["order_id"]: p for p in seen["pending"]}
        for i in range(0, len(report.orphaned), 500):
            await ctx.publisher.publish_orders(
                [(oid, json.dumps(bodies[oid])) for oid in report.orphaned[i:i + 500]])
        done.append(f"republished {len(report.orphaned)} orphaned orders")

    if report.redis_state == "missing":
        state = SaleState(ctx.redis, ctx.db, ctx.keys, ctx.scripts,
                          queue_state=lambda: queue_state(ctx.amqp, ctx.topology))
        if await state.rebuild(sale):
            done.append("rebuilt the sale in Redis from PostgreSQL")
    else:
        if report.unreturned:
            rows = [r for r in seen["rows"] if r["order_id"] in set(report.unreturned)]
            units = await ctx.orders.give_back(rows)
            done.append(f"gave back {units} units of {len(rows)} cancelled/expired orders")
        if report.holder_deltas:
            code, remaining = await ctx.scripts.adjust_holdings(
                keys, report.holder_deltas, sale_id=sale.id, channel=ctx.keys.restock_channel)
            if code is AdjustCode.ADJUSTED:
                done.append(f"corrected holdings of {len(report.holder_deltas)} users; "
                            f"remaining now {remaining}")
            else:
                done.append(f"could not correct holdings: {code.value}")

    after, _ = await inspect(ctx, sale)
    after.repaired = done
    return after


def reconcile_command(settings: Settings, raw_sale_id: str, *, repair: bool) -> int:
    sale_id = parse_id(raw_sale_id)
    if sale_id is None:
        print(f"seckill: {raw_sale_id!r} is not a sale id.", file=sys.stderr)
        return 2

    async def main() -> Report:
        async with open_context(settings) as ctx:
            return await reconcile(ctx, sale_id, repair=repair)

    report = asyncio.run(main())
    print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    if report.redis_state == "unknown":
        return 2
    return 0 if report.consistent else 1
