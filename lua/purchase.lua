-- purchase.lua: decide one purchase atomically; on a win, record it in the outbox.
--
-- KEYS[1] state        hash: stock, remaining, starts_ms, ends_ms, limit, cancelled,
--                            price_cents, timeout_s, restocks, and the defences:
--                            u_rate, u_burst, a_rate, a_burst, token (0|1), pow_bits,
--                            room (0|1), admit_per_s (written by load_sale.lua)
-- KEYS[2] holders      hash: user_id -> units held (pending, created or paid orders)
-- KEYS[3] idem         hash: idempotency field -> "order_id:quantity" (only wins are remembered)
-- KEYS[4] outbox       zset: order_id scored by win time in ms, until RabbitMQ confirms it
-- KEYS[5] orders       hash: order_id -> order JSON, until PostgreSQL has committed it
-- KEYS[6] user bucket  hash: tokens, ts — the user's rate limit for this sale
-- KEYS[7] addr bucket  hash: tokens, ts — the client address' rate limit for this sale
-- KEYS[8] used tokens  hash: purchase-token nonce -> order_id (a token buys once)
-- KEYS[9] room         zset: the waiting room, user_id by place (see join_room.lua)
-- ARGV[1] user_id
-- ARGV[2] quantity (integer, 1..100, validated by the caller)
-- ARGV[3] idempotency field ("" when the request carried no Idempotency-Key)
-- ARGV[4] idempotency key as the shopper sent it ("" when none)
-- ARGV[5] order_id to use if this purchase wins
-- ARGV[6] sale_id
-- ARGV[7] purchase-token nonce, its signature already verified by the caller ("" when none)
-- ARGV[8] leading zero bits of the proof of work sent with the token (0 when none)
-- ARGV[9..12] default user rate/s, user burst, address rate/s, address burst (used when the
--             sale has no state, so that a flood is refused even then)
--
-- Running it twice with the same order_id answers the same win (the runner may resend a
-- call whose connection broke). Returns {code, order_id, n, extra}; code is one of
--   won                    stock taken; n = quantity, extra = the order JSON as published
--   rate_limited           n = milliseconds until the next attempt may pass
--   replay                 the key already won: the original order_id and quantity
--   idempotency_conflict   the key already won with another quantity
--   not_loaded             the sale has no state in Redis (unknown, or lost: rebuild it)
--   cancelled | not_started | ended
--   not_admitted           waiting room: n = place (0-based, -1 = not in the room),
--                          extra = how many are admitted now
--   token_required | token_used | pow_required
--   limit_reached
--   sold_out               n = remaining, extra = restocks: the count of times units came
--                          back, so a front door may remember a sale sold out (and the holders
--                          it saw) until that count moves
-- The refusals come in the contract's order. Rate-limit buckets are written as they are
-- checked (a refused attempt still spends a token); every other write follows all checks.

local state, holders, idem, outbox, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user_bucket, addr_bucket, used_tokens, room = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local user, qty = ARGV[1], tonumber(ARGV[2])
local idem_field, idem_key, order_id, sale_id = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local token_nonce, pow = ARGV[7], tonumber(ARGV[8])

-- This very attempt already won (its reply was lost with a connection): the same answer.
local done = redis.call('HGET', orders, order_id)
if done then return {'won', order_id, qty, done} end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', state, 'remaining', 'starts_ms', 'ends_ms', 'limit', 'cancelled',
                     'price_cents', 'timeout_s', 'u_rate', 'u_burst', 'a_rate', 'a_burst',
                     'token', 'pow_bits', 'room', 'admit_per_s', 'stock')

-- A token bucket: returns 0 when an attempt may pass (and spends a token), else the wait in ms.
local function take(bucket, rate, burst)
  if rate <= 0 or burst <= 0 then return 0 end
  local b = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if not tokens then tokens, ts = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local wait = 0
  if tokens < 1 then
    wait = math.ceil((1 - tokens) * 1000 / rate)
  else
    tokens = tokens - 1
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  return wait
end

local wait = take(user_bucket, tonumber(s[8] or ARGV[9]), tonumber(s[9] or ARGV[10]))
if wait > 0 then return {'rate_limited', '', wait, ''} end
if addr_bucket ~= user_bucket then
  wait = take(addr_bucket, tonumber(s[10] or ARGV[11]), tonumber(s[11] or ARGV[12]))
  if wait > 0 then return {'rate_limited', '', wait, ''} end
end

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

if not s[1] then return {'not_loaded', '', 0, ''} end
if s[5] == '1' then return {'cancelled', '', 0, ''} end
local starts = tonumber(s[2])
if now < starts then return {'not_started', '', 0, ''} end
if now >= tonumber(s[3]) then return {'ended', '', 0, ''} end

if s[14] == '1' then
  -- Admitted so far: at a set rate from the start, or else twice the stock at once and a
  -- tenth of the stock more every second (never fewer as time goes on).
  local admitted
  local rate = tonumber(s[15] or '0')
  local elapsed = math.floor((now - starts) / 1000)
  if rate > 0 then
    admitted = rate * (elapsed + 1)
  else
    local stock = tonumber(s[16])
    admitted = 2 * stock + elapsed * math.max(1, math.floor(stock / 10))
  end
  local place = redis.call('ZRANK', room, user)
  if not place then return {'not_admitted', '', -1, tostring(admitted)} end
  if place >= admitted then return {'not_admitted', '', place, tostring(admitted)} end
end

if s[12] == '1' then
  if token_nonce == '' then return {'token_required', '', 0, ''} end
  if redis.call('HEXISTS', used_tokens, token_nonce) == 1 then
    return {'token_used', '', 0, ''}
  end
end
if pow < tonumber(s[13] or '0') then return {'pow_required', '', tonumber(s[13]), ''} end

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
if token_nonce ~= '' then
  redis.call('HSET', used_tokens, token_nonce, order_id)
  redis.call('EXPIREAT', used_tokens, math.floor(tonumber(s[3]) / 1000) + 172800)
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
