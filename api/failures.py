"""Failures grouped by error: a pure unit (no Redis), used by ``api/routes/failures.py``.

Two failures belong to one group when their messages match once the parts that differ
from job to job are stripped: job ids, UUIDs, hex strings and addresses, quoted values and
numbers. A group's id is a short hash of that normalised message, stable across calls.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

SAMPLES = 5
_PATTERNS = [
    (re.compile(r"\bjob-[0-9a-f]{8,}\b", re.I), "<job>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<value>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def normalise(message: str | None) -> str:
    text = (message or "").strip() or "(no error message)"
    for pattern, placeholder in _PATTERNS:
        text = pattern.sub(placeholder, text)
    return re.sub(r"\s+", " ", text)


def group_id(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()[:12]


@dataclass
class Group:
    id: str
    error: str                       # the normalised message
    example: str                     # one real message of the group (the newest)
    count: int = 0
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    job_ids: list[str] = field(default_factory=list)


def group_failures(failures: list[tuple[str, int, str | None]]) -> list[Group]:
    """``(job_id, failed_at_ms, error)`` -> groups, largest first, then most recent first."""
    groups: dict[str, Group] = {}
    for job_id, at_ms, error in sorted(failures, key=lambda f: -f[1]):
        key = normalise(error)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(group_id(key), key, error or "", first_seen_ms=at_ms, last_seen_ms=at_ms)
        g.count += 1
        g.first_seen_ms = min(g.first_seen_ms, at_ms)
        g.last_seen_ms = max(g.last_seen_ms, at_ms)
        g.job_ids.append(job_id)
    return sorted(groups.values(), key=lambda g: (-g.count, -g.last_seen_ms))
