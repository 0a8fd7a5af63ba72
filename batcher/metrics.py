"""Worker metrics, in base units. A registry is passed in, so tests use a fresh one."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = tuple(float(2 ** i) for i in range(0, 11))  # 1 .. 1024
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STAGES = ("claim", "recall", "decode", "infer", "duplicates", "upsert", "ack")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.batch_size = Histogram("clipq_batch_size", "Images per forward pass.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.stage = Histogram("clipq_stage_duration_seconds", "Time per batch in each stage.",
                               ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.job_latency = Histogram("clipq_job_latency_seconds", "Enqueue to completed.",
                                     buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("clipq_queue_wait_seconds", "Enqueue to claimed.",
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.jobs = Counter("clipq_jobs_total", "Jobs finished by this worker, by outcome (completed: embedded; "
                            "unchanged, reused: completed without the model).", ["outcome"], registry=registry)
        self.infer_busy = Counter(
            "clipq_infer_busy_seconds_total", "Seconds the infer stage spent on forward passes (on a GPU: the "
            "copy in, the model and the vectors back); its rate() is the fraction of time the model's device "
            "is kept busy.", registry=registry)
        self.oom_splits = Counter("clipq_oom_splits_total", "Batches split after a device OOM.",
                                  registry=registry)
        self.store_splits = Counter("clipq_store_splits_total",
                                    "Batches split after the vector store refused them.", registry=registry)
        self.unreplicated_acks = Counter(
            "clipq_unreplicated_acks_total", "Ack calls that fewer than REDIS_WAIT_REPLICAS replicas confirmed "
            "within REDIS_WAIT_TIMEOUT_MS: the jobs stand completed on the master, but a failover before its "
            "replica caught up would run them again.", registry=registry)
        self.queries = Counter("clipq_queries_total", "Query-lane requests answered, by kind.",
                               ["kind"], registry=registry)
        self.queries_expired = Counter("clipq_queries_expired_total",
                                       "Query-lane requests dropped because their client had given up.",
                                       registry=registry)
        self.info = Gauge("clipq_worker_info", "Constant 1, labelled with what this worker runs.",
                          ["worker_id", "device", "model", "precision"], registry=registry)
        for outcome in ("completed", "unchanged", "reused", "failed", "retried", "superseded"):
            self.jobs.labels(outcome)
        for stage in STAGES:
            self.stage.labels(stage)
