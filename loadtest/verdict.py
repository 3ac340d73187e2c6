"""The verdict on one sale after a load test: its invariants, checked through the API and SQL.

- units sold <= stock: `remaining + reserved == stock`, nothing negative;
- every win persisted: once settled, `orders_persisted == reserved`, and every order a
  shopper won (per the Locust ledger) is a row in PostgreSQL;
- no duplicate order: nobody holds more than the per-user limit, no Idempotency-Key made
  two orders, and the rows are exactly the wins the shoppers saw;
- where it can be known (no cancellation, expiry or unanswered purchase), units sold equal
  min(stock, demand), demand being the shoppers who got a final answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from loadtest.client import Client


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None  # None: could not be decided from what was observed
    detail: str


@dataclass(slots=True)
class Verdict:
    sale_id: str
    checks: list[Check]
    facts: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def render(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}
        lines = [f"verdict on sale {self.sale_id}: {'PASS' if self.ok else 'FAIL'}"]
        lines += [f"  {mark[c.ok]}  {c.name}: {c.detail}" for c in self.checks]
        lines.append("  facts: " + ", ".join(f"{k}={v}" for k, v in self.facts.items()))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"sale_id": self.sale_id, "ok": self.ok, "facts": self.facts,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail}
                           for c in self.checks]}


@dataclass(slots=True)
class Ledger:
    """What the Locust shoppers saw, from the JSON lines of every process."""

    sale_ids: list[str] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    won: dict[str, tuple[str, str]] = field(default_factory=dict)  # order_id -> (user, key)
    refused: dict[str, str] = field(default_factory=dict)  # user -> code
    keys: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    paid: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> Ledger:
        ledger = cls()
        for path in sorted(directory.glob("ledger-*.jsonl")):
            for line in path.read_text().splitlines():
                if line.strip():
                    ledger.add(json.loads(line))
        return ledger

    def add(self, e: dict[str, Any]) -> None:
        match e["e"]:
            case "sale":
                self.sale_ids.append(str(e["sale_id"]))
            case "attempt":
                self.attempted.add(e["user"])
            case "won":
                self.won[e["order_id"]] = (e["user"], e["key"])
                self.keys.setdefault((e["user"], e["key"]), set()).add(e["order_id"])
            case "refused":
                self.refused[e["user"]] = e["code"]
            case "cancelled":
                self.cancelled.add(e["order_id"])
            case "paid":
                self.paid.add(e["order_id"])
            case "violation":
                self.violations.append(e["what"])

    @property
    def winners(self) -> set[str]:
        return {user for user, _ in self.won.values()}

    @property
    def demand(self) -> int:
        """Shoppers (one unit each) who got a final answer: a win or sold out."""
        sold_out = {u for u, code in self.refused.items() if code == "sold_out"}
        return len(self.winners | sold_out)

    @property
    def unanswered(self) -> int:
        """Shoppers whose purchase may or may not have been decided."""
        return len(self.attempted - self.winners - set(self.refused))


Db = asyncpg.Pool | asyncpg.Connection


async def check_sale(client: Client, sale_id: str, *, db: Db | None = None,
                     ledger: Ledger | None = None, settle_timeout_s: float = 60.0) -> Verdict:
    status, sale = await client.call("GET", f"/api/v1/sales/{sale_id}")
    if status != 200:
        raise RuntimeError(f"sale {sale_id}: {status} {sale}")
    stats = await client.wait_settled(sale_id, timeout_s=settle_timeout_s)
    limit = int(sale["per_user_limit"])
    stock, remaining, reserved = stats["stock"], stats["remaining"], stats["reserved"]
    facts: dict[str, Any] = {k: stats[k] for k in ("stock", "remaining", "reserved",
                                                    "orders_persisted", "paid", "cancelled",
                                                    "expired")}
    checks = [Check(
        "units sold <= stock",
        remaining >= 0 and 0 <= reserved <= stock and remaining + reserved == stock,
        f"remaining {remaining} + reserved {reserved} vs stock {stock}")]
    persisted = stats["orders_persisted"] == reserved
    detail = f"orders_persisted {stats['orders_persisted']} vs reserved {reserved}"

    rows: dict[str, tuple[str, str | None, str, int]] = {}
    if db is not None:
        for r in await db.fetch("SELECT order_id, user_id, idempotency_key, status, quantity"
                                " FROM orders WHERE sale_id = $1", int(sale_id)):
            rows[r["order_id"]] = (r["user_id"], r["idempotency_key"], r["status"],
                                   r["quantity"])
        facts["rows"] = len(rows)
    if ledger is not None and db is not None:
        missing = set(ledger.won) - set(rows)
        persisted = persisted and not missing
        detail += f"; {len(ledger.won) - len(missing)} of {len(ledger.won)} wins seen are rows"
    checks.append(Check("every win persisted", persisted, detail))

    if db is not None:
        held: dict[str, int] = {}
        per_key: dict[tuple[str, str], int] = {}
        for user, key, state, qty in rows.values():
            if state in ("created", "paid"):
                held[user] = held.get(user, 0) + qty
            if key:
                per_key[(user, key)] = per_key.get((user, key), 0) + 1
        over = sorted(u for u, n in held.items() if n > limit)
        twice = sorted(k for k, n in per_key.items() if n > 1)
        checks.append(Check("no duplicate order", not over and not twice,
                            f"{len(over)} shoppers over the limit of {limit}, "
                            f"{len(twice)} keys with two orders"))
    if ledger is not None:
        facts.update(wins_seen=len(ledger.won), demand=ledger.demand,
                     unanswered=ledger.unanswered, violations=len(ledger.violations))
        split = [k for k, ids in ledger.keys.items() if len(ids) > 1]
        checks.append(Check("one order per key (shoppers' view)", not split,
                            f"{len(split)} keys answered with two order ids"))
        checks.append(Check("no contract violation seen by shoppers", not ledger.violations,
                            "; ".join(ledger.violations[:5]) or "none"))
    if ledger is not None and db is not None:
        extra = set(rows) - set(ledger.won)
        if ledger.unanswered == 0:
            checks.append(Check("rows == wins", not extra and set(ledger.won) <= set(rows),
                                f"{len(rows)} rows, {len(ledger.won)} wins seen"))
        else:
            checks.append(Check("rows == wins", len(extra) <= ledger.unanswered,
                                f"{len(rows)} rows, {len(ledger.won)} wins seen, "
                                f"{ledger.unanswered} purchases unanswered"))
    checks.append(_sold_exactly(stats, ledger))
    return Verdict(sale_id, checks, facts)


def _sold_exactly(stats: dict[str, Any], ledger: Ledger | None) -> Check:
    name = "units sold == min(stock, demand)"
    if ledger is None:
        return Check(name, None, "no ledger of what shoppers saw")
    why_not = [why for why, n in (("cancelled", stats["cancelled"]),
                                  ("expired", stats["expired"]),
                                  ("unanswered", ledger.unanswered)) if n]
    if why_not:
        return Check(name, None, "not determinable: units " + ", ".join(why_not))
    want = min(stats["stock"], ledger.demand)
    return Check(name, stats["reserved"] == want,
                 f"{stats['reserved']} sold; stock {stats['stock']}, demand {ledger.demand}")
