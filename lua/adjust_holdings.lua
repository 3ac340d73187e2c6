-- adjust_holdings.lua: correct users' holdings by deltas, moving the units to or from
-- `remaining` so that remaining + held stays equal to stock (reconcile --repair).
--
-- KEYS[1] state     hash of the sale (see purchase.lua)
-- KEYS[2] holders   hash: user_id -> units held
-- ARGV[1] restock channel (see release.lua)   ARGV[2] sale_id
-- ARGV[3..] pairs (user_id, delta); a positive delta means the user holds more than Redis knew
--
-- Returns {code, remaining}; code is one of
--   adjusted     every delta applied
--   not_loaded   the sale has no state: nothing changed
--   below_zero   the deltas need more units than remain: nothing changed

local state, holders = KEYS[1], KEYS[2]
if redis.call('EXISTS', state) == 0 then return {'not_loaded', 0} end
local remaining = tonumber(redis.call('HGET', state, 'remaining'))
local total = 0
for i = 3, #ARGV, 2 do total = total + tonumber(ARGV[i + 1]) end
if remaining - total < 0 then return {'below_zero', remaining} end

for i = 3, #ARGV, 2 do
  local held = redis.call('HINCRBY', holders, ARGV[i], tonumber(ARGV[i + 1]))
  if held <= 0 then redis.call('HDEL', holders, ARGV[i]) end
end
remaining = redis.call('HINCRBY', state, 'remaining', -total)
redis.call('HINCRBY', state, 'restocks', 1)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'adjusted', remaining}
