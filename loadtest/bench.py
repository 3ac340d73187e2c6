"""Benchmark: the real stack against a bare aiohttp reference, on this machine.

Creates a private environment (database `seckill_bench_<tag>`, Redis prefix, AMQP prefix),
starts the reference server, then `seckill serve` and `seckill worker`, and drives each with
the same generator (wrk when installed, else the built-in asyncio one in its own process).
Prints a table (req/s, p50, p99, errors, ratio to the reference, CPU shares), a second one
of what each defence (rate limits, purchase tokens, waiting room) costs on the purchase
path, an end-to-end sale, and the worker's order-persistence throughput; writes everything
as JSON to loadtest/results/. Every phase is bounded in time; load goes to 127.0.0.1 only.
It never gates on a timing: the only failures are broken invariants (oversold, lost or extra
orders).

    python -m loadtest.bench                      # quick run (about four minutes)
    python -m loadtest.bench --duration 30 --units 10000 --shoppers 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from redis.asyncio import Redis

from loadtest import generator, report, wrk
from loadtest.client import Client, poll
from loadtest.environment import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Environment,
)
from loadtest.plan import PURCHASE_BODY, Plan, RunResult, Template
from loadtest.processes import (
    CpuMeter,
    Service,
    free_port,
    reference_argv,
    seckill_argv,
    start,
    wait_http,
)
from loadtest.tokens import TokenBook
from seckill.broker import Topology, queue_state
from seckill.keys import KeySpace
from seckill.purchase_tokens import TOKEN_TTL_S, PurchaseTokens

HUGE_STOCK = 10_000_000  # the most a sale may hold
WIDE_OPEN = 1_000_000  # the highest rate a sale takes: a limit that never refuses here
NO_LIMITS = {"user_rate_per_s": 0, "user_burst": 0}
ADDRESS_LIMIT = {"address_rate_per_s": WIDE_OPEN, "address_burst": WIDE_OPEN}


@dataclass(frozen=True, slots=True)
class Defence:
    """One sale configuration of the defences phase: SaleIn fields, sent as given."""
    name: str
    settings: dict[str, Any]
    sold_out: bool = False  # the sold-out path (stock 1, sold) instead of the winning one


# Rows 4 and 5 add their defence to "no defences" alone: the ratio is that defence's cost.
DEFENCES = (
    Defence("no defences", NO_LIMITS),
    Defence("per-user rate limit", {}),  # the sale's defaults
    Defence("+ per-address rate limit", ADDRESS_LIMIT),
    Defence("purchase token", {**NO_LIMITS, "requires_token": True}),
    Defence("waiting room", {**NO_LIMITS, "waiting_room": True, "admit_per_s": WIDE_OPEN}),
    Defence("no defences", NO_LIMITS, sold_out=True),
    Defence("per-user rate limit", {}, sold_out=True),
    Defence("+ per-address rate limit", ADDRESS_LIMIT, sold_out=True),
)


def _against(row: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any]:
    """The row with its ratios to the reference of the same round: req/s, and the front
    door's CPU per answered request (the reference's over the scenario's: 0.5 means each
    request costs the front door twice the reference's CPU)."""
    if ref is not None and ref["result"]["rps"]:
        row["ratio_to_reference"] = row["result"]["rps"] / ref["result"]["rps"]
        if row["serve_cpu_us"]:
            row["cpu_ratio_to_reference"] = ref["serve_cpu_us"] / row["serve_cpu_us"]
    return row


