"""One command: Locust, headless, against a fresh sale; its report; then the verdict.

Without --host it starts its own stack in a private environment (database
`seckill_locust_<tag>`, Redis prefix, AMQP prefix; `seckill serve` + `seckill worker`) and
removes it afterwards. With --host it uses a running stack: SECKILL_JWT_SECRET must be its
secret, and SECKILL_DATABASE_URL (or --database-url) lets the verdict read the orders table.

The operator user schedules the sale under a unique title; shoppers find it by that title.
Locust writes loadtest/reports/locust-<stamp>.html and *_stats.csv (and the shoppers'
ledger); the verdict (loadtest/verdict.py) is printed and saved beside them. Exit status:
0 when every invariant holds, 1 when one fails, 2 when the run could not be made.

    python -m loadtest.run_locust                          # own stack, 200 users, 30 s
    python -m loadtest.run_locust -u 1000 -r 200 -t 60s --processes 2
    SECKILL_JWT_SECRET=... python -m loadtest.run_locust --host http://127.0.0.1:8080
    SECKILL_JWT_SECRET=... python -m loadtest.run_locust --host http://127.0.0.1:8080 \
        --judge loadtest/reports/dist-ledger      # only the verdict, after a distributed run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

from loadtest.client import Client
from loadtest.environment import Environment
from loadtest.processes import ROOT, Service, free_port, seckill_argv, start, wait_http
from loadtest.verdict import Ledger, Verdict, check_sale

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPORTS = Path(__file__).with_name("reports")


def seconds(span: str) -> float:
    """Locust's time spans: 90, 90s, 2m, 1h30m."""
    if re.fullmatch(r"\d+(\.\d+)?", span):
        return float(span)
    parts = re.findall(r"(\d+)\s*([hms])", span)
    if not parts or "".join(n + u for n, u in parts) != span.replace(" ", ""):
        raise argparse.ArgumentTypeError(f"not a time span: {span!r} (e.g. 30s, 2m, 1h30m)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def locust_argv(host: str, *, users: int, spawn_rate: float, run_time: str,
                stop_timeout: float, title: str, stock: int, starts_in: float,
                ledger_dir: Path, pay_ratio: float = 0.7, cancel_ratio: float = 0.1,
                journey_timeout: float = 20.0, report_prefix: Path | None = None,
                processes: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", str(users), "-r", str(spawn_rate), "-t", run_time,
            "--stop-timeout", str(stop_timeout), "--host", host,
            "--sale-title", title, "--sale-stock", str(stock),
            "--sale-starts-in", str(starts_in), "--ledger-dir", str(ledger_dir),
            "--pay-ratio", str(pay_ratio), "--cancel-ratio", str(cancel_ratio),
            "--journey-timeout", str(journey_timeout), "--exit-code-on-error", "0"]
    if report_prefix is not None:
        argv += ["--csv", str(report_prefix), "--html", f"{report_prefix}.html"]
    if processes > 1:
        argv += ["--processes", str(processes)]
    return argv + list(extra)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.run_locust", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="a running stack, e.g. http://127.0.0.1:8080 "
                                  "(default: start a private one)")
    p.add_argument("--database-url", default=os.environ.get("SECKILL_DATABASE_URL"),
                   help="with --host: the stack's database, for the SQL checks")
    p.add_argument("-u", "--users", type=int, default=200)
    p.add_argument("-r", "--spawn-rate", type=float, default=50)
    p.add_argument("-t", "--run-time", default="30s")
    p.add_argument("--stop-timeout", type=float, default=30,
                   help="seconds left to shoppers to finish their journey (30)")
    p.add_argument("--stock", type=int, default=100)
    p.add_argument("--starts-in", type=float, default=5.0,
                   help="seconds from the operator's scheduling to the start (5)")
    p.add_argument("--pay-ratio", type=float, default=0.7)
    p.add_argument("--cancel-ratio", type=float, default=0.1)
    p.add_argument("--journey-timeout", type=float, default=20.0)
    p.add_argument("--processes", type=int, default=1,
                   help="Locust worker processes on this machine (locust --processes)")
    p.add_argument("--processes-serve", type=int, default=1,
                   help="front-door processes of the private stack (1)")
    p.add_argument("--reports", type=Path, default=REPORTS)
    p.add_argument("--judge", type=Path, metavar="LEDGER_DIR",
                   help="run no Locust: give the verdict on the sale of this ledger "
                        "(written by a run with --ledger-dir); needs --host")
    args = p.parse_args(argv)
    if args.judge is not None and args.host is None:
        p.error("--judge needs --host")
    args.run_seconds = seconds(args.run_time)
    if args.stop_timeout <= args.journey_timeout:
        p.error("--stop-timeout must exceed --journey-timeout, or journeys are cut short")
    if args.host and not re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost)(:\d+)?/?$",
                                  args.host):
        p.error("--host must be on this machine (127.x.x.x or localhost)")
    return args


