"""clipq HTTP API: a thin enqueuer. It never imports torch or open_clip."""
