-- snapshot.lua: read a sale's whole Redis state at one instant (for reconcile).
--
-- KEYS[1] state     hash of the sale (see purchase.lua)
-- KEYS[2] holders   hash: user_id -> units held
-- KEYS[3] outbox    zset: unconfirmed order_ids by win time (ms)
-- KEYS[4] orders    hash: order_id -> order JSON, not yet in PostgreSQL
-- KEYS[5] released  set of released order_ids
-- ARGV: none
--
-- Returns {now_ms, exists (0|1), stock, remaining, holders (flat user, units, ...),
--          outbox (flat order_id, score, ...), orders (list of JSON), released (list)}.
-- Reads only.

local state, holders, outbox, orders, released = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', state, 'stock', 'remaining')
local exists = 0
if s[1] then exists = 1 end
return {
  now, exists, tonumber(s[1] or '0'), tonumber(s[2] or '0'),
  redis.call('HGETALL', holders),
  redis.call('ZRANGE', outbox, 0, -1, 'WITHSCORES'),
  redis.call('HVALS', orders),
  redis.call('SMEMBERS', released),
}
