"""What operators do: products, scheduling, patching, cancelling, stats; and who may do it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import Api, assert_error, unique, wait_until

SALE_FIELDS = {"id": str, "title": str, "product": dict, "sale_price_cents": int, "stock": int,
               "remaining": int, "starts_at": str, "ends_at": str, "per_user_limit": int,
               "status": str, "server_time": str}
STATS_FIELDS = {"sale_id", "stock", "remaining", "reserved", "orders_persisted", "paid",
                "cancelled", "expired"}


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def assert_sale_shape(sale: dict[str, Any]) -> None:
    """The contract's fields with their types (the contract allows extra fields)."""
    assert set(SALE_FIELDS) <= set(sale), sale
    for name, kind in SALE_FIELDS.items():
        assert type(sale[name]) is kind, (name, sale)
    assert set(sale["product"]) >= {"id", "sku", "name", "price_cents"}, sale
    assert sale["status"] in {"scheduled", "live", "sold_out", "ended", "cancelled"}
    for name in ("starts_at", "ends_at", "server_time"):
        assert sale[name].endswith("Z"), sale
        assert datetime.fromisoformat(sale[name]).utcoffset() == timedelta(0)


async def schedule(api: Api, product: dict[str, Any], **changes: Any) -> tuple[int, Any]:
    body = {"product_id": product["id"], "sale_price_cents": 5_000, "stock": 10,
            "starts_at": at(3600), "ends_at": at(7200), **changes}
    return await api.request("POST", "/api/v1/admin/sales", user="ops", operator=True,
                             json=body)


async def patch(api: Api, sale_id: str, **changes: Any) -> tuple[int, Any]:
    return await api.request("PATCH", f"/api/v1/admin/sales/{sale_id}", user="ops",
                             operator=True, json=changes)


async def test_create_product_and_refuse_a_duplicate_sku(api: Api) -> None:
    sku = unique("SKU")
    body = {"sku": sku, "name": "Kettle", "price_cents": 4_999, "description": "Boils."}
    status, product = await api.request("POST", "/api/v1/admin/products", user="ops",
                                        operator=True, json=body)
    assert status == 201, product
    assert {k: product[k] for k in ("sku", "name", "price_cents", "description")} == {
        "sku": sku, "name": "Kettle", "price_cents": 4_999, "description": "Boils."}
    assert isinstance(product["id"], str) and product["id"].isdigit()

    status, again = await api.request("POST", "/api/v1/admin/products", user="ops",
                                      operator=True, json={**body, "name": "Other"})
    assert_error(status, again, 409, "duplicate_sku")


async def test_schedule_a_future_sale(api: Api) -> None:
    product = await api.create_product(price_cents=9_000)
    starts, ends = datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC) + timedelta(hours=2)
    status, sale = await schedule(api, product, stock=7, sale_price_cents=6_000,
                                  starts_at=starts.isoformat(), ends_at=ends.isoformat())
    assert status == 201, sale
    assert_sale_shape(sale)
    contract = ("id", "sku", "name", "price_cents")
    assert {k: sale["product"][k] for k in contract} == {k: product[k] for k in contract}
    assert (sale["status"], sale["stock"], sale["remaining"]) == ("scheduled", 7, 7)
    assert (sale["sale_price_cents"], sale["per_user_limit"]) == (6_000, 1)
    assert sale["title"] == product["name"]
    assert abs(datetime.fromisoformat(sale["starts_at"]) - starts) < timedelta(milliseconds=1)
    assert abs(datetime.fromisoformat(sale["ends_at"]) - ends) < timedelta(milliseconds=1)
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert status == 200, shown
    assert_sale_shape(shown)
    assert {k: v for k, v in shown.items() if k != "server_time"} == {
        k: v for k, v in sale.items() if k != "server_time"}


async def test_schedule_a_sale_that_already_started(api: Api) -> None:
    product = await api.create_product()
    status, sale = await schedule(api, product, starts_at=at(-60), ends_at=at(3600),
                                  title="Doorbuster", per_user_limit=2, payment_timeout_s=60)
    assert status == 201, sale
    assert (sale["status"], sale["title"], sale["per_user_limit"]) == ("live", "Doorbuster", 2)
    status, won = await api.purchase(sale["id"], unique("early"), quantity=2)
    assert status == 202, won


