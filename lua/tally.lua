-- tally.lua: a sale's Redis totals at one instant, without its holders (reconcile's glance).
--
-- KEYS[1] state     hash of the sale (see purchase.lua)
-- KEYS[2] holders   hash: user_id -> units held (only its size is read)
-- KEYS[3] outbox    zset: unconfirmed order_ids by win time (ms)
-- KEYS[4] orders    hash: order_id -> order JSON, not yet in PostgreSQL
-- ARGV: none
--
-- Returns {now_ms, exists (0|1), stock, remaining, restocks, holders (number of users),
--          outbox (list of order_ids), orders (list of JSON)}.
-- Reads only. Its cost is the outbox's and the pending orders', not the holders':
-- snapshot.lua on a sale of 200,000 holders keeps Redis from every purchase for ~120 ms.

local state, holders, outbox, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', state, 'stock', 'remaining', 'restocks')
local exists = 0
if s[1] then exists = 1 end
return {
  now, exists, tonumber(s[1] or '0'), tonumber(s[2] or '0'), tonumber(s[3] or '0'),
  redis.call('HLEN', holders),
  redis.call('ZRANGE', outbox, 0, -1),
  redis.call('HVALS', orders),
}
