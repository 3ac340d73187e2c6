"""The front door's CPU per request without the network: aiohttp fed raw requests in process.

    python -m loadtest.inprocess                          # reference, sold-out, winning
    taskset -c 1 python -m loadtest.inprocess --requests 100000 --path sold_out

The benchmark's req/s move with everything else on the machine, and callgrind's instruction
counts leave out cache misses, which weigh more in a real server than under valgrind. This
measures what a change to the hot path does to the CPU it costs, in seconds: the reference
app and seckill's app (`create_app`, the real one, on a private environment's Redis,
PostgreSQL and RabbitMQ) each get `--connections` connections whose transport is a stub,
and rounds of requests are fed to aiohttp's protocol — one request per connection a round,
as wrk's connections would send them — until every response has been written. The process'
own CPU time over the counted requests, divided by their number, is the figure: aiohttp's
parsing, routing and response writing and the handler, without system calls (a real
server adds about 7 us a request for them, the same for every path).

Figures from one run are comparable with each other; pinned to a core (`taskset -c 1`),
three runs in a row agreed within 2% on the sold-out path and 5% on the others. The
ratios are lower than the benchmark's: the system calls a real server adds cost every
path the same. Load goes nowhere: the only sockets are
the app's own clients of Redis, PostgreSQL and RabbitMQ (the winning path's orders wait in
the environment's queue, which is removed with it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

from loadtest import reference, report
from loadtest.bench import HUGE_STOCK
from loadtest.client import Client
from loadtest.environment import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Environment,
)
from loadtest.plan import PURCHASE_BODY
from loadtest.processes import free_port
from loadtest.tokens import TokenBook
from seckill.settings import Settings

PATHS = ("sold_out", "winning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.inprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=50_000,
                   help="purchases counted per path (50000)")
    p.add_argument("--warmup", type=int, default=2_000,
                   help="purchases sent before counting (2000)")
    p.add_argument("--connections", type=int, default=100, help="connections (100)")
    p.add_argument("--path", action="append", choices=PATHS, default=[],
                   help="a path to measure (repeatable; default: all)")
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                   help="a PostgreSQL server; a private database is created on it")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    args = p.parse_args(argv)
    for name in ("requests", "warmup", "connections"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    args.path = args.path or list(PATHS)
    return args


class StubTransport(asyncio.Transport):
    """A connection that hands every response written to it to `written`."""

    def __init__(self, written: Callable[[bytes], None]) -> None:
        super().__init__()
        self._written = written

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._written(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._written(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class Feeder:
    """Connections into one app's aiohttp server, fed a round of requests at a time."""

    def __init__(self, runner: web.AppRunner, connections: int) -> None:
        server = runner.server
        assert server is not None
        self.statuses: Counter[int] = Counter()
        self._waiting = 0
        self._done: asyncio.Future[None] | None = None
        self._protocols: list[Any] = []
        for _ in range(connections):
            protocol = server()
            protocol.connection_made(StubTransport(self._written))
            self._protocols.append(protocol)

    def _written(self, data: bytes) -> None:
        self.statuses[int(data[9:12])] += 1
        self._waiting -= 1
        if self._waiting == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def send(self, requests: list[bytes]) -> None:
        for start in range(0, len(requests), len(self._protocols)):
            chunk = requests[start:start + len(self._protocols)]
            self._waiting = len(chunk)
            self._done = asyncio.get_running_loop().create_future()
            for protocol, raw in zip(self._protocols, chunk, strict=False):
                protocol.data_received(raw)
            await asyncio.wait_for(self._done, 60)


def purchase_requests(sale_id: object, tokens: list[str]) -> list[bytes]:
    body = PURCHASE_BODY.encode()
    return [(f"POST /api/v1/sales/{sale_id}/purchase HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body for token in tokens]


async def measure(args: argparse.Namespace, runner: web.AppRunner, sale_id: object,
                  book: TokenBook, expected: int) -> dict[str, Any]:
    feeder = Feeder(runner, args.connections)
    await feeder.send(purchase_requests(sale_id, book.take(args.warmup)))
    counted = purchase_requests(sale_id, book.take(args.requests))
    feeder.statuses.clear()
    cpu = time.process_time()
    await feeder.send(counted)
    cpu = time.process_time() - cpu
    statuses = dict(feeder.statuses)
    if set(statuses) != {expected}:
        raise RuntimeError(f"expected only {expected}, got {statuses}")
    return {"cpu_us_per_request": cpu / args.requests * 1e6, "statuses": statuses}


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    book = TokenBook(env.jwt_secret, f"p{env.tag}-")
    rows: dict[str, Any] = {}
    ref = web.AppRunner(reference.create_app(), access_log=None, handle_signals=False)
    await ref.setup()
    try:
        print("reference ...", flush=True)
        rows["reference POST"] = await measure(args, ref, 1, book, 202)
    finally:
        await ref.cleanup()

    from seckill.runner import tune_gc  # as `seckill serve` runs
    from seckill.web.app import create_app

    port = free_port()
    settings = Settings.from_env({**env.env_vars(port), "SECKILL_SOLD_OUT_MEMORY_MS": "600000"})
    app = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await app.setup()
    try:
        site = web.TCPSite(app, "127.0.0.1", port)  # for setting the sales up only
        await site.start()
        tune_gc()
        async with aiohttp.ClientSession() as session:
            client = Client(session, f"http://127.0.0.1:{port}", env.jwt_secret)
            for path in args.path:
                sale = await client.schedule_sale(stock=1 if path == "sold_out" else HUGE_STOCK)
                if path == "sold_out":
                    status, body = await client.buy(sale["id"], f"p{env.tag}-first")
                    if status != 202:
                        raise RuntimeError(f"the only unit was not sold: {body}")
                print(f"{path} ...", flush=True)
                rows[path.replace("_", "-")] = await measure(
                    args, app, sale["id"], book, 409 if path == "sold_out" else 202)
    finally:
        await app.cleanup()
    return rows


async def main_async(args: argparse.Namespace) -> int:
    env = Environment.new("inproc", database_url=args.database_url, redis_url=args.redis_url,
                          amqp_url=args.amqp_url)
    await env.create()
    try:
        rows = await run(args, env)
    finally:
        with contextlib.suppress(Exception):
            await env.destroy()
    report.finish("inprocess", args, rows, report.per_request(
        rows, "cpu_us_per_request", "CPU us/request", ".2f"),
        "the process' CPU per answered request, without system calls; reference/path: the "
        "reference's over the path's")
    return 0


def main(argv: list[str] | None = None) -> int:
    return uvloop.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
