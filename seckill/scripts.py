"""The Lua scripts, registered once and called through typed wrappers.

Calls from concurrent requests are micro-batched: every call made in the same event-loop
tick goes to Redis in one pipeline of EVALSHAs, and the purchase attempts of one tick on one
sale are one call of the purchase script. A NOSCRIPT reply (Redis restarted and lost its
script cache) means that call never ran, so it is loaded and retried, safely.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

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
MAX_PURCHASE_COMMANDS = 1024  # sales whose purchase command is kept packed


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


class Deferred(Protocol):
    """A call that packs itself when its pipeline is sent (it may grow until then), and
    takes its reply or failure itself, as a future would."""

    def pack(self) -> bytes: ...
    def done(self) -> bool: ...
    def set_result(self, result: Any) -> None: ...
    def set_exception(self, exc: BaseException) -> None: ...


# (script, the command packed for the wire, where its reply goes); a plain command has no
# script. Deferred calls are packed when their pipeline is flushed.
_Call = tuple[Script | None, bytes, "asyncio.Future[Any] | Deferred"]
_Pending = tuple[Script | None, "bytes | Deferred", "asyncio.Future[Any] | Deferred"]


# How soon after its send a batch must fail for its idempotent calls to be sent again. A
# call that may have run in Redis is known to be done only while its traces are there: a
# purchase's pending record, which goes once its win is stored, and the relay stores a win
# whose answer never came after the outbox's grace period (3 s by default). A resend after
# that could decide the same attempt twice: a second unit taken, or a winner told
# limit_reached. Later failures are failures (503); a Redis restart fails at once.
RESEND_WITHIN_S = 1.0


def resend_window(outbox_grace_ms: int) -> float:
    """RESEND_WITHIN_S, or half the outbox's grace period where that is shorter."""
    return min(RESEND_WITHIN_S, outbox_grace_ms / 2000)


class ScriptRunner:
    """Runs scripts (and plain commands), batching the calls of one loop tick into one
    pipeline."""

    def __init__(self, redis: Redis, max_batch: int = 512, *,
                 resend_within_s: float = RESEND_WITHIN_S) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._resend_within = resend_within_s
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        # hiredis packs in C; redis-py's Python packer was a sixth of the winning path.
        return await self._submit(script, _pack(("EVALSHA", script.sha, len(keys), *keys,
                                                 *args)))

    async def packed(self, script: Script, command: bytes) -> Any:
        """An EVALSHA of `script` that the caller packed itself (see PurchaseCommand)."""
        return await self._submit(script, command)

    async def command(self, *args: Arg) -> Any:
        """A plain command, in the same pipelines as the scripts. Only for a command that
        may run twice (it is sent again if its connection broke): ZREM, HDEL, SET..."""
        return await self._submit(None, _pack(args))

    def defer(self, script: Script, call: Deferred) -> None:
        """Queue `call` in this tick's pipeline, in order with the others; it is packed when
        the pipeline is sent and settled with its reply."""
        self._queue((script, call, call))

    def _submit(self, script: Script | None, command: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue((script, command, fut))
        return fut

    def _queue(self, call: _Pending) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(call)
        if len(self._pending) >= self._max_batch:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        batch: list[_Call] = [(script, command if isinstance(command, bytes) else command.pack(),
                               sink) for script, command, sink in pending]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Call]) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            try:
                retry = await self._execute(batch)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # A pooled connection died (Redis restarted, say). Send the idempotent calls
                # once more on a fresh connection, if it died soon enough (RESEND_WITHIN_S);
                # fail the others.
                late = loop.time() - sent > self._resend_within
                retry = []
                for script, _, fut in batch:
                    if not fut.done() and script is not None and (late or not script.idempotent):
                        _settle(fut, exc=exc)
                again = [call for call in batch if not call[2].done()]
                if again:
                    retry = await self._execute(again)
            if retry:
                for script in {call[0] for call in retry if call[0] is not None}:
                    await self._redis.script_load(script.source)
                still = await self._execute(retry)
                for script, _, fut in still:
                    name = script.name if script is not None else "?"
                    _settle(fut, exc=NoScriptError(f"script {name} would not load"))
        except BaseException as exc:  # a broken connection fails every call of the batch
            for call in batch:
                _settle(call[2], exc=exc)
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
            await conn.send_packed_command(b"".join([call[1] for call in batch]),
                                           check_health=False)
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
                            _settle(call[2], exc=reply)
                        else:
                            _settle(call[2], result=reply)
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


