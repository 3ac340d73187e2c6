-- 0001_core: products, sales and orders of the flash-sale core.

CREATE TABLE products (
    id           bigserial PRIMARY KEY,
    sku          text NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    price_cents  bigint NOT NULL CHECK (price_cents >= 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sales (
    id                 bigserial PRIMARY KEY,
    product_id         bigint NOT NULL REFERENCES products (id),
    title              text NOT NULL,
    sale_price_cents   bigint NOT NULL CHECK (sale_price_cents >= 0),
    stock              integer NOT NULL CHECK (stock >= 1),
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL,
    per_user_limit     integer NOT NULL CHECK (per_user_limit >= 1),
    payment_timeout_s  integer NOT NULL CHECK (payment_timeout_s >= 1),
    cancelled_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX sales_open ON sales (starts_at) WHERE cancelled_at IS NULL;

CREATE TABLE orders (
    order_id         text PRIMARY KEY,
    sale_id          bigint NOT NULL REFERENCES sales (id),
    user_id          text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity >= 1),
    amount_cents     bigint NOT NULL CHECK (amount_cents >= 0),
    status           text NOT NULL DEFAULT 'created'
                     CHECK (status IN ('created', 'paid', 'cancelled', 'expired')),
    idempotency_key  text,
    created_at       timestamptz NOT NULL,
    pay_by           timestamptz NOT NULL,
    persisted_at     timestamptz NOT NULL DEFAULT now(),
    paid_at          timestamptz,
    cancelled_at     timestamptz,
    expired_at       timestamptz,
    -- false while a cancelled or expired order's units are not yet back in Redis
    units_returned   boolean NOT NULL DEFAULT false
);
-- A redelivered or republished win carries the same order_id (the primary key); a key
-- replayed by a shopper can never make a second order for the same (sale, user).
CREATE UNIQUE INDEX orders_idempotency
    ON orders (sale_id, user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);
CREATE INDEX orders_by_sale ON orders (sale_id, status);
CREATE INDEX orders_due ON orders (pay_by) WHERE status = 'created';
CREATE INDEX orders_to_return ON orders (order_id)
    WHERE status IN ('cancelled', 'expired') AND NOT units_returned;
