"""Request decoding, ids and times: the pure helpers of seckill.schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from seckill.errors import InvalidRequest
from seckill.schemas import (
    ProductIn,
    PurchaseIn,
    SaleIn,
    SalePatch,
    decode,
    from_ms,
    parse_id,
    rfc3339,
    to_ms,
)

GOOD_SALE = (b'{"product_id": "3", "sale_price_cents": 100, "stock": 5, '
             b'"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00+01:00"}')


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", 1), ("42", 42), ("9223372036854775807", 2**63 - 1), (7, 7), ("01", 1),
    ("0", None), ("00", None), ("-1", None), ("+1", None), (" 1", None), ("1 ", None),
    ("1.0", None), ("1e3", None), ("abc", None), ("", None), ("9223372036854775808", None),
    ("9" * 20, None), ("9" * 300, None), ("١٢", None), ("²", None), ("１", None),
    (0, None), (-5, None), (2**63, None), (True, None), (False, None), (1.0, None),
    (None, None), (["1"], None),
])
def test_parse_id(raw: object, expected: int | None) -> None:
    assert parse_id(raw) == expected


@pytest.mark.parametrize(("when", "text"), [
    (datetime(2026, 11, 25, 13, 0, tzinfo=UTC), "2026-11-25T13:00:00Z"),
    (datetime(2026, 11, 25, 13, 0, 0, 123456, tzinfo=UTC), "2026-11-25T13:00:00.123Z"),
    (datetime(2026, 11, 25, 13, 0, 0, 999999, tzinfo=UTC), "2026-11-25T13:00:00.999Z"),
    (datetime(2026, 11, 25, 13, 0, 0, 1000, tzinfo=UTC), "2026-11-25T13:00:00.001Z"),
    (datetime(2026, 11, 25, 13, 0, 0, 999, tzinfo=UTC), "2026-11-25T13:00:00.000Z"),
    (datetime(2026, 11, 25, 14, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
     "2026-11-25T13:00:00Z"),
    (datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), "2026-12-31T23:30:00Z"),
])
def test_rfc3339_is_utc_with_a_z(when: datetime, text: str) -> None:
    assert rfc3339(when) == text
    assert datetime.fromisoformat(text) <= when


def test_milliseconds_round_trip() -> None:
    for ms in (0, 1, 999, 1_764_075_600_123, 4_102_444_800_000):
        when = from_ms(ms)
        assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
        assert to_ms(when) == ms
    assert to_ms(datetime(2026, 11, 25, 13, 0, tzinfo=UTC)) == 1_795_611_600_000


def test_decode_a_good_body() -> None:
    sale = decode(GOOD_SALE, SaleIn)
    assert (sale.product_id, sale.stock, sale.per_user_limit, sale.payment_timeout_s) == (
        "3", 5, 1, 900)
    assert sale.starts_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert sale.ends_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert decode(b'{"quantity": 3}', PurchaseIn).quantity == 3
    assert decode(b'{"quantity": 3, "unknown": true}', PurchaseIn).quantity == 3


@pytest.mark.parametrize("raw", [b"", b"  \n", b"{}"])
def test_an_empty_purchase_body_means_one_unit(raw: bytes) -> None:
    assert decode(raw, PurchaseIn, empty_ok=True).quantity == 1


@pytest.mark.parametrize("raw", [b"", b"   "])
def test_a_body_is_required_unless_empty_is_ok(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(raw, ProductIn)
    assert (info.value.status, info.value.code) == (400, "invalid_request")


@pytest.mark.parametrize(("raw", "kind", "field"), [
    (b'{"quantity": "1"}', PurchaseIn, "quantity"),
    (b'{"quantity": true}', PurchaseIn, "quantity"),
    (b'{"quantity": 1.5}', PurchaseIn, "quantity"),
    (b'{"quantity": 0}', PurchaseIn, "quantity"),
    (b'{"quantity": 101}', PurchaseIn, "quantity"),
    (b'{"quantity": 100000000000000000000000000000}', PurchaseIn, "quantity"),
    (b'{"quantity": null}', PurchaseIn, "quantity"),
    (b"null", PurchaseIn, "body"),
    (b"[1]", PurchaseIn, "body"),
    (b'{"name": "n", "price_cents": 1}', ProductIn, "sku"),
    (b'{"sku": "s", "name": "n", "price_cents": -1}', ProductIn, "price_cents"),
    (b'{"sku": "", "name": "n", "price_cents": 1}', ProductIn, "sku"),
    (GOOD_SALE.replace(b'"stock": 5', b'"stock": 0'), SaleIn, "stock"),
    (GOOD_SALE.replace(b'"stock": 5, ', b""), SaleIn, "stock"),
    (GOOD_SALE.replace(b"2030-01-01T00:00:00Z", b"2030-01-01T00:00:00"), SaleIn, "starts_at"),
    (GOOD_SALE.replace(b"01:00:00+01:00", b"01:00:00"), SaleIn, "ends_at"),
    (GOOD_SALE.replace(b"2030-01-01T00:00:00Z", b"yesterday"), SaleIn, "starts_at"),
    (GOOD_SALE.replace(b'"3"', b"true"), SaleIn, "product_id"),
    (b'{"starts_at": "2030-01-01T00:00:00"}', SalePatch, "starts_at"),
    (b'{"per_user_limit": 0}', SalePatch, "per_user_limit"),
])
def test_field_errors_name_the_field(raw: bytes, kind: type, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(raw, kind)
    assert info.value.code == "invalid_request"
    assert info.value.fields is not None and set(info.value.fields) == {field}
    assert all(isinstance(v, str) and v for v in info.value.fields.values())


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"quantity": 1,}', b"\xff\xfe",
                                 b'{"quantity": 1} extra', b"{'quantity': 1}"])
def test_malformed_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(raw, PurchaseIn, empty_ok=True)
    assert info.value.code == "invalid_request"
    assert "JSON" in info.value.message


def test_small_bodies_of_a_frozen_kind_are_decoded_once() -> None:
    first = decode(b'{"quantity":7}', PurchaseIn)
    assert decode(b'{"quantity":7}', PurchaseIn) is first
    assert decode(b'{"quantity":8}', PurchaseIn).quantity == 8
    for _ in range(2):  # a refused body is never remembered
        with pytest.raises(InvalidRequest):
            decode(b'{"quantity":0}', PurchaseIn)
    big = b'{"quantity":7' + b" " * 80 + b"}"
    assert decode(big, PurchaseIn) is not decode(big, PurchaseIn)  # too big to remember
    sale = decode(GOOD_SALE, SaleIn)
    assert decode(GOOD_SALE, SaleIn) is not sale  # mutable kinds are decoded every time
