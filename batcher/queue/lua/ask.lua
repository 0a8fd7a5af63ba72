-- Put a query on the query lane, unless the lane already holds ARGV[1] requests. The request
-- gets its deadline (Redis time + ARGV[2] ms) as a first field of its JSON object, so that a
-- worker drops it once its client has given up. The rest of the JSON is never decoded here.
-- KEYS: requests
-- ARGV: max_pending, timeout_ms, request_json (a JSON object with at least one field)
-- Returns {1, pending} when queued, {0, pending} when the lane is full.
local pending = redis.call('LLEN', KEYS[1])
if pending >= tonumber(ARGV[1]) then
  return {0, pending}
end
local deadline = string.format('%d', redis_now_ms() + tonumber(ARGV[2]))
redis.call('RPUSH', KEYS[1], '{"deadline_ms":' .. deadline .. ',' .. string.sub(ARGV[3], 2))
return {1, pending + 1}
