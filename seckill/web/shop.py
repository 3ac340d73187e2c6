"""Shopper routes: browse sales, buy, and manage one's own orders."""

from __future__ import annotations

from aiohttp import web

from seckill.appkeys import BROWSE, ORDERS, PURCHASES
from seckill.errors import order_not_found, sale_not_found
from seckill.schemas import PurchaseIn
from seckill.web.middleware import json_response
from seckill.web.request import body, idempotency_key, path_id, shopper

routes = web.RouteTableDef()
MAX_ORDER_ID = 64


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if len(order_id) > MAX_ORDER_ID:
        raise order_not_found()
    return order_id


@routes.post("/api/v1/sales/{sale_id}/purchase")
async def purchase(request: web.Request) -> web.Response:
    user = shopper(request)
    key = idempotency_key(request)
    wanted = await body(request, PurchaseIn, empty_ok=True)
    sale_id = path_id(request, "sale_id", sale_not_found())
    accepted = await request.app[PURCHASES].purchase(sale_id, user.user_id, wanted.quantity, key)
    return json_response(accepted.to_json(), 202)


@routes.get("/api/v1/orders/{order_id}")
async def get_order(request: web.Request) -> web.Response:
    user = shopper(request)
    order = await request.app[ORDERS].get(_order_id(request), user.user_id)
    return json_response(order.to_json())


@routes.get("/api/v1/me/orders")
async def my_orders(request: web.Request) -> web.Response:
    user = shopper(request)
    orders = await request.app[ORDERS].mine(user.user_id)
    return json_response({"orders": [o.to_json() for o in orders]})


@routes.post("/api/v1/orders/{order_id}/pay")
async def pay_order(request: web.Request) -> web.Response:
    user = shopper(request)
    order = await request.app[ORDERS].pay(_order_id(request), user.user_id)
    return json_response(order.to_json())


@routes.post("/api/v1/orders/{order_id}/cancel")
async def cancel_order(request: web.Request) -> web.Response:
    user = shopper(request)
    order = await request.app[ORDERS].cancel(_order_id(request), user.user_id)
    return json_response(order.to_json())




@routes.get("/api/v1/sales")
async def list_sales(request: web.Request) -> web.Response:
    return json_response({"sales": await request.app[BROWSE].open()})


@routes.get("/api/v1/sales/{sale_id}")
async def get_sale(request: web.Request) -> web.Response:
    sale_id = path_id(request, "sale_id", sale_not_found())
    return json_response(await request.app[BROWSE].one(sale_id))
