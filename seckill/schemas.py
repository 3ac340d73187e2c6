"""Request bodies: msgspec structs that validate types and bounds in one decode."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from seckill.errors import InvalidRequest

MAX_CENTS = 10**10  # 100 million in currency units: far beyond any real price
MAX_STOCK = 10_000_000
MAX_QUANTITY = 100

# Printable text (no control characters: PostgreSQL refuses NUL, logs and UIs the rest).
_LINE = r"^[^\x00-\x1f\x7f]*(?![\s\S])"  # (?!…): the very end, even before a last "\n"
_TEXT = r"^[^\x00]*$"
Sku = Annotated[str, Meta(min_length=1, max_length=64, pattern=_LINE)]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=_LINE)]
Cents = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
Stock = Annotated[int, Meta(ge=1, le=MAX_STOCK)]
Limit = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
TimeoutS = Annotated[int, Meta(ge=1, le=7 * 24 * 3600)]
Title = Annotated[str, Meta(max_length=200, pattern=_LINE)]
Rate = Annotated[int, Meta(ge=0, le=1_000_000)]
PowBits = Annotated[int, Meta(ge=0, le=24)]
IdField = str | int


class ProductIn(msgspec.Struct, kw_only=True):
    sku: Sku
    name: Name
    price_cents: Cents
    description: Annotated[str, Meta(max_length=5000, pattern=_TEXT)] = ""


class SaleIn(msgspec.Struct, kw_only=True):
    product_id: IdField
    sale_price_cents: Cents
    stock: Stock
    starts_at: datetime
    ends_at: datetime
    title: Title | None = None
    per_user_limit: Limit = 1
    payment_timeout_s: TimeoutS = 900
    user_rate_per_s: Rate = 5
    user_burst: Rate = 10
    address_rate_per_s: Rate = 0
    address_burst: Rate = 0
    requires_token: bool = False
    pow_bits: PowBits = 0
    waiting_room: bool = False
    admit_per_s: Rate = 0


class SalePatch(msgspec.Struct, kw_only=True):
    title: Title | None = None
    sale_price_cents: Cents | None = None
    stock: Stock | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    per_user_limit: Limit | None = None
    payment_timeout_s: TimeoutS | None = None
    user_rate_per_s: Rate | None = None
    user_burst: Rate | None = None
    address_rate_per_s: Rate | None = None
    address_burst: Rate | None = None
    requires_token: bool | None = None
    pow_bits: PowBits | None = None
    waiting_room: bool | None = None
    admit_per_s: Rate | None = None


class PurchaseIn(msgspec.Struct, kw_only=True):
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1


T = TypeVar("T")

_PATH = re.compile(r"at `\$\.?([^`\[]*)")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_decoders: dict[type[Any], tuple[msgspec.json.Decoder[Any], tuple[str, ...]]] = {}
_TIME_FIELDS = ("starts_at", "ends_at")


def decode(body: bytes, kind: type[T], *, empty_ok: bool = False) -> T:
    """Decode and validate a JSON body; any problem becomes `400 invalid_request`."""
    if not body or body.isspace():
        if empty_ok:
            return kind()
        raise InvalidRequest("The request needs a JSON body.")
    known = _decoders.get(kind)
    if known is None:
        fields = getattr(kind, "__struct_fields__", ())
        known = _decoders[kind] = (msgspec.json.Decoder(kind),
                                   tuple(name for name in _TIME_FIELDS if name in fields))
    decoder, times = known
    try:
        value: T = decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text) or _MISSING.search(text)
        field = match.group(1) if match and match.group(1) else "body"
        raise InvalidRequest(f"Invalid value: {text}", {field: text.split(" - at ")[0]}) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    for name in times:  # only the kinds that have them: a missing getattr raises inside
        when = getattr(value, name)
        if isinstance(when, datetime) and when.tzinfo is None:
            raise InvalidRequest("Times must be RFC 3339 with a UTC offset, e.g. "
                                 "2026-11-25T13:00:00Z.", {name: "missing UTC offset"})
    return value


def parse_id(raw: object) -> int | None:
    """Our ids are positive integers below 2**63, carried as strings; anything else is None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 < raw < 2**63 else None
    if isinstance(raw, str) and 0 < len(raw) <= 19 and raw.isascii() and raw.isdigit():
        value = int(raw)
        return value if 0 < value < 2**63 else None
    return None


def rfc3339(when: datetime) -> str:
    when = when.astimezone(UTC)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
