-- purchase.lua: decide one purchase atomically; on a win, record it in the outbox.
--
-- KEYS[1] state    hash: stock, remaining, starts_ms, ends_ms, limit, cancelled, price_cents,
--                        timeout_s (written by load_sale.lua)
-- KEYS[2] holders  hash: user_id -> units held (pending, created or paid orders)
-- KEYS[3] idem     hash: idempotency field -> "order_id:quantity" (only wins are remembered)
-- KEYS[4] outbox   zset: order_id scored by win time in ms, until RabbitMQ confirms it
-- KEYS[5] orders   hash: order_id -> order JSON, until PostgreSQL has committed it
-- ARGV[1] user_id
-- ARGV[2] quantity (integer, 1..100, validated by the caller)
-- ARGV[3] idempotency field ("" when the request carried no Idempotency-Key)
-- ARGV[4] idempotency key as the shopper sent it ("" when none)
-- ARGV[5] order_id to use if this purchase wins
-- ARGV[6] sale_id
--
-- Returns {code, order_id, quantity, order_json}; code is one of
--   won                    stock taken; order_json is the order as published
--   replay                 the key already won: the original order_id and quantity
--   idempotency_conflict   the key already won with another quantity
--   not_loaded             the sale has no state in Redis (unknown, or lost: rebuild it)
--   cancelled | not_started | ended | limit_reached
--   sold_out               {code, '', remaining, restocks}: `restocks` counts the times units
--                          came back (release, repair); a front door may remember a sale sold
--                          out, and the holders it saw, until that count moves
-- Checks run in the contract's order, all before the first write.

local state, holders, idem, outbox, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user, qty = ARGV[1], tonumber(ARGV[2])
local idem_field, idem_key, order_id, sale_id = ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if idem_field ~= '' then
  local prior = redis.call('HGET', idem, idem_field)
  if prior then
    local sep = string.find(prior, ':', 1, true)
    local prior_id = string.sub(prior, 1, sep - 1)
    local prior_qty = tonumber(string.sub(prior, sep + 1))
    if prior_qty ~= qty then
      return {'idempotency_conflict', prior_id, prior_qty, ''}
    end
    return {'replay', prior_id, prior_qty, ''}
  end
end

local s = redis.call('HMGET', state, 'remaining', 'starts_ms', 'ends_ms', 'limit', 'cancelled',
                     'price_cents', 'timeout_s')
if not s[1] then
  return {'not_loaded', '', 0, ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if s[5] == '1' then return {'cancelled', '', 0, ''} end
if now < tonumber(s[2]) then return {'not_started', '', 0, ''} end
if now >= tonumber(s[3]) then return {'ended', '', 0, ''} end
local held = tonumber(redis.call('HGET', holders, user) or '0')
if held + qty > tonumber(s[4]) then return {'limit_reached', '', 0, ''} end
local remaining = tonumber(s[1])
if remaining < qty then
  return {'sold_out', '', remaining, tostring(redis.call('HGET', state, 'restocks') or '0')}
end

redis.call('HINCRBY', state, 'remaining', -qty)
redis.call('HINCRBY', holders, user, qty)
if idem_field ~= '' then
  redis.call('HSET', idem, idem_field, order_id .. ':' .. qty)
end
local order = cjson.encode({
  order_id = order_id,
  sale_id = sale_id,
  user_id = user,
  quantity = qty,
  amount_cents = tonumber(s[6]) * qty,
  created_ms = now,
  pay_by_ms = now + tonumber(s[7]) * 1000,
  idempotency_key = idem_key,
})
redis.call('ZADD', outbox, now, order_id)
redis.call('HSET', orders, order_id, order)
return {'won', order_id, qty, order}
