-- load_sale.lua: write a sale's state into Redis (warm-up, rebuild after loss, or update).
--
-- KEYS[1] state     hash: stock, remaining, starts_ms, ends_ms, limit, cancelled, price_cents,
--                         timeout_s
-- KEYS[2] holders   hash: user_id -> units held
-- KEYS[3] idem      hash: idempotency field -> "order_id:quantity"
-- KEYS[4] outbox    zset of unconfirmed order_ids
-- KEYS[5] orders    hash of orders not yet in PostgreSQL
-- KEYS[6] released  set of released order_ids
-- ARGV[1]  mode: "create" writes only if the sale has no state (warm-up and rebuild);
--                "update" changes the definition of a loaded sale (patch, cancel)
-- ARGV[2]  stock        ARGV[3] starts_ms   ARGV[4] ends_ms   ARGV[5] per_user_limit
-- ARGV[6]  cancelled (0|1)  ARGV[7] price_cents  ARGV[8] timeout_s
-- ARGV[9]  expire_at (unix seconds) for every key of the sale
-- ARGV[10..17] defences: u_rate, u_burst, a_rate, a_burst, token (0|1), pow_bits, room (0|1),
--              admit_per_s (see purchase.lua)
-- ARGV[18] n_holders, then n_holders pairs (user_id, units)                 ["create" only]
-- then     n_idem, then n_idem pairs (field, "order_id:quantity")           ["create" only]
-- then     n_released, then n_released order_ids                            ["create" only]
--
-- Returns {code, remaining}; code is one of
--   created     state written (remaining = stock - units held)
--   exists      "create" found state already there: nothing changed
--   updated     definition changed; remaining moved by the change in stock
--   not_loaded  "update" found no state: nothing changed
--   below_held  "update" would leave fewer units than are held: nothing changed

local state, holders, idem, outbox, orders, released =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local mode, stock = ARGV[1], tonumber(ARGV[2])
local expire_at = tonumber(ARGV[9])
local exists = redis.call('EXISTS', state) == 1

local function define(remaining)
  redis.call('HSET', state,
    'stock', stock, 'remaining', remaining, 'starts_ms', ARGV[3], 'ends_ms', ARGV[4],
    'limit', ARGV[5], 'cancelled', ARGV[6], 'price_cents', ARGV[7], 'timeout_s', ARGV[8],
    'u_rate', ARGV[10], 'u_burst', ARGV[11], 'a_rate', ARGV[12], 'a_burst', ARGV[13],
    'token', ARGV[14], 'pow_bits', ARGV[15], 'room', ARGV[16], 'admit_per_s', ARGV[17])
end

local function expire_all()
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIREAT', key, expire_at) end
  end
end

if mode == 'update' then
  if not exists then return {'not_loaded', 0} end
  local cur = redis.call('HMGET', state, 'stock', 'remaining')
  local remaining = tonumber(cur[2]) + stock - tonumber(cur[1])
  if remaining < 0 then return {'below_held', tonumber(cur[2])} end
  define(remaining)
  expire_all()
  return {'updated', remaining}
end

if exists then
  return {'exists', tonumber(redis.call('HGET', state, 'remaining'))}
end

-- A sale without state has no trustworthy holdings: they are rewritten from ARGV.
redis.call('DEL', holders)
local i = 18
local held_total = 0
local n = tonumber(ARGV[i])
for j = 1, n do
  local units = tonumber(ARGV[i + 2 * j])
  redis.call('HSET', holders, ARGV[i + 2 * j - 1], units)
  held_total = held_total + units
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', idem, ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('SADD', released, ARGV[i + j])
end
local remaining = stock - held_total
if remaining < 0 then remaining = 0 end
define(remaining)
expire_all()
return {'created', remaining}
