"""The fault tests' machinery: seckill processes, fault proxies and a private Redis per test.

Every test gets a `Cluster`: its own Redis key prefix and RabbitMQ names (inside the faults
session's database and vhost), the `seckill` subprocesses it starts, the proxies it puts in
front of a service, and an HTTP client. `Cluster.close()` puts every proxy back to PASS, stops
every process (SIGTERM, then SIGKILL), stops the proxies and a private Redis, and drops the
test's keys and queues: the machine is left as it was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import asyncpg
from redis.asyncio import Redis

from seckill.broker import ORDER_ROUTING_KEY, Topology
from seckill.faultproxy import FaultProxy, Mode
from seckill.keys import KeySpace, SaleKeys
from seckill.settings import Settings
from tests.support import Api, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_port(url: str, port: int) -> str:
    """The same URL (credentials, path) pointing at 127.0.0.1:`port`: a proxy or a private
    server in front of the real service."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Proc:
    """One subprocess, its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL, by PID: no cleanup, no drain, no goodbye to any broker."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        await self.process.wait()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


@dataclass
class FrontDoor:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class PrivateRedis:
    """A redis-server of our own, with an append-only file, to restart or lose at will."""

    port: int
    dir: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.starts += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--dir", str(self.dir),
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        client = Redis.from_url(self.url)

        async def pong() -> bool:
            assert self.process is not None and self.process.returncode is None, \
                self.log.read_text(errors="replace")
            try:
                return bool(await client.ping())
            except Exception:
                return False

        try:
            await wait_until(pong, timeout=START_TIMEOUT_S, what="the private redis-server")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits (its script cache is gone)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class Rabbit:
    """The test's view of its RabbitMQ queues: depths, consumers, direct publishing."""

    connection: aio_pika.abc.AbstractRobustConnection
    topology: Topology

    async def _queue_info(self, name: str) -> tuple[int, int]:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)
        except aio_pika.exceptions.ChannelClosed:
            return 0, 0  # not declared yet: nothing in it
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def ready(self) -> int:
        """Messages waiting in the order queue (not counting those delivered, unacked)."""
        return (await self._queue_info(self.topology.queue))[0]

    async def consumers(self) -> int:
        return (await self._queue_info(self.topology.queue))[1]

    async def dead(self) -> int:
        """Messages in the dead-letter queue."""
        return (await self._queue_info(self.topology.dead_queue))[0]

    async def publish(self, *bodies: bytes) -> None:
        """Publish straight to the order exchange, as the front door would (confirmed)."""
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            exchange = await channel.get_exchange(self.topology.exchange, ensure=True)
            for body in bodies:
                await exchange.publish(
                    aio_pika.Message(body, content_type="application/json",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    ORDER_ROUTING_KEY, mandatory=True)
        finally:
            await channel.close()

    async def delete_all(self) -> None:
        channel = await self.connection.channel()
        try:
            for queue in (self.topology.queue, self.topology.dead_queue):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            for exchange in (self.topology.exchange, self.topology.dead_exchange):
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()


@dataclass
class Cluster:
    """One test's seckill: settings on private prefixes, its processes, proxies and client."""

    settings: Settings
    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    proxies: list[FaultProxy] = field(default_factory=list)
    redis_servers: list[PrivateRedis] = field(default_factory=list)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _rabbit: Rabbit | None = None
    _redis: Redis | None = None
    _counter: int = 0

    # -- processes --------------------------------------------------------------------------

    def env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
        env.update({
            "SECKILL_DATABASE_URL": s.database_url,
            "SECKILL_REDIS_URL": s.redis_url,
            "SECKILL_REDIS_PREFIX": s.redis_prefix,
            "SECKILL_AMQP_URL": s.amqp_url,
            "SECKILL_AMQP_PREFIX": s.amqp_prefix,
            "SECKILL_JWT_SECRET": s.jwt_secret,
            "SECKILL_OUTBOX_GRACE_MS": str(s.outbox_grace_ms),
            "SECKILL_EXPIRY_INTERVAL_MS": str(s.expiry_interval_ms),
            "SECKILL_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(overrides or {})
        return env

    async def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        self._counter += 1
        log = self.tmp / f"{self._counter:02d}-{name}.log"
        argv = [sys.executable, "-m", "seckill", *args]
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=self.tmp, env=self.env(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        proc = Proc(name, argv, log, process)
        self.procs.append(proc)
        return proc

    async def serve(self, *, port: int | None = None,
                    env: dict[str, str] | None = None) -> FrontDoor:
        """`seckill serve` on a free port; returns once GET /healthz answers 200."""
        port = port or free_port()
        proc = await self.spawn("serve", "serve", "--port", str(port), env=env)
        door = FrontDoor(proc, port)
        session = await self.session()

        async def healthy() -> bool:
            assert proc.alive, f"seckill serve exited early:\n{proc.tail()}"
            try:
                async with session.get(door.url + "/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(healthy, timeout=START_TIMEOUT_S, what="the front door's /healthz")
        return door

    async def worker(self, *names: str, env: dict[str, str] | None = None) -> Proc:
        """`seckill worker NAME...`; returns once it is running (the order writer: consuming)."""
        proc = await self.spawn("worker-" + "-".join(names), "worker", *names, env=env)

        async def running() -> bool:
            assert proc.alive, f"seckill worker exited early:\n{proc.tail()}"
            return "workers running" in proc.output()

        await wait_until(running, timeout=START_TIMEOUT_S, what=f"worker {names} to start")
        if "orders" in names:
            await self.wait_consumers(1)
        return proc

    async def wait_consumers(self, count: int) -> None:
        rabbit = await self.rabbit()

        async def consuming() -> bool:
            return await rabbit.consumers() == count

        await wait_until(consuming, timeout=START_TIMEOUT_S,
                         what=f"{count} consumer(s) on the order queue")

    async def reconcile_cli(self, sale_id: str, *, repair: bool) -> tuple[int, dict[str, Any]]:
        """`seckill reconcile SALE_ID [--repair]` as an operator runs it: exit code, report."""
        args = ["reconcile", sale_id] + (["--repair"] if repair else [])
        log = self.tmp / "reconcile.log"
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "seckill", *args, cwd=self.tmp, env=self.env(),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err)
            out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        try:
            return process.returncode, dict(json.loads(out))
        except ValueError:
            raise AssertionError(f"seckill reconcile printed no report: {out!r}\n"
                                 + log.read_text(errors="replace")) from None

    # -- fault injection --------------------------------------------------------------------

    async def proxy(self, upstream_url: str, default_port: int) -> FaultProxy:
        """A FaultProxy in front of the service of `upstream_url`."""
        parts = urlsplit(upstream_url)
        proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    async def private_redis(self) -> PrivateRedis:
        """A redis-server of this test's own; the processes started from now on use it."""
        server = PrivateRedis(free_port(), self.tmp / "redis-data", self.tmp / "redis-server.log")
        self.redis_servers.append(server)
        await server.start()
        self.settings = self.settings.with_(redis_url=server.url)
        return server

    # -- clients ----------------------------------------------------------------------------

    async def session(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        self.sessions.append(session)
        return session

    async def api(self, door: FrontDoor | str) -> Api:
        """A fresh client (fresh connections: a restarted front door has none of the old)."""
        base = door if isinstance(door, str) else door.url
        return Api(await self.session(), base, self.settings.jwt_secret)

    def redis(self) -> Redis:
        """A client of the Redis the test's processes use (closed by `close()`)."""
        if self._redis is None:
            self._redis = Redis.from_url(self.settings.redis_url, decode_responses=True)
        return self._redis

    def keys(self, sale_id: str) -> SaleKeys:
        return KeySpace(self.settings.redis_prefix).sale(int(sale_id))

    async def outbox(self, sale_id: str) -> int:
        """Wins not yet confirmed by RabbitMQ."""
        return int(await self.redis().zcard(self.keys(sale_id).outbox))

    async def rabbit(self) -> Rabbit:
        if self._rabbit is None:
            connection = await aio_pika.connect_robust(self.settings.amqp_url, timeout=10)
            self._rabbit = Rabbit(connection, Topology(self.settings.amqp_prefix,
                                                       self.settings.delivery_limit))
        return self._rabbit

    # -- reports and clean-up ---------------------------------------------------------------

    def logs(self) -> str:
        parts = [f"===== {p.name} (pid {p.pid}, exit {p.process.returncode}) =====\n{p.tail()}"
                 for p in self.procs]
        parts += [f"===== redis-server :{r.port} =====\n"
                  + "\n".join(r.log.read_text(errors="replace").splitlines()[-20:])
                  for r in self.redis_servers if r.log.exists()]
        return "\n".join(parts)

    async def close(self) -> None:
        """Undo everything, each step even if an earlier one failed."""
        for proxy in self.proxies:
            proxy.set_mode(Mode.PASS)  # let the processes shut down cleanly
            proxy.latency_s = 0
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: asyncio.gather(*(p.stop() for p in self.procs)),
            *(proxy.stop for proxy in self.proxies),
            *(session.close for session in self.sessions),
            *(server.stop for server in self.redis_servers),  # data dirs go with tmp_path
        ]
        if self._rabbit is not None:
            steps += [self._rabbit.delete_all, self._rabbit.connection.close]
        if self._redis is not None:
            steps.append(self._redis.aclose)
        if not self.redis_servers:
            steps.append(lambda: drop_keys(self.settings.redis_url, self.settings.redis_prefix))
        steps.append(lambda: close_sales(self.settings.database_url))
        errors: list[BaseException] = []
        for step in steps:
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


async def close_sales(database_url: str) -> None:
    """End the test's sales: their Redis keys are gone, and a front door started later would
    otherwise rebuild every one of them before it listens."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE sales SET cancelled_at = now() WHERE cancelled_at IS NULL")
    finally:
        await conn.close()


async def drop_keys(redis_url: str, prefix: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*", 1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i:i + 1000])
    finally:
        await redis.aclose()


async def eventually(check: Callable[[], Awaitable[Any]], *, within_s: float) -> bool:
    """Whether `check` turns true within `within_s` (like `wait_until`, without failing)."""
    try:
        await wait_until(check, timeout=within_s, what="")
    except AssertionError:
        return False
    return True


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def lap(self) -> float:
        return round(time.monotonic() - self.started, 2)
