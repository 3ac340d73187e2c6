"""Bad input on every endpoint: a 4xx error envelope, never a 500, and nothing sold or changed.

Two sales watch every test: a live one with one persisted order, and a scheduled one. After
each test their stats (and the order) must be exactly as before.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from seckill.order_ids import new_order_id
from tests.support import TEST_SECRET, Api, assert_error, unique


@dataclass(frozen=True)
class Victims:
    live: str
    scheduled: str
    owner: str
    order_id: str


@pytest.fixture(scope="module")
async def victims(api: Api) -> Victims:
    live = await api.create_sale(stock=5)
    scheduled = await api.create_sale(stock=5, starts_in_s=3600)
    owner = unique("owner")
    status, won = await api.purchase(live["id"], owner)
    assert status == 202, won
    await api.wait_persisted(live["id"], 1)
    stats = await api.stats(live["id"])
    assert (stats["remaining"], stats["reserved"]) == (4, 1), stats
    return Victims(live["id"], scheduled["id"], owner, won["order_id"])


@pytest.fixture(autouse=True)
async def nothing_changes(api: Api, victims: Victims) -> AsyncIterator[None]:
    before = [await api.stats(victims.live), await api.stats(victims.scheduled)]
    yield
    after = [await api.stats(victims.live), await api.stats(victims.scheduled)]
    assert after == before, "bad input changed a sale"
    status, order = await api.order(victims.order_id, victims.owner)
    assert (status, order["status"]) == (200, "created"), order


def expand(path: str, v: Victims) -> str:
    return path.format(live=v.live, scheduled=v.scheduled, order=v.order_id)


def product_body() -> dict[str, Any]:
    return {"sku": unique("SKU"), "name": "Thing", "price_cents": 1_000}


def sale_body(product_id: str = "1") -> dict[str, Any]:
    return {"product_id": product_id, "sale_price_cents": 500, "stock": 5,
            "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z"}


# ---------------------------------------------------------------------------------- tokens

def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    # Forged tokens claim to be the victim order's owner *and* an operator: if any of them
    # were accepted, the autouse check would see the order paid or cancelled, or a sale moved.
    claims: dict[str, Any] = {"sub": "OWNER", "role": "operator", "exp": int(time.time()) + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _tampered() -> str:
    header, _, signature = _sign(_claims(sub="someone-else")).split(".")
    return f"{header}.{_b64(_claims())}.{signature}"


def _bad_signature() -> str:
    token = _sign(_claims())
    head, _, sig = token.rpartition(".")
    return f"{head}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"


BAD_AUTH: dict[str, Any] = {
    "missing": None,
    "empty": "",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "basic": "Basic b3duZXI6cGFzc3dvcmQ=",
    "wrong-scheme": lambda: "Token " + _sign(_claims()),
    "garbage": "Bearer not.a.jwt",
    "two-parts": "Bearer abc.def",
    "expired": lambda: "Bearer " + _sign(_claims(exp=int(time.time()) - 120)),
    "not-yet-valid": lambda: "Bearer " + _sign(_claims(nbf=int(time.time()) + 3600)),
    "other-secret": lambda: "Bearer " + _sign(_claims(), "another-secret-" + "y" * 32),
    "alg-none": lambda: "Bearer " + f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "bad-signature": lambda: "Bearer " + _bad_signature(),
    "tampered-payload": lambda: "Bearer " + _tampered(),
    "no-sub": lambda: "Bearer " + _sign(_claims(sub=None)),
    "empty-sub": lambda: "Bearer " + _sign(_claims(sub="")),
    "sub-65-chars": lambda: "Bearer " + _sign(_claims(sub="u" * 65)),
    "sub-not-a-string": lambda: "Bearer " + _sign(_claims(sub=42)),
    "no-exp": lambda: "Bearer " + _sign(_claims(exp=None)),
    "exp-not-a-number": lambda: "Bearer " + _sign(_claims(exp="tomorrow")),
    "too-long": lambda: "Bearer " + _sign(_claims(pad="p" * 5000)),
}

AUTH_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/sales/{live}/purchase", {"quantity": 1}),
    ("GET", "/api/v1/orders/{order}", None),
    ("GET", "/api/v1/me/orders", None),
    ("POST", "/api/v1/orders/{order}/pay", None),
    ("POST", "/api/v1/orders/{order}/cancel", None),
    ("POST", "/api/v1/admin/products", "PRODUCT"),
    ("POST", "/api/v1/admin/sales", "SALE"),
    ("PATCH", "/api/v1/admin/sales/{scheduled}", {"stock": 50}),
    ("POST", "/api/v1/admin/sales/{scheduled}/cancel", None),
    ("GET", "/api/v1/admin/sales/{live}/stats", None),
    ("GET", "/api/v1/admin/audit", None),
    ("POST", "/api/v1/sales/{live}/token", None),
    ("POST", "/api/v1/sales/{live}/queue", None),
    ("GET", "/api/v1/sales/{live}/queue", None),
]


def _body(kind: Any) -> Any:
    return product_body() if kind == "PRODUCT" else sale_body() if kind == "SALE" else kind


@pytest.mark.parametrize("token", list(BAD_AUTH), ids=list(BAD_AUTH))
@pytest.mark.parametrize(("method", "path", "body"), AUTH_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in AUTH_ROUTES])
async def test_bad_tokens_are_unauthorized(api: Api, victims: Victims, method: str, path: str,
                                           body: Any, token: str) -> None:
    value = BAD_AUTH[token]
    if callable(value):
        value = value().replace("OWNER", victims.owner)
    headers = {} if value is None else {"Authorization": value}
    status, refused = await api.request(method, expand(path, victims), json=_body(body),
                                        headers=headers)
    assert_error(status, refused, 401, "unauthorized")


def test_forged_tokens_differ_from_a_good_one_only_where_intended() -> None:
    """The forgeries above must be near misses, or the 401s would prove little."""
    good = _sign(_claims())
    assert jwt.decode(good, TEST_SECRET, algorithms=["HS256"])["role"] == "operator"
    assert _bad_signature().rpartition(".")[0] == good.rpartition(".")[0]
    assert _tampered().split(".")[1] == good.split(".")[1]


# ------------------------------------------------------------------------------- bodies

MALFORMED = [b"{", b"not json", b"null", b"[]", b'"text"', b"1", b'{"quantity": 1,}',
             b"\xff\xfe\x00", b'{"quantity": 1} trailing', b"{'quantity': 1}"]
BODY_ROUTES = [
    ("POST", "/api/v1/sales/{live}/purchase", False),
    ("POST", "/api/v1/admin/products", True),
    ("POST", "/api/v1/admin/sales", True),
    ("PATCH", "/api/v1/admin/sales/{scheduled}", True),
]


@pytest.mark.parametrize("raw", MALFORMED, ids=[repr(b)[2:-1] for b in MALFORMED])
@pytest.mark.parametrize(("method", "path", "operator"), BODY_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in BODY_ROUTES])
async def test_malformed_json(api: Api, victims: Victims, method: str, path: str,
                              operator: bool, raw: bytes) -> None:
    user = "ops" if operator else unique("shopper")
    status, body = await api.request(method, expand(path, victims), user=user,
                                     operator=operator, data=raw,
                                     headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_request")


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/admin/products"),
                                              ("POST", "/api/v1/admin/sales")])
async def test_missing_body(api: Api, victims: Victims, method: str, path: str) -> None:
    status, body = await api.request(method, path, user="ops", operator=True)
    assert_error(status, body, 400, "invalid_request")


BAD_QUANTITIES = ["1", "", True, False, 1.5, 1.0, None, [], {}, 0, -1, 101, 10**30, -(10**30),
                  1e2]


@pytest.mark.parametrize("quantity", BAD_QUANTITIES, ids=[repr(q) for q in BAD_QUANTITIES])
async def test_bad_quantity(api: Api, victims: Victims, quantity: Any) -> None:
    status, body = await api.request("POST", f"/api/v1/sales/{victims.live}/purchase",
                                     user=unique("shopper"), json={"quantity": quantity})
    assert_error(status, body, 400, "invalid_request", {"quantity"})


BAD_PRODUCTS: list[tuple[dict[str, Any], str]] = [
    ({"sku": 5}, "sku"), ({"sku": ""}, "sku"), ({"sku": "s" * 65}, "sku"),
    ({"name": None}, "name"), ({"name": ""}, "name"), ({"name": "n" * 201}, "name"),
    ({"price_cents": "100"}, "price_cents"), ({"price_cents": -1}, "price_cents"),
    ({"price_cents": 1.5}, "price_cents"), ({"price_cents": 10**11}, "price_cents"),
    ({"price_cents": True}, "price_cents"), ({"price_cents": 10**30}, "price_cents"),
    ({"description": "d" * 5001}, "description"), ({"description": 7}, "description"),
]


@pytest.mark.parametrize(("change", "field"), BAD_PRODUCTS,
                         ids=[f"{f}={next(iter(c.values()))!r:.20}" for c, f in BAD_PRODUCTS])
async def test_bad_product(api: Api, victims: Victims, change: dict[str, Any],
                           field: str) -> None:
    body = product_body()
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    status, refused = await api.request("POST", "/api/v1/admin/products", user="ops",
                                        operator=True, json=body)
    assert_error(status, refused, 400, "invalid_request", {field})


@pytest.fixture(scope="module")
async def product_id(api: Api) -> str:
    return str((await api.create_product(price_cents=1_000))["id"])


BAD_SALES: list[tuple[dict[str, Any], str]] = [
    ({"product_id": True}, "product_id"), ({"product_id": None}, "product_id"),
    ({"product_id": "0"}, "product_id"), ({"product_id": -3}, "product_id"),
    ({"product_id": 10**30}, "product_id"), ({"product_id": "x" * 300}, "product_id"),
    ({"product_id": 1.5}, "product_id"),
    ({"stock": "5"}, "stock"), ({"stock": 0}, "stock"), ({"stock": -1}, "stock"),
    ({"stock": 10**30}, "stock"), ({"stock": 2.5}, "stock"),
    ({"sale_price_cents": -1}, "sale_price_cents"),
    ({"sale_price_cents": "500"}, "sale_price_cents"),
    ({"starts_at": "tomorrow"}, "starts_at"), ({"starts_at": 12345}, "starts_at"),
    ({"starts_at": "2030-01-01T00:00:00"}, "starts_at"),
    ({"ends_at": None}, "ends_at"), ({"ends_at": "2030-13-01T00:00:00Z"}, "ends_at"),
    ({"per_user_limit": 0}, "per_user_limit"), ({"per_user_limit": 101}, "per_user_limit"),
    ({"per_user_limit": "1"}, "per_user_limit"),
    ({"payment_timeout_s": 0}, "payment_timeout_s"),
    ({"payment_timeout_s": 1.5}, "payment_timeout_s"),
    ({"title": "t" * 201}, "title"), ({"title": 5}, "title"),
]


@pytest.mark.parametrize(("change", "field"), BAD_SALES,
                         ids=[f"{f}={next(iter(c.values()))!r:.20}" for c, f in BAD_SALES])
async def test_bad_sale(api: Api, victims: Victims, product_id: str, change: dict[str, Any],
                        field: str) -> None:
    body = sale_body(product_id)
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    status, refused = await api.request("POST", "/api/v1/admin/sales", user="ops",
                                        operator=True, json=body)
    assert_error(status, refused, 400, "invalid_request", {field})


@pytest.mark.parametrize("ends_at", ["9999-12-31T00:00:00Z", "9999-12-30T23:00:00Z"])
async def test_absurd_end_date(api: Api, victims: Victims, product_id: str,
                               ends_at: str) -> None:
    body = {**sale_body(product_id), "ends_at": ends_at}
    status, refused = await api.request("POST", "/api/v1/admin/sales", user="ops",
                                        operator=True, json=body)
    assert_error(status, refused, 400, "invalid_request", {"ends_at"})


BAD_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({"stock": 0}, "stock"), ({"stock": "x"}, "stock"), ({"stock": 10**30}, "stock"),
    ({"starts_at": "2030-01-01T00:00:00"}, "starts_at"), ({"ends_at": "soon"}, "ends_at"),
    ({"ends_at": "2000-01-01T00:00:00Z"}, "ends_at"),
    ({"per_user_limit": 0}, "per_user_limit"), ({"payment_timeout_s": -5}, "payment_timeout_s"),
    ({"sale_price_cents": 10**12}, "sale_price_cents"), ({"title": ["x"]}, "title"),
]


@pytest.mark.parametrize(("change", "field"), BAD_PATCHES,
                         ids=[f"{f}={next(iter(c.values()))!r:.20}" for c, f in BAD_PATCHES])
async def test_bad_patch(api: Api, victims: Victims, change: dict[str, Any],
                         field: str) -> None:
    status, refused = await api.request("PATCH", f"/api/v1/admin/sales/{victims.scheduled}",
                                        user="ops", operator=True, json=change)
    assert_error(status, refused, 400, "invalid_request", {field})


@pytest.mark.parametrize("path", ["/api/v1/sales/{live}/purchase", "/api/v1/admin/products",
                                  "/api/v1/admin/sales", "/api/v1/admin/sales/{scheduled}"])
async def test_body_too_large(api: Api, victims: Victims, path: str) -> None:
    raw = b'{"quantity": 1, "stock": 50, "pad": "' + b"x" * (65 * 1024) + b'"}'
    method = "PATCH" if path.endswith("{scheduled}") else "POST"
    operator = "admin" in path
    status, body = await api.request(method, expand(path, victims),
                                     user="ops" if operator else unique("shopper"),
                                     operator=operator, data=raw,
                                     headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "payload_too_large")


# ---------------------------------------------------------------------------------- ids

BAD_SALE_IDS = ["abc", "0", "-1", "00", "1.5", "1e3", "0x10", "+1", "9" * 30, "x" * 300,
                "9223372036854775808", "%EF%BC%91", "%C2%B2", "%20", "999999999"]
SALE_ROUTES: list[tuple[str, str, bool, Any]] = [
    ("GET", "/api/v1/sales/{}", False, None),
    ("POST", "/api/v1/sales/{}/purchase", False, {"quantity": 1}),
    ("POST", "/api/v1/sales/{}/token", False, None),
    ("POST", "/api/v1/sales/{}/queue", False, None),
    ("GET", "/api/v1/sales/{}/queue", False, None),
    ("PATCH", "/api/v1/admin/sales/{}", True, {"stock": 5}),
    ("POST", "/api/v1/admin/sales/{}/cancel", True, None),
    ("GET", "/api/v1/admin/sales/{}/stats", True, None),
]
def _sale_id_cases() -> list[Any]:
    cases = []
    for method, path, operator, body in SALE_ROUTES:
        for sale_id in BAD_SALE_IDS:
            cases.append(pytest.param(method, path, operator, body, sale_id,
                                      id=f"{method} {path} {sale_id[:24]}"))
    return cases


@pytest.mark.parametrize(("method", "path", "operator", "body", "sale_id"), _sale_id_cases())
async def test_bad_or_unknown_sale_id(api: Api, victims: Victims, method: str, path: str,
                                      operator: bool, body: Any, sale_id: str) -> None:
    user = "ops" if operator else None if path == "/api/v1/sales/{}" else unique("shopper")
    status, refused = await api.request(method, path.format(sale_id), user=user,
                                        operator=operator, json=body)
    assert_error(status, refused, 404, "sale_not_found")


BAD_PURCHASE_TOKENS = ["garbage", "", "pt1", "pt1.1.1.1.1", "pt1.x.1.n.s", "pt1.1.x.n.s",
                       "pt1.1.1.n.s.extra", "pt2.1.1.n.s", "pt1." + "9" * 150 + ".1.n.s",
                       "pt1.1." + "9" * 190 + ".n.s", "p" * 5000]


@pytest.mark.parametrize("token", BAD_PURCHASE_TOKENS, ids=[t[:20] for t in BAD_PURCHASE_TOKENS])
async def test_bad_purchase_token(api: Api, victims: Victims, token: str) -> None:
    status, refused = await api.request(
        "POST", f"/api/v1/sales/{victims.live}/purchase", user=unique("shopper"),
        json={"quantity": 1}, headers={"Purchase-Token": token, "Purchase-Pow": "1"})
    assert_error(status, refused, 403, "invalid_purchase_token")


@pytest.mark.parametrize("token", ["pt1.².1.n.s", "pt1.1.²³.n.s"])
async def test_purchase_token_with_superscript_digits(api: Api, victims: Victims,
                                                      token: str) -> None:
    status, refused = await api.request(
        "POST", f"/api/v1/sales/{victims.live}/purchase", user=unique("shopper"),
        json={"quantity": 1}, headers={"Purchase-Token": token})
    assert_error(status, refused, 403, "invalid_purchase_token")


def _ulid() -> str:
    return new_order_id(1).partition("-")[0]


BAD_ORDER_IDS: dict[str, Any] = {
    "word": "abc",
    "zero": "0",
    "65-chars": "o" * 65,
    "300-chars": "o" * 300,
    "ulid-only": lambda v: _ulid(),
    "no-sale": lambda v: _ulid() + "-",
    "sale-0": lambda v: _ulid() + "-0",
    "sale-word": lambda v: _ulid() + "-abc",
    "sale-20-digits": lambda v: _ulid() + "-" + "9" * 20,
    "sale-2**63": lambda v: _ulid() + "-9223372036854775808",
    "two-sales": lambda v: _ulid() + "-1-2",
    "bad-ulid": lambda v: "U" * 26 + f"-{v.live}",
    "short-ulid": lambda v: _ulid()[:-1] + f"-{v.live}",
    "unknown": lambda v: new_order_id(int(v.live)),
    "unknown-sale": lambda v: new_order_id(999_999_999),
    "real-one-lowercased": lambda v: v.order_id.lower(),
    "fullwidth-sale": lambda v: _ulid() + "-%EF%BC%91",
    "superscript-sale": lambda v: _ulid() + "-%C2%B2",
}
ORDER_ROUTES = [("GET", "/api/v1/orders/{}"), ("POST", "/api/v1/orders/{}/pay"),
                ("POST", "/api/v1/orders/{}/cancel")]


@pytest.mark.parametrize("name", list(BAD_ORDER_IDS), ids=list(BAD_ORDER_IDS))
@pytest.mark.parametrize(("method", "path"), ORDER_ROUTES, ids=[m + " " + p for m, p in
                                                                 ORDER_ROUTES])
async def test_bad_or_unknown_order_id(api: Api, victims: Victims, method: str, path: str,
                                       name: str) -> None:
    order_id = BAD_ORDER_IDS[name]
    if callable(order_id):
        order_id = order_id(victims)
    status, refused = await api.request(method, path.format(order_id), user=victims.owner)
    assert_error(status, refused, 404, "order_not_found")


# ---------------------------------------------------------------------- routes and methods

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/api/v1/nope"), ("GET", "/api/v2/sales"),
    ("POST", "/api/v1/sales/1/purchasee"), ("GET", "/api/v1/orders"),
    ("POST", "/api/v1/orders/x/refund"), ("GET", "/api/v1/admin"),
])
async def test_unknown_route(api: Api, victims: Victims, method: str, path: str) -> None:
    status, body = await api.request(method, path, user="ops", operator=True)
    assert_error(status, body, 404, "not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/api/v1/sales/{live}"), ("PUT", "/api/v1/admin/products"),
    ("GET", "/api/v1/sales/{live}/purchase"), ("GET", "/api/v1/orders/{order}/pay"),
    ("DELETE", "/api/v1/orders/{order}"), ("POST", "/api/v1/me/orders"),
    ("PATCH", "/api/v1/sales/{live}"), ("POST", "/api/v1/admin/sales/{live}/stats"),
    ("DELETE", "/api/v1/admin/sales/{live}"),
])
async def test_wrong_method(api: Api, victims: Victims, method: str, path: str) -> None:
    status, body, headers = await api.request_full(method, expand(path, victims),
                                                   user=victims.owner, json={"quantity": 1})
    assert_error(status, body, 405, "method_not_allowed")
    assert headers.get("Allow"), headers


async def test_the_watch_would_see_a_change(api: Api, victims: Victims) -> None:
    """The autouse check is meaningful: a good request does move the stats it watches."""
    scheduled = await api.stats(victims.scheduled)
    status, patched = await api.request("PATCH", f"/api/v1/admin/sales/{victims.scheduled}",
                                        user="ops", operator=True, json={"stock": 6})
    assert status == 200, patched
    assert (await api.stats(victims.scheduled))["stock"] == 6 != scheduled["stock"]
    status, patched = await api.request("PATCH", f"/api/v1/admin/sales/{victims.scheduled}",
                                        user="ops", operator=True,
                                        json={"stock": scheduled["stock"]})
    assert status == 200, patched
    assert await api.stats(victims.scheduled) == scheduled
