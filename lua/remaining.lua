-- remaining.lua: the units a sale has left, as shoppers browsing it see them.
--
-- A script rather than a plain HGET so that it rides the front door's micro-batched
-- pipeline with the purchases of the same moment (one round trip for all of them).
--
-- KEYS[1] state   hash (see purchase.lua); its field `remaining`
--
-- Returns the remaining units as a string, or a nil reply when Redis has no state for the
-- sale (unknown, or lost: the caller rebuilds it).
return redis.call('HGET', KEYS[1], 'remaining')
