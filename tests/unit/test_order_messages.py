"""The order worker's parser: a good message gives rows, anything else is Poison (never a crash).

An exception other than Poison escapes `OrderWriter.handle`, stops every worker of the
process, and comes back with the redelivered message until the queue's delivery limit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from seckill.order_ids import new_order_id
from workers.orders import Poison, parse_message, parse_order

CREATED_MS = 1_795_611_600_000


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": new_order_id(5), "sale_id": "5", "user_id": "alice", "quantity": 2,
        "amount_cents": 1_000, "created_ms": CREATED_MS, "pay_by_ms": CREATED_MS + 900_000,
        "idempotency_key": "k"}
    body.update(changes)
    return body


def test_a_single_order() -> None:
    sent = order()
    rows, poison = parse_message(json.dumps(sent).encode())
    assert poison == []
    [row] = rows
    assert (row.order_id, row.sale_id, row.user_id, row.quantity, row.amount_cents,
            row.idempotency_key) == (sent["order_id"], 5, "alice", 2, 1_000, "k")
    assert row.created_at == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    assert (row.pay_by - row.created_at).total_seconds() == 900
    assert parse_order(json.dumps(order(idempotency_key="")).encode()).idempotency_key is None
    assert parse_order(json.dumps(order(sale_id=5)).encode()).sale_id == 5


def test_a_batch_keeps_good_orders_and_names_the_poison() -> None:
    good, bad = order(), order(quantity=0)
    rows, poison = parse_message(json.dumps([good, bad, good]).encode())
    assert [r.order_id for r in rows] == [good["order_id"]] * 2
    assert [json.loads(raw)["quantity"] for raw, _ in poison] == [0]
    assert rows == parse_message(json.dumps([good, good]).encode())[0]
    assert parse_message(b"[]") == ([], [])


POISON_ORDERS = {
    "wrong-sale": dict(sale_id="6"),
    "no-sale-in-id": dict(order_id="01JD0000000000000000000000"),
    "bad-ulid": dict(order_id="U" * 26 + "-5"),
    "quantity-0": dict(quantity=0),
    "quantity-101": dict(quantity=101),
    "negative-amount": dict(amount_cents=-1),
    "empty-user": dict(user_id=""),
    "long-user": dict(user_id="u" * 65),
    "pay-before-create": dict(pay_by_ms=CREATED_MS - 1),
    "long-key": dict(idempotency_key="k" * 65),
    "quantity-text": dict(quantity="2"),
    "missing-field": dict(user_id=None),
}


@pytest.mark.parametrize("name", list(POISON_ORDERS))
def test_poison_orders(name: str) -> None:
    sent = {k: v for k, v in order(**POISON_ORDERS[name]).items() if v is not None}
    with pytest.raises(Poison):
        parse_message(json.dumps(sent).encode())
    rows, poison = parse_message(json.dumps([order(), sent]).encode())
    assert (len(rows), len(poison)) == (1, 1)


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff", b"[1, 2", b"42", b'"text"',
                                  b"null", b"{}", b'{"order_id": 42}'])
def test_poison_messages(body: bytes) -> None:
    with pytest.raises(Poison):
        parse_message(body)


ABSURD_ORDERS = {
    "superscript-sale": dict(order_id=new_order_id(5).partition("-")[0] + "-²", sale_id="2"),
    "arabic-indic-sale": dict(order_id=new_order_id(5).partition("-")[0] + "-٥"),
    "created-far-future": dict(created_ms=10**15, pay_by_ms=10**15),
    "created-far-past": dict(created_ms=-(10**15)),
    "created-huge": dict(created_ms=10**30, pay_by_ms=10**30),
    "pay-by-huge": dict(pay_by_ms=10**30),
}


@pytest.mark.parametrize("name", list(ABSURD_ORDERS))
def test_orders_that_once_crashed_the_parser_are_poison(name: str) -> None:
    """These used to raise ValueError/OverflowError (int('²'), from_ms out of range)."""
    sent = order(**ABSURD_ORDERS[name])
    with pytest.raises(Poison):
        parse_message(json.dumps(sent).encode())
    rows, poison = parse_message(json.dumps([order(), sent]).encode())
    assert (len(rows), len(poison)) == (1, 1)
