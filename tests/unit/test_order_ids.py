"""Order ids: a ULID, then the sale id, so a pending order can be found by its sale."""

from __future__ import annotations

import multiprocessing

import pytest
from ulid import ULID

from seckill.order_ids import new_order_id, sale_of_order


@pytest.mark.parametrize("sale_id", [1, 42, 10**12, 2**63 - 1])
def test_an_order_id_names_its_sale(sale_id: int) -> None:
    order_id = new_order_id(sale_id)
    ulid, sep, sale = order_id.partition("-")
    assert (sep, sale) == ("-", str(sale_id))
    assert str(ULID.from_str(ulid)) == ulid
    assert len(order_id) <= 64
    assert sale_of_order(order_id) == sale_id


def test_order_ids_are_unique_and_time_ordered() -> None:
    ids = [new_order_id(5) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    stamps = [ULID.from_str(i.partition("-")[0]).milliseconds for i in ids]
    assert stamps == sorted(stamps)


ULID_TEXT = str(ULID())


@pytest.mark.parametrize("order_id", [
    "", "abc", "-", "-5", ULID_TEXT, ULID_TEXT + "-", ULID_TEXT + "-0", ULID_TEXT + "-00",
    ULID_TEXT + "-abc", ULID_TEXT + "--5", ULID_TEXT + "-5-6", ULID_TEXT + "-+5",
    ULID_TEXT + "- 5", ULID_TEXT + "-" + "9" * 20, ULID_TEXT + "-9223372036854775808",
    ULID_TEXT[:-1] + "-5", ULID_TEXT + "X-5", "U" * 26 + "-5", "8" + ULID_TEXT[1:] + "-5",
    "o" * 300, ULID_TEXT + "-²", ULID_TEXT + "-٥", ULID_TEXT + "-５",
])
def test_ids_that_are_not_ours(order_id: str) -> None:
    assert sale_of_order(order_id) is None


def test_ids_stay_unique_across_refills_of_the_random_pool() -> None:
    ids = [new_order_id(7) for _ in range(3 * 4096 + 10)]
    assert len(set(ids)) == len(ids)
    randoms = {i[10:26] for i in ids}
    assert len(randoms) == len(ids)
    assert all(str(ULID.from_str(i.partition("-")[0])) == i.partition("-")[0] for i in ids)


def test_a_forked_process_does_not_repeat_its_parents_ids() -> None:
    new_order_id(3)  # the parent's pool is filled
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(new_order_id(3)))
    child.start()
    from_child = queue.get(timeout=10)
    child.join(timeout=10)
    assert from_child[10:26] != new_order_id(3)[10:26]


@pytest.mark.parametrize("text", [
    ULID_TEXT, ULID_TEXT.lower(), "7" + "Z" * 25, "0" * 26, "8" + ULID_TEXT[1:], "U" * 26,
    ULID_TEXT[:-1] + "I", ULID_TEXT[:-1] + "L", ULID_TEXT[:-1] + "O", ULID_TEXT[:-1] + " ",
    ULID_TEXT[:-1] + "é", ULID_TEXT[:-1], ULID_TEXT + "0", ULID_TEXT[:-1] + "ß",
])
def test_order_ids_accept_what_python_ulid_accepts(text: str) -> None:
    try:
        ULID.from_str(text)
        valid = True
    except ValueError:
        valid = False
    assert (sale_of_order(f"{text}-5") == 5) is valid
