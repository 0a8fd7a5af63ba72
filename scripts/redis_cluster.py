#!/usr/bin/env python3
"""Run a local Redis Cluster in the foreground until Ctrl-C (or SIGTERM): M masters with R
replicas each, built without redis-cli (see scripts/lib/redis_cluster.py).

    python -m scripts.redis_cluster --masters 3 --replicas 1 --port 30001 --dir data/cluster

Nodes take consecutive ports from ``--port`` (each one's cluster bus is port + 10000, so the
last must be at most 55,535). Once the cluster is ok it prints the nodes and a line
``REDIS_URL=...``; use it with ``REDIS_CLUSTER=true``. It starts empty each time.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from scripts.lib.redis_cluster import ClusterError, LocalCluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--masters", type=int, default=3)
    p.add_argument("--replicas", type=int, default=1, help="replicas of each master (default 1)")
    p.add_argument("--port", type=int, default=30001, help="the first node's port (default 30001)")
    p.add_argument("--dir", default="data/cluster", help="a folder per node: <dir>/<port>/ (nodes.conf, server.log)")
    p.add_argument("--node-timeout-ms", type=int, default=2000, help="cluster-node-timeout (default 2000)")
    a = p.parse_args(argv)
    try:
        cluster = LocalCluster(a.dir, a.masters, a.replicas, a.port, a.node_timeout_ms)
    except ValueError as exc:
        p.error(str(exc))

    def on_signal(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
        print("\n".join(cluster.describe()), flush=True)
        print(f"REDIS_URL={cluster.url}  (with REDIS_CLUSTER=true). Ctrl-C stops.", flush=True)
        while True:
            time.sleep(1)
            if len(cluster.alive_ports()) < len(cluster.ports):
                print("a node exited; see its server.log", file=sys.stderr, flush=True)
                return 1
    except (ClusterError, RuntimeError) as exc:  # RuntimeError: a node that did not start (LocalRedis)
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