def purchase(sale_id: str) -> Template:
    return Template("POST", f"/api/v1/sales/{sale_id}/purchase", PURCHASE_BODY, auth=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0,
                   help="seconds of load per scenario and round (default 5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of reference and scenarios; the table gives medians (3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up (default 1)")
    p.add_argument("--defence-duration", type=float, default=None,
                   help="seconds of load per configuration of the defences phase "
                        "(default: --duration)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    p.add_argument("--processes", type=int, default=1,
                   help="front-door processes, for the reference and seckill alike (1)")
    p.add_argument("--generator", choices=("auto", "wrk", "asyncio"), default="auto",
                   help="wrk when installed (auto), or the built-in asyncio generator")
    p.add_argument("--gen-workers", type=int, default=1,
                   help="wrk threads, or asyncio generator processes (1)")
    p.add_argument("--max-rate", type=int, default=40_000,
                   help="req/s a scenario may reach: tokens are minted for duration x max-rate "
                        "distinct shoppers (40000)")
    p.add_argument("--mixed-stock", type=int, default=1000,
                   help="stock of the realistic mixed sale, far below demand (1000)")
    p.add_argument("--units", type=int, default=1000,
                   help="end-to-end sale: units on sale (1000; the full test is 10000)")
    p.add_argument("--shoppers", type=int, default=10_000,
                   help="end-to-end sale: distinct shoppers, one purchase each "
                        "(10000; the full test is 100000)")
    p.add_argument("--persist-orders", type=int, default=20_000,
                   help="orders queued for the worker-throughput measurement (20000)")
    p.add_argument("--phase-timeout", type=float, default=180.0,
                   help="bound on any one wait: a sale's load, persistence (180 s)")
    p.add_argument("--skip", action="append", default=[],
                   choices=("reference", "winning", "sold_out", "mixed", "defences", "e2e",
                            "persistence"),
                   help="leave out a phase (repeatable)")
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                   help="PostgreSQL server (its database name is replaced by a private one)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the servers' logs and the token files (their folder is printed)")
    args = p.parse_args(argv)
    if args.defence_duration is None:
        args.defence_duration = args.duration
    for name in ("duration", "rounds", "connections", "processes", "gen_workers", "max_rate",
                 "mixed_stock", "units", "shoppers", "persist_orders", "defence_duration"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


@dataclass
class Bench:
    args: argparse.Namespace
    env: Environment
    work: Path
    wrk_path: str | None
    client: Client | None = None
    serve: Service | None = None
    worker: Service | None = None
    ref: Service | None = None
    ref_base: str = ""
    ref_tokens: Path = Path()
    db: asyncpg.Pool | None = None
    record: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    defence_rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = TokenBook(self.env.jwt_secret, f"b{self.env.tag}-")
        self.base = ""

    # -- generators ---------------------------------------------------------------------
    def tokens(self, name: str, count: int) -> Path:
        return self.book.write(self.work / f"tokens-{name}.txt", count)

    async def drive(self, plan: Plan) -> RunResult:
        if self.wrk_path is not None:
            return await wrk.run(plan, threads=self.args.gen_workers, work_dir=self.work,
                                 wrk=self.wrk_path)
        return await generator.run(plan, processes=self.args.gen_workers, work_dir=self.work)

    def plan(self, base: str, templates: tuple[Template, ...], tokens: Path,
             expected: set[int], **kw: Any) -> Plan:
        return Plan(base_url=base, templates=templates, tokens_file=tokens,
                    expected=frozenset(expected), connections=self.args.connections,
                    duration_s=self.args.duration, **kw)

    async def measure(self, name: str, plan: Plan, serve: Service) -> dict[str, Any]:
        """Run `plan` once, with the CPU each party spent during it."""
        others = [s for s in (self.worker,) if s is not None and s is not serve]
        serve0 = serve.cpu_seconds()
        others0 = sum(s.cpu_seconds() for s in others)
        meter = CpuMeter()
        result = await self.drive(plan)
        serve_cpu = serve.cpu_seconds() - serve0
        detail = {"worker": sum(s.cpu_seconds() for s in others) - others0, **meter.services()}
        machine_cpu = meter.machine()
        el = result.elapsed_s or math.inf
        row = {"scenario": name, "result": result.to_json(),
               "serve_cpu_us": (1e6 * serve_cpu / result.responses) if result.responses else 0,
               "cpu_pct": {"serve": 100 * serve_cpu / el,
                           "generator": 100 * result.generator_cpu_s / el,
                           "other": 100 * sum(detail.values()) / el,
                           "machine": 100 * machine_cpu / el,
                           "other_detail": {k: round(100 * v / el, 1)
                                            for k, v in detail.items()}}}
        if result.wrapped and name != "reference POST":
            row["note"] = (f"{result.wrapped} requests reused a shopper: raise --max-rate "
                           "for distinct shoppers throughout")
        print(f"  {name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
              f"p99 {result.p99_ms:.2f} ms, statuses {result.statuses}"
              + (f", no answer {result.socket_errors}" if result.socket_errors else ""),
              flush=True)
        return row

    def scenario_tokens(self) -> int:
        return math.ceil(float(self.args.max_rate) * float(self.args.duration))

    # -- the reference ------------------------------------------------------------------
    async def start_reference(self) -> None:
        port = free_port()
        self.ref = await start("reference", reference_argv(port, self.args.processes), env={},
                               log_dir=self.work)
        self.ref_base = f"http://127.0.0.1:{port}"
        await wait_http(self.ref_base + "/healthz", self.ref)
        await self.drive(replace(self.plan(self.ref_base, (purchase("1"),),
                                           self.tokens("reference", 20_000), {202}),
                                 duration_s=self.args.warmup))

    def reference_plan(self) -> Plan:
        return self.plan(self.ref_base, (purchase("1"),), self.ref_tokens, {202})

    # -- the real stack -----------------------------------------------------------------
    async def start_stack(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**self.env.env_vars(port), "SECKILL_LOG_LEVEL": "WARNING"}
        self.serve = await start("serve", seckill_argv(
            "serve", "--processes", str(self.args.processes)), env=env, log_dir=self.work)
        await self.start_worker()
        await wait_http(self.base + "/readyz", self.serve, timeout_s=60)

    async def start_worker(self) -> None:
        env = {**self.env.env_vars(0), "SECKILL_LOG_LEVEL": "WARNING"}
        self.worker = await start("worker", seckill_argv("worker"), env=env, log_dir=self.work)

    async def settle(self, sale_id: str) -> dict[str, Any]:
        assert self.client is not None
        return await self.client.wait_settled(sale_id, timeout_s=self.args.phase_timeout)

    async def warm_stack(self) -> None:
        assert self.client is not None
        sale = await self.client.schedule_sale(stock=HUGE_STOCK)
        tokens = self.tokens("warmup", math.ceil(self.args.max_rate * self.args.warmup))
        await self.drive(replace(self.plan(self.base, (purchase(sale["id"]),), tokens, {202}),
                                 duration_s=self.args.warmup))
        await self.settle(sale["id"])

    # -- the scenarios, in rounds -------------------------------------------------------
    async def scenarios(self, skip: set[str]) -> None:
        """Every scenario once a round, each round starting with the reference.

        These machines are noisy: the same server moves by tens of per cent from one minute
        to the next. A scenario's ratio is taken against the reference measured in the same
        round, a minute apart at most, and the table gives the median over the rounds.
        """
        assert self.client is not None and self.serve is not None
        with_ref = "reference" not in skip
        winning = sold_out = None
        if "winning" not in skip:
            winning = (await self.client.schedule_sale(stock=HUGE_STOCK))["id"]
        if "sold_out" not in skip:
            sold_out = (await self.client.schedule_sale(stock=1))["id"]
            status, body = await self.client.buy(sold_out, f"b{self.env.tag}-first")
            if status != 202:
                raise RuntimeError(f"the only unit of the sold-out sale was not sold: {body}")
        runs: dict[str, list[dict[str, Any]]] = {}
        for n in range(self.args.rounds):
            print(f"round {n + 1} of {self.args.rounds}", flush=True)
            ref = None
            if with_ref:
                assert self.ref is not None
                ref = await self.measure("reference POST", self.reference_plan(), self.ref)
                runs.setdefault(ref["scenario"], []).append(ref)
            if winning is not None:
                tokens = self.tokens("winning", self.scenario_tokens())
                row = await self.measure("winning purchase", self.plan(
                    self.base, (purchase(winning),), tokens, {202}), self.serve)
                runs.setdefault(row["scenario"], []).append(_against(row, ref))
            if sold_out is not None:
                tokens = self.tokens("sold-out", self.scenario_tokens())
                row = await self.measure("sold-out (409)", self.plan(
                    self.base, (purchase(sold_out),), tokens, {409}), self.serve)
                runs.setdefault(row["scenario"], []).append(_against(row, ref))
            if "mixed" not in skip:
                runs.setdefault(f"mixed sale (stock {self.args.mixed_stock:,})", []).append(
                    _against(await self.mixed(), ref))
        self.rows.extend(report.median_row(name, rows) for name, rows in runs.items())
        if winning is not None:
            await self.check_sale("winning purchase", winning)
        if sold_out is not None:
            status, body = await self.client.buy(sold_out, f"b{self.env.tag}-last")
            if (status, (body or {}).get("error")) != (409, "sold_out"):
                self.failures.append(f"sold-out sale answered {status} {body}")
            await self.check_sale("sold-out (409)", sold_out)

    async def check_sale(self, scenario: str, sale_id: str) -> None:
        t0 = time.monotonic()
        stats = await self.settle(sale_id)
        row = next(r for r in self.rows if r["scenario"] == scenario)
        row["persisted_after_s"] = round(time.monotonic() - t0, 3)
        row["stats"] = stats
        self.check_stock(row, stats)

    async def mixed(self) -> dict[str, Any]:
        """A fresh sale each round: browsing and buying, stock far below demand."""
        assert self.client is not None and self.serve is not None
        sale = await self.client.schedule_sale(stock=self.args.mixed_stock)
        tokens = self.tokens("mixed", self.scenario_tokens())
        templates = (Template("GET", f"/api/v1/sales/{sale['id']}"), purchase(sale["id"]))
        row = await self.measure(f"mixed sale (stock {self.args.mixed_stock:,})", self.plan(
            self.base, templates, tokens, {200, 202, 409}), self.serve)
        row["stats"] = stats = await self.settle(sale["id"])
        self.check_stock(row, stats)
        wins = row["result"]["statuses"].get("202", 0)
        if stats["remaining"] == 0 and wins != self.args.mixed_stock:
            self.failures.append(f"mixed sale: {wins} purchases answered 202 for a stock of "
                                 f"{self.args.mixed_stock}")
        return row

    # -- what each defence costs -------------------------------------------------------
    async def defences(self) -> None:
        """Each configuration of DEFENCES on a sale of its own, with the same load."""
        for defence in DEFENCES:
            self.defence_rows.append(await self.defence(defence))
        for path in (False, True):
            rows = [r for r in self.defence_rows if r["sold_out_path"] is path]
            base = rows[0]["result"]["rps"] if rows else 0
            for r in rows:
                if base:
                    r["ratio_to_no_defences"] = r["result"]["rps"] / base

    async def defence(self, defence: Defence) -> dict[str, Any]:
        assert self.client is not None and self.serve is not None
        duration = self.args.defence_duration
        sale = await self.client.schedule_sale(stock=1 if defence.sold_out else HUGE_STOCK,
                                               **defence.settings)
        sale_id = sale["id"]
        name = defence.name
        if name == "per-user rate limit":  # the defaults: say what they are
            limits = sale["rate_limits"]
            name += f" ({limits['user_per_s']}/s, burst {limits['user_burst']})"
        elif name == "+ per-address rate limit":  # so wide that it never refuses
            name += f" ({WIDE_OPEN:,}/s)"
        elif name == "waiting room":  # every shopper joined first, and all are admitted
            name += f" (admit {WIDE_OPEN:,}/s)"
        name = ("sold-out: " if defence.sold_out else "") + name
        slug = f"defence-{sale_id}"
        if defence.sold_out:
            status, body = await self.client.buy(sale_id, f"b{self.env.tag}-first-{sale_id}")
            if status != 202:
                raise RuntimeError(f"the only unit of the sold-out sale was not sold: {body}")
        count = math.ceil(float(self.args.max_rate) * float(duration))
        tokens = self.work / f"tokens-{slug}.txt"
        users = self.book.write_users(tokens, count)
        template, values = purchase(sale_id), None
        extra: dict[str, Any] = {}
        if defence.settings.get("requires_token"):
            # One single-use token per shopper, bound to the shopper and the sale, as
            # POST /api/v1/sales/{id}/token would give; issued here, outside the measure. The
            # server checks the expiry the token carries: long enough for the whole run.
            issuer = PurchaseTokens(self.env.jwt_secret,
                                    ttl_s=max(TOKEN_TTL_S, math.ceil(duration) + 120))
            values = self.work / f"purchase-tokens-{slug}.txt"
            values.write_text("\n".join(issuer.issue(u, int(sale_id))[0] for u in users) + "\n")
            template = replace(template, header="Purchase-Token")
        if defence.settings.get("waiting_room"):
            extra["join"] = await self.join_room(sale_id, tokens, count)
        expected = {409} if defence.sold_out else {202}
        plan = replace(self.plan(self.base, (template,), tokens, expected, values_file=values),
                       duration_s=duration)
        row = await self.measure(name, plan, self.serve)
        row.update(configuration=name, sold_out_path=defence.sold_out,
                   sale_settings=defence.settings, **extra)
        if defence.sold_out:
            status, body = await self.client.buy(sale_id, f"b{self.env.tag}-last-{sale_id}")
            if (status, (body or {}).get("error")) != (409, "sold_out"):
                self.failures.append(f"{name}: the sold-out sale answered {status} {body}")
        row["stats"] = stats = await self.settle(sale_id)
        self.check_stock(row, stats)
        return row

    async def join_room(self, sale_id: str, tokens: Path, count: int) -> dict[str, Any]:
        """Every shopper of `tokens` joins the waiting room, once, before the measure.

        Always with the built-in generator: a join answers 200, which wrk_plan.lua's limit
        mode takes for its filler."""
        plan = Plan(base_url=self.base, tokens_file=tokens, expected=frozenset({200}),
                    templates=(Template("POST", f"/api/v1/sales/{sale_id}/queue", auth=True),),
                    connections=self.args.connections, duration_s=self.args.phase_timeout,
                    limit=count)
        result = await generator.run(plan, processes=max(2, self.args.gen_workers),
                                     work_dir=self.work)
        joined = result.statuses.get(200, 0)
        print(f"  waiting room: {joined:,} of {count:,} shoppers joined in "
              f"{result.elapsed_s:.1f} s ({result.rps:,.0f} joins/s)", flush=True)
        if joined != count:
            print(f"  waiting room: joins answered {result.statuses}"
                  + (f", no answer {result.socket_errors}" if result.socket_errors else ""),
                  flush=True)
        return {"shoppers": count, "joined": joined, "result": result.to_json()}

    def check_stock(self, row: dict[str, Any], stats: dict[str, Any]) -> None:
        ok = (stats["remaining"] >= 0 and stats["remaining"] + stats["reserved"] == stats["stock"]
              and stats["orders_persisted"] == stats["reserved"])
        if not ok:
            self.failures.append(f"{row['scenario']}: stats do not add up: {stats}")

    # -- the end-to-end sale ------------------------------------------------------------
    async def e2e(self) -> dict[str, Any]:
        assert self.client is not None and self.db is not None
        units, shoppers = self.args.units, self.args.shoppers
        sale = await self.client.schedule_sale(stock=units)
        tokens = self.tokens("e2e", shoppers)
        plan = replace(self.plan(self.base, (purchase(sale["id"]),), tokens, {202, 409}),
                       limit=shoppers, duration_s=self.args.phase_timeout)
        print(f"  end-to-end sale: {units:,} units, {shoppers:,} shoppers ...", flush=True)
        started = time.time()
        result = await self.drive(plan)
        stats = await self.settle(sale["id"])
        row = await self.db.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT user_id) AS buyers,"
            " coalesce(sum(quantity), 0) AS units, max(created_at) AS last_win,"
            " min(persisted_at) AS first_persisted, max(persisted_at) AS last_persisted"
            " FROM orders WHERE sale_id = $1", int(sale["id"]))
        assert row is not None
        won = stats["stock"] - stats["remaining"]
        client_wins = result.statuses.get(202, 0)
        problems = []
        if won > units:
            problems.append(f"oversold: {won} units won for a stock of {units}")
        if row["units"] != won:
            problems.append(f"{row['units']} units in PostgreSQL for {won} won")
        if row["buyers"] != row["rows"]:
            problems.append(f"{row['rows'] - row['buyers']} shoppers have two orders")
        if client_wins > won or (not result.socket_errors and client_wins != won):
            problems.append(f"{client_wins} purchases answered 202 for {won} units won")
        if shoppers >= units and not result.socket_errors and stats["remaining"] != 0:
            problems.append(f"{stats['remaining']} units left with more shoppers than units")
        last_win = row["last_win"].timestamp() if row["last_win"] else math.nan
        first_p = row["first_persisted"].timestamp() if row["first_persisted"] else math.nan
        last_p = row["last_persisted"].timestamp() if row["last_persisted"] else math.nan
        span = last_p - first_p
        out = {
            "units": units, "shoppers": shoppers, "sale_id": sale["id"],
            "result": result.to_json(), "stats": stats,
            "sold_out": stats["remaining"] == 0,
            "sell_out_s": last_win - started if stats["remaining"] == 0 else math.nan,
            "all_persisted_s": last_p - started,
            "persist_lag_s": last_p - last_win,
            "orders_persisted_per_s": row["rows"] / span if span > 0 else math.nan,
            "units_won": won, "client_202": client_wins, "rows": row["rows"],
            "distinct_buyers": row["buyers"], "oversold": max(0, won - units),
            "ok": not problems, "problems": problems,
        }
        self.failures += [f"end-to-end sale: {p}" for p in problems]
        return out

    # -- the worker alone ---------------------------------------------------------------
    async def persistence(self) -> dict[str, Any]:
        """Queue N wins with the worker stopped, then time the worker storing them."""
        assert self.client is not None and self.db is not None and self.worker is not None
        n = self.args.persist_orders
        # The earlier phases' orders first: a backlog left in the queue would be stored
        # together with this phase's and count against its pace.
        await self.queue_drained()
        await self.worker.stop()
        sale = await self.client.schedule_sale(stock=n)
        tokens = self.tokens("persist", n)
        plan = replace(self.plan(self.base, (purchase(sale["id"]),), tokens, {202}),
                       limit=n, duration_s=self.args.phase_timeout)
        result = await self.drive(plan)
        outbox = KeySpace(self.env.redis_prefix).sale(int(sale["id"])).outbox
        redis = Redis.from_url(self.env.redis_url)
        try:  # every win confirmed by RabbitMQ: the backlog is all in the queue
            await poll(lambda: redis.zcard(outbox), lambda left: left == 0,
                       timeout_s=self.args.phase_timeout)
        finally:
            await redis.aclose()
        db = self.db
        sale_id = int(sale["id"])
        seen: list[tuple[float, int]] = []  # (time, rows) at each poll while rows grow

        async def count() -> int:
            rows = int(await db.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1",
                                         sale_id))
            if rows:
                seen.append((time.monotonic(), rows))
            return rows

        stats = await self.client.stats(sale["id"])
        won = stats["stock"] - stats["remaining"]
        started = time.monotonic()
        await self.start_worker()
        stored = await poll(count, lambda rows: rows >= won, timeout_s=self.args.phase_timeout,
                            interval_s=0.01)
        done = time.monotonic()
        if stored != won or result.statuses.get(202, 0) != won or won != n:
            self.failures.append(f"persistence: {stored} rows for {won} units won of {n} "
                                 f"({result.statuses} answered)")
        # From the first rows seen to the last: the worker's pace, its start-up left out.
        (t1, rows1), (t2, rows2) = (seen[0], seen[-1]) if seen else ((done, 0), (done, 0))
        return {"orders": n, "stored": stored, "load": result.to_json(),
                "wall_s": done - started, "wall_orders_per_s": stored / (done - started),
                "first_rows_after_s": t1 - started,
                "drain_orders_per_s": (rows2 - rows1) / (t2 - t1) if t2 > t1 else math.nan}

    async def queue_drained(self) -> None:
        """Wait until the order queue holds no ready message (the worker keeps up again)."""
        topology = Topology(self.env.amqp_prefix)
        connection = await aio_pika.connect_robust(self.env.amqp_url, timeout=10)
        async with connection:
            state = await poll(lambda: queue_state(connection, topology),
                               lambda s: s is not None and s.messages == 0,
                               timeout_s=self.args.phase_timeout, interval_s=0.1)
        if state is None or state.messages:
            print(f"  note: {state} left in the order queue before the persistence phase",
                  flush=True)

    # -- the whole run ------------------------------------------------------------------
    async def run(self) -> None:
        skip = set(self.args.skip)
        self.record.update({
            "started_at": datetime.now(UTC).isoformat(), "machine": report.machine(),
            "generator": ("wrk " + self.wrk_path) if self.wrk_path else "asyncio",
            "settings": report.settings(self.args)})
        if "reference" not in skip:
            print("reference server ...", flush=True)
            await self.start_reference()
            self.ref_tokens = self.tokens("reference-measured", self.scenario_tokens())
        print("seckill serve + seckill worker ...", flush=True)
        await self.start_stack()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            self.client = Client(session, self.base, self.env.jwt_secret)
            self.db = await asyncpg.create_pool(self.env.database_url, min_size=1, max_size=2)
            try:
                await self.warm_stack()
                await self.scenarios(skip)
                if self.ref is not None:
                    await self.ref.stop()
                    self.ref = None
                if "defences" not in skip:
                    await self.defences()
                self.record["scenarios"] = self.rows
                if "defences" not in skip:
                    self.record["defences"] = self.defence_rows
                if "e2e" not in skip:
                    self.record["e2e_sale"] = await self.e2e()
                if "persistence" not in skip:
                    print("  order persistence ...", flush=True)
                    self.record["persistence"] = await self.persistence()
            finally:
                await self.db.close()
        self.record["failures"] = self.failures

    async def stop(self) -> None:
        for service in (self.worker, self.serve, self.ref):
            if service is not None:
                await service.stop()