@pytest.mark.parametrize(("changes", "fields"), [
    ({"ends_at": "SAME"}, {"ends_at"}),
    ({"ends_at": at(1800)}, {"ends_at"}),
    ({"stock": 0}, {"stock"}),
    ({"stock": -5}, {"stock"}),
    ({"sale_price_cents": 10_001}, {"sale_price_cents"}),
    ({"sale_price_cents": 10_001, "ends_at": at(1800)}, {"sale_price_cents", "ends_at"}),
    ({"product_id": "999999999"}, {"product_id"}),
    ({"product_id": "not-an-id"}, {"product_id"}),
    ({"starts_at": "2030-01-01T10:00:00"}, {"starts_at"}),
    ({"ends_at": "2030-01-01T12:00:00"}, {"ends_at"}),
    ({"per_user_limit": 0}, {"per_user_limit"}),
    ({"payment_timeout_s": 0}, {"payment_timeout_s"}),
], ids=["ends-equals-starts", "ends-before-starts", "stock-0", "stock-negative",
        "price-above-product", "price-and-times", "unknown-product", "malformed-product",
        "naive-starts", "naive-ends", "limit-0", "timeout-0"])
async def test_invalid_sales_are_refused(api: Api, changes: dict[str, Any],
                                         fields: set[str]) -> None:
    product = await api.create_product(price_cents=10_000)
    if changes.get("ends_at") == "SAME":
        starts = at(3600)
        changes = {"starts_at": starts, "ends_at": starts}
    status, body = await schedule(api, product, **changes)
    assert_error(status, body, 400, "invalid_request", fields)


async def test_patch_before_start_changes_the_sale(api: Api) -> None:
    sale = await api.create_sale(stock=10, starts_in_s=3600)
    status, patched = await patch(api, sale["id"], stock=25, per_user_limit=3, title="Bigger")
    assert status == 200, patched
    assert_sale_shape(patched)
    assert (patched["stock"], patched["remaining"], patched["per_user_limit"],
            patched["title"], patched["status"]) == (25, 25, 3, "Bigger", "scheduled")
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert (status, shown["stock"], shown["remaining"]) == (200, 25, 25)
    stats = await api.stats(sale["id"])
    assert (stats["stock"], stats["remaining"], stats["reserved"]) == (25, 25, 0)

    status, patched = await patch(api, sale["id"], stock=4)
    assert (status, patched["stock"], patched["remaining"]) == (200, 4, 4)
    status, body = await patch(api, sale["id"], ends_at=sale["starts_at"])
    assert_error(status, body, 400, "invalid_request", {"ends_at"})
    assert (await api.stats(sale["id"]))["stock"] == 4


async def test_patch_can_open_the_sale_early(api: Api) -> None:
    sale = await api.create_sale(stock=3, starts_in_s=3600)
    buyer = unique("eager")
    status, body = await api.purchase(sale["id"], buyer)
    assert_error(status, body, 409, "not_started")
    status, patched = await patch(api, sale["id"], starts_at=at(-1))
    assert (status, patched["status"]) == (200, "live"), patched
    status, won = await api.purchase(sale["id"], buyer)
    assert status == 202, won


async def test_patch_after_start_is_refused(api: Api) -> None:
    sale = await api.create_sale(stock=10)
    status, body = await patch(api, sale["id"], stock=20)
    assert_error(status, body, 409, "sale_started")
    stats = await api.stats(sale["id"])
    assert (stats["stock"], stats["remaining"]) == (10, 10)


async def test_patch_of_a_cancelled_sale_is_refused(api: Api) -> None:
    sale = await api.create_sale(stock=10, starts_in_s=3600)
    status, _ = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                  user="ops", operator=True)
    assert status == 200
    status, body = await patch(api, sale["id"], stock=20)
    assert_error(status, body, 409, "sale_started")


async def test_cancel_a_sale_stops_purchases(api: Api) -> None:
    sale = await api.create_sale(stock=5)
    winner = unique("winner")
    status, won = await api.purchase(sale["id"], winner)
    assert status == 202, won
    status, cancelled = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                          user="ops", operator=True)
    assert status == 200, cancelled
    assert_sale_shape(cancelled)
    assert (cancelled["status"], cancelled["remaining"]) == ("cancelled", 4)
    status, body = await api.purchase(sale["id"], unique("late"))
    assert_error(status, body, 409, "cancelled")
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert (status, shown["status"]) == (200, "cancelled")
    status, again = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                      user="ops", operator=True)
    assert (status, again["status"]) == (200, "cancelled")
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"]) == (4, 1)


