-- Move delayed retries whose due time (Redis time) has come to the consuming end of the queue.
-- KEYS: delayed, queue
-- ARGV: limit
-- Returns the number of jobs moved.
local now_ms = redis_now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('RPUSH', KEYS[2], id)
end
return #due
