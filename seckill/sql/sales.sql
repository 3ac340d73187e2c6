-- Named queries for products and sales (parsed once by seckill.resources.queries).

-- name: insert_product
INSERT INTO products (sku, name, price_cents, description)
VALUES ($1, $2, $3, $4)
RETURNING id, sku, name, price_cents, description, created_at;

-- name: get_product
SELECT id, sku, name, price_cents, description, created_at FROM products WHERE id = $1;

-- name: insert_sale
INSERT INTO sales (product_id, title, sale_price_cents, stock, starts_at, ends_at,
                   per_user_limit, payment_timeout_s, user_rate_per_s, user_burst,
                   address_rate_per_s, address_burst, requires_token, pow_bits, waiting_room,
                   admit_per_s)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
RETURNING id;

-- name: get_sale
SELECT s.id, s.product_id, s.title, s.sale_price_cents, s.stock, s.starts_at, s.ends_at,
       s.per_user_limit, s.payment_timeout_s, s.cancelled_at,
       s.user_rate_per_s, s.user_burst, s.address_rate_per_s, s.address_burst,
       s.requires_token, s.pow_bits, s.waiting_room, s.admit_per_s,
       p.sku, p.name AS product_name, p.price_cents AS product_price_cents
FROM sales s JOIN products p ON p.id = s.product_id
WHERE s.id = $1;

-- name: lock_sale
SELECT s.id, s.product_id, s.title, s.sale_price_cents, s.stock, s.starts_at, s.ends_at,
       s.per_user_limit, s.payment_timeout_s, s.cancelled_at,
       s.user_rate_per_s, s.user_burst, s.address_rate_per_s, s.address_burst,
       s.requires_token, s.pow_bits, s.waiting_room, s.admit_per_s,
       p.sku, p.name AS product_name, p.price_cents AS product_price_cents
FROM sales s JOIN products p ON p.id = s.product_id
WHERE s.id = $1
FOR UPDATE OF s;

-- name: open_sales
SELECT s.id, s.product_id, s.title, s.sale_price_cents, s.stock, s.starts_at, s.ends_at,
       s.per_user_limit, s.payment_timeout_s, s.cancelled_at,
       s.user_rate_per_s, s.user_burst, s.address_rate_per_s, s.address_burst,
       s.requires_token, s.pow_bits, s.waiting_room, s.admit_per_s,
       p.sku, p.name AS product_name, p.price_cents AS product_price_cents
FROM sales s JOIN products p ON p.id = s.product_id
WHERE s.cancelled_at IS NULL AND s.ends_at > now()
ORDER BY s.starts_at, s.id
LIMIT $1;

-- name: update_sale
UPDATE sales
SET title = $2, sale_price_cents = $3, stock = $4, starts_at = $5, ends_at = $6,
    per_user_limit = $7, payment_timeout_s = $8, user_rate_per_s = $9, user_burst = $10,
    address_rate_per_s = $11, address_burst = $12, requires_token = $13, pow_bits = $14,
    waiting_room = $15, admit_per_s = $16, updated_at = now()
WHERE id = $1;

-- name: cancel_sale
UPDATE sales SET cancelled_at = coalesce(cancelled_at, now()), updated_at = now()
WHERE id = $1;

-- name: sale_orders
SELECT order_id, sale_id, user_id, quantity, status, idempotency_key, created_at, units_returned
FROM orders WHERE sale_id = $1;

-- name: sale_glance
SELECT coalesce(sum(quantity) FILTER (
           WHERE status IN ('created', 'paid')
             AND (created_at < $2 OR (created_at < $3 AND order_id = ANY($4::text[])))),
           0) AS held,  -- $2..$3: the tally's millisecond; $4: the tally's pending order ids
       count(*) FILTER (WHERE created_at >= $2 AND created_at < $3
                          AND NOT order_id = ANY($4::text[])) AS at_cutoff,
       count(*) FILTER (WHERE status IN ('cancelled', 'expired') AND NOT units_returned)
           AS unreturned,
       coalesce((SELECT array_agg(s.order_id) FROM orders s WHERE s.order_id = ANY($4::text[])),
                '{}') AS stored  -- by the primary key, in the same snapshot
FROM orders WHERE sale_id = $1;

-- name: sale_units
SELECT coalesce(sum(quantity) FILTER (WHERE status IN ('created', 'paid')), 0) AS persisted,
       coalesce(sum(quantity) FILTER (WHERE status = 'paid'), 0) AS paid,
       coalesce(sum(quantity) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
       coalesce(sum(quantity) FILTER (WHERE status = 'expired'), 0) AS expired
FROM orders WHERE sale_id = $1;

-- name: audit
INSERT INTO audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4::jsonb);

-- name: audit_trail
SELECT id, at, actor, action, target, details::text AS details
FROM audit_log
WHERE ($1::text IS NULL OR target = $1)
ORDER BY id DESC
LIMIT $2;
