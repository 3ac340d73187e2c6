-- purchase.lua: decide the purchase attempts on one sale atomically, one after another in
-- the order given; each win is recorded in the outbox. The front door sends the attempts of
-- one moment together: what a purchase costs Redis is mostly each command's and each
-- argument's own overhead, so the sale's state is read once and written once per call.
--
-- KEYS[1] state        hash: stock, remaining, starts_ms, ends_ms, limit, cancelled,
--                            price_cents, timeout_s, restocks, and the defences:
--                            u_rate, u_burst, a_rate, a_burst, token (0|1), pow_bits,
--                            room (0|1), admit_per_s (written by load_sale.lua)
-- KEYS[2] holders      hash: user_id -> units held (pending, created or paid orders)
-- KEYS[3] idem         hash: idempotency field -> "order_id:quantity" (only wins are remembered)
-- KEYS[4] outbox       zset: order_id scored by win time in ms, until RabbitMQ confirms it
-- KEYS[5] orders       hash: order_id -> order JSON, until PostgreSQL has committed it
-- KEYS[6] used tokens  hash: purchase-token nonce -> order_id (a token buys once)
-- KEYS[7] room         zset: the waiting room, user_id by place (see join_room.lua)
-- then for attempt i (i = 1..n), two keys:
-- KEYS[6+2i]   user bucket     string: the user's rate limit for this sale (see `take`)
-- KEYS[7+2i]   address bucket  string: the client address' limit (the user bucket again when
--                              the address is unknown: then there is no address limit)
-- ARGV[1] sale_id
-- ARGV[2..5] default user rate/s, user burst, address rate/s, address burst (used when the
--            sale has no state, so that a flood is refused even then)
-- then for attempt i, seven arguments from ARGV[6+7(i-1)]:
--   user_id; quantity (integer, 1..100, validated by the caller); idempotency field ("" when
--   the request carried no Idempotency-Key); the key as the shopper sent it ("" when none);
--   order_id to use if the attempt wins; purchase-token nonce, its signature verified by the
--   caller ("" when none); leading zero bits of the proof of work sent with it (0 when none)
--
-- Running a call twice with the same order_ids answers the same wins (the runner may resend
-- a call whose connection broke). Returns, for each attempt in order, four values
-- code, order_id, n, extra; code is one of
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
-- An attempt's refusals come in the contract's order. A rate limit is spent by every attempt
-- that passes it, whatever follows; nothing else is written for a refused attempt. Every
-- write follows all of the call's checks.

local state, holders, idem, outbox, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local used_tokens, room = KEYS[6], KEYS[7]
local sale_id = ARGV[1]
local n = (#ARGV - 5) / 7
local FIELDS = 7

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', state, 'remaining', 'starts_ms', 'ends_ms', 'limit', 'cancelled',
                     'price_cents', 'timeout_s', 'u_rate', 'u_burst', 'a_rate', 'a_burst',
                     'token', 'pow_bits', 'room', 'admit_per_s', 'stock', 'restocks')
local loaded = s[1] ~= false

