"""The two-generation memory of recent entries (verified tokens, rate buckets)."""

from __future__ import annotations

import pytest

from seckill.recent import Recent


def test_it_remembers_at_least_size_entries() -> None:
    recent: Recent[str, int] = Recent(3)
    for i in range(3):
        recent.put(f"k{i}", i)
    recent.put("k3", 3)  # the first generation is full: it becomes the previous one
    assert [recent.get(f"k{i}") for i in range(4)] == [0, 1, 2, 3]
    assert len(recent) <= 2 * 3


def test_an_entry_unread_for_two_generations_is_forgotten() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("old", 1)
    for i in range(4):
        recent.put(f"new{i}", i)
    assert recent.get("old") is None
    assert recent.get("new3") == 3


def test_a_read_keeps_an_entry_alive() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("kept", 1)
    for i in range(20):
        recent.put(f"n{i}", i)
        assert recent.get("kept") == 1


def test_put_replaces_and_pop_forgets() -> None:
    recent: Recent[str, int] = Recent(4)
    recent.put("a", 1)
    recent.put("a", 2)
    assert recent.get("a") == 2
    recent.pop("a")
    recent.pop("missing")
    assert recent.get("a") is None
    recent.put("b", 1)
    recent.clear()
    assert len(recent) == 0


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Recent(0)
