"""Typed keys of the aiohttp application: every shared resource, named once."""

from __future__ import annotations

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from redis.asyncio import Redis

from seckill.auth import TokenVerifier
from seckill.browse import Browse
from seckill.catalog import SaleCache
from seckill.keys import KeySpace
from seckill.operations import Operations
from seckill.orders import Orders
from seckill.outbox import OutboxPump
from seckill.purchase import Purchases
from seckill.purchase_tokens import PurchaseTokens
from seckill.sale_state import SaleState
from seckill.scripts import Scripts
from seckill.settings import Settings
from seckill.waiting_room import WaitingRoom

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
DB = web.AppKey("db", asyncpg.Pool)
AMQP = web.AppKey("amqp", AbstractRobustConnection)
KEYS = web.AppKey("keys", KeySpace)
SCRIPTS = web.AppKey("scripts", Scripts)
VERIFIER = web.AppKey("verifier", TokenVerifier)
SALE_CACHE = web.AppKey("sale_cache", SaleCache)
SALE_STATE = web.AppKey("sale_state", SaleState)
PUMP = web.AppKey("pump", OutboxPump)
OPERATIONS = web.AppKey("operations", Operations)
PURCHASES = web.AppKey("purchases", Purchases)
ORDERS = web.AppKey("orders", Orders)
BROWSE = web.AppKey("browse", Browse)
PURCHASE_TOKENS = web.AppKey("purchase_tokens", PurchaseTokens)
WAITING_ROOM = web.AppKey("waiting_room", WaitingRoom)
