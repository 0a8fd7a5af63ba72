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


def sample(keys: Keys) -> ScriptCall:
    """Take a sample now, unless one was taken within the gap: 1 if taken, else 0."""
    return ScriptCall("sample", [keys.history, keys.stats, keys.queue, keys.delayed, keys.ring],
                      [SAMPLE_GAP_MS, MAX_SAMPLES, TTL_S, keys.tenant_prefix])


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


FIELDS = ("pending", "delayed", "processing", "completed", "failed")


def merge(shards: list[list[bytes]]) -> list[bytes]:
    """The samples of every shard added up, newest first like one shard's list: one sample per
    gap (``SAMPLE_GAP_MS``) in which any shard sampled, each shard counted at its latest sample by
    then (its counters and depths hold until its next sample); gaps before every shard with a
    history has sampled are left out."""
    if len(shards) == 1:
        return shards[0]
    series = [s for s in (sorted((json.loads(x) for x in raw), key=lambda s: s["t"]) for raw in shards) if s]
    buckets = sorted({s["t"] // SAMPLE_GAP_MS for one in series for s in one})
    out, latest, cursor = [], [None] * len(series), [0] * len(series)
    for bucket in buckets:
        t = 0
        for i, one in enumerate(series):
            while cursor[i] < len(one) and one[cursor[i]]["t"] // SAMPLE_GAP_MS <= bucket:
                latest[i] = one[cursor[i]]
                t = max(t, latest[i]["t"]) if latest[i]["t"] // SAMPLE_GAP_MS == bucket else t
                cursor[i] += 1
        if all(s is not None for s in latest):
            out.append(json.dumps({"t": t, **{f: sum(s.get(f, 0) for s in latest) for f in FIELDS}}).encode())
    return out[::-1]
