#!/usr/bin/env python3
"""Run clipq on one machine: a local Redis, the API and one worker; ``scripts/run.sh`` calls it.

Each process logs to ``data/logs/<name>.log``. When any of them fails to start or dies, this
stops the others, says which one failed, prints the end of its log and exits 1. On Ctrl-C
(SIGINT) or SIGTERM it stops the worker first (it finishes its batch within its grace), then
the API, then Redis last; each gets SIGTERM, then SIGKILL once its grace has passed, so the
whole stop is bounded by the worker's grace plus a few seconds.

State lives in ``--data-dir`` (default ``data/``): the Redis AOF, the embedded Qdrant folder
and the logs.

``python -m scripts.run_local --help`` for its flags; the supervisor is ``scripts.lib.procs``.

``--smoke`` starts everything, indexes the sample photos, runs one search, shuts down cleanly
and exits 0 only if all of that worked (``.ci/run`` runs it on a clean clone).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from scripts.lib import ROOT
from scripts.lib.redis_cluster import LocalCluster
from scripts.lib.procs import PY, StartFailed, Supervisor, api_args, api_ready, redis_answers

API_GRACE_S = 5.0
REDIS_GRACE_S = 5.0


def choose_weights(env: dict) -> None:
    env.setdefault("CLIP_MODEL", "ViT-B-32")
    env.setdefault("CLIP_PRETRAINED", "laion2b_s34b_b79k")
    if subprocess.run([PY, "-m", "scripts.weights_available"], env=env, cwd=ROOT).returncode != 0:
        print(f"==> the CLIP weights '{env['CLIP_PRETRAINED']}' cannot be fetched from here and are not cached.\n"
              "    Carrying on with CLIP_PRETRAINED=none: seeded random weights. Indexing and search work,\n"
              "    but similarity means nothing. See README, 'Model weights', to use real weights.", flush=True)
        env["CLIP_PRETRAINED"] = "none"


def start_cluster(sup: Supervisor, a: argparse.Namespace, env: dict, data: Path) -> None:
    """3 masters + 3 replicas on ports ``--redis-port`` to ``--redis-port`` + 5; the API and the
    worker speak the cluster protocol to them."""
    try:
        cluster = LocalCluster(data / "cluster", 3, 1, a.redis_port)  # checks the ports, starts nothing
    except ValueError as exc:
        raise StartFailed(f"--cluster: {exc}") from None
    env["REDIS_URL"], env["REDIS_CLUSTER"] = cluster.url, "true"
    sup.start("redis-cluster", [PY, "-m", "scripts.redis_cluster", "--masters", "3", "--replicas", "1",
                                "--port", str(a.redis_port), "--dir", str(data / "cluster")],
              REDIS_GRACE_S + 5, ready=lambda: _cluster_ok(cluster), timeout_s=60)


def _cluster_ok(cluster: LocalCluster) -> bool:
    try:
        return all(cluster.state_ok(p) for p in cluster.ports) and all(
            cluster.replica_attached(p) for p in cluster.ports[cluster.masters:])
    except redis.RedisError:
        return False


def start_services(sup: Supervisor, a: argparse.Namespace, env: dict) -> str:
    """Redis (unless REDIS_URL is set; a local cluster with ``--cluster``), the API and a worker;
    returns the API's URL."""
    data = Path(a.data_dir).resolve()
    if a.cluster:
        start_cluster(sup, a, env, data)
    elif not env.get("REDIS_URL"):
        env["REDIS_URL"] = f"redis://127.0.0.1:{a.redis_port}/0"
        sup.start("redis", [PY, "-m", "scripts.local_redis", "--dir", str(data / "redis"), "--port", str(a.redis_port)],
                  REDIS_GRACE_S, ready=lambda: redis_answers(env["REDIS_URL"]), timeout_s=30)
    choose_weights(env)
    env.setdefault("QDRANT_PATH", str(data / "qdrant"))
    # open without a key only on loopback: the API refuses to start keyless otherwise
    env.setdefault("ALLOW_ANONYMOUS", "true" if a.host in ("127.0.0.1", "localhost", "::1") else "false")
    url = f"http://127.0.0.1:{a.port}"
    sup.start("api", api_args(a.port, a.host), API_GRACE_S, ready=lambda: api_ready(url), env=env)
    grace = float(env.get("WORKER_SHUTDOWN_GRACE", 30)) + 5
    # one machine for everything: the model yields the CPU to the API, which must answer in milliseconds
    sup.start("worker", [PY, "-m", "batcher"], grace, env=env, nice=10)
    return url


def serve(sup: Supervisor, a: argparse.Namespace, url: str, env: dict) -> int:
    demo = [PY, "-m", "scripts.demo", "--api", url, *(["--api-key", env["API_KEY"].split(",")[0]]
                                                  if env.get("API_KEY") else [])]
    demo_proc = subprocess.Popen(demo + (["--strict"] if a.smoke else []), cwd=ROOT, env=env)
    while demo_proc.poll() is None:
        sup.check()
        time.sleep(0.2)
    if a.smoke:
        return demo_proc.returncode
    where = f"{a.host}:{a.port}"
    print(f"==> serving: API http://{where} (docs at /docs), worker metrics "
          f":{env.get('WORKER_METRICS_PORT', 9100)}/metrics, logs in {sup.logs}. Ctrl-C stops.", flush=True)
    while True:
        sup.check()
        time.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="index the samples, search once, stop; exit 0 if it all worked")
    p.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"),
                   help="address the API listens on (default 127.0.0.1; API_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", 8000)), help="API port (API_PORT)")
    p.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", 6379)),
                   help="port of the local Redis when REDIS_URL is unset (REDIS_PORT)")
    p.add_argument("--cluster", action="store_true",
                   help="a local Redis Cluster (3 masters + 3 replicas, ports REDIS_PORT to REDIS_PORT+5) instead "
                        "of one Redis; sets REDIS_URL and REDIS_CLUSTER=true for the API and the worker")
    p.add_argument("--data-dir", default=os.environ.get("CLIPQ_DATA_DIR", str(ROOT / "data")),
                   help="Redis AOF, embedded Qdrant and logs (default data/; CLIPQ_DATA_DIR)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sup = Supervisor(Path(a.data_dir).resolve() / "logs")

    def on_signal(signum, _frame):
        if not sup.stopping:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = dict(os.environ)
    status = 1
    try:
        status = serve(sup, a, start_services(sup, a, env), env)
    except StartFailed as exc:
        print(f"==> FAILED: {exc}", file=sys.stderr, flush=True)
        bad = sup.failed_child()
        if bad is not None:
            print(f"==> last lines of {bad.log}:\n{bad.tail()}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        status = 0
    finally:
        print("==> stopping (worker first: it finishes its batch; Redis last)", flush=True)
        sup.stop_all()
    worker = sup.get("worker")
    if a.smoke and status == 0 and worker is not None and worker.proc.returncode != 0:
        print(f"==> FAILED: the worker exited with status {worker.proc.returncode} on shutdown", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
