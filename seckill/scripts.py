"""The Lua scripts, registered once and called through typed wrappers.

Calls from concurrent requests are micro-batched: every call made in the same event-loop
tick goes to Redis in one pipeline of EVALSHAs. A NOSCRIPT reply (Redis restarted and lost
its script cache) means that call never ran, so it is loaded and retried, safely.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seckill.keys import SaleKeys, idempotency_field
from seckill.resources import lua_source

try:  # private in redis-py: without it, replies are read through the connection
    from redis._parsers import _AsyncHiredisParser

    _FAST_PARSERS: tuple[type, ...] = (_AsyncHiredisParser,)
except ImportError:  # pragma: no cover - depends on the redis-py release
    _FAST_PARSERS = ()

Arg = str | int


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    # Running it twice has the effect of running it once: a call whose connection broke
    # (and that may or may not have run) can be sent again.
    idempotent: bool = True

    @classmethod
    def load(cls, name: str, *, idempotent: bool = True) -> Script:
        source = lua_source(name)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest(), idempotent)


_Call = tuple[Script, Sequence[str], Sequence[Arg], "asyncio.Future[Any]"]


class ScriptRunner:
    """Runs scripts, batching the calls of one loop tick into one pipeline."""

    def __init__(self, redis: Redis, max_batch: int = 512) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, fut))
        if len(self._pending) >= self._max_batch:
            self._flush()
        return await fut

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Call]) -> None:
        try:
            try:
                retry = await self._execute(batch)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # A pooled connection died (Redis restarted, say). Send the idempotent calls
                # once more on a fresh connection; fail the others.
                retry = []
                for call in batch:
                    if not call[3].done() and not call[0].idempotent:
                        _settle(call[3], exc=exc)
                again = [call for call in batch if not call[3].done()]
                if again:
                    retry = await self._execute(again)
            if retry:
                for script in {call[0] for call in retry}:
                    await self._redis.script_load(script.source)
                still = await self._execute(retry)
                for call in still:
                    _settle(call[3], exc=NoScriptError(f"script {call[0].name} would not load"))
        except BaseException as exc:  # a broken connection fails every call of the batch
            for call in batch:
                _settle(call[3], exc=exc)
            if not isinstance(exc, Exception):
                raise

    async def _execute(self, batch: list[_Call]) -> list[_Call]:
        """Run a batch; settle each call's future, and return the calls that met NOSCRIPT.

        The batch is written on one pooled connection as a single packed pipeline and the
        replies read back in order: redis-py's Pipeline object costs more per command than
        the script itself on this path.
        """
        pool = self._redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        retry: list[_Call] = []
        try:
            # hiredis packs in C; redis-py's Python packer was a sixth of the winning path.
            packed = b"".join([_pack(("EVALSHA", script.sha, len(keys), *keys, *args))
                               for script, keys, args, _ in batch])
            await conn.send_packed_command(packed, check_health=False)
            read = _reply_reader(conn)
            try:
                # One bound for the whole batch: redis-py's read_response arms and cancels
                # a timer per reply, which cost more than the rest of the read.
                async with asyncio.timeout(conn.socket_timeout):
                    for call in batch:
                        reply = await read()
                        if isinstance(reply, NoScriptError):
                            retry.append(call)
                        elif isinstance(reply, ResponseError):  # that call fails, not the rest
                            _settle(call[3], exc=reply)
                        else:
                            _settle(call[3], result=reply)
            except TimeoutError:
                raise RedisTimeoutError("timeout reading script replies") from None
            except OSError as exc:
                raise RedisConnectionError(f"error reading script replies: {exc!r}") from exc
        except BaseException:
            await conn.disconnect()  # replies may be half-read: never reuse the connection
            raise
        finally:
            await pool.release(conn)
        return retry

    async def close(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _reply_reader(conn: Any) -> Callable[[], Awaitable[Any]]:
    """The next reply, with Redis errors returned rather than raised: the hiredis parser's
    own read when the connection has one (it is redis-py's default when hiredis is
    installed, and seckill requires hiredis), else the connection's read."""
    parser = getattr(conn, "_parser", None)
    if _FAST_PARSERS and isinstance(parser, _FAST_PARSERS):
        return parser.read_response  # type: ignore[attr-defined,no-any-return]

    async def read() -> Any:
        try:
            return await conn.read_response(timeout=math.inf)
        except ResponseError as exc:
            return exc

    return read


def _pack(command: tuple[Arg, ...]) -> bytes:
    packed: bytes = pack_command(command)  # type: ignore[arg-type]  # stub wants a 1-tuple
    return packed


