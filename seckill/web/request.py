"""Reading a request: the caller, path ids, bodies and headers, each validated once."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
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
    raw = request.match_info[name]
    value = _path_ids.get(raw)
    if value is None:
        value = parse_id(raw)
        if value is None:
            raise not_found()
        if len(_path_ids) >= MAX_PATH_IDS:  # a handful of live sales; a scan cannot grow it
            _path_ids.clear()
        _path_ids[raw] = value
    return value


# The ids seen in paths, parsed: every purchase of a sale carries the same few characters.
MAX_PATH_IDS = 1024
_path_ids: dict[str, int] = {}


async def body(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T:
    return decode(await request.read(), kind, empty_ok=empty_ok)


def body_now(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T | None:
    """Like `body`, when all of the body is here already (a small POST arrives with its
    headers): without the three coroutines of `request.read()`. None while some of it is
    still on its way. It consumes the body: a request is read by this or by `body`."""
    content = request.content
    if not content.is_eof():
        return None
    raw = content.read_nowait()
    if request.client_max_size and len(raw) > request.client_max_size:  # as read() does
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size,
                                            actual_size=len(raw))
    return decode(raw, kind, empty_ok=empty_ok)


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("Idempotency-Key")
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