async def test_stats_shape(api: Api) -> None:
    sale = await api.create_sale(stock=4, per_user_limit=2)
    status, _ = await api.purchase(sale["id"], unique("buyer"), quantity=2)
    assert status == 202
    await api.wait_persisted(sale["id"], 2)
    stats = await api.stats(sale["id"])
    assert set(stats) == STATS_FIELDS
    assert stats == {"sale_id": sale["id"], "stock": 4, "remaining": 2, "reserved": 2,
                     "orders_persisted": 2, "paid": 0, "cancelled": 0, "expired": 0}
    status, body = await api.request("GET", "/api/v1/admin/sales/999999999/stats",
                                     user="ops", operator=True)
    assert_error(status, body, 404, "sale_not_found")


async def test_refusals_by_time_and_cancellation(api: Api) -> None:
    later = await api.create_sale(stock=3, starts_in_s=3600)
    over = await api.create_sale(stock=3, starts_in_s=-10, lasts_s=5)
    assert over["status"] == "ended"
    cancelled_later = await api.create_sale(stock=3, starts_in_s=3600)
    cancelled_over = await api.create_sale(stock=3, starts_in_s=-10, lasts_s=5)
    for sale in (cancelled_later, cancelled_over):
        status, _ = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                      user="ops", operator=True)
        assert status == 200
    buyer = unique("buyer")
    for sale, code in ((later, "not_started"), (over, "ended"), (cancelled_later, "cancelled"),
                       (cancelled_over, "cancelled")):
        status, body = await api.purchase(sale["id"], buyer)
        assert_error(status, body, 409, code)
        stats = await api.stats(sale["id"])
        assert (stats["remaining"], stats["reserved"]) == (3, 0)


async def test_open_sales_list_scheduled_and_live_soonest_first(api: Api) -> None:
    later = await api.create_sale(stock=2, starts_in_s=7200)
    sooner = await api.create_sale(stock=2, starts_in_s=3600)
    live = await api.create_sale(stock=2)
    over = await api.create_sale(stock=2, starts_in_s=-10, lasts_s=5)
    cancelled = await api.create_sale(stock=2, starts_in_s=1800)
    status, _ = await api.request("POST", f"/api/v1/admin/sales/{cancelled['id']}/cancel",
                                  user="ops", operator=True)
    assert status == 200
    ours = {s["id"] for s in (later, sooner, live, over, cancelled)}

    async def listed() -> list[str] | None:
        status, body = await api.request("GET", "/api/v1/sales")
        assert status == 200, body
        for sale in body["sales"]:
            assert_sale_shape(sale)
            assert sale["status"] in {"scheduled", "live", "sold_out"}, sale
        starts = [s["starts_at"] for s in body["sales"]]
        assert starts == sorted(starts, key=datetime.fromisoformat)
        found = [s["id"] for s in body["sales"] if s["id"] in ours]
        return found if live["id"] in found and later["id"] in found else None

    found = await wait_until(listed, what="the new sales listed")
    assert found == [live["id"], sooner["id"], later["id"]]


OPERATOR_ROUTES = [
    ("POST", "/api/v1/admin/products", {"sku": "S", "name": "N", "price_cents": 1}),
    ("POST", "/api/v1/admin/sales", {"product_id": "1", "sale_price_cents": 1, "stock": 1,
                                     "starts_at": "2030-01-01T00:00:00Z",
                                     "ends_at": "2030-01-02T00:00:00Z"}),
    ("PATCH", "/api/v1/admin/sales/{sale}", {"stock": 99}),
    ("POST", "/api/v1/admin/sales/{sale}/cancel", None),
    ("GET", "/api/v1/admin/sales/{sale}/stats", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATOR_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in OPERATOR_ROUTES])
async def test_operator_routes_refuse_shoppers(api: Api, method: str, path: str,
                                              body: Any) -> None:
    sale = await api.create_sale(stock=5, starts_in_s=3600)
    url = path.format(sale=sale["id"])
    status, refused = await api.request(method, url, user=unique("shopper"), json=body)
    assert_error(status, refused, 403, "forbidden")
    status, refused = await api.request(method, url, json=body)
    assert_error(status, refused, 401, "unauthorized")
    status, shown = await api.request("GET", f"/api/v1/sales/{sale['id']}")
    assert (status, shown["status"], shown["stock"]) == (200, "scheduled", 5)
