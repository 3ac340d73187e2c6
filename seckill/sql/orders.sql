-- Named queries for orders (parsed once by seckill.resources.queries).

-- name: insert_orders
INSERT INTO orders (order_id, sale_id, user_id, quantity, amount_cents, idempotency_key,
                    created_at, pay_by)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::bigint[],
                     $6::text[], $7::timestamptz[], $8::timestamptz[])
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id;

-- name: get_order
SELECT order_id, sale_id, user_id, quantity, amount_cents, status, created_at, pay_by
FROM orders WHERE order_id = $1 AND user_id = $2;

-- name: user_orders
SELECT order_id, sale_id, user_id, quantity, amount_cents, status, created_at, pay_by
FROM orders WHERE user_id = $1
ORDER BY created_at DESC, order_id DESC
LIMIT $2;

-- name: pay_order
UPDATE orders SET status = 'paid', paid_at = clock_timestamp()
WHERE order_id = $1 AND user_id = $2 AND status = 'created' AND pay_by > clock_timestamp()
RETURNING order_id, sale_id, user_id, quantity, amount_cents, status, created_at, pay_by;

-- name: cancel_order
UPDATE orders SET status = 'cancelled', cancelled_at = clock_timestamp()
WHERE order_id = $1 AND user_id = $2 AND status = 'created' AND pay_by > clock_timestamp()
RETURNING order_id, sale_id, user_id, quantity, amount_cents, status, created_at, pay_by;

-- name: expire_due
UPDATE orders o SET status = 'expired', expired_at = clock_timestamp()
FROM (
    SELECT order_id FROM orders
    WHERE status = 'created' AND pay_by <= clock_timestamp()
    ORDER BY pay_by
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE o.order_id = due.order_id
RETURNING o.order_id, o.sale_id, o.user_id, o.quantity;

-- name: unreturned
SELECT o.order_id, o.sale_id, o.user_id, o.quantity
FROM orders o JOIN sales s ON s.id = o.sale_id
WHERE o.status IN ('cancelled', 'expired') AND NOT o.units_returned
  AND coalesce(o.cancelled_at, o.expired_at) < clock_timestamp() - make_interval(secs => $1)
  AND s.ends_at > now() - interval '2 days'  -- older sales have no Redis state left
LIMIT $2;

-- name: mark_returned
UPDATE orders SET units_returned = true WHERE order_id = ANY($1::text[]);
