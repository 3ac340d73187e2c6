"""Shoppers' bursts and the figures every fault scenario asserts and prints.

A burst is many concurrent purchases (asyncio.gather); each `Attempt` keeps what the shopper
saw: a status and body, or no answer at all (the connection died). `measure` puts those
answers next to what PostgreSQL and the stats endpoint say, and `Figures.check` asserts the
promises: no win lost, no order doubled, no unit oversold, no unit leaked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from tests.support import Api, wait_until


@dataclass(frozen=True, slots=True)
class Attempt:
    user: str
    key: str | None
    status: int | None  # None: no answer (connection reset, server killed)
    body: Any

    @property
    def won(self) -> bool:
        return self.status == 202

    @property
    def order_id(self) -> str:
        assert self.won, self
        return str(self.body["order_id"])

    @property
    def code(self) -> str:
        """The error code, "won", or "no_answer"."""
        if self.status is None:
            return "no_answer"
        if self.won:
            return "won"
        return str(self.body.get("error")) if isinstance(self.body, dict) else str(self.status)


async def buy(api: Api, sale_id: str, user: str, key: str | None = None) -> Attempt:
    try:
        status, body = await api.purchase(sale_id, user, key=key)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Attempt(user, key, None, repr(exc))
    return Attempt(user, key, status, body)


def shoppers(count: int, tag: str = "") -> list[str]:
    tag = tag or uuid.uuid4().hex[:6]
    return [f"u{tag}-{i}" for i in range(count)]


async def burst(api: Api, sale_id: str, users: Iterable[str], *,
                keys: bool = True) -> list[Attempt]:
    """One purchase per user, all at once; each with its own Idempotency-Key when `keys`."""
    return list(await asyncio.gather(*(
        buy(api, sale_id, user, f"k-{user}" if keys else None) for user in users)))


async def until_answered(api: Api, sale_id: str, attempts: list[Attempt], *,
                         rounds: int = 50) -> list[Attempt]:
    """Shoppers refused with 503 overloaded try again with the same key (a 503 is not
    remembered: each retry is a fresh attempt) until they get a real answer. Returns every
    retry made; `rounds` bounds them."""
    retries: list[Attempt] = []
    waiting = [a for a in attempts if a.status == 503]
    for _ in range(rounds):
        if not waiting:
            return retries
        again = list(await asyncio.gather(*(buy(api, sale_id, a.user, a.key) for a in waiting)))
        retries += again
        waiting = [a for a in again if a.status == 503]
    raise AssertionError(f"{len(waiting)} shoppers still refused with 503 after {rounds} tries")


def codes(attempts: Iterable[Attempt]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in attempts:
        out[a.code] = out.get(a.code, 0) + 1
    return dict(sorted(out.items()))


def won_ids(attempts: Iterable[Attempt]) -> set[str]:
    return {a.order_id for a in attempts if a.won}


async def wait_persisted(db: asyncpg.Pool, order_ids: Iterable[str], *,
                         within_s: float) -> float:
    """Wait until every order id is a row in PostgreSQL; returns the seconds it took."""
    ids = sorted(set(order_ids))
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def all_there() -> bool:
        n = await db.fetchval("SELECT count(*) FROM orders WHERE order_id = ANY($1::text[])",
                              ids)
        return bool(n == len(ids))

    await wait_until(all_there, timeout=within_s, interval=0.05,
                     what=f"{len(ids)} won orders persisted")
    return round(loop.time() - started, 2)


@dataclass
class Figures:
    scenario: str
    stock: int
    attempts: int
    wins: int
    persisted: int
    lost: int
    duplicated: int
    oversold: int
    redelivered: int | str
    dead_lettered: int
    drain_s: float
    stats: dict[str, Any]
    answers: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def leaked(self) -> int:
        """Units neither remaining nor reserved, or reserved without a persisted order."""
        s = self.stats
        return int(abs(s["stock"] - s["remaining"] - s["reserved"])
                   + abs(s["reserved"] - s["orders_persisted"]))

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (f"FIGURES {self.scenario}: attempts={self.attempts} wins={self.wins} "
                f"persisted={self.persisted} lost={self.lost} duplicated={self.duplicated} "
                f"oversold={self.oversold} redelivered={self.redelivered} "
                f"dead_lettered={self.dead_lettered} drain_s={self.drain_s} "
                f"stock={self.stock} remaining={self.stats['remaining']} "
                f"reserved={self.stats['reserved']} leaked={self.leaked} "
                f"answers={self.answers}{extra}")

    def check(self) -> None:
        assert self.lost == 0, self.line()
        assert self.duplicated == 0, self.line()
        assert self.oversold == 0, self.line()
        assert self.leaked == 0, self.line()
        assert not self.answers.get("internal_error"), self.line()


async def settled_stats(api: Api, sale_id: str) -> dict[str, Any]:
    """The stats endpoint's answer; a 503 (a stale connection to a restarted service)
    is retried until the endpoint answers."""
    async def answered() -> dict[str, Any] | None:
        status, body = await api.request("GET", f"/api/v1/admin/sales/{sale_id}/stats",
                                         user="ops", operator=True)
        assert status in (200, 503), (status, body)
        return dict(body) if status == 200 else None

    stats: dict[str, Any] = await wait_until(answered, timeout=15, what="the sale's stats")
    return stats


async def measure(scenario: str, *, api: Api, db: asyncpg.Pool, sale: dict[str, Any],
                  attempts: list[Attempt], redelivered: int | str, dead_lettered: int,
                  drain_s: float, **extra: Any) -> Figures:
    """Figures of a settled sale, printed on one line (and returned, to assert on)."""
    sale_id = int(sale["id"])
    rows = await db.fetch("SELECT order_id, user_id, quantity, status FROM orders "
                          "WHERE sale_id = $1", sale_id)
    doubled_ids = await db.fetch("SELECT order_id, count(*) AS n FROM orders WHERE sale_id = $1 "
                                 "GROUP BY order_id HAVING count(*) > 1", sale_id)
    over_limit = await db.fetch(
        "SELECT user_id, sum(quantity) AS units FROM orders "
        "WHERE sale_id = $1 AND status IN ('created', 'paid') "
        "GROUP BY user_id HAVING sum(quantity) > $2", sale_id, sale["per_user_limit"])
    wins = won_ids(attempts)
    in_pg = {r["order_id"] for r in rows}
    held = sum(r["quantity"] for r in rows if r["status"] in ("created", "paid"))
    released = sum(r["quantity"] for r in rows if r["status"] in ("cancelled", "expired"))
    won_units = sum(int(a.body["quantity"]) for a in
                    {a.order_id: a for a in attempts if a.won}.values())
    stats = await settled_stats(api, sale["id"])
    figures = Figures(
        scenario=scenario, stock=int(sale["stock"]), attempts=len(attempts), wins=len(wins),
        persisted=len(rows), lost=len(wins - in_pg),
        duplicated=sum(r["n"] - 1 for r in doubled_ids)
        + sum(r["units"] - sale["per_user_limit"] for r in over_limit),
        oversold=max(0, held - int(sale["stock"]),
                     won_units - int(sale["stock"]) - released),
        redelivered=redelivered, dead_lettered=dead_lettered, drain_s=drain_s, stats=stats,
        answers=codes(attempts), extra=extra)
    print(figures.line())
    return figures


async def waves(api: Api, sale_id: str, *, seconds: float, size: int, pause_s: float,
                during: Callable[[], Awaitable[None]] | None = None) -> list[Attempt]:
    """Shoppers keep arriving for `seconds`: a burst of `size` every `pause_s`.

    The pause shapes the load (how fast shoppers arrive while a fault lasts); it never
    stands in for waiting on the system, which the tests do with `wait_until`. `during`
    runs after each wave (a probe of the fault, say).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    attempts: list[Attempt] = []
    while loop.time() < deadline:
        attempts += await burst(api, sale_id, shoppers(size))
        if during is not None:
            await during()
        await asyncio.sleep(max(0.0, min(pause_s, deadline - loop.time())))
    return attempts
