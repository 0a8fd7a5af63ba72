"""The chaos run's plan and bookkeeping: what is uploaded when, which events happen, what is counted."""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field

from scripts.lib import ROOT
from scripts.lib.photos import corpus_files, first_corpus, read_all
from scripts.lib.procs import tail as _tail

UPLOAD_PATH = "/api/v1/index-product-with-image"
HEARTBEAT_TTL = 2.0
SHUTDOWN_GRACE = 20.0
SPARE_WARM = "chaos: spare warm"
RACES = ("retry", "delete", "reupload")  # Chaos.race_<kind>
BAD_PHOTO = ROOT / "tests" / "data" / "corpus" / "hostile" / "truncated_jpeg.jpg"  # passes the API, fails to decode
T0 = time.monotonic()


def restart_clock() -> None:
    global T0
    T0 = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - T0


def log(msg: str) -> None:
    print(f"[chaos {elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


def tail(path, n: int = 15) -> str:
    return _tail(path, n, indent="")


def index_photos() -> list[tuple[str, bytes]]:
    """The corpus's ``index`` photos: in the repository, else the shared corpus beside it."""
    corpus = first_corpus()
    photos = read_all(corpus_files("index", corpus))
    if not photos:
        raise SystemExit(f"no 'index' photos listed in {corpus / 'manifest.tsv'}")
    return photos


@dataclass(frozen=True)
class Upload:
    index: int
    product_id: str
    filename: str
    data: bytes


def plan_uploads(n: int, seed: int, reindex: float) -> list[Upload]:
    """``n`` uploads of the corpus photos, cycled; a fraction re-index an earlier product id."""
    rng = random.Random(seed)
    photos = index_photos()
    products: list[str] = []
    plan = []
    for i in range(n):
        if products and rng.random() < reindex:
            pid = rng.choice(products)
        else:
            pid = f"chaos-{seed}-{len(products):05d}"
            products.append(pid)
        name, data = photos[i % len(photos)]
        plan.append(Upload(i, pid, name, data))
    return plan


def portion_starts(n: int, weights: list[int]) -> list[int]:
    """Where each portion of ``n`` uploads starts, the portions sized in proportion to ``weights``."""
    total, starts, acc = sum(weights), [], 0
    for w in weights:
        starts.append(acc * n // total)
        acc += w
    return starts


def plan_events(kills: int) -> list[str]:
    """Worker kills with one Redis kill after the first and one SIGTERM before the last."""
    events = ["kill"] * kills
    events.insert(min(1, len(events)), "redis")
    events.insert(max(len(events) - 1, 0), "sigterm")
    return events


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any clipq setting of the caller's, plus ``extra``."""
    ours = ("WORKER_", "CLIP_", "QDRANT_", "RETRY_", "API_", "MAX_", "SEARCH_", "CORS_", "REDIS_",
            "QUEUE_", "JOB_", "FAILED_", "LOG_LEVEL", "UPLOAD_", "ALLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class Counters:
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (job_id, product_id)
    accepted_at: dict[str, float] = field(default_factory=dict)    # job_id: when its 202 came
    api_503: int = 0
    conn_errors: int = 0
    worker_kills: int = 0
    orphaned: int = 0            # jobs in a killed worker's processing list at kill time
    reap_s: list[float] = field(default_factory=list)
    redis_restarts: int = 0
    redis_killed_at: float | None = None
    redis_back_at: float | None = None
    inflight_at_kill: int = 0     # upload requests in flight when Redis was SIGKILLed
    sigterm_exit: int | None = None
    sigterm_held: int = 0         # jobs the SIGTERMed worker held when signalled
    final_exit: int | None = None
    lock_retries: int = 0
    late_503: int = 0             # 503s to status reads long after the Redis restart
    # versions (see Chaos.version_races): the last upload of a product wins, a delete sticks
    versions: dict[str, int] = field(default_factory=dict)  # job_id: the version its 202 gave
    shas: dict[str, str] = field(default_factory=dict)      # job_id: sha256 of its image
    deletes: list[tuple[str, int]] = field(default_factory=list)  # (product_id, version) answered
    doomed: set[str] = field(default_factory=set)            # jobs of undecodable photos: fail on purpose
    races: dict[str, int] = field(default_factory=dict)      # outcome of each raced retry and delete
    hostile_sent: int = 0         # queries the API would refuse, pushed straight onto the lane
    hostile_answered: int = 0     # ... that got a reply (an error reply counts)