local users, order_ids, fields, buckets, nonces = {}, {}, {}, {}, {}
for i = 1, n do
  local at = 5 + (i - 1) * FIELDS
  users[i] = ARGV[at + 1]
  order_ids[i] = ARGV[at + 5]
  buckets[2 * i - 1], buckets[2 * i] = KEYS[6 + 2 * i], KEYS[7 + 2 * i]
  if ARGV[at + 3] ~= '' then fields[#fields + 1] = ARGV[at + 3] end
  if ARGV[at + 6] ~= '' then nonces[#nonces + 1] = ARGV[at + 6] end
end

-- Everything the attempts may read, in one command per key; the attempts then read and
-- update these tables, so a later attempt sees what an earlier one of the call did.
local function by_name(names, values)
  local found = {}
  for i = 1, #names do found[names[i]] = values[i] end
  return found
end
local done = redis.call('HMGET', orders, unpack(order_ids))
local due = by_name(buckets, redis.call('MGET', unpack(buckets)))
local held, prior, used = {}, {}, {}
if #fields > 0 then prior = by_name(fields, redis.call('HMGET', idem, unpack(fields))) end
if loaded then
  held = by_name(users, redis.call('HMGET', holders, unpack(users)))
  if #nonces > 0 and s[12] == '1' then
    used = by_name(nonces, redis.call('HMGET', used_tokens, unpack(nonces)))
  end
end
local spent = {}  -- bucket key -> when the next attempt is due, for the buckets written

-- GCRA, the token bucket's equal: a bucket holds when the next attempt is due at the steady
-- rate (an attempt may come up to burst - 1 intervals early; a missing key is a full
-- bucket). Returns 0 when the attempt may pass (and spends it), else the wait in ms.
local function take(bucket, rate, burst)
  if rate <= 0 or burst <= 0 then return 0 end
  local interval = 1000 / rate
  local next_due = tonumber(due[bucket] or now)
  if next_due < now then next_due = now end
  local wait = next_due - now - (burst - 1) * interval
  if wait > 0 then return math.ceil(wait) end
  next_due = next_due + interval
  due[bucket] = next_due
  spent[bucket] = next_due
  return 0
end

local u_rate, u_burst = tonumber(s[8] or ARGV[2]), tonumber(s[9] or ARGV[3])
local a_rate, a_burst = tonumber(s[10] or ARGV[4]), tonumber(s[11] or ARGV[5])
local starts, ends, limit = tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
local remaining = tonumber(s[1])
local admitted
if loaded and s[14] == '1' then
  -- Admitted so far: at a set rate from the start, or else twice the stock at once and a
  -- tenth of the stock more every second (never fewer as time goes on).
  local rate = tonumber(s[15] or '0')
  local elapsed = math.floor((now - starts) / 1000)
  if rate > 0 then
    admitted = rate * (elapsed + 1)
  else
    local stock = tonumber(s[16])
    admitted = 2 * stock + elapsed * math.max(1, math.floor(stock / 10))
  end
end

local function quoted(text)  -- a JSON string
  return cjson.encode(text)
end

-- One attempt's answer: code, order_id, n, extra; a win also returns the order's JSON.
local function decide(i, user, qty, field, key, order_id, nonce, pow)
  if done[i] then return 'won', order_id, qty, done[i] end  -- this very attempt, resent
  local wait = take(buckets[2 * i - 1], u_rate, u_burst)
  if wait > 0 then return 'rate_limited', '', wait, '' end
  if buckets[2 * i] ~= buckets[2 * i - 1] then
    wait = take(buckets[2 * i], a_rate, a_burst)
    if wait > 0 then return 'rate_limited', '', wait, '' end
  end
  if field ~= '' and prior[field] then
    local record = prior[field]
    local sep = string.find(record, ':', 1, true)
    local prior_id = string.sub(record, 1, sep - 1)
    local prior_qty = tonumber(string.sub(record, sep + 1))
    if prior_qty ~= qty then return 'idempotency_conflict', prior_id, prior_qty, '' end
    return 'replay', prior_id, prior_qty, ''
  end
  if not loaded then return 'not_loaded', '', 0, '' end
  if s[5] == '1' then return 'cancelled', '', 0, '' end
  if now < starts then return 'not_started', '', 0, '' end
  if now >= ends then return 'ended', '', 0, '' end
  if admitted then
    local place = redis.call('ZRANK', room, user)
    if not place then return 'not_admitted', '', -1, tostring(admitted) end
    if place >= admitted then return 'not_admitted', '', place, tostring(admitted) end
  end
  if s[12] == '1' then
    if nonce == '' then return 'token_required', '', 0, '' end
    if used[nonce] then return 'token_used', '', 0, '' end
  end
  if pow < tonumber(s[13] or '0') then return 'pow_required', '', tonumber(s[13]), '' end
  local holding = tonumber(held[user] or '0')
  if holding + qty > limit then return 'limit_reached', '', 0, '' end
  if remaining < qty then return 'sold_out', '', remaining, tostring(s[17] or '0') end

  remaining = remaining - qty
  held[user] = holding + qty
  if field ~= '' then prior[field] = order_id .. ':' .. qty end
  if nonce ~= '' then used[nonce] = order_id end
  local order = '{"order_id":' .. quoted(order_id) .. ',"sale_id":' .. quoted(sale_id)
    .. ',"user_id":' .. quoted(user) .. ',"quantity":' .. qty
    .. ',"amount_cents":' .. string.format('%d', tonumber(s[6]) * qty)
    .. ',"created_ms":' .. string.format('%d', now)
    .. ',"pay_by_ms":' .. string.format('%d', now + tonumber(s[7]) * 1000)
    .. ',"idempotency_key":' .. quoted(key) .. '}'
  return 'won', order_id, qty, order
end

local function push(list, a, b)
  list[#list + 1] = a
  list[#list + 1] = b
end

local out = {}
local won_units, holds, remembered, tokens, queued, pending = 0, {}, {}, {}, {}, {}
for i = 1, n do
  local at = 5 + (i - 1) * FIELDS
  local user, qty, field, key = ARGV[at + 1], tonumber(ARGV[at + 2]), ARGV[at + 3], ARGV[at + 4]
  local order_id, nonce = ARGV[at + 5], ARGV[at + 6]
  local code, id, count, extra = decide(i, user, qty, field, key, order_id, nonce,
                                        tonumber(ARGV[at + 7]))
  push(out, code, id)
  push(out, count, extra)
  if code == 'won' and not done[i] then
    won_units = won_units + qty
    push(holds, user, held[user])
    if field ~= '' then push(remembered, field, prior[field]) end
    if nonce ~= '' then push(tokens, nonce, order_id) end
    push(queued, now, order_id)
    push(pending, order_id, extra)
  end
end

for bucket, next_due in pairs(spent) do  -- a bucket lives until it is full again
  redis.call('SET', bucket, string.format('%.3f', next_due), 'PX', math.ceil(next_due - now))
end
if won_units > 0 then
  redis.call('HINCRBY', state, 'remaining', -won_units)
  redis.call('HSET', holders, unpack(holds))
  if #remembered > 0 then redis.call('HSET', idem, unpack(remembered)) end
  if #tokens > 0 then
    redis.call('HSET', used_tokens, unpack(tokens))
    redis.call('EXPIREAT', used_tokens, math.floor(ends / 1000) + 172800)
  end
  redis.call('ZADD', outbox, unpack(queued))
  redis.call('HSET', orders, unpack(pending))
end
return out
