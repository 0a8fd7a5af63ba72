"""The worker's stages, each run by one thread and joined by hand-offs of one batch:
claim (claim + decode, the prefetch thread), infer (the main thread), finish (store + ack)."""
