"""clipq worker: claims jobs from Redis in micro-batches, embeds them with CLIP, writes Qdrant.

The ``batcher.queue`` subpackage is the Redis queue protocol shared with the API; it never
imports torch, so the API can use it and stay small.
"""
