"""A three-node Apache Kafka cluster in KRaft mode, from the same Maven Central jars as :class:`LocalKafka`.

Each node is one JVM in combined mode (broker and controller) with its own data directory, address and
ports; the three controllers form a static 3-voter quorum, so the cluster keeps a leader with one node
down. Internal topics are replicated 3 times and ``min.insync.replicas`` is 2, as a production cluster
would run: a write acknowledged with ``acks=all`` is on at least two nodes. Used by the many-hosts drill
(``benchmarks/drill.py``), where the nodes listen on an address of a bridge that network namespaces reach.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aimeter.kafka_log import quiet_client
from aimeter.local.kafka import _LOG4J_CONFIG, LocalKafka, _new_cluster_id
from aimeter.local.kafka_jars import KafkaSetupError, ensure_jars, find_java

REPLICAS = 3
MIN_INSYNC = 2


@dataclass(frozen=True)
class NodeAddress:
    """Where one node listens: its clients' port and its controller port, both on ``host``."""

    node_id: int
    host: str
    port: int
    controller_port: int


def free_port_on(host: str) -> int:
    """An unused TCP port on ``host`` (an address of this machine); free now, a race is possible but rare."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class KafkaNode(LocalKafka):
    """One combined broker+controller of a cluster; ``voters`` names every controller of the quorum."""

    # Nodes that all get SIGTERM at once (their parent died) wait for a controller quorum that is shutting down
    # too, and never finish (seen: still running 4 min later). SIGKILL ends them; a restart recovers the logs.
    death_signal = signal.SIGKILL

    def __init__(self, data_dir: Path, address: NodeAddress, voters: str, *, cache_dir: Path,
                 progress: Callable[[str], None] = print) -> None:
        super().__init__(data_dir, port=address.port, controller_port=address.controller_port,
                         cache_dir=Path(cache_dir).resolve(), progress=progress)  # the JVM runs in data_dir
        self.address = address
        self.voters = voters

    @property
    def bootstrap(self) -> str:
        return f"{self.address.host}:{self.port}"

    def _write_config(self) -> Path:
        host, node = self.address.host, self.address.node_id
        lines = [
            "process.roles=broker,controller", f"node.id={node}",
            f"controller.quorum.voters={self.voters}",
            f"listeners=PLAINTEXT://{self.bootstrap},CONTROLLER://{host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.bootstrap}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir / 'kraft'}", "num.partitions=4",
            f"default.replication.factor={REPLICAS}", f"min.insync.replicas={MIN_INSYNC}",
            f"offsets.topic.replication.factor={REPLICAS}", f"transaction.state.log.replication.factor={REPLICAS}",
            f"transaction.state.log.min.isr={MIN_INSYNC}", "group.initial.rebalance.delay.ms=0",
            # A node killed with SIGKILL cannot re-register until its old session expires (default 9 s).
            "broker.heartbeat.interval.ms=500", "broker.session.timeout.ms=3000",
            # Never elect a replica that missed writes: an acknowledged event must survive a node's death.
            "unclean.leader.election.enable=false",
            "offsets.topic.num.partitions=1", "transaction.state.log.num.partitions=1",
        ]
        props = self.data_dir / "server.properties"
        props.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J_CONFIG)
        return props

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.address.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def launch(self, cluster_id: str) -> None:
        """Format storage (first use) and spawn the JVM without waiting: a node alone has no quorum."""
        if self.running:
            return
        java = find_java()
        libs = ensure_jars(self.cache_dir, progress=self._progress)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "cluster.id").write_text(cluster_id + "\n")
        props = self._write_config()
        self._format(java, libs, props)
        self._spawn(java, libs, props)

    def wait_ready(self, timeout: float) -> None:
        try:
            self._wait_ready(timeout)
        except BaseException:  # incl. Ctrl-C: never leave a half-started JVM behind
            self.stop()
            raise

    def terminate(self) -> None:
        """Send SIGTERM and return at once (:meth:`stop` waits)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def start(self, timeout: float = 90.0) -> str:
        """Restart this node alone (the others keep the quorum), on its existing storage."""
        cluster_id = (self.data_dir / "cluster.id").read_text().strip()
        self.launch(cluster_id)
        self.wait_ready(timeout)
        return self.bootstrap



class KafkaCluster:
    """Three :class:`KafkaNode` s on the given addresses (one host each, or one host with three ports)."""

    def __init__(self, root: Path, addresses: list[NodeAddress], *, cache_dir: Path,
                 progress: Callable[[str], None] = print) -> None:
        if len(addresses) != REPLICAS:
            raise KafkaSetupError(f"a cluster here has {REPLICAS} nodes, got {len(addresses)} addresses")
        voters = ",".join(f"{a.node_id}@{a.host}:{a.controller_port}" for a in addresses)
        self.nodes = [KafkaNode(Path(root) / f"node{a.node_id}", a, voters, cache_dir=cache_dir, progress=progress)
                      for a in addresses]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout: float = 120.0) -> str:
        """Start every node, then wait for each; returns the bootstrap list."""
        cluster_id = _new_cluster_id()
        try:
            for node in self.nodes:
                node.launch(cluster_id)
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every node at once, then wait for each; past ``grace`` a node is killed. The last nodes to go
        cannot finish a controlled shutdown without a quorum, so stopping one by one would wait that long twice."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop(grace)

    def under_replicated(self, topics: tuple[str, ...], timeout: float = 5.0) -> int | None:
        """Partitions of ``topics`` with fewer than 3 in-sync replicas; None when the cluster does not answer."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **quiet_client(self.bootstrap, "kafka-cluster")})
        try:
            meta = admin.list_topics(timeout=timeout)
        except KafkaException:
            return None
        return sum(1 for t in topics if t in meta.topics
                   for p in meta.topics[t].partitions.values() if len(p.isrs) < REPLICAS)

    def wait_replicated(self, topics: tuple[str, ...], timeout: float = 120.0) -> float:
        """Seconds until every partition of ``topics`` has 3 in-sync replicas again (raises past ``timeout``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.under_replicated(topics) == 0:
                return time.monotonic() - start
            time.sleep(0.5)
        raise KafkaSetupError(f"partitions of {', '.join(topics)} still under-replicated after {timeout:.0f} s")
