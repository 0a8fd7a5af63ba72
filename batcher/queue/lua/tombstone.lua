-- Delete a product: give it a new version with no upload behind it (a tombstone), so that
-- every job of the product queued before it is superseded, and a worker that stored one of
-- them anyway removes its point again (batcher/stages/versions.py).
-- KEYS: version_seq, versions, deletes
-- ARGV: product_id
-- Returns {version, pending}: pending is 1 when the product's newest version was an upload
-- (cancelled now, whether or not its point exists yet), 0 when it was unknown or deleted.
local newest = redis.call('HGET', KEYS[2], ARGV[1])
local pending = newest and newest ~= redis.call('HGET', KEYS[3], ARGV[1])
local v = next_version(KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], v)
redis.call('HSET', KEYS[3], ARGV[1], v)
return {v, pending and 1 or 0}
