-- Drop the images of failed jobs that failed more than failed_image_ttl_s ago (oldest first), so
-- that the byte budget's counter never drifts the way a TTL on the image keys would make it.
-- KEYS: image_bytes, failed_images
-- ARGV: image_key_prefix, failed_image_ttl_s, limit, job_key_prefix, tenant_key_prefix
-- Returns the bytes held afterwards.
local budget = {bytes = KEYS[1], failed = KEYS[2], prefix = ARGV[1], jobs = ARGV[4], q = {tenants = ARGV[5]}}
local cutoff_ms = redis_now_ms() - 1000 * tonumber(ARGV[2])
return drop_failed_images(budget, cutoff_ms, 0, math.huge, tonumber(ARGV[3]))
