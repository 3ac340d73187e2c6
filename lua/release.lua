-- release.lua: give a cancelled or expired order's units back, exactly once per order.
--
-- KEYS[1] state     hash of the sale (see purchase.lua)
-- KEYS[2] holders   hash: user_id -> units held
-- KEYS[3] released  set of order_ids whose units were already given back
-- KEYS[4] orders    hash: order_id -> order JSON (a leftover pending record is dropped)
-- ARGV[1] order_id
-- ARGV[2] user_id
-- ARGV[3] quantity
-- ARGV[4] restock channel: the sale id is published there, so front doors forget that the
--         sale was sold out (see purchase.lua's `restocks`)
-- ARGV[5] sale_id
--
-- Returns one of
--   released     the units are back in `remaining` and off the user's holding
--   already      this order was released before: nothing changed
--   not_loaded   the sale has no state in Redis; a rebuild from PostgreSQL counts it
-- Units return to `remaining` even after the sale ended, so that
-- remaining + held == stock holds for every settled sale.

local state, holders, released, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local order_id, user, qty = ARGV[1], ARGV[2], tonumber(ARGV[3])

if redis.call('EXISTS', state) == 0 then return 'not_loaded' end
if redis.call('SISMEMBER', released, order_id) == 1 then return 'already' end
local held = tonumber(redis.call('HGET', holders, user) or '0')

redis.call('SADD', released, order_id)
if held - qty <= 0 then
  redis.call('HDEL', holders, user)
else
  redis.call('HINCRBY', holders, user, -qty)
end
redis.call('HINCRBY', state, 'remaining', qty)
redis.call('HINCRBY', state, 'restocks', 1)
redis.call('HDEL', orders, order_id)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 'released'
