"""Request bodies: msgspec structs that validate types and bounds in one decode."""

from __future__ import annotations

import re
from dataclasses import dataclass
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


class PurchaseIn(msgspec.Struct, kw_only=True, frozen=True):
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1


T = TypeVar("T")

_PATH = re.compile(r"at `\$\.?([^`\[]*)")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_TIME_FIELDS = ("starts_at", "ends_at")
# Bodies of a frozen kind, up to this size, are remembered decoded (MAX_MEMO at most a kind):
# a flash sale's purchases carry the same few bytes, `{"quantity":1}` above all.
MEMO_BODY_SIZE = 64
MAX_MEMO = 256


@dataclass(slots=True)
class _Kind:
    decoder: msgspec.json.Decoder[Any]
    times: tuple[str, ...]  # the time fields it has, checked for a UTC offset
    memo: dict[bytes, Any] | None  # for a frozen kind: small bodies already decoded


_kinds: dict[type[Any], _Kind] = {}


def decode(body: bytes, kind: type[T], *, empty_ok: bool = False) -> T:
    """Decode and validate a JSON body; any problem becomes `400 invalid_request`."""
    if not body or body.isspace():
        if empty_ok:
            return kind()
        raise InvalidRequest("The request needs a JSON body.")
    known = _kinds.get(kind)
    if known is None:
        known = _kinds[kind] = _describe(kind)
    memo = known.memo
    if memo is not None:
        remembered: T | None = memo.get(body)
        if remembered is not None:
            return remembered
    try:
        value: T = known.decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text) or _MISSING.search(text)
        field = match.group(1) if match and match.group(1) else "body"
        raise InvalidRequest(f"Invalid value: {text}", {field: text.split(" - at ")[0]}) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    for name in known.times:  # only the kinds that have them: a missing getattr raises inside
        when = getattr(value, name)
        if isinstance(when, datetime) and when.tzinfo is None:
            raise InvalidRequest("Times must be RFC 3339 with a UTC offset, e.g. "
                                 "2026-11-25T13:00:00Z.", {name: "missing UTC offset"})
    if memo is not None and len(body) <= MEMO_BODY_SIZE:
        if len(memo) >= MAX_MEMO:  # odd bodies filled it: start again, the usual ones return
            memo.clear()
        memo[body] = value
    return value


def _describe(kind: type[Any]) -> _Kind:
    fields = getattr(kind, "__struct_fields__", ())
    config = getattr(kind, "__struct_config__", None)
    return _Kind(msgspec.json.Decoder(kind), tuple(n for n in _TIME_FIELDS if n in fields),
                 {} if config is not None and config.frozen else None)


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
