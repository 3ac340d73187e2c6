"""The OpenAPI 3.1 reference of the HTTP API, served at /api/v1/openapi.json.

Request bodies come from the msgspec structs that validate them, so the reference cannot
drift from what is enforced; responses are described here, next to the contract's codes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from seckill import __version__
from seckill.schemas import ProductIn, PurchaseIn, SaleIn, SalePatch

_ERROR = {"$ref": "#/components/schemas/Error"}
_ID = {"type": "string", "description": "An opaque id."}
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_CENTS = {"type": "integer", "description": "Integer cents"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": required if required is not None else list(props)}


_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string", "description": "snake_case code"},
                   "message": {"type": "string"},
                   "fields": {"type": "object", "additionalProperties": {"type": "string"}}},
                  ["error", "message"]),
    "Product": _obj({"id": _ID, "sku": {"type": "string"}, "name": {"type": "string"},
                     "price_cents": _CENTS, "description": {"type": "string"},
                     "created_at": _TIME}),
    "Sale": _obj({
        "id": _ID, "title": {"type": "string"},
        "product": _obj({"id": _ID, "sku": {"type": "string"}, "name": {"type": "string"},
                         "price_cents": _CENTS}),
        "sale_price_cents": _CENTS, "stock": {"type": "integer"},
        "remaining": {"type": "integer"}, "starts_at": _TIME, "ends_at": _TIME,
        "per_user_limit": {"type": "integer"}, "payment_timeout_s": {"type": "integer"},
        "status": {"enum": ["scheduled", "live", "sold_out", "ended", "cancelled"]},
        "server_time": _TIME,
        "rate_limits": _obj({k: {"type": "integer"} for k in
                             ("user_per_s", "user_burst", "address_per_s", "address_burst")}),
        "requires_token": {"type": "boolean"}, "pow_bits": {"type": "integer"},
        "waiting_room": {"type": "boolean"}, "admit_per_s": {"type": "integer"}}),
    "Accepted": _obj({"order_id": _ID, "sale_id": _ID, "quantity": {"type": "integer"},
                      "status": {"const": "pending"}}),
    "Order": _obj({"order_id": _ID, "sale_id": _ID, "user_id": {"type": "string"},
                   "quantity": {"type": "integer"}, "amount_cents": _CENTS,
                   "status": {"enum": ["pending", "created", "paid", "cancelled", "expired"]},
                   "created_at": _TIME, "pay_by": _TIME}),
    "Stats": _obj({k: ({"type": "integer"} if k != "sale_id" else _ID) for k in
                   ("sale_id", "stock", "remaining", "reserved", "orders_persisted", "paid",
                    "cancelled", "expired")}),
    "PurchaseToken": _obj({"token": {"type": "string"}, "sale_id": _ID, "expires_at": _TIME,
                           "pow_bits": {"type": "integer"}}),
    "WaitingRoomPlace": _obj({
        "sale_id": _ID, "ticket": {"type": "string"},
        "place": {"type": ["integer", "null"], "description": "1-based; null before the start"},
        "admitted": {"type": "boolean"}, "estimated_wait_s": {"type": "integer"},
        "starts_at": _TIME, "server_time": _TIME}),
}


def _responses(ok: int, schema: str | None, *errors: int, desc: str = "OK") -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": desc}}
    if schema is not None:
        out[str(ok)]["content"] = {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{schema}"}}}
    for code in errors:
        out[str(code)] = {"description": "Error envelope",
                          "content": {"application/json": {"schema": _ERROR}}}
    return out


def _op(summary: str, responses: dict[str, Any], *, body: str | None = None,
        auth: bool = True, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": body != "PurchaseIn", "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    op["security"] = [{"bearer": []}] if auth else []
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _header(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": desc}


@cache
def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components([ProductIn, SaleIn, SalePatch, PurchaseIn],
                                                   ref_template="#/components/schemas/{name}")
    sale, order = [_path("sale_id")], [_path("order_id")]
    purchase_headers = [
        _path("sale_id"),
        _header("Idempotency-Key", "1 to 64 characters, scoped to (user, sale)"),
        _header("Purchase-Token", "from POST /sales/{id}/token, when the sale requires one"),
        _header("Purchase-Pow", "a proof-of-work solution for the token, when required")]
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness", _responses(200, None), auth=False)},
        "/readyz": {"get": _op("Readiness of Redis, RabbitMQ and PostgreSQL",
                               _responses(200, None, 503), auth=False)},
        "/metrics": {"get": _op("Prometheus metrics", _responses(200, None), auth=False)},
        "/api/v1/openapi.json": {"get": _op("This document", _responses(200, None),
                                            auth=False)},
        "/api/v1/admin/products": {"post": _op(
            "Create a product", _responses(201, "Product", 400, 401, 403, 409),
            body="ProductIn")},
        "/api/v1/admin/sales": {"post": _op(
            "Schedule a sale (loaded into Redis at once)",
            _responses(201, "Sale", 400, 401, 403), body="SaleIn")},
        "/api/v1/admin/sales/{sale_id}": {"patch": _op(
            "Change a sale before it starts", _responses(200, "Sale", 400, 401, 403, 404, 409),
            body="SalePatch", params=sale)},
        "/api/v1/admin/sales/{sale_id}/cancel": {"post": _op(
            "Cancel a sale; purchases stop at once", _responses(200, "Sale", 401, 403, 404),
            params=sale)},
        "/api/v1/admin/sales/{sale_id}/stats": {"get": _op(
            "Units: stock, remaining, reserved, persisted, paid, cancelled, expired",
            _responses(200, "Stats", 401, 403, 404), params=sale)},
        "/api/v1/admin/audit": {"get": _op(
            "Operator actions, newest first", _responses(200, None, 401, 403),
            params=[{"name": "target", "in": "query", "required": False,
                     "schema": {"type": "string"}, "description": "e.g. sale:42"}])},
        "/api/v1/sales": {"get": _op("Scheduled and live sales, soonest first",
                                     _responses(200, None), auth=False)},
        "/api/v1/sales/{sale_id}": {"get": _op(
            "A sale, with server_time", _responses(200, "Sale", 404), auth=False,
            params=sale)},
        "/api/v1/sales/{sale_id}/purchase": {"post": _op(
            "Buy. Refusals in order: 401, 400, 429, 503, 404, replay, cancelled, not_started, "
            "ended, not_admitted, token_required/token_used/pow_required, limit_reached, "
            "sold_out", _responses(202, "Accepted", 400, 401, 403, 404, 409, 429, 503,
                                   desc="Won: the order is pending"),
            body="PurchaseIn", params=purchase_headers)},
        "/api/v1/sales/{sale_id}/token": {"post": _op(
            "A one-time purchase token (live sales only)",
            _responses(201, "PurchaseToken", 401, 404, 409), params=sale)},
        "/api/v1/sales/{sale_id}/queue": {
            "post": _op("Join the waiting room (a second join keeps the place)",
                        _responses(200, "WaitingRoomPlace", 401, 404, 409), params=sale),
            "get": _op("My place in the waiting room",
                       _responses(200, "WaitingRoomPlace", 401, 404, 409), params=sale)},
        "/api/v1/orders/{order_id}": {"get": _op(
            "One of my orders", _responses(200, "Order", 401, 404), params=order)},
        "/api/v1/me/orders": {"get": _op("My orders, newest first", _responses(200, None, 401))},
        "/api/v1/orders/{order_id}/pay": {"post": _op(
            "Pay (twice is a no-op)", _responses(200, "Order", 401, 404, 409), params=order)},
        "/api/v1/orders/{order_id}/cancel": {"post": _op(
            "Cancel; units go back on sale", _responses(200, "Order", 401, 404, 409),
            params=order)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "seckill", "version": __version__,
                 "description": "The flash-sale API. Money in integer cents, times in UTC."},
        "paths": paths,
        "components": {
            "schemas": {**components, **_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
