"""The sold-out fast path's per-user rate limit: GCRA, with the token bucket's verdicts."""

from __future__ import annotations

import itertools
import random
from typing import Any, cast

import pytest

from seckill import soldout
from seckill.soldout import SoldOutBoard, _Entry

START = 1_796_000_000.0  # a time of the order of today's: float precision as in production


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _board(monkeypatch: pytest.MonkeyPatch, rate: float, burst: float) -> tuple[SoldOutBoard,
                                                                                  Clock]:
    clock = Clock()
    monkeypatch.setattr(soldout.time, "time", clock)
    board = SoldOutBoard(cast(Any, None), cast(Any, None))
    limited = rate > 0 and burst > 0
    board._entries[1] = _Entry(
        "0", frozenset({"holder"}), 2, 0, int((START + 3600) * 1000), START + 3600,
        1 / rate if limited else 0.0, (burst - 1) / rate if limited else 0.0, {})
    return board, clock


def _bucket_verdicts(times: list[float], rate: float, burst: float) -> list[int]:
    """The token bucket the fast path used before: (tokens, ts), one token per attempt."""
    tokens, ts, out = burst, times[0], []
    for now in times:
        tokens = min(burst, tokens + (now - ts) * rate)
        ts = now
        if tokens < 1:
            out.append(int(-(-(1 - tokens) * 1000 // rate)))
        else:
            tokens -= 1
            out.append(0)
    return out


@pytest.mark.parametrize(("rate", "burst"), [(5, 10), (1, 1), (2.5, 3), (0.5, 2)])
def test_verdicts_are_the_token_buckets(monkeypatch: pytest.MonkeyPatch, rate: float,
                                        burst: float) -> None:
    rng = random.Random(f"{rate}/{burst}")
    board, clock = _board(monkeypatch, rate, burst)
    times, t = [], START
    for _ in range(300):  # off the exact boundaries, where float rounding decides either way
        t += rng.choice([0.0, 0.001, 0.05, 0.2, 0.5, 1.3, 4.0]) + rng.uniform(0, 0.003)
        times.append(t)
    got = []
    for t in times:
        clock.now = t
        verdict = board.refuses(1, "u", 1)
        assert verdict is not None
        got.append(verdict)
    want = _bucket_verdicts(times, rate, burst)
    # Equal, but for a millisecond of rounding in a wait (the bucket's tokens are floats too).
    assert [g == 0 for g in got] == [w == 0 for w in want]
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True))


def test_a_burst_at_once_is_the_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    board, _ = _board(monkeypatch, 5, 10)
    assert [board.refuses(1, "u", 1) for _ in range(11)] == [0] * 10 + [200]


def test_no_limit_and_other_shoppers_are_not_refused_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    board, _ = _board(monkeypatch, 0, 0)
    assert [board.refuses(1, "u", 1) for _ in range(50)] == [0] * 50
    assert board.refuses(1, "holder", 1) is None  # Redis answers limit_reached
    assert board.refuses(1, "u", 3) is None  # over the per-user limit: Redis says so
    assert board.refuses(2, "u", 1) is None  # a sale not remembered


def test_a_full_memory_forgets_full_buckets_not_a_flooder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soldout, "MAX_BUCKETS", 8)
    board, clock = _board(monkeypatch, 5, 2)
    assert [board.refuses(1, "flooder", 1) for _ in range(3)] == [0, 0, 200]
    passed = []
    for i in range(40):  # newcomers, one every 50 ms: each bucket is full 200 ms later
        clock.now = START + 0.05 * (i + 1)
        assert board.refuses(1, f"new{i}", 1) == 0
        if board.refuses(1, "flooder", 1) == 0:
            passed.append(i)
    # 5/s all along (one attempt in four passes; a boundary may slip by one step on float
    # rounding), never a fresh burst: the flooder was not forgotten.
    gaps = [b - a for a, b in itertools.pairwise(passed)]
    assert passed[0] == 3 and set(gaps) <= {4, 5} and len(passed) >= 9, passed
    assert len(board._entries[1].due) <= 8
