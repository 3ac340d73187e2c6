"""Operator routes: products, sales, stats, audit. Each needs an operator token."""

from __future__ import annotations

from aiohttp import web

from seckill.appkeys import OPERATIONS
from seckill.catalog import utcnow
from seckill.errors import InvalidRequest, sale_not_found
from seckill.schemas import ProductIn, SaleIn, SalePatch
from seckill.web.middleware import json_response
from seckill.web.request import body, operator, path_id

routes = web.RouteTableDef()


@routes.post("/api/v1/admin/products")
async def create_product(request: web.Request) -> web.StreamResponse:
    actor = operator(request)
    product = await request.app[OPERATIONS].create_product(await body(request, ProductIn),
                                                           actor.user_id)
    return json_response(request, product.to_json(), 201)


@routes.post("/api/v1/admin/sales")
async def schedule_sale(request: web.Request) -> web.StreamResponse:
    actor = operator(request)
    sale = await request.app[OPERATIONS].schedule_sale(await body(request, SaleIn),
                                                       actor.user_id)
    return json_response(request, sale.to_json(sale.stock, utcnow()), 201)


@routes.patch("/api/v1/admin/sales/{sale_id}")
async def patch_sale(request: web.Request) -> web.StreamResponse:
    actor = operator(request)
    sale_id = path_id(request, "sale_id", sale_not_found)
    sale = await request.app[OPERATIONS].patch_sale(sale_id, await body(request, SalePatch),
                                                    actor.user_id)
    return json_response(request, sale.to_json(sale.stock, utcnow()))


@routes.post("/api/v1/admin/sales/{sale_id}/cancel")
async def cancel_sale(request: web.Request) -> web.StreamResponse:
    actor = operator(request)
    ops = request.app[OPERATIONS]
    sale = await ops.cancel_sale(path_id(request, "sale_id", sale_not_found), actor.user_id)
    remaining = (await ops.state.remaining([sale.id]))[sale.id]
    return json_response(request,
                         sale.to_json(sale.stock if remaining is None else remaining, utcnow()))


@routes.get("/api/v1/admin/sales/{sale_id}/stats")
async def sale_stats(request: web.Request) -> web.StreamResponse:
    operator(request)
    ops = request.app[OPERATIONS]
    return json_response(request, await ops.stats(path_id(request, "sale_id", sale_not_found)))


@routes.get("/api/v1/admin/audit")
async def audit_trail(request: web.Request) -> web.StreamResponse:
    """Operator actions, newest first; `?target=sale:42` narrows to one object."""
    operator(request)
    target = request.query.get("target")
    if target is not None and (len(target) > 100 or not target.isprintable()):
        raise InvalidRequest("target must be up to 100 printable characters, e.g. sale:42.",
                             {"target": "up to 100 printable characters"})
    return json_response(request, {"entries": await request.app[OPERATIONS].audit_trail(target)})
