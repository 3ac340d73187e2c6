"""Prometheus metrics of the front door and the workers."""

from __future__ import annotations

from prometheus_client import Counter

from seckill.hot_metrics import HotCounter, HotHistogram

# Updated by every request: lock-free, collected at scrape time.
REQUESTS = HotCounter("seckill_http_requests_total", "HTTP requests by route and status",
                      ["method", "route", "status"])
LATENCY = HotHistogram("seckill_http_request_seconds", "HTTP request latency by route",
                       ["route"],
                       buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
PURCHASES = HotCounter("seckill_purchases_total",
                       "Purchase attempts by outcome (decided by Redis)", ["outcome"])
PURCHASES_SOLD_OUT_FAST = HotCounter("seckill_purchases_sold_out_fast_total",
                                     "Purchases refused sold_out by the local fast path")
# Updated per batch or per order by the pump and the workers.
ORDERS_PUBLISHED = Counter("seckill_orders_published_total",
                           "Won orders confirmed by RabbitMQ (front door)")
ORDERS_RELAYED = Counter("seckill_orders_relayed_total",
                         "Outbox entries republished by the relay")
PUBLISH_FAILURES = Counter("seckill_publish_failures_total",
                           "Publishes not confirmed in time (left in the outbox)")
OUTBOX_DEFERRED = Counter("seckill_outbox_deferred_total",
                          "Wins left to the relay because the pump was full or the broker down")
ORDERS_PERSISTED = Counter("seckill_orders_persisted_total",
                           "Orders newly inserted into PostgreSQL")
ORDERS_DUPLICATE = Counter("seckill_orders_duplicate_total",
                           "Order messages that were already in PostgreSQL (redeliveries)")
ORDERS_DEAD_LETTERED = Counter("seckill_orders_dead_lettered_total",
                               "Order messages sent to the dead-letter queue")
ORDERS_SUPERSEDED = Counter("seckill_orders_superseded_total",
                            "Orders dropped because their Idempotency-Key was already ordered")
ORDERS_EXPIRED = Counter("seckill_orders_expired_total", "Orders expired unpaid")
UNITS_RETURNED = Counter("seckill_units_returned_total",
                         "Units given back to a sale by cancel or expiry")
