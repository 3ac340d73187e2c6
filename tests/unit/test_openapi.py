"""The served OpenAPI reference lists exactly the routes the app has, and API.md's codes."""

from __future__ import annotations

from seckill.openapi import document
from seckill.settings import Settings
from seckill.web.app import create_app


def _app_routes() -> set[tuple[str, str]]:
    app = create_app(Settings())
    return {(route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.method not in ("HEAD", "*") and route.resource is not None}


def test_every_route_is_documented_and_nothing_else() -> None:
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert documented == _app_routes()


def test_purchase_documents_the_contract_refusals() -> None:
    op = document()["paths"]["/api/v1/sales/{sale_id}/purchase"]["post"]
    assert {"202", "400", "401", "404", "409", "429", "503"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} >= {"Idempotency-Key", "sale_id"}


def test_request_schemas_come_from_the_validators() -> None:
    schemas = document()["components"]["schemas"]
    quantity = schemas["PurchaseIn"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, 100)
    assert set(schemas["SaleIn"]["required"]) == {"product_id", "sale_price_cents", "stock",
                                                  "starts_at", "ends_at"}