def _settle(fut: asyncio.Future[Any], *, result: Any = None,
            exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class PurchaseCode(StrEnum):
    WON = "won"
    REPLAY = "replay"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NOT_LOADED = "not_loaded"
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"
    ENDED = "ended"
    RATE_LIMITED = "rate_limited"
    NOT_ADMITTED = "not_admitted"
    TOKEN_REQUIRED = "token_required"
    TOKEN_USED = "token_used"
    POW_REQUIRED = "pow_required"
    LIMIT_REACHED = "limit_reached"
    SOLD_OUT = "sold_out"


@dataclass(frozen=True, slots=True)
class RateDefaults:
    """Rate limits applied while a sale has no state in Redis (API.md's defaults)."""

    user_rate_per_s: int = 5
    user_burst: int = 10
    address_rate_per_s: int = 0
    address_burst: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One purchase attempt, as the purchase script needs it."""

    sale_id: int
    user_id: str
    quantity: int
    order_id: str
    idempotency_key: str | None = None
    address: str | None = None
    token_nonce: str = ""
    pow_bits: int = 0


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    code: PurchaseCode
    order_id: str
    quantity: int
    order_json: str


# By value, without the Enum machinery's call (a microsecond on every purchase).
_PURCHASE_CODES = {code.value: code for code in PurchaseCode}


class ReleaseCode(StrEnum):
    RELEASED = "released"
    ALREADY = "already"
    NOT_LOADED = "not_loaded"


class LoadCode(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    UPDATED = "updated"
    NOT_LOADED = "not_loaded"
    BELOW_HELD = "below_held"


@dataclass(frozen=True, slots=True)
class SaleDefinition:
    """What Redis needs to know of a sale to decide purchases."""

    stock: int
    starts_ms: int
    ends_ms: int
    per_user_limit: int
    cancelled: bool
    price_cents: int
    payment_timeout_s: int
    expire_at_s: int
    user_rate_per_s: int = 5
    user_burst: int = 10
    address_rate_per_s: int = 0
    address_burst: int = 0
    requires_token: bool = False
    pow_bits: int = 0
    waiting_room: bool = False
    admit_per_s: int = 0


@dataclass(frozen=True, slots=True)
class Holdings:
    """A sale's holdings as PostgreSQL (and the surviving outbox) know them, for a rebuild."""

    holders: dict[str, int]
    idempotency: dict[str, str]
    released: list[str]


class AdjustCode(StrEnum):
    ADJUSTED = "adjusted"
    NOT_LOADED = "not_loaded"
    BELOW_ZERO = "below_zero"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A sale's Redis state read at one instant."""

    now_ms: int
    exists: bool
    stock: int
    remaining: int
    holders: dict[str, int]
    outbox: dict[str, int]
    pending: list[str]
    released: set[str]


class Scripts:
    """Typed entry points to every script in `lua/`."""

    def __init__(self, runner: ScriptRunner) -> None:
        self._run = runner
        self._purchase = Script.load("purchase")
        self._release = Script.load("release")
        self._load_sale = Script.load("load_sale")
        self._snapshot = Script.load("snapshot")
        self._remaining = Script.load("remaining")
        self._adjust = Script.load("adjust_holdings", idempotent=False)

    async def purchase(self, keys: SaleKeys, a: Attempt,
                       defaults: RateDefaults = RateDefaults()) -> PurchaseResult:
        key = a.idempotency_key
        field = idempotency_field(a.user_id, key) if key else ""
        user_bucket = keys.user_bucket(a.user_id)
        raw = await self._run(
            self._purchase,
            [keys.state, keys.holders, keys.idem, keys.outbox, keys.orders, user_bucket,
             keys.address_bucket(a.address) if a.address else user_bucket,
             keys.used_tokens, keys.room],
            [a.user_id, a.quantity, field, key or "", a.order_id, a.sale_id, a.token_nonce,
             a.pow_bits, defaults.user_rate_per_s, defaults.user_burst,
             defaults.address_rate_per_s, defaults.address_burst],
        )
        return PurchaseResult(_PURCHASE_CODES[raw[0]], raw[1], int(raw[2]), raw[3])

    async def release(self, keys: SaleKeys, *, order_id: str, user_id: str, quantity: int,
                      sale_id: int, channel: str) -> ReleaseCode:
        raw = await self._run(self._release,
                              [keys.state, keys.holders, keys.released, keys.orders],
                              [order_id, user_id, quantity, channel, sale_id])
        return ReleaseCode(raw)

    async def load_sale(self, keys: SaleKeys, sale: SaleDefinition, *, update: bool = False,
                        holdings: Holdings | None = None) -> tuple[LoadCode, int]:
        args: list[Arg] = [
            "update" if update else "create", sale.stock, sale.starts_ms, sale.ends_ms,
            sale.per_user_limit, int(sale.cancelled), sale.price_cents, sale.payment_timeout_s,
            sale.expire_at_s, sale.user_rate_per_s, sale.user_burst, sale.address_rate_per_s,
            sale.address_burst, int(sale.requires_token), sale.pow_bits, int(sale.waiting_room),
            sale.admit_per_s,
        ]
        h = holdings or Holdings({}, {}, [])
        args.append(len(h.holders))
        for user, units in h.holders.items():
            args += [user, units]
        args.append(len(h.idempotency))
        for field, value in h.idempotency.items():
            args += [field, value]
        args.append(len(h.released))
        args += h.released
        raw = await self._run(self._load_sale, keys.all(), args)
        return LoadCode(raw[0]), int(raw[1])

    async def remaining(self, keys: SaleKeys) -> int | None:
        raw = await self._run(self._remaining, [keys.state], [])
        return None if raw is None else int(raw)

    async def snapshot(self, keys: SaleKeys) -> Snapshot:
        raw = await self._run(self._snapshot, [keys.state, keys.holders, keys.outbox,
                                               keys.orders, keys.released], [])
        flat_h, flat_o = raw[4], raw[5]
        return Snapshot(
            now_ms=int(raw[0]), exists=bool(raw[1]), stock=int(raw[2]), remaining=int(raw[3]),
            holders={flat_h[i]: int(flat_h[i + 1]) for i in range(0, len(flat_h), 2)},
            outbox={flat_o[i]: int(float(flat_o[i + 1])) for i in range(0, len(flat_o), 2)},
            pending=list(raw[6]), released=set(raw[7]))

    async def adjust_holdings(self, keys: SaleKeys, deltas: dict[str, int], *, sale_id: int,
                              channel: str) -> tuple[AdjustCode, int]:
        args: list[Arg] = [channel, sale_id]
        for user, delta in deltas.items():
            args += [user, delta]
        raw = await self._run(self._adjust, [keys.state, keys.holders], args)
        return AdjustCode(raw[0]), int(raw[1])
