"""A sale's status: the first of cancelled, ended, sold_out, live, scheduled that holds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from seckill.catalog import Sale

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def make_sale(**changes: Any) -> Sale:
    known: dict[str, Any] = {
        "id": 9, "product_id": 3, "title": "Deal", "sale_price_cents": 500, "stock": 10,
        "starts_at": T0, "ends_at": T0 + HOUR, "per_user_limit": 2, "payment_timeout_s": 900,
        "cancelled_at": None, "sku": "SKU-1", "product_name": "Thing",
        "product_price_cents": 1_000}
    zero = {"int": 0, "bool": False, "str": ""}
    values = {f.name: known.get(f.name, zero.get(str(f.type))) for f in dataclasses.fields(Sale)}
    values.update(changes)
    return Sale(**values)


@pytest.mark.parametrize(("cancelled", "now", "remaining", "status"), [
    (True, T0 + 2 * HOUR, 0, "cancelled"),
    (True, T0 - HOUR, 5, "cancelled"),
    (False, T0 + 2 * HOUR, 0, "ended"),
    (False, T0 + HOUR, 5, "ended"),
    (False, T0 + HOUR / 2, 0, "sold_out"),
    (False, T0 - HOUR, 0, "sold_out"),
    (False, T0 + HOUR / 2, -1, "sold_out"),
    (False, T0, 5, "live"),
    (False, T0 + HOUR - timedelta(microseconds=1), 1, "live"),
    (False, T0 - timedelta(microseconds=1), 5, "scheduled"),
])
def test_status_precedence(cancelled: bool, now: datetime, remaining: int, status: str) -> None:
    sale = make_sale(cancelled_at=T0 - 2 * HOUR if cancelled else None)
    assert sale.status(remaining, now) == status


def test_to_json_has_the_contract_fields() -> None:
    body = make_sale().to_json(4, T0)
    assert {k: body[k] for k in ("id", "title", "product", "sale_price_cents", "stock",
                                 "remaining", "starts_at", "ends_at", "per_user_limit",
                                 "status", "server_time")} == {
        "id": "9", "title": "Deal",
        "product": {"id": "3", "sku": "SKU-1", "name": "Thing", "price_cents": 1_000},
        "sale_price_cents": 500, "stock": 10, "remaining": 4,
        "starts_at": "2030-01-01T12:00:00Z", "ends_at": "2030-01-01T13:00:00Z",
        "per_user_limit": 2, "status": "live", "server_time": "2030-01-01T12:00:00Z"}
