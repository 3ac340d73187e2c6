-- join_room.lua: take a place in a sale's waiting room (or read it), fairly.
--
-- KEYS[1] state   hash of the sale (see purchase.lua): starts_ms, ends_ms, cancelled, room,
--                 admit_per_s, stock
-- KEYS[2] room    zset: user_id by place score
-- ARGV[1] user_id
-- ARGV[2] lottery draw in [0, 1), drawn by the caller from a secure random source
-- ARGV[3] mode: "join" takes a place if the user has none; "look" only reads
--
-- Arrivals before the start get their lottery draw as score, so at the start they stand in
-- random order, and all before anyone who came later; arrivals after the start get
-- 1 + arrival time in ms (first come, first served). A second join keeps the first place.
-- Returns {code, place (0-based, -1 if none), now_ms, starts_ms, admit_per_s, stock}; code:
--   ok | not_loaded | cancelled | ended | no_waiting_room | not_in_room

local state, room = KEYS[1], KEYS[2]
local user, draw, mode = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', state, 'starts_ms', 'ends_ms', 'cancelled', 'room', 'admit_per_s',
                     'stock')
if not s[1] then return {'not_loaded', -1, now, 0, 0, 0} end
local starts, ends = tonumber(s[1]), tonumber(s[2])
local info = {now, starts, tonumber(s[5] or '0'), tonumber(s[6])}
if s[3] == '1' then return {'cancelled', -1, unpack(info)} end
if now >= ends then return {'ended', -1, unpack(info)} end
if s[4] ~= '1' then return {'no_waiting_room', -1, unpack(info)} end

if redis.call('ZSCORE', room, user) == false then
  if mode ~= 'join' then return {'not_in_room', -1, unpack(info)} end
  local score = 1 + now
  if now < starts then score = tonumber(draw) end
  redis.call('ZADD', room, 'NX', score, user)
  redis.call('EXPIREAT', room, math.floor(ends / 1000) + 172800)
end
return {'ok', redis.call('ZRANK', room, user), unpack(info)}
