-- Append one sample of the queue to the dashboard's history, unless a sample was taken less
-- than min_gap_ms ago (many workers call this; the history gets one sample per gap).
-- KEYS: history, stats, queue, delayed, ring
-- ARGV: min_gap_ms, max_len, ttl_s, tenant_key_prefix
-- Returns 1 when a sample was added, 0 when the last one is recent enough.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('LINDEX', KEYS[1], 0)
if last and now_ms - cjson.decode(last).t < tonumber(ARGV[1]) then
  return 0
end
local counts = redis.call('HMGET', KEYS[2], 'processing', 'completed', 'failed')
local sample = {t = now_ms, pending = pending_depth({queue = KEYS[3], ring = KEYS[5], tenants = ARGV[4]}),
                delayed = redis.call('ZCARD', KEYS[4]), processing = tonumber(counts[1] or 0),
                completed = tonumber(counts[2] or 0), failed = tonumber(counts[3] or 0)}
redis.call('LPUSH', KEYS[1], cjson.encode(sample))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
