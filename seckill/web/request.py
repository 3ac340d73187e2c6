"""Reading a request: the caller, path ids, bodies and headers, each validated once."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from seckill.appkeys import VERIFIER
from seckill.auth import Principal, require_operator
from seckill.errors import InvalidRequest, NotFound
from seckill.schemas import decode, parse_id

T = TypeVar("T")


def shopper(request: web.Request) -> Principal:
    return request.app[VERIFIER].verify_header(request.headers.get("Authorization"))


def operator(request: web.Request) -> Principal:
    return require_operator(shopper(request))


def path_id(request: web.Request, name: str, not_found: NotFound) -> int:
    value = parse_id(request.match_info[name])
    if value is None:
        raise not_found
    return value


async def body(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T:
    return decode(await request.read(), kind, empty_ok=empty_ok)


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 64 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1 to 64 printable characters.",
                             {"Idempotency-Key": "1 to 64 printable characters"})
    return key
