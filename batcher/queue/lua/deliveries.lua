-- Webhook deliveries (api/webhooks.py): lease the due ones, settle one, or requeue a dead one.
-- KEYS: deliveries (due), deliveries_leased, deliveries_dead, delivery (the record; '' for lease)
-- ARGV: mode, then
--   lease:   lease_ms, limit. Those due by now, and those whose lease ran out (their sender died:
--            at least once), are leased until now + lease_ms. Returns {now_ms, id...}.
--   settle:  id, outcome (delivered|retry|dead), delay_ms, field, value, ... Only a leased id is
--            settled: delivered drops it and its record; retry makes it due after delay_ms; dead
--            lists it among the dead. The fields are written to its record. Returns {now_ms, 0|1}.
--   requeue: id. A dead delivery is due now again, its attempts reset. Returns {now_ms, 0|1}.
local now_ms = redis_now_ms()
local mode = ARGV[1]
if mode == 'lease' then
  local until_ms, limit = now_ms + tonumber(ARGV[2]), tonumber(ARGV[3])
  local out = {now_ms}
  for _, set in ipairs({KEYS[2], KEYS[1]}) do
    local left = limit - (#out - 1)
    if left > 0 then
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now_ms, 'LIMIT', 0, left)) do
        redis.call('ZREM', KEYS[1], id)
        redis.call('ZADD', KEYS[2], until_ms, id)
        out[#out + 1] = id
      end
    end
  end
  return out
end
local id = ARGV[2]
here({KEYS[4]})
if mode == 'requeue' then
  if redis.call('ZREM', KEYS[3], id) == 0 then return {now_ms, 0} end
  redis.call('HSET', KEYS[4], 'attempts', 0)
  redis.call('ZADD', KEYS[1], now_ms, id)
  return {now_ms, 1}
end
if redis.call('ZREM', KEYS[2], id) == 0 then return {now_ms, 0} end
local outcome = ARGV[3]
if outcome == 'delivered' then
  redis.call('DEL', KEYS[4])
  return {now_ms, 1}
end
if #ARGV > 4 then redis.call('HSET', KEYS[4], unpack(ARGV, 5)) end
if outcome == 'retry' then
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[4]), id)
else
  redis.call('ZADD', KEYS[3], now_ms, id)
end
return {now_ms, 1}
