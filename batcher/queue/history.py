"""A short history of the queue for the dashboard's sparklines.

Written by every worker's heartbeat through ``lua/sample.lua``, which keeps at most one
sample per ``SAMPLE_GAP_MS`` however many workers there are. The list is bounded
(``MAX_SAMPLES``) and expires ``TTL_S`` after the last sample, when no worker runs.
"""
from __future__ import annotations

import json

from .keys import Keys
from .scripts import ScriptCall

SAMPLE_GAP_MS = 5_000
MAX_SAMPLES = 240            # 20 minutes at one sample per 5 s
TTL_S = 3600


def record(scripts, keys: Keys):
    """Take a sample now, unless one was taken within the gap (sync or asyncio client)."""
    return scripts.run(ScriptCall("sample", [keys.history, keys.stats, keys.queue, keys.delayed],
                                  [SAMPLE_GAP_MS, MAX_SAMPLES, TTL_S]))


def series(raw: list[bytes], since_ms: int) -> list[dict]:
    """Samples taken since ``since_ms``, oldest first, each with the completions per second
    since the sample before it (none for the first)."""
    samples = sorted((json.loads(x) for x in raw), key=lambda s: s["t"])
    out, previous = [], None
    for s in samples:
        if previous is not None and s["t"] > previous["t"]:
            done = max(0, s["completed"] - previous["completed"])  # a counter; never negative
            s["completed_per_s"] = round(done * 1000 / (s["t"] - previous["t"]), 3)
        else:
            s["completed_per_s"] = None
        previous = s
        if s["t"] >= since_ms:
            out.append(s)
    return out
