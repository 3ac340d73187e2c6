"""Instructions per request, counted by valgrind's callgrind: the front door's own cost,
the same from one run to the next however noisy the machine.

    python -m loadtest.instructions                   # reference, sold-out and winning paths
    python -m loadtest.instructions --requests 4000 --concurrency 100 --path sold_out

The benchmark's req/s drift with the machine (tens of per cent from one minute to the
next on a shared 2-core machine); instruction counts do not. This runs the reference and
`seckill serve` (one process, with a worker beside it, not counted) under `valgrind
--tool=callgrind`, sends `--warmup` purchases, zeroes the counters (`callgrind_control
--dump`), sends `--requests` purchases from `--concurrency` connections, every one a new
shopper, and divides. It counts user-space instructions only: system calls (the write of
each response is a fifth of a request's time here) and cache misses are not in it, so it
complements the benchmark's CPU ratios rather than replacing them. The server runs about
fifty times slower under valgrind: the sold-out memory is kept for ten minutes
(`SECKILL_SOLD_OUT_MEMORY_MS`), as it would last a whole second's thousands of requests
at full speed. Needs `valgrind` (Debian package). Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from loadtest import report
from loadtest.bench import HUGE_STOCK
from loadtest.client import Client
from loadtest.environment import Environment
from loadtest.plan import PURCHASE_BODY
from loadtest.processes import ROOT, Service, free_port, seckill_argv, start
from loadtest.tokens import TokenBook

PATHS = ("sold_out", "winning")
READY_TIMEOUT_S = 600.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.instructions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000,
                   help="purchases counted per path (2000)")
    p.add_argument("--warmup", type=int, default=500,
                   help="purchases sent before counting (500)")
    p.add_argument("--concurrency", type=int, default=100, help="connections (100)")
    p.add_argument("--path", action="append", choices=PATHS, default=[],
                   help="a path to count (repeatable; default: all)")
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    args = p.parse_args(argv)
    for name in ("requests", "warmup", "concurrency"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    args.path = args.path or list(PATHS)
    return args


class Counted:
    """A server under callgrind, whose counters can be zeroed and read."""

    def __init__(self, argv: list[str], env: dict[str, str], work: Path) -> None:
        self.work = work
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.%p",
             sys.executable, *argv],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=work,
            stdout=(work / "server.log").open("w"), stderr=subprocess.STDOUT)

    def dump(self) -> int:
        """Dump and zero the counters; the instructions counted since the last dump."""
        subprocess.run(["callgrind_control", "--dump", str(self.proc.pid)],
                       capture_output=True, check=True)
        files = glob.glob(str(self.work / f"callgrind.{self.proc.pid}.*"))
        newest = max(files, key=lambda f: int(f.rsplit(".", 1)[1]))
        for line in Path(newest).read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {newest}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def wait_ready(session: aiohttp.ClientSession, url: str, server: Counted) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while loop.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(server.work / 'server.log').read_text()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {READY_TIMEOUT_S:.0f} s")


async def send(session: aiohttp.ClientSession, url: str, tokens: list[str],
               concurrency: int) -> dict[int, int]:
    statuses: collections.Counter[int] = collections.Counter()
    queue: Iterator[str] = iter(tokens)

    async def connection() -> None:
        for token in queue:
            async with session.post(url, data=PURCHASE_BODY, headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json"}) as response:
                await response.read()
                statuses[response.status] += 1

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return dict(statuses)


async def count(args: argparse.Namespace, session: aiohttp.ClientSession, server: Counted,
                url: str, book: TokenBook, expected: int) -> dict[str, Any]:
    warm = await send(session, url, book.take(args.warmup), args.concurrency)
    server.dump()
    statuses = await send(session, url, book.take(args.requests), args.concurrency)
    instructions = server.dump()
    if set(statuses) != {expected} or set(warm) != {expected}:
        raise RuntimeError(f"expected only {expected}: warm-up {warm}, counted {statuses}")
    return {"instructions_per_request": instructions / args.requests, "statuses": statuses}


async def run(args: argparse.Namespace, env: Environment, work: Path) -> dict[str, Any]:
    book = TokenBook(env.jwt_secret, f"i{env.tag}-")
    rows: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        print("reference under callgrind ...", flush=True)
        ref = Counted(["-m", "loadtest.reference", "--port", str(port)], {}, work)
        try:
            await wait_ready(session, base + "/healthz", ref)
            rows["reference POST"] = await count(
                args, session, ref, base + "/api/v1/sales/1/purchase", book, 202)
        finally:
            ref.stop()

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        print("seckill serve under callgrind (and a worker) ...", flush=True)
        worker: Service = await start("worker", seckill_argv("worker"), env={
            **env.env_vars(0), "SECKILL_LOG_LEVEL": "WARNING"}, log_dir=work)
        serve = Counted(["-m", "seckill", "serve", "--processes", "1"], {
            **env.env_vars(port), "SECKILL_LOG_LEVEL": "WARNING",
            "SECKILL_SOLD_OUT_MEMORY_MS": "600000"}, work)
        try:
            await wait_ready(session, base + "/readyz", serve)
            client = Client(session, base, env.jwt_secret)
            for path in args.path:
                sale = await client.schedule_sale(stock=1 if path == "sold_out" else HUGE_STOCK)
                if path == "sold_out":
                    status, body = await client.buy(sale["id"], f"i{env.tag}-first")
                    if status != 202:
                        raise RuntimeError(f"the only unit was not sold: {body}")
                print(f"  {path} ...", flush=True)
                rows[path.replace("_", "-")] = await count(
                    args, session, serve, f"{base}/api/v1/sales/{sale['id']}/purchase", book,
                    409 if path == "sold_out" else 202)
        finally:
            serve.stop()
            await worker.stop()
    return rows


async def main_async(args: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y valgrind)", file=sys.stderr)
            return 2
    env = Environment.new("instr")
    work = Path(tempfile.mkdtemp(prefix=f"seckill-instructions-{env.tag}-"))
    await env.create()
    try:
        rows = await run(args, env, work)
    finally:
        with contextlib.suppress(Exception):
            await env.destroy()
        shutil.rmtree(work, ignore_errors=True)
    report.finish("instructions", args, rows, report.per_request(
        rows, "instructions_per_request", "instructions/request", ",.0f"),
        "user-space instructions per answered request (callgrind); reference/path: the "
        "reference's over the path's")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
