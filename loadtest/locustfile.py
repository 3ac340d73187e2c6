"""A flash sale as Locust plays it: shoppers, impatient shoppers, and the operator.

- The operator (one per run) schedules the sale (or watches `--sale-id`) and polls its stats.
- A shopper lists the sales, opens the one on sale, counts down to its start with the
  server's clock (`server_time`), buys with an Idempotency-Key (retrying after
  `not_started`, `rate_limited` and `overloaded` as the server asks), polls the order until
  it is recorded, then pays, cancels or walks away. The next journey is a new shopper.
- An impatient shopper gives up on slow answers and retries with the same Idempotency-Key,
  and double-clicks: a repeat of a won key must return the same order.

Every purchase outcome is also reported as a request of type OUTCOME named after it
(won, sold_out, limit_reached, not_started, rate_limited, overloaded, no_answer, ...), so
Locust's tables, CSV and HTML report count them. With `--ledger-dir`, each process writes
what its shoppers saw (JSON lines) for the verdict of loadtest/verdict.py.

Tokens are minted with SECKILL_JWT_SECRET (required). The scenario's own options (each
also an environment variable) are defined in `_options` below.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TextIO

import gevent
from locust import FastHttpUser, between, constant, events, task
from locust.env import Environment

from seckill.auth import mint_token

TOKEN_TTL_S = 4 * 3600
DECISIVE = {"sold_out", "ended", "cancelled", "limit_reached"}
RETRY = {"not_started", "rate_limited", "overloaded"}


def secret() -> str:
    value = os.environ.get("SECKILL_JWT_SECRET")
    if not value:
        raise RuntimeError("set SECKILL_JWT_SECRET to the server's secret to mint tokens")
    return value


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--sale-id", env_var="SECKILL_SALE_ID", default="",
                        help="buy from this sale (the operator only watches it)")
    parser.add_argument("--sale-title", env_var="SECKILL_SALE_TITLE",
                        default="seckill-locust",
                        help="title of the sale the operator schedules and shoppers look for")
    parser.add_argument("--sale-stock", env_var="SECKILL_SALE_STOCK", type=int, default=100)
    parser.add_argument("--sale-starts-in", env_var="SECKILL_SALE_STARTS_IN", type=float,
                        default=3.0, help="seconds from scheduling to the start of the sale")
    parser.add_argument("--payment-timeout", env_var="SECKILL_PAYMENT_TIMEOUT", type=int,
                        default=900, help="payment_timeout_s of the scheduled sale")
    parser.add_argument("--pay-ratio", env_var="SECKILL_PAY_RATIO", type=float, default=0.7,
                        help="share of winners who pay")
    parser.add_argument("--cancel-ratio", env_var="SECKILL_CANCEL_RATIO", type=float,
                        default=0.1, help="share of winners who cancel (the rest walk away)")
    parser.add_argument("--journey-timeout", env_var="SECKILL_JOURNEY_TIMEOUT", type=float,
                        default=20.0, help="bound, in seconds, on one shopper's purchase")
    parser.add_argument("--ledger-dir", env_var="SECKILL_LOCUST_LEDGER", default="",
                        help="write what shoppers saw to DIR/ledger-<host>-<pid>.jsonl")


class Shared:
    """What the users of one Locust process share: the sale, the ledger, the outcomes."""

    sale_id: ClassVar[str | None] = None
    outcomes: ClassVar[Counter[str]] = Counter()
    _ledger: ClassVar[TextIO | None] = None

    @classmethod
    def ledger(cls, env: Environment, event: str, **fields: Any) -> None:
        directory = env.parsed_options.ledger_dir if env.parsed_options else ""
        if not directory:
            return
        if cls._ledger is None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            path = Path(directory) / f"ledger-{socket.gethostname()}-{os.getpid()}.jsonl"
            cls._ledger = path.open("a", buffering=1)
        cls._ledger.write(json.dumps({"e": event, **fields}) + "\n")


def outcome(env: Environment, name: str, response_time_ms: float) -> None:
    Shared.outcomes[name] += 1
    env.events.request.fire(request_type="OUTCOME", name=name, response_time=response_time_ms,
                            response_length=0, exception=None, context={})


def _json(resp: Any) -> Any:
    try:
        return json.loads(resp.content or b"null")
    except ValueError:
        return None


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _retry_after(resp: Any, default: float) -> float:
    try:
        return float(resp.headers.get("Retry-After") or default)
    except (TypeError, ValueError):
        return default


class Operator(FastHttpUser):
    """Schedules the sale (unless one is given), then watches its stats."""

    fixed_count = 1
    wait_time = constant(2)

    def on_start(self) -> None:
        token = mint_token(secret(), "locust-operator", operator=True, ttl_s=TOKEN_TTL_S)
        self.auth = {"Authorization": f"Bearer {token}"}
        opts = self.environment.parsed_options
        if opts.sale_id:
            Shared.sale_id = opts.sale_id
            return
        resp = self.client.post("/api/v1/admin/products", headers=self.auth, json={
            "sku": f"LOCUST-{uuid.uuid4().hex[:16]}", "name": "Locust product",
            "price_cents": 10_000}, name="POST /api/v1/admin/products")
        product = _json(resp)
        if resp.status_code != 201:
            return
        now = datetime.now(UTC)
        starts = now + timedelta(seconds=opts.sale_starts_in)
        resp = self.client.post("/api/v1/admin/sales", headers=self.auth, json={
            "product_id": product["id"], "title": opts.sale_title, "sale_price_cents": 5_000,
            "stock": opts.sale_stock, "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=4)).isoformat(), "per_user_limit": 1,
            "payment_timeout_s": opts.payment_timeout}, name="POST /api/v1/admin/sales")
        sale = _json(resp)
        if resp.status_code == 201:
            Shared.sale_id = sale["id"]
            Shared.ledger(self.environment, "sale", sale_id=sale["id"], stock=sale["stock"],
                          title=opts.sale_title)

    @task
    def watch(self) -> None:
        if Shared.sale_id is not None:
            self.client.get(f"/api/v1/admin/sales/{Shared.sale_id}/stats", headers=self.auth,
                            name="GET /api/v1/admin/sales/[id]/stats")


class Shopper(FastHttpUser):
    weight = 3
    wait_time = between(0.2, 1.0)
    impatient = False

    def on_start(self) -> None:
        self._new_identity()

    def _new_identity(self) -> None:
        self.user_id = f"shopper-{uuid.uuid4().hex[:20]}"
        self.auth = {"Authorization": "Bearer " + mint_token(secret(), self.user_id,
                                                             ttl_s=TOKEN_TTL_S)}

    @task
    def journey(self) -> None:
        sale = self._find_sale()
        if sale is None or sale.get("status") in ("ended", "cancelled"):
            gevent.sleep(0.2)
            return
        try:
            self._count_down(sale)
            deadline = time.monotonic() + self.environment.parsed_options.journey_timeout
            order_id = self._buy(sale["id"], deadline)
            if order_id is not None and self._await_order(order_id, deadline):
                self._pay_or_cancel(order_id, deadline)
        finally:
            self._new_identity()

    # -- browsing -----------------------------------------------------------------------
    def _find_sale(self) -> dict[str, Any] | None:
        resp = self.client.get("/api/v1/sales", name="GET /api/v1/sales")
        listed = (_json(resp) or {}).get("sales", []) if resp.status_code == 200 else []
        if Shared.sale_id is None:
            title = self.environment.parsed_options.sale_title
            mine = [s for s in listed if s.get("title") == title]
            if not mine:
                return None
            Shared.sale_id = max(mine, key=lambda s: int(s["id"]))["id"]
        resp = self.client.get(f"/api/v1/sales/{Shared.sale_id}", name="GET /api/v1/sales/[id]")
        return _json(resp) if resp.status_code == 200 else None

    def _count_down(self, sale: dict[str, Any]) -> None:
        """Wait for the start by the server's clock, and click within 50 ms of it."""
        wait = (_when(sale["starts_at"]) - _when(sale["server_time"])).total_seconds()
        if wait > 0:
            gevent.sleep(min(wait, self.environment.parsed_options.journey_timeout)
                         + random.uniform(0, 0.05))

    # -- buying -------------------------------------------------------------------------
    def _purchase(self, sale_id: str, key: str) -> tuple[int, Any, Any, float]:
        started = time.perf_counter()
        with self.client.post(f"/api/v1/sales/{sale_id}/purchase", json={"quantity": 1},
                              headers={**self.auth, "Idempotency-Key": key},
                              name="POST /api/v1/sales/[id]/purchase",
                              catch_response=True) as resp:
            status = resp.status_code
            body = _json(resp)
            if status in (202, 409, 429, 503):
                resp.success()  # every one is an answer a flash sale gives
            elif status:
                resp.failure(f"{status} {body}")
        return status, body, resp, (time.perf_counter() - started) * 1000

    def _buy(self, sale_id: str, deadline: float) -> str | None:
        env = self.environment
        key = uuid.uuid4().hex
        Shared.ledger(env, "attempt", user=self.user_id, key=key)
        while time.monotonic() < deadline:
            status, body, resp, ms = self._purchase(sale_id, key)
            code = (body or {}).get("error") if isinstance(body, dict) else None
            if status == 202:
                order_id = self._double_click(sale_id, key, body["order_id"], deadline)
                outcome(env, "won", ms)
                Shared.ledger(env, "won", user=self.user_id, key=key, order_id=order_id)
                return order_id
            if status == 409 and code in DECISIVE:
                outcome(env, code, ms)
                Shared.ledger(env, "refused", user=self.user_id, code=code)
                return None
            if status in (409, 429, 503) and code in RETRY:
                outcome(env, code, ms)
                gevent.sleep(self._pause(code, resp))
                continue
            if status == 0:
                outcome(env, "no_answer", ms)
                gevent.sleep(0.0 if self.impatient else 0.5)
                continue
            outcome(env, "unexpected", ms)
            if status >= 500:
                Shared.ledger(env, "violation", what=f"purchase answered {status} {body}")
            break
        Shared.ledger(env, "gave_up", user=self.user_id)
        return None

    def _pause(self, code: str, resp: Any) -> float:
        if code == "not_started":
            return random.uniform(0.05, 0.2)
        if self.impatient:
            return random.uniform(0.02, 0.1)
        return min(_retry_after(resp, 1.0), 2.0) * random.uniform(0.5, 1.0)

    def _double_click(self, sale_id: str, key: str, order_id: str, deadline: float) -> str:
        return order_id

    # -- after winning ------------------------------------------------------------------
    def _await_order(self, order_id: str, deadline: float) -> bool:
        """Poll the order until PostgreSQL has it (status no longer `pending`)."""
        while time.monotonic() < deadline:
            resp = self.client.get(f"/api/v1/orders/{order_id}", headers=self.auth,
                                   name="GET /api/v1/orders/[id]")
            order = _json(resp)
            if resp.status_code == 200 and order["status"] != "pending":
                return True
            if resp.status_code == 404:
                Shared.ledger(self.environment, "violation",
                              what=f"won order {order_id} not found")
                return False
            gevent.sleep(0.2)
        outcome(self.environment, "not_recorded_in_time", 0)
        return False

    def _pay_or_cancel(self, order_id: str, deadline: float) -> None:
        opts = self.environment.parsed_options
        roll = random.random()
        if roll < opts.cancel_ratio:
            action, done = "cancel", "cancelled"
        elif roll < opts.cancel_ratio + opts.pay_ratio:
            action, done = "pay", "paid"
        else:
            return  # walks away: the order expires after payment_timeout_s
        while time.monotonic() < deadline:
            with self.client.post(f"/api/v1/orders/{order_id}/{action}", headers=self.auth,
                                  name=f"POST /api/v1/orders/[id]/{action}",
                                  catch_response=True) as resp:
                body = _json(resp)
                if resp.status_code == 200 and body.get("status") == done:
                    Shared.ledger(self.environment, done, user=self.user_id,
                                  order_id=order_id)
                    return
                if resp.status_code == 409 and (body or {}).get("error") == "order_pending":
                    resp.success()
                    gevent.sleep(min(_retry_after(resp, 0.2), 1.0))
                    continue
                resp.failure(f"{action}: {resp.status_code} {body}")
                return


class ImpatientShopper(Shopper):
    """Gives up on an answer after a second and retries with the same key; double-clicks."""

    weight = 1
    network_timeout = 1.0
    impatient = True

    def _double_click(self, sale_id: str, key: str, order_id: str, deadline: float) -> str:
        status, body, _, ms = self._purchase(sale_id, key)
        if status == 202 and body["order_id"] != order_id:
            Shared.ledger(self.environment, "violation",
                          what=f"key {key} won twice: {order_id} and {body['order_id']}")
        elif status == 409:
            # Per the contract a repeat of a won key is a replay, whatever the sale's state.
            Shared.ledger(self.environment, "violation",
                          what=f"repeat of won key {key} answered {status} {body}")
        if status == 202:
            outcome(self.environment, "replayed", ms)
        return order_id


@events.test_stop.add_listener
def _summary(environment: Environment, **_: Any) -> None:
    if Shared.outcomes:
        print("purchase outcomes (this process): " + ", ".join(
            f"{name} {n}" for name, n in Shared.outcomes.most_common()), flush=True)
    if Shared._ledger is not None:
        Shared._ledger.flush()
