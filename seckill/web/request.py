"""Reading a request: the caller, path ids, bodies and headers, each validated once."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
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


def path_id(request: web.Request, name: str, not_found: Callable[[], NotFound]) -> int:
    value = parse_id(request.match_info[name])
    if value is None:
        raise not_found()
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


def client_address(request: web.Request, trusted: tuple[str, ...]) -> str | None:
    """The client's address: the socket peer, or, behind a trusted proxy, the right-most
    address of X-Forwarded-For that is not itself a trusted proxy."""
    peer = request.remote
    if not trusted or peer is None or not _is_trusted(peer, trusted):
        return peer
    # Every X-Forwarded-For line, in order: a proxy may append a line of its own.
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _valid(hop):
            return peer  # a malformed chain is not believed
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted)