async def start_stack(env: Environment, work: Path, processes: int
                      ) -> tuple[str, list[Service]]:
    port = free_port()
    variables = {**env.env_vars(port), "SECKILL_LOG_LEVEL": "WARNING"}
    serve = await start("serve", seckill_argv("serve", "--processes", str(processes)),
                        env=variables, log_dir=work)
    worker = await start("worker", seckill_argv("worker"), env=variables, log_dir=work)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(base + "/readyz", serve, timeout_s=60)
    except BaseException:
        for s in (worker, serve):
            await s.stop()
        raise
    return base, [serve, worker]


async def find_sale(client: Client, ledger: Ledger, title: str) -> str | None:
    if ledger.sale_ids:
        return ledger.sale_ids[-1]
    status, body = await client.call("GET", "/api/v1/sales")
    mine = [s for s in (body or {}).get("sales", []) if s.get("title") == title]
    return max(mine, key=lambda s: int(s["id"]))["id"] if status == 200 and mine else None


async def run(args: argparse.Namespace) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.reports.mkdir(parents=True, exist_ok=True)
    prefix = args.reports / f"locust-{stamp}"
    ledger_dir = args.reports / f"locust-{stamp}-ledger"
    title = f"locust-{stamp}-{uuid.uuid4().hex[:6]}"
    env: Environment | None = None
    services: list[Service] = []
    try:
        if args.host is None:
            work = args.reports / f"locust-{stamp}-logs"  # the stack's own logs
            work.mkdir()
            env = Environment.new("locust")
            await env.create()
            host, services = await start_stack(env, work, args.processes_serve)
            secret, database_url = env.jwt_secret, env.database_url
            print(f"private stack on {host} (database {database_url.rsplit('/', 1)[1]})")
        else:
            host, database_url = args.host.rstrip("/"), args.database_url
            secret = os.environ.get("SECKILL_JWT_SECRET", "")
            if not secret:
                print("set SECKILL_JWT_SECRET to the stack's secret", file=sys.stderr)
                return 2
            if args.judge is not None:
                ledger_dir, prefix = args.judge, args.reports / f"judged-{stamp}"
        if args.judge is None:
            code = await run_locust(args, host, secret, title, ledger_dir, prefix)
            if code is not None:
                return code
        verdict = await judge(host, secret, database_url, ledger_dir, title)
        if verdict is None:
            print("no sale to judge (did the operator schedule it?): see the report",
                  file=sys.stderr)
            return 2
        print(verdict.render())
        await asyncio.to_thread(Path(f"{prefix}-verdict.json").write_text,
                                json.dumps(verdict.to_json(), indent=2))
        if args.judge is None:
            print(f"report: {prefix}.html, {prefix}_stats.csv")
        print(f"verdict: {prefix}-verdict.json")
        return 0 if verdict.ok else 1
    finally:
        for service in reversed(services):
            await service.stop()
        if env is not None:
            with contextlib.suppress(Exception):
                await env.destroy()


async def run_locust(args: argparse.Namespace, host: str, secret: str, title: str,
                     ledger_dir: Path, prefix: Path) -> int | None:
    """Locust, bounded in time; an exit status if the run could not be made, else None."""
    argv = locust_argv(
        host, users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time,
        stop_timeout=args.stop_timeout, title=title, stock=args.stock,
        starts_in=args.starts_in, ledger_dir=ledger_dir, pay_ratio=args.pay_ratio,
        cancel_ratio=args.cancel_ratio, journey_timeout=args.journey_timeout,
        report_prefix=prefix, processes=args.processes)
    print("$ " + " ".join(argv[1:]), flush=True)
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env={**os.environ, "SECKILL_JWT_SECRET": secret})
    try:
        await asyncio.wait_for(proc.wait(), args.run_seconds + args.stop_timeout + 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        print("locust did not finish in time", file=sys.stderr)
        return 2
    return None


async def judge(host: str, secret: str, database_url: str | None, ledger_dir: Path,
                title: str) -> Verdict | None:
    ledger = await asyncio.to_thread(Ledger.load, ledger_dir)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        client = Client(session, host, secret)
        sale_id = await find_sale(client, ledger, title)
        if sale_id is None:
            return None
        db = await asyncpg.connect(database_url) if database_url else None
        try:
            return await check_sale(client, sale_id, db=db,
                                    ledger=ledger if ledger.attempted else None)
        finally:
            if db is not None:
                await db.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
