"""A demo sale for a new user: one product, one live sale, and tokens to try it with."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from seckill.auth import mint_token
from seckill.catalog import Sale, open_sales, utcnow
from seckill.operations import Operations
from seckill.schemas import ProductIn, SaleIn

DEMO_SKU = "DEMO-TEA-001"


async def ensure_demo_sale(db: asyncpg.Pool, ops: Operations) -> Sale:
    for sale in await open_sales(db):
        if sale.sku == DEMO_SKU:
            return sale
    product_id = await db.fetchval("SELECT id FROM products WHERE sku = $1", DEMO_SKU)
    if product_id is None:
        product = await ops.create_product(ProductIn(
            sku=DEMO_SKU, name="Limited Longjing tea, 50 g", price_cents=12_900,
            description="A demo product for the seckill demo sale."), "demo")
        product_id = product.id
    now = utcnow()
    return await ops.schedule_sale(SaleIn(
        product_id=product_id, title="Demo flash sale", sale_price_cents=990, stock=100,
        starts_at=now, ends_at=now + timedelta(hours=24), per_user_limit=2,
        payment_timeout_s=900), "demo")


def demo_instructions(sale: Sale, secret: str, base_url: str) -> str:
    shopper = mint_token(secret, "demo-shopper", ttl_s=24 * 3600)
    operator = mint_token(secret, "demo-operator", operator=True, ttl_s=24 * 3600)
    return f"""
Demo sale {sale.id} is live: {sale.stock} units of "{sale.product_name}" \
at {sale.sale_price_cents} cents.

  curl -s {base_url}/api/v1/sales/{sale.id}
  curl -s -X POST {base_url}/api/v1/sales/{sale.id}/purchase \\
       -H "Authorization: Bearer {shopper}" -H "Idempotency-Key: demo-1" -d '{{"quantity": 1}}'
  curl -s {base_url}/api/v1/me/orders -H "Authorization: Bearer {shopper}"
  curl -s {base_url}/api/v1/admin/sales/{sale.id}/stats -H "Authorization: Bearer {operator}"
"""
