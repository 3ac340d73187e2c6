-- 0002_defences: per-sale rate limits, purchase tokens, proof of work, waiting room; audit log.

ALTER TABLE sales
    -- token bucket per user per sale (attempts per second, burst); the contract's default 5/10
    ADD COLUMN user_rate_per_s     integer NOT NULL DEFAULT 5 CHECK (user_rate_per_s >= 0),
    ADD COLUMN user_burst          integer NOT NULL DEFAULT 10 CHECK (user_burst >= 0),
    -- token bucket per client address per sale; 0 = off (a NAT may carry many shoppers)
    ADD COLUMN address_rate_per_s  integer NOT NULL DEFAULT 0 CHECK (address_rate_per_s >= 0),
    ADD COLUMN address_burst       integer NOT NULL DEFAULT 0 CHECK (address_burst >= 0),
    -- a one-time purchase token from POST /sales/{id}/token is needed to buy
    ADD COLUMN requires_token      boolean NOT NULL DEFAULT false,
    -- leading zero bits of sha256(token ":" nonce) a client must find; 0 = no puzzle
    ADD COLUMN pow_bits            integer NOT NULL DEFAULT 0 CHECK (pow_bits BETWEEN 0 AND 24),
    -- a fair waiting room: only admitted shoppers may buy
    ADD COLUMN waiting_room        boolean NOT NULL DEFAULT false,
    -- shoppers admitted per second; 0 = derived from the stock (see lua/purchase.lua)
    ADD COLUMN admit_per_s         integer NOT NULL DEFAULT 0 CHECK (admit_per_s >= 0);

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_by_target ON audit_log (target, at DESC);