async def main_async(args: argparse.Namespace) -> int:
    wrk_path = wrk.find_wrk() if args.generator in ("auto", "wrk") else None
    if args.generator == "wrk" and wrk_path is None:
        print("wrk is not installed (apt-get install -y wrk), or use --generator asyncio",
              file=sys.stderr)
        return 2
    env = Environment.new("bench", database_url=args.database_url, redis_url=args.redis_url,
                          amqp_url=args.amqp_url)
    work = Path(tempfile.mkdtemp(prefix=f"seckill-bench-{env.tag}-"))
    print(f"environment {env.tag}: database {env.database_url.rsplit('/', 1)[1]}, "
          f"generator {'wrk' if wrk_path else 'asyncio'}, work files in {work}", flush=True)
    await env.create()
    bench = Bench(args, env, work, wrk_path)
    try:
        await bench.run()
    finally:
        await bench.stop()
        with contextlib.suppress(Exception):
            await env.destroy()
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report.table(bench.rows))
    if bench.rows:
        print(report.LEGEND)
    for r in bench.rows:
        if "note" in r:
            print(f"  note, {r['scenario']}: {r['note']}")
    if bench.defence_rows:
        print()
        print("what each defence costs on the purchase path:")
        print(report.defences_table(bench.defence_rows))
        print(report.DEFENCES_LEGEND)
        for r in bench.defence_rows:
            if "note" in r:
                print(f"  note, {r['configuration']}: {r['note']}")
    if "e2e_sale" in bench.record:
        print()
        print(report.e2e_lines(bench.record["e2e_sale"]))
    if "persistence" in bench.record:
        print(report.persistence_lines(bench.record["persistence"]))
    path = report.write(bench.record, args.results_dir)
    print(f"\nresults: {path}")
    if bench.failures:
        print("FAILED invariants:\n  " + "\n  ".join(bench.failures), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
