"""The reference: a bare aiohttp + uvloop server whose POST reads the body and answers JSON.

It does what any aiohttp front door must do for a purchase (parse HTTP, read the body, write
a small JSON answer) and nothing else; the benchmark reports the real stack as a ratio of it.
Same process model as `seckill serve`: N processes sharing the port through SO_REUSEPORT.

    python -m loadtest.reference --port 8090 --processes 1
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from aiohttp import web

from seckill.runner import supervise

ANSWER = (b'{"order_id":"01JD0000000000000000000000-1","sale_id":"1","quantity":1,'
          b'"status":"pending"}')


async def purchase(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=202, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/api/v1/sales/{sale_id}/purchase", purchase)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, *, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()


def _child(host: str, port: int) -> None:
    uvloop.run(serve(host, port, reuse_port=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--processes", type=int, default=1)
    args = p.parse_args(argv)
    if args.processes <= 1:
        uvloop.run(serve(args.host, args.port, reuse_port=False))
        return 0
    supervise(_child, (args.host, args.port), args.processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