def _settle(fut: asyncio.Future[Any] | Deferred, *, result: Any = None,
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


@dataclass(slots=True)  # not frozen: its __init__ would cost a call per field
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


@dataclass(slots=True)  # not frozen: its __init__ would cost a call per field
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


@dataclass(frozen=True, slots=True)
class Tally:
    """A sale's Redis totals read at one instant; the holders only counted."""

    now_ms: int
    exists: bool
    stock: int
    remaining: int
    restocks: int
    holders: int
    outbox: set[str]
    pending: list[str]


def _bulk(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%b\r\n" % (len(data), data)


_VALUE = b"$%d\r\n%b\r\n"  # a bulk string's template: its length, then itself


class PurchaseCommand:
    """The purchase script's EVALSHA for one sale, packed as hiredis would pack it.

    The sale's seven keys, its id and the default rate limits are the same on every call:
    they are packed once. Each attempt adds two keys and seven arguments, filled in with one
    bytes formatting (hiredis formats every argument with sprintf, which cost more than the
    rest of a call's packing on the winning path).
    """

    __slots__ = ("_args", "_keys", "_sha", "defaults")

    def __init__(self, sha: str, keys: SaleKeys, sale_id: int, defaults: RateDefaults) -> None:
        self.defaults = defaults
        self._sha = _bulk("EVALSHA") + _bulk(sha)
        self._keys = b"".join(_bulk(k) for k in (keys.state, keys.holders, keys.idem,
                                                keys.outbox, keys.orders, keys.used_tokens,
                                                keys.room))
        self._args = b"".join(_bulk(str(v)) for v in (
            sale_id, defaults.user_rate_per_s, defaults.user_burst,
            defaults.address_rate_per_s, defaults.address_burst))

    def pack(self, attempt_keys: list[bytes], attempt_args: list[bytes]) -> bytes:
        """The call for the attempts given as `attempt_keys` and `attempt_args` (each packed
        by `pack_attempt`)."""
        count = len(attempt_keys)
        numkeys = b"%d" % (7 + 2 * count)
        return b"".join([b"*%d\r\n" % (3 + 7 + 2 * count + 5 + 7 * count), self._sha,
                         b"$%d\r\n%b\r\n" % (len(numkeys), numkeys), self._keys,
                         *attempt_keys, self._args, *attempt_args])


def pack_attempt(user_bucket: str, address_bucket: str, user_id: str, quantity: int,
                 field: str, key: str, order_id: str, nonce: str, pow_bits: int
                 ) -> tuple[bytes, bytes]:
    """One attempt's two keys and seven arguments, as bulk strings."""
    ub, ab, user = user_bucket.encode(), address_bucket.encode(), user_id.encode()
    qty, f, k = b"%d" % quantity, field.encode(), key.encode()
    oid, n, pw = order_id.encode(), nonce.encode(), b"%d" % pow_bits
    return (_TWO % (len(ub), ub, len(ab), ab),
            _SEVEN % (len(user), user, len(qty), qty, len(f), f, len(k), k, len(oid), oid,
                      len(n), n, len(pw), pw))


_TWO, _SEVEN = _VALUE * 2, _VALUE * 7
MAX_ATTEMPTS = 256  # attempts in one call of the purchase script


class PurchaseBatch:
    """The attempts on one sale of one moment: one call of the purchase script, packed when
    the runner sends its pipeline; each attempt's future gets its own result."""

    __slots__ = ("_args", "_futures", "_keys", "closed", "command")

    def __init__(self, command: PurchaseCommand) -> None:
        self.command = command
        self._keys: list[bytes] = []
        self._args: list[bytes] = []
        self._futures: list[asyncio.Future[PurchaseResult]] = []
        self.closed = False

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, keys: bytes, args: bytes) -> asyncio.Future[PurchaseResult]:
        fut: asyncio.Future[PurchaseResult] = asyncio.get_running_loop().create_future()
        self._keys.append(keys)
        self._args.append(args)
        self._futures.append(fut)
        return fut

    def pack(self) -> bytes:
        self.closed = True
        return self.command.pack(self._keys, self._args)

    def done(self) -> bool:
        return all(fut.done() for fut in self._futures)

    def set_result(self, reply: list[Any]) -> None:
        codes = _PURCHASE_CODES
        for i, fut in enumerate(self._futures):
            if not fut.done():
                at = 4 * i
                fut.set_result(PurchaseResult(codes[reply[at]], reply[at + 1],
                                              int(reply[at + 2]), reply[at + 3]))

    def set_exception(self, exc: BaseException) -> None:
        for fut in self._futures:
            if not fut.done():
                fut.set_exception(exc)


class Scripts:
    """Typed entry points to every script in `lua/`."""

    def __init__(self, runner: ScriptRunner) -> None:
        self._run = runner
        self._purchase = Script.load("purchase")
        self._release = Script.load("release")
        self._load_sale = Script.load("load_sale")
        self._snapshot = Script.load("snapshot")
        self._tally = Script.load("tally")
        self._remaining = Script.load("remaining")
        self._adjust = Script.load("adjust_holdings", idempotent=False)
        self._purchase_commands: dict[str, PurchaseCommand] = {}  # by the sale's state key
        self._open_batches: dict[str, PurchaseBatch] = {}  # this tick's, by state key

    async def purchase(self, keys: SaleKeys, a: Attempt,
                       defaults: RateDefaults = RateDefaults()) -> PurchaseResult:
        """Decide one attempt. The attempts on a sale made in the same loop tick are decided
        by one call of the script, in the order they were made."""
        batch = self._open_batches.get(keys.state)
        if batch is None or batch.closed or len(batch) >= MAX_ATTEMPTS \
                or batch.command.defaults is not defaults:
            command = self._purchase_commands.get(keys.state)
            if command is None or command.defaults is not defaults:
                if len(self._purchase_commands) >= MAX_PURCHASE_COMMANDS:
                    self._purchase_commands.clear()
                command = self._purchase_commands[keys.state] = PurchaseCommand(
                    self._purchase.sha, keys, a.sale_id, defaults)
            batch = PurchaseBatch(command)
            fresh = True
        else:
            fresh = False
        key = a.idempotency_key
        user_bucket = keys.user_bucket(a.user_id)
        fut = batch.add(*pack_attempt(
            user_bucket, keys.address_bucket(a.address) if a.address else user_bucket,
            a.user_id, a.quantity, idempotency_field(a.user_id, key) if key else "", key or "",
            a.order_id, a.token_nonce, a.pow_bits))
        if fresh:  # queued once it holds an attempt: the runner may send it at once
            if len(self._open_batches) >= MAX_PURCHASE_COMMANDS:
                self._open_batches.clear()
            self._open_batches[keys.state] = batch
            self._run.defer(self._purchase, batch)
        return await fut

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

    async def tally(self, keys: SaleKeys) -> Tally:
        raw = await self._run(self._tally, [keys.state, keys.holders, keys.outbox,
                                            keys.orders], [])
        return Tally(now_ms=int(raw[0]), exists=bool(raw[1]), stock=int(raw[2]),
                     remaining=int(raw[3]), restocks=int(raw[4]), holders=int(raw[5]),
                     outbox=set(raw[6]), pending=list(raw[7]))

    async def adjust_holdings(self, keys: SaleKeys, deltas: dict[str, int], *, sale_id: int,
                              channel: str) -> tuple[AdjustCode, int]:
        args: list[Arg] = [channel, sale_id]
        for user, delta in deltas.items():
            args += [user, delta]
        raw = await self._run(self._adjust, [keys.state, keys.holders], args)
        return AdjustCode(raw[0]), int(raw[1])
