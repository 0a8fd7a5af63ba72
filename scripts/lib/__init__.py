"""Helpers shared by the scripts (and the tests' chaos harness), one place each.

- ``scripts.lib.photos``: the sample photos (``scripts/samples``) and the test corpus
  (``tests/data/corpus``: its ``manifest.tsv``);
- ``scripts.lib.procs``: ``free_port``, ``Child`` and ``Supervisor``: start processes with a
  log each, wait until they are ready, notice one that died, stop them in order;
- ``scripts.lib.redis_server``: a local Redis-compatible server (``LocalRedis``);
- ``scripts.lib.stats``: percentiles and latency summaries;
- ``scripts.lib.report``: JSON reports and the machine a measurement ran on;
- ``scripts.lib.bench_images`` and ``scripts.lib.worker_bench``: the worker benchmarks' product
  JPEGs and measurements (``bench_worker``, ``_options_bench``, ``_precision_bench``, ``bench_peers``).
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
