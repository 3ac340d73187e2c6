"""Each Lua script through its typed wrapper, against real Redis, in a key prefix of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from seckill import scripts as scripts_module
from seckill.keys import KeySpace, SaleKeys, idempotency_field
from seckill.order_ids import new_order_id
from seckill.scripts import (
    Attempt,
    Holdings,
    LoadCode,
    PurchaseCode,
    PurchaseResult,
    ReleaseCode,
    SaleDefinition,
    Script,
    ScriptRunner,
    Scripts,
)
from tests.support import unique

SALE_ID = 7
HOUR_MS = 3_600_000


@dataclass
class Lua:
    redis: Redis
    space: KeySpace
    keys: SaleKeys
    scripts: Scripts
    now_ms: int
    runner: ScriptRunner

    def sale(self, **changes: Any) -> SaleDefinition:
        """A live sale of 5 units, 2 per user; rate limits off unless a test turns them on."""
        base = SaleDefinition(
            stock=5, starts_ms=self.now_ms - HOUR_MS, ends_ms=self.now_ms + HOUR_MS,
            per_user_limit=2, cancelled=False, price_cents=250, payment_timeout_s=900,
            expire_at_s=self.now_ms // 1000 + 86_400, user_rate_per_s=0, user_burst=0)
        return replace(base, **changes)

    async def load(self, sale: SaleDefinition | None = None, *, update: bool = False,
                   holdings: Holdings | None = None) -> tuple[LoadCode, int]:
        return await self.scripts.load_sale(self.keys, sale or self.sale(), update=update,
                                            holdings=holdings)

    async def buy(self, user: str, quantity: int = 1, key: str | None = None) -> PurchaseResult:
        return await self.scripts.purchase(
            self.keys, Attempt(SALE_ID, user, quantity, new_order_id(SALE_ID), key))

    async def release(self, order_id: str, user: str, quantity: int) -> ReleaseCode:
        return await self.scripts.release(self.keys, order_id=order_id, user_id=user,
                                          quantity=quantity, sale_id=SALE_ID,
                                          channel=self.space.restock_channel)

    async def remaining(self) -> int | None:
        value = await self.redis.hget(self.keys.state, "remaining")
        return None if value is None else int(value)

    async def holders(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.redis.hgetall(self.keys.holders)).items()}

    async def everything(self) -> dict[str, Any]:
        """Every key of the sale, to prove a refusal wrote nothing."""
        found: dict[str, Any] = {}
        for name in await self.redis.keys(f"{self.space.prefix}:*"):
            kind = await self.redis.type(name)
            if kind == "hash":
                found[name] = await self.redis.hgetall(name)
            elif kind == "set":
                found[name] = await self.redis.smembers(name)
            elif kind == "zset":
                found[name] = await self.redis.zrange(name, 0, -1, withscores=True)
            else:
                found[name] = kind
        return found


@pytest.fixture
async def lua(redis: Redis) -> AsyncIterator[Lua]:
    space = KeySpace(unique("lua"))
    runner = ScriptRunner(redis)
    seconds, micros = await redis.time()
    yield Lua(redis, space, space.sale(SALE_ID), Scripts(runner),
              seconds * 1000 + micros // 1000, runner)
    await runner.close()
    keys = [k async for k in redis.scan_iter(f"{space.prefix}:*")]
    if keys:
        await redis.delete(*keys)


async def test_a_win_takes_stock_and_fills_the_outbox(lua: Lua) -> None:
    assert await lua.load() == (LoadCode.CREATED, 5)
    won = await lua.buy("alice", 2, key="k1")

    assert (won.code, won.quantity) == (PurchaseCode.WON, 2)
    order = json.loads(won.order_json)
    assert order == {"order_id": won.order_id, "sale_id": str(SALE_ID), "user_id": "alice",
                     "quantity": 2, "amount_cents": 500, "created_ms": order["created_ms"],
                     "pay_by_ms": order["created_ms"] + 900_000, "idempotency_key": "k1"}
    assert abs(order["created_ms"] - lua.now_ms) < 60_000
    assert await lua.remaining() == 3
    assert await lua.holders() == {"alice": 2}
    assert await lua.redis.zrange(lua.keys.outbox, 0, -1, withscores=True) == [
        (won.order_id, float(order["created_ms"]))]
    assert await lua.redis.hgetall(lua.keys.orders) == {won.order_id: won.order_json}
    assert await lua.redis.hgetall(lua.keys.idem) == {
        idempotency_field("alice", "k1"): f"{won.order_id}:2"}

    plain = await lua.buy("bob")
    assert plain.code is PurchaseCode.WON
    assert json.loads(plain.order_json)["idempotency_key"] == ""
    assert len(await lua.redis.hgetall(lua.keys.idem)) == 1
    assert await lua.remaining() == 2


# Each case holds every refusal from its own onwards; the first in the contract's order wins.
REFUSALS = {
    "cancelled": dict(cancelled=True, starts_ms=+HOUR_MS, ends_ms=-HOUR_MS),
    "not_started": dict(starts_ms=+HOUR_MS, ends_ms=-HOUR_MS),
    "ended": dict(ends_ms=-HOUR_MS),
    "limit_reached": {},
    "sold_out": {},
}


@pytest.mark.parametrize("code", list(REFUSALS))
async def test_refusals_come_in_the_contract_order(lua: Lua, code: str) -> None:
    times = REFUSALS[code]
    changes = {k: lua.now_ms + v if k.endswith("_ms") else v for k, v in times.items()}
    # "full" holds the limit and the sale's whole stock: limit_reached for her,
    # sold_out for anyone else.
    sale = lua.sale(stock=2, per_user_limit=2, **changes)
    assert await lua.load(sale, holdings=Holdings({"full": 2}, {}, [])) == (LoadCode.CREATED, 0)
    before = await lua.everything()

    user = "someone" if code == "sold_out" else "full"
    refused = await lua.buy(user, 1, key="fresh-key")

    assert refused.code is PurchaseCode(code)
    assert refused.order_id == ""
    assert await lua.everything() == before, "a refusal wrote to Redis"


async def test_sold_out_and_limit_depend_on_the_quantity(lua: Lua) -> None:
    await lua.load(lua.sale(stock=3, per_user_limit=2))
    assert (await lua.buy("alice", 3)).code is PurchaseCode.LIMIT_REACHED
    assert (await lua.buy("alice", 2)).code is PurchaseCode.WON
    assert (await lua.buy("alice", 1)).code is PurchaseCode.LIMIT_REACHED
    assert (await lua.buy("bob", 2)).code is PurchaseCode.SOLD_OUT
    assert (await lua.buy("bob", 1)).code is PurchaseCode.WON
    assert (await lua.buy("carol", 1)).code is PurchaseCode.SOLD_OUT
    assert (await lua.remaining(), await lua.holders()) == (0, {"alice": 2, "bob": 1})


@pytest.mark.parametrize("state", ["cancelled", "not_started", "ended", "sold_out", "limit"])
async def test_replay_comes_before_every_refusal(lua: Lua, state: str) -> None:
    await lua.load(lua.sale(stock=3, per_user_limit=2))
    won = await lua.buy("alice", 2, key="k")
    assert won.code is PurchaseCode.WON
    if state == "sold_out":
        assert (await lua.buy("bob", 1)).code is PurchaseCode.WON
    elif state != "limit":
        shifted = {"cancelled": dict(cancelled=True),
                   "not_started": dict(starts_ms=lua.now_ms + HOUR_MS,
                                       ends_ms=lua.now_ms + 2 * HOUR_MS),
                   "ended": dict(ends_ms=lua.now_ms - 1)}[state]
        assert (await lua.load(lua.sale(stock=3, per_user_limit=2, **shifted),
                               update=True))[0] is LoadCode.UPDATED
    before = await lua.everything()

    replay = await lua.buy("alice", 2, key="k")
    assert (replay.code, replay.order_id, replay.quantity) == (
        PurchaseCode.REPLAY, won.order_id, 2)
    conflict = await lua.buy("alice", 1, key="k")
    assert (conflict.code, conflict.order_id, conflict.quantity) == (
        PurchaseCode.IDEMPOTENCY_CONFLICT, won.order_id, 2)
    assert await lua.everything() == before


async def test_replay_survives_the_release_of_its_order(lua: Lua) -> None:
    await lua.load()
    won = await lua.buy("alice", 1, key="k")
    assert await lua.release(won.order_id, "alice", 1) is ReleaseCode.RELEASED
    replay = await lua.buy("alice", 1, key="k")
    assert (replay.code, replay.order_id) == (PurchaseCode.REPLAY, won.order_id)
    assert await lua.remaining() == 5


async def test_rate_limit_comes_before_replay(lua: Lua) -> None:
    await lua.load(lua.sale(user_rate_per_s=1, user_burst=1))
    won = await lua.buy("alice", 1, key="k")
    assert won.code is PurchaseCode.WON
    limited = await lua.buy("alice", 1, key="k")
    assert limited.code is PurchaseCode.RATE_LIMITED
    assert 0 < limited.quantity <= 1000, "the wait in ms until a token is back"
    assert (await lua.buy("bob", 1)).code is PurchaseCode.WON
    assert (await lua.remaining(), await lua.holders()) == (3, {"alice": 1, "bob": 1})


async def test_a_sale_without_state_is_not_loaded(lua: Lua) -> None:
    before = await lua.everything()
    result = await lua.buy("alice", 1, key="k")
    assert (result.code, result.order_id) == (PurchaseCode.NOT_LOADED, "")
    assert {k: v for k, v in (await lua.everything()).items() if ":rate:" not in k} == before
    assert await lua.release(new_order_id(SALE_ID), "alice", 1) is ReleaseCode.NOT_LOADED
    assert await lua.remaining() is None


async def test_release_gives_units_back_exactly_once(lua: Lua) -> None:
    await lua.load(lua.sale(per_user_limit=3))
    first = await lua.buy("alice", 1)
    second = await lua.buy("alice", 2)
    assert await lua.remaining() == 2

    assert await lua.release(second.order_id, "alice", 2) is ReleaseCode.RELEASED
    assert (await lua.remaining(), await lua.holders()) == (4, {"alice": 1})
    assert await lua.redis.smembers(lua.keys.released) == {second.order_id}
    assert await lua.redis.hkeys(lua.keys.orders) == [first.order_id]
    before = await lua.everything()
    assert await lua.release(second.order_id, "alice", 2) is ReleaseCode.ALREADY
    assert await lua.everything() == before

    assert await lua.release(first.order_id, "alice", 1) is ReleaseCode.RELEASED
    assert (await lua.remaining(), await lua.holders()) == (5, {})
    # The units are buyable again, by anyone, up to the limit.
    assert (await lua.buy("alice", 3)).code is PurchaseCode.WON
    assert (await lua.buy("bob", 2)).code is PurchaseCode.WON
    assert (await lua.buy("carol", 1)).code is PurchaseCode.SOLD_OUT


async def test_concurrent_releases_of_one_order_count_once(lua: Lua) -> None:
    await lua.load()
    won = await lua.buy("alice", 2)
    codes = await asyncio.gather(*(lua.release(won.order_id, "alice", 2) for _ in range(20)))
    assert sorted(codes) == sorted([ReleaseCode.RELEASED] + [ReleaseCode.ALREADY] * 19)
    assert (await lua.remaining(), await lua.holders()) == (5, {})


async def test_load_sale_create_exists_update(lua: Lua) -> None:
    holdings = Holdings({"alice": 2, "bob": 1}, {idempotency_field("alice", "k"): "X-7:2"},
                        ["gone-7"])
    assert await lua.load(holdings=holdings) == (LoadCode.CREATED, 2)
    assert await lua.holders() == {"alice": 2, "bob": 1}
    assert await lua.redis.smembers(lua.keys.released) == {"gone-7"}
    replay = await lua.buy("alice", 2, key="k")
    assert (replay.code, replay.order_id) == (PurchaseCode.REPLAY, "X-7")
    assert await lua.release("gone-7", "alice", 2) is ReleaseCode.ALREADY

    before = await lua.everything()
    assert await lua.load(lua.sale(stock=50), holdings=Holdings({}, {}, [])) == (
        LoadCode.EXISTS, 2)
    assert await lua.everything() == before

    assert await lua.load(lua.sale(stock=8, per_user_limit=4), update=True) == (
        LoadCode.UPDATED, 5)
    assert await lua.redis.hmget(lua.keys.state, "stock", "remaining", "limit") == [
        "8", "5", "4"]
    assert await lua.holders() == {"alice": 2, "bob": 1}
    assert await lua.load(lua.sale(stock=3), update=True) == (LoadCode.UPDATED, 0)

    before = await lua.everything()
    code, _ = await lua.load(lua.sale(stock=2), update=True)
    assert code is LoadCode.BELOW_HELD
    assert await lua.everything() == before


async def test_load_sale_update_without_state_is_not_loaded(lua: Lua) -> None:
    assert (await lua.load(update=True))[0] is LoadCode.NOT_LOADED
    assert await lua.everything() == {}


async def test_load_sale_never_shows_negative_stock(lua: Lua) -> None:
    code, remaining = await lua.load(lua.sale(stock=2), holdings=Holdings({"a": 3}, {}, []))
    assert (code, remaining, await lua.remaining()) == (LoadCode.CREATED, 0, 0)


async def test_load_sale_sets_every_key_to_expire(lua: Lua) -> None:
    await lua.load(holdings=Holdings({"a": 1}, {idempotency_field("a", "k"): "X-7:1"}, ["r"]))
    await lua.buy("b")
    expire_at = lua.sale().expire_at_s
    await lua.load(update=True)
    for key in lua.keys.all():
        assert await lua.redis.exists(key), key
        assert abs(await lua.redis.expiretime(key) - expire_at) <= 1, key


async def test_scripts_come_back_after_script_flush(lua: Lua) -> None:
    await lua.load()
    await lua.redis.script_flush()
    assert (await lua.buy("alice")).code is PurchaseCode.WON

    await lua.redis.script_flush()
    results = await asyncio.gather(*(lua.buy(f"user{i}") for i in range(20)))
    codes = [r.code for r in results]
    assert codes.count(PurchaseCode.WON) == 4
    assert codes.count(PurchaseCode.SOLD_OUT) == 16
    assert await lua.remaining() == 0
    assert sum((await lua.holders()).values()) == 5

    await lua.redis.script_flush()
    assert (await lua.load(update=True))[0] is LoadCode.UPDATED
    winner = next(i for i, r in enumerate(results) if r.code is PurchaseCode.WON)
    await lua.redis.script_flush()
    assert await lua.release(results[winner].order_id, f"user{winner}", 1) \
        is ReleaseCode.RELEASED
    assert await lua.remaining() == 1


async def test_a_resent_winning_attempt_answers_the_same_win(lua: Lua) -> None:
    """The runner resends a call whose connection broke; the script may have run already."""
    await lua.load()
    attempt = Attempt(SALE_ID, "resent", 2, new_order_id(SALE_ID))
    first = await lua.scripts.purchase(lua.keys, attempt)
    again = await lua.scripts.purchase(lua.keys, attempt)
    assert first.code is again.code is PurchaseCode.WON
    assert (again.order_id, again.quantity, again.order_json) == \
        (first.order_id, first.quantity, first.order_json)
    assert await lua.remaining() == 3
    assert await lua.holders() == {"resent": 2}


async def test_remaining_reads_what_purchases_left(lua: Lua) -> None:
    assert await lua.scripts.remaining(lua.keys) is None  # no state: the caller rebuilds
    await lua.load()
    assert await lua.scripts.remaining(lua.keys) == 5
    # Reads and purchases of one moment share a pipeline, in the order they were made.
    before, won, after = await asyncio.gather(
        lua.scripts.remaining(lua.keys), lua.buy("alice", 2), lua.scripts.remaining(lua.keys))
    assert (before, won.code, after) == (5, PurchaseCode.WON, 3)
    assert await lua.remaining() == 3


@pytest.mark.parametrize("reader", ["hiredis parser", "connection"])
async def test_batched_replies_script_errors_and_noscript(
        lua: Lua, monkeypatch: pytest.MonkeyPatch, reader: str) -> None:
    """Replies read from the hiredis parser, or through the connection (a redis-py without
    that private parser): the same answers, a script error fails its own call only,
    NOSCRIPT is reloaded."""
    if reader == "connection":
        monkeypatch.setattr(scripts_module, "_FAST_PARSERS", ())
    await lua.load()
    await lua.redis.script_flush()
    results = await asyncio.gather(*(lua.buy(f"user{i}") for i in range(7)))
    assert [r.code for r in results].count(PurchaseCode.WON) == 5
    assert await lua.scripts.remaining(lua.keys) == 0
    # A script error (here: called with too few keys) fails its own call only, not the
    # others of its batch.
    broken, late = await asyncio.gather(
        lua.runner(Script.load("purchase"), [lua.keys.state], ["x", 1]), lua.buy("late"),
        return_exceptions=True)
    assert isinstance(broken, ResponseError)
    assert isinstance(late, PurchaseResult) and late.code is PurchaseCode.SOLD_OUT


# -- attempts decided together: one call of the script for a sale's attempts of one tick --

class CallCounter:
    """Counts the purchase script's calls the runner queues (one per batch of attempts)."""

    def __init__(self, runner: ScriptRunner, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[Any] = []
        queue = runner.defer

        def counted(script: Script, call: Any) -> None:
            self.batches.append(call)
            queue(script, call)

        monkeypatch.setattr(runner, "defer", counted)

    @property
    def calls(self) -> list[int]:
        """How many attempts each call carried."""
        return [len(batch) for batch in self.batches]


async def together(lua: Lua, *attempts: tuple[str, int, str | None]) -> list[PurchaseResult]:
    return list(await asyncio.gather(*(lua.buy(user, qty, key) for user, qty, key in attempts)))


async def test_attempts_of_one_moment_are_one_call(lua: Lua,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CallCounter(lua.runner, monkeypatch)
    await lua.load(lua.sale(stock=3))
    results = await together(lua, *[(f"u{i}", 1, None) for i in range(5)])
    assert counter.calls == [5]
    assert [r.code for r in results] == [PurchaseCode.WON] * 3 + [PurchaseCode.SOLD_OUT] * 2
    assert [r.quantity for r in results[3:]] == [0, 0], "sold_out tells what remains"
    assert (await lua.remaining(), await lua.holders()) == (0, {"u0": 1, "u1": 1, "u2": 1})
    assert await lua.redis.zcard(lua.keys.outbox) == 3
    assert sorted(await lua.redis.hkeys(lua.keys.orders)) == sorted(
        r.order_id for r in results[:3])


async def test_a_later_attempt_sees_what_an_earlier_one_of_the_call_did(lua: Lua) -> None:
    await lua.load(lua.sale(stock=10, per_user_limit=2))
    results = await together(lua, ("alice", 1, None), ("alice", 1, None), ("alice", 1, None),
                             ("bob", 1, "k"), ("bob", 1, "k"), ("bob", 2, "k"),
                             ("carol", 2, None), ("carol", 1, None))
    assert [r.code for r in results] == [
        PurchaseCode.WON, PurchaseCode.WON, PurchaseCode.LIMIT_REACHED,
        PurchaseCode.WON, PurchaseCode.REPLAY, PurchaseCode.IDEMPOTENCY_CONFLICT,
        PurchaseCode.WON, PurchaseCode.LIMIT_REACHED]
    assert results[4].order_id == results[5].order_id == results[3].order_id
    assert (results[4].quantity, results[5].quantity) == (1, 1)
    assert await lua.holders() == {"alice": 2, "bob": 1, "carol": 2}
    assert await lua.remaining() == 5
    assert await lua.redis.hgetall(lua.keys.idem) == {
        idempotency_field("bob", "k"): f"{results[3].order_id}:1"}


async def test_a_rate_limit_counts_the_attempts_of_the_same_call(lua: Lua) -> None:
    await lua.load(lua.sale(stock=10, per_user_limit=5, user_rate_per_s=1, user_burst=2))
    results = await together(lua, *[("alice", 1, None)] * 4, ("bob", 1, None))
    assert [r.code for r in results] == [PurchaseCode.WON, PurchaseCode.WON,
                                         PurchaseCode.RATE_LIMITED, PurchaseCode.RATE_LIMITED,
                                         PurchaseCode.WON]
    assert all(0 < r.quantity <= 1000 for r in results[2:4])
    bucket = lua.keys.user_bucket("alice")
    assert 0 < await lua.redis.pttl(bucket) <= 2000, "the bucket lives until it is full"


async def test_a_purchase_token_buys_once_within_a_call(lua: Lua) -> None:
    await lua.load(lua.sale(stock=10, per_user_limit=5, requires_token=True))
    attempts = [Attempt(SALE_ID, user, 1, new_order_id(SALE_ID), token_nonce=nonce)
                for user, nonce in (("alice", "n1"), ("alice", "n1"), ("bob", ""),
                                    ("bob", "n2"))]
    results = await asyncio.gather(*(lua.scripts.purchase(lua.keys, a) for a in attempts))
    assert [r.code for r in results] == [PurchaseCode.WON, PurchaseCode.TOKEN_USED,
                                         PurchaseCode.TOKEN_REQUIRED, PurchaseCode.WON]
    assert await lua.redis.hgetall(lua.keys.used_tokens) == {
        "n1": results[0].order_id, "n2": results[3].order_id}


async def test_a_resent_call_answers_the_same_wins(lua: Lua) -> None:
    """A whole call sent twice (its connection broke after Redis ran it): the same wins,
    the stock taken once, the refusals decided again."""
    await lua.load(lua.sale(stock=2))
    attempts = [Attempt(SALE_ID, f"u{i}", 1, new_order_id(SALE_ID)) for i in range(3)]
    first = await asyncio.gather(*(lua.scripts.purchase(lua.keys, a) for a in attempts))
    again = await asyncio.gather(*(lua.scripts.purchase(lua.keys, a) for a in attempts))
    assert [r.code for r in first] == [PurchaseCode.WON, PurchaseCode.WON,
                                       PurchaseCode.SOLD_OUT]
    assert [(r.code, r.order_id, r.order_json) for r in again[:2]] == \
        [(r.code, r.order_id, r.order_json) for r in first[:2]]
    assert again[2].code is PurchaseCode.SOLD_OUT
    assert (await lua.remaining(), await lua.redis.zcard(lua.keys.outbox)) == (0, 2)


async def test_a_failed_call_fails_each_of_its_attempts(lua: Lua) -> None:
    await lua.load()
    await lua.redis.set(lua.keys.holders, "not a hash")  # every HMGET on it now fails
    results = await asyncio.gather(*(lua.buy(f"u{i}") for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ResponseError) for r in results)
    await lua.redis.delete(lua.keys.holders)
    assert (await lua.buy("after")).code is PurchaseCode.WON
    assert await lua.remaining() == 4


async def test_a_big_moment_is_split_into_calls(lua: Lua,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CallCounter(lua.runner, monkeypatch)
    await lua.load(lua.sale(stock=1000, per_user_limit=1))
    count = scripts_module.MAX_ATTEMPTS * 2 + 7
    results = await together(lua, *[(f"u{i}", 1, None) for i in range(count)])
    assert counter.calls == [scripts_module.MAX_ATTEMPTS, scripts_module.MAX_ATTEMPTS, 7]
    assert all(r.code is PurchaseCode.WON for r in results)
    assert await lua.remaining() == 1000 - count
    assert len({r.order_id for r in results}) == count


async def test_order_json_escapes_what_it_must(lua: Lua) -> None:
    await lua.load()
    user, key = 'q"u\\o/te\u00e9\u4e2d', 'k"\\/\t\u00e9'
    won = await lua.buy(user, 1, key)
    order = json.loads(won.order_json)
    assert (order["user_id"], order["idempotency_key"]) == (user, key)
    assert order["amount_cents"] == 250 and isinstance(order["created_ms"], int)
