"""Shopper routes: browse sales, buy, and manage one's own orders."""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from seckill.appkeys import (
    BROWSE,
    ORDERS,
    PURCHASE_TOKENS,
    PURCHASES,
    SETTINGS,
    VERIFIER,
    WAITING_ROOM,
)
from seckill.auth import Principal
from seckill.errors import Conflict, order_not_found, sale_not_found
from seckill.purchase_tokens import pow_bits
from seckill.schemas import PurchaseIn, from_ms, rfc3339
from seckill.web.middleware import answers_at_once, json_response, refusal_response
from seckill.web.request import (
    body,
    body_now,
    client_address,
    idempotency_key,
    path_id,
    shopper,
)

routes = web.RouteTableDef()
MAX_ORDER_ID = 64


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if len(order_id) > MAX_ORDER_ID:
        raise order_not_found()
    return order_id


@routes.post("/api/v1/sales/{sale_id}/purchase")
@answers_at_once
def purchase(request: web.Request) -> web.StreamResponse | Awaitable[web.StreamResponse]:
    """Redis decides; the sold-out refusals (most of a flash sale) are answered at once."""
    app, headers = request.app, request.headers  # each is a property: read once
    user = app[VERIFIER].verify_header(headers.get("Authorization"))
    key = idempotency_key(headers)
    wanted = body_now(request, PurchaseIn, empty_ok=True)
    if wanted is None:  # the body is still on its way
        return _read_then_buy(request, user, key)
    sale_id = path_id(request, "sale_id", sale_not_found)
    token = headers.get("Purchase-Token")
    if token is None and key is None:
        refusal = app[PURCHASES].refused_locally(sale_id, user.user_id, wanted.quantity)
        if refusal is not None:
            return refusal_response(request, refusal)
    return _buy(request, user, key, wanted.quantity, sale_id, token)


async def _read_then_buy(request: web.Request, user: Principal, key: str | None
                         ) -> web.StreamResponse:
    wanted = await body(request, PurchaseIn, empty_ok=True)
    sale_id = path_id(request, "sale_id", sale_not_found)
    return await _buy(request, user, key, wanted.quantity, sale_id,
                      request.headers.get("Purchase-Token"))


async def _buy(request: web.Request, user: Principal, key: str | None, quantity: int,
               sale_id: int, token: str | None) -> web.StreamResponse:
    app = request.app
    nonce, pow_found = "", 0
    if token is not None:
        nonce = app[PURCHASE_TOKENS].verify(token, user.user_id, sale_id)
        pow_found = pow_bits(token, request.headers.get("Purchase-Pow", ""))
    accepted = await app[PURCHASES].decide(
        sale_id, user.user_id, quantity, key,
        address=client_address(request, app[SETTINGS].trusted_proxies), token_nonce=nonce,
        pow_bits=pow_found)
    return json_response(request, accepted.to_json(), 202)


@routes.post("/api/v1/sales/{sale_id}/token")
async def purchase_token(request: web.Request) -> web.StreamResponse:
    """A one-time purchase token, bound to the caller and the sale; only once it is live."""
    user = shopper(request)
    sale_id = path_id(request, "sale_id", sale_not_found)
    sale = await request.app[BROWSE].one(sale_id)
    if sale["status"] not in ("live", "sold_out"):
        raise Conflict(sale["status"] if sale["status"] != "scheduled" else "not_started",
                       "Purchase tokens are issued only while the sale is live.")
    token, expires_ms = request.app[PURCHASE_TOKENS].issue(user.user_id, sale_id)
    return json_response(request, {"token": token, "sale_id": str(sale_id),
                          "expires_at": rfc3339(from_ms(expires_ms)),
                          "pow_bits": sale["pow_bits"]}, 201)


@routes.post("/api/v1/sales/{sale_id}/queue")
@routes.get("/api/v1/sales/{sale_id}/queue")
async def waiting_room(request: web.Request) -> web.StreamResponse:
    """POST takes a place in the waiting room (a second join keeps it); GET reads it."""
    user = shopper(request)
    sale_id = path_id(request, "sale_id", sale_not_found)
    return json_response(request, await request.app[WAITING_ROOM].place(
        sale_id, user.user_id, join=request.method == "POST"))


@routes.get("/api/v1/orders/{order_id}")
async def get_order(request: web.Request) -> web.StreamResponse:
    user = shopper(request)
    order = await request.app[ORDERS].get(_order_id(request), user.user_id)
    return json_response(request, order.to_json())


@routes.get("/api/v1/me/orders")
async def my_orders(request: web.Request) -> web.StreamResponse:
    user = shopper(request)
    orders = await request.app[ORDERS].mine(user.user_id)
    return json_response(request, {"orders": [o.to_json() for o in orders]})


@routes.post("/api/v1/orders/{order_id}/pay")
async def pay_order(request: web.Request) -> web.StreamResponse:
    user = shopper(request)
    order = await request.app[ORDERS].pay(_order_id(request), user.user_id)
    return json_response(request, order.to_json())


@routes.post("/api/v1/orders/{order_id}/cancel")
async def cancel_order(request: web.Request) -> web.StreamResponse:
    user = shopper(request)
    order = await request.app[ORDERS].cancel(_order_id(request), user.user_id)
    return json_response(request, order.to_json())




@routes.get("/api/v1/sales")
async def list_sales(request: web.Request) -> web.StreamResponse:
    return json_response(request, {"sales": await request.app[BROWSE].open()})


@routes.get("/api/v1/sales/{sale_id}")
async def get_sale(request: web.Request) -> web.StreamResponse:
    sale_id = path_id(request, "sale_id", sale_not_found)
    return json_response(request, await request.app[BROWSE].one(sale_id))
