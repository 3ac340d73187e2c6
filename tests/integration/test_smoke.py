"""The contract's happy path, end to end through HTTP."""

from __future__ import annotations

from tests.support import Api


async def test_buy_pay_and_see_it(api: Api) -> None:
    sale = await api.create_sale(stock=3)
    status, won = await api.purchase(sale["id"], "alice")
    assert status == 202, won
    assert won["status"] == "pending"
    await api.wait_persisted(sale["id"], 1)
    status, paid = await api.request("POST", f"/api/v1/orders/{won['order_id']}/pay",
                                     user="alice")
    assert status == 200, paid
    assert paid["status"] == "paid"
    stats = await api.stats(sale["id"])
    assert stats == {"sale_id": sale["id"], "stock": 3, "remaining": 2, "reserved": 1,
                     "orders_persisted": 1, "paid": 1, "cancelled": 0, "expired": 0}
