"""The sold-out fast path answers exactly what Redis would, and forgets at once on a restock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from tests.support import Api, wait_until


async def _fast_refusals(api: Api) -> float:
    _, text = await api.request("GET", "/metrics")
    match = re.search(r"^seckill_purchases_sold_out_fast_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _until_fast(api: Api, sale_id: str) -> None:
    """Refuse losers until this process answers from its sold-out memory."""
    before = await _fast_refusals(api)
    n = 0

    async def fast() -> bool:
        nonlocal n
        n += 1
        status, body = await api.purchase(sale_id, f"loser-{n}")
        assert (status, body["error"]) == (409, "sold_out")
        return await _fast_refusals(api) > before

    await wait_until(fast, what="the sold-out fast path")


async def test_fast_path_keeps_the_contract_order_and_forgets_on_cancel(api: Api) -> None:
    sale = await api.create_sale(stock=2, per_user_limit=2)
    status, won = await api.purchase(sale["id"], "winner", quantity=2, key="w")
    assert status == 202
    await _until_fast(api, sale["id"])

    # Earlier refusals still win over sold_out, and replays still replay.
    status, body = await api.purchase(sale["id"], "winner", quantity=1)
    assert (status, body["error"]) == (409, "limit_reached")
    status, body = await api.purchase(sale["id"], "newcomer", quantity=3)
    assert (status, body["error"]) == (409, "limit_reached")
    status, body = await api.purchase(sale["id"], "winner", quantity=2, key="w")
    assert (status, body["order_id"]) == (202, won["order_id"])

    await api.wait_persisted(sale["id"], 2)
    status, _ = await api.request("POST", f"/api/v1/orders/{won['order_id']}/cancel",
                                  user="winner")
    assert status == 200

    # The units are back on sale at once: the very next shopper wins.
    status, body = await api.purchase(sale["id"], "after-cancel", quantity=2)
    assert status == 202, body
    stats = await api.stats(sale["id"])
    assert (stats["remaining"], stats["reserved"]) == (0, 2)


async def test_cancelled_sale_is_not_answered_sold_out(api: Api) -> None:
    sale = await api.create_sale(stock=1)
    assert (await api.purchase(sale["id"], "only"))[0] == 202
    await _until_fast(api, sale["id"])
    status, _ = await api.request("POST", f"/api/v1/admin/sales/{sale['id']}/cancel",
                                  user="ops", operator=True)
    assert status == 200
    status, body = await api.purchase(sale["id"], "late")
    assert (status, body["error"]) == (409, "cancelled")


async def test_fast_path_keeps_the_users_rate_limit(api: Api) -> None:
    sale = await api.create_sale(stock=1, user_rate_per_s=1, user_burst=2)
    assert (await api.purchase(sale["id"], "only"))[0] == 202
    await _until_fast(api, sale["id"])
    before = await _fast_refusals(api)

    answers = [await api.purchase(sale["id"], "flooder") for _ in range(3)]
    assert [(s, b["error"]) for s, b in answers] == [
        (409, "sold_out"), (409, "sold_out"), (429, "rate_limited")]
    status, body, headers = await api.request_full(
        "POST", f"/api/v1/sales/{sale['id']}/purchase", user="flooder", json={"quantity": 1})
    assert (status, body["error"], headers["Retry-After"]) == (429, "rate_limited", "1")
    # Another shopper is not held back by the flooder's bucket.
    status, body = await api.purchase(sale["id"], "someone-else")
    assert (status, body["error"]) == (409, "sold_out")
    assert await _fast_refusals(api) == before + 5  # all answered by the fast path


async def _slowly(parts: list[bytes]) -> AsyncIterator[bytes]:
    """A slow client: the body's second half leaves well after the headers."""
    for i, part in enumerate(parts):
        if i:
            await asyncio.sleep(0.05)  # a slow network, not a wait for the server
        yield part


@pytest.mark.parametrize("stock", [5, 1])
async def test_a_body_that_arrives_after_the_headers_is_read(api: Api, stock: int) -> None:
    sale = await api.create_sale(stock=stock, per_user_limit=2)
    if stock == 1:
        assert (await api.purchase(sale["id"], "only"))[0] == 202
        await _until_fast(api, sale["id"])
    async with api.session.post(
            f"{api.base}/api/v1/sales/{sale['id']}/purchase",
            data=_slowly([b'{"quantity":', b' 2}']),
            headers={**api.auth("slow"), "Content-Type": "application/json"}) as resp:
        answer = await resp.json()
    if stock == 1:
        assert (resp.status, answer["error"]) == (409, "sold_out")
    else:
        assert (resp.status, answer["quantity"]) == (202, 2)
        assert (await api.stats(sale["id"]))["remaining"] == 3
