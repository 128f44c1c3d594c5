"""The many-hosts drill (``make drill``): real processes, a three-node Kafka cluster, faults under load, exact counts.

What runs:
- a three-node Apache Kafka cluster in KRaft mode (``aimeter.local.kafka_cluster``), topics with replication
  factor 3 and ``min.insync.replicas`` 2;
- two gateway replicas, each on its own host (a network namespace with a veth pair, ``drill_net.py``) next to
  its own fake upstream, each with a data dir nobody else reads (keys and counts come through Kafka); two
  pricers in one consumer group;
- paced load through both gateways with the openai SDK (``drill_load.py``).

Under that load, in order: one Kafka node is killed with SIGKILL and later restarted; gateway 1's host is cut off
from Kafka for 30 s; one pricer is killed with SIGKILL (the other takes its partitions; it is restarted later);
a key is revoked (as ``aimeter keys revoke`` does, timed from Kafka's acknowledgement). Then every answered
request's event id is looked up in ClickHouse.

ClickHouse here is embedded (chDB), and one chDB directory can be opened by one process only: two pricers cannot
write one embedded ledger, and the read-only query endpoint takes no writes. So each pricer writes its own store
and the drill checks their union; then a third pricer on a fresh group replays the whole topic into one ledger,
where the counts, the cost sum and ``aimeter reconcile`` are checked. Two pricers writing one ledger need a
ClickHouse server (``AIMETER_CLICKHOUSE_URL``), as in production; none runs here, and the drill has no such mode.

Everything the drill starts (processes, namespaces, bridge) is removed on exit, on failure and on its own timeout.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aimeter.events import USAGE_TOPIC
from aimeter.gateway.keys_kafka import KeysTopic
from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka_cluster import KafkaCluster, NodeAddress, free_port_on
from aimeter.store.client import query_endpoint_client
from benchmarks.drill_kafka import busiest_leader, group_assignment, topic_settings
from benchmarks.drill_load import Load, Stream
from benchmarks.drill_net import KAFKA_ADDRS, Host, NetError, Network
from benchmarks.drill_procs import Procs, clean_env
from benchmarks.drill_report import verdicts, write_results

REPO = Path(__file__).resolve().parents[1]
TEAMS = ("drill", "drill-revoked")
COST_EACH = (1000 * Decimal("0.15") + 100 * Decimal("0.60")) / Decimal(1_000_000)  # gpt-4o-mini, 1000 in, 100 out
UPSTREAM_PORT = 8090  # inside each gateway host's own namespace: nothing else listens there
GATEWAY_PORT = 8080
CONFIG = """backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
models:
  gpt-4o-mini: {{backend: openai}}
"""
IDS_SQL = "SELECT toString(event_id) FROM usage_events FINAL WHERE team IN ('drill', 'drill-revoked')"
DUPS_SQL = "SELECT count() - uniqExact(event_id) FROM usage_events FINAL WHERE team IN ('drill', 'drill-revoked')"
COST_SQL = "SELECT count(), sum(cost_usd) FROM usage_costs FINAL WHERE team IN ('drill', 'drill-revoked')"


class DrillTimeoutError(RuntimeError):
    """The whole drill ran past --timeout; everything it started is stopped."""


@dataclass
class Gateway:
    index: int
    url: str
    host: Host | None  # None: loopback fallback, no namespace


@dataclass
class Drill:
    root: Path
    rate: float
    probe_rate: float
    cut_s: float
    started: float = field(default_factory=time.monotonic)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def mark(self, what: str, **extra: Any) -> float:
        now = time.monotonic()
        self.timeline.append({"t_s": round(now - self.started, 2), "what": what, **extra})
        print(f"drill: [{now - self.started:7.1f} s] {what} {extra or ''}", flush=True)
        return now


def _interrupt(signum: int, _frame: object) -> None:
    if signum == signal.SIGALRM:
        raise DrillTimeoutError("the drill ran past its --timeout; stopping everything it started")
    raise KeyboardInterrupt


def keys_cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "aimeter", "keys", *args], env=env, capture_output=True,
                         text=True, check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"`aimeter keys {' '.join(args)}` failed (exit {out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def create_key(env: dict[str, str], team: str) -> tuple[str, str]:
    """(key, key id) from `aimeter keys create`, whichever store it writes (Kafka topic or key file)."""
    text = keys_cli(env, "create", "--team", team)
    key = next(w for w in text.split() if w.startswith("am_"))
    return key, key.split("_")[1]


def wait_http(url: str, timeout: float, what: str, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"{what} exited before it answered {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def scrape(url: str, token_file: Path) -> dict[str, float]:
    """Unlabelled samples of a /metrics page (bearer token from the file the gateway made)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    found = (re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*) ([0-9.eE+-]+)$", line) for line in text.splitlines())
    return {m.group(1): float(m.group(2)) for m in found if m}


class Stores:
    """Each pricer's store, read through its own read-only query endpoint."""

    def __init__(self) -> None:
        self.endpoints: dict[str, tuple[str, int]] = {}

    def add(self, name: str, data_dir: Path, port: int) -> None:
        self.endpoints[name] = (f"chdb://{(data_dir / 'chdb').resolve()}", port)

    def ids(self, name: str) -> set[str]:
        client = query_endpoint_client(*self.endpoints[name])
        return {row[0] for row in client.query(IDS_SQL).result_rows}

    def scalar(self, name: str, sql: str) -> Any:
        return query_endpoint_client(*self.endpoints[name]).query(sql).result_rows[0]


def make_cluster(drill: Drill, hosts: bool) -> KafkaCluster:
    addrs = KAFKA_ADDRS if hosts else ("127.0.0.1",) * 3
    nodes = [NodeAddress(i + 1, a, free_port_on(a), free_port_on(a)) for i, a in enumerate(addrs)]
    return KafkaCluster(drill.root / "kafka", nodes, cache_dir=REPO / ".aimeter" / "cache" / "kafka")


def start_cluster(drill: Drill, cluster: KafkaCluster) -> None:
    t0 = time.monotonic()
    cluster.start()
    created = ensure_topics(cluster.bootstrap, partitions=4, replication_factor=3)
    drill.results["usage_topic"] = topic_settings(cluster.bootstrap)
    drill.mark("kafka cluster up", bootstrap=cluster.bootstrap, start_s=round(time.monotonic() - t0, 1),
               topics=created, usage_topic=drill.results["usage_topic"])


def start_pricer(procs: Procs, stores: Stores, drill: Drill, name: str, group: str, bootstrap: str) -> None:
    data = drill.root / name
    port = stores.endpoints[name][1] if name in stores.endpoints else free_port_on("127.0.0.1")
    stores.add(name, data, port)
    env = clean_env(data_dir=str(data), kafka_bootstrap=bootstrap, pricer_group=group, query_port=str(port),
                    topic_replication_factor="3",
                    pricer_metrics_port="0", rollup_interval_s="0", config=str(drill.root / "config.yaml"))
    procs.aimeter(name, ["pricer"], env)
    wait_http(f"http://127.0.0.1:{port}/ping", 90, name, lambda: procs.alive(name))


def start_gateways(procs: Procs, drill: Drill, bootstrap: str, net: Network | None) -> list[Gateway]:
    gateways = []
    for i in (1, 2):
        host = net.hosts[i - 1] if net else None
        prefix = host.exec_prefix() if host else []
        up_port = UPSTREAM_PORT if host else free_port_on("127.0.0.1")
        addr, port = (host.addr, GATEWAY_PORT) if host else ("127.0.0.1", free_port_on("127.0.0.1"))
        config = drill.root / f"config-gw{i}.yaml"
        config.write_text(CONFIG.format(port=up_port))
        procs.aimeter(f"upstream{i}", ["fake-upstream", "--port", str(up_port)], clean_env(), prefix)
        # Each host has a data dir of its own, read by nobody else: keys and counts reach the others through Kafka.
        env = clean_env(data_dir=str(drill.root / f"gw{i}"), kafka_bootstrap=bootstrap, gateway_id=f"gw{i}",
                        gateway_host=addr, gateway_port=str(port), config=str(config), topic_replication_factor="3")
        procs.aimeter(f"gateway{i}", ["gateway"], env, prefix)
        gateways.append(Gateway(i, f"http://{addr}:{port}", host))
    for gw in gateways:
        wait_http(f"{gw.url}/health", 60, f"gateway{gw.index}", lambda gw=gw: procs.alive(f"gateway{gw.index}"))
    return gateways


def kill_and_restart_broker(drill: Drill, cluster: KafkaCluster, down_s: float) -> None:
    """SIGKILL the node leading the most usage partitions (forcing elections), restart it after ``down_s``."""
    node_id = busiest_leader(cluster.bootstrap)
    node = next(n for n in cluster.nodes if n.address.node_id == node_id)
    node.kill()
    down_at = drill.mark(f"kafka node {node_id} killed (SIGKILL); it led the most usage partitions")
    drill.results["killed_node"] = node_id
    seen: list[int] = []
    while time.monotonic() - down_at < down_s:  # the controller fences the node and shrinks the ISRs
        urp = cluster.under_replicated((USAGE_TOPIC,))
        if urp is not None:
            seen.append(urp)
        time.sleep(1)
    drill.results["under_replicated_with_node_down"] = max(seen, default=None)
    t0 = time.monotonic()
    node.start()
    drill.mark(f"kafka node {node_id} restarted", start_s=round(time.monotonic() - t0, 1))
    back = cluster.wait_replicated((USAGE_TOPIC,))
    drill.results["isr_restored_s"] = round(back, 1)
    drill.mark("every usage partition has 3 in-sync replicas again", after_s=round(back, 1))


def cut_gateway(drill: Drill, net: Network | None, gw: Gateway) -> None:
    if net is None or gw.host is None:
        drill.mark("cut-off skipped: no network namespaces (loopback fallback)")
        drill.results["cut_off"] = "not run: loopback fallback"
        return
    net.cut_from_kafka(gw.host)
    drill.mark(f"gateway {gw.index}'s host cut off from Kafka (blackhole routes)", seconds=drill.cut_s)
    try:
        time.sleep(drill.cut_s)
    finally:
        net.restore(gw.host)
    drill.mark(f"gateway {gw.index}'s host reconnected")
    drill.results["cut_off"] = f"{drill.cut_s:.0f} s"


def kill_pricer(drill: Drill, procs: Procs, bootstrap: str) -> None:
    procs.kill9("pricer1")
    t0 = drill.mark("pricer 1 killed (SIGKILL)")
    while time.monotonic() - t0 < 90:
        if group_assignment(bootstrap, "drill") == [4]:
            taken = time.monotonic() - t0
            drill.results["pricer_takeover_s"] = round(taken, 1)
            drill.mark("pricer 2 holds all 4 partitions", after_s=round(taken, 1))
            return
        time.sleep(0.5)
    drill.results["pricer_takeover_s"] = None
    drill.mark("pricer 2 did NOT take all partitions within 90 s")


def revoke(drill: Drill, key_id: str, bootstrap: str) -> float:
    """Revoke the key as `aimeter keys revoke` does (read the topic, write the record with ``revoked_at`` set,
    acks=all), timed here: the CLI's own start-up (6-8 s on this busy box) would hide the write. Returns when
    Kafka acknowledged the write, on the monotonic clock: no replica can refuse the key before that."""
    store = KeysTopic(bootstrap)
    record = store.load()[key_id]
    stamped = drill.mark("revoking the second key (acks=all write to ai.keys.v1)")
    store.put([replace(record, revoked_at=datetime.now(UTC).isoformat())])
    acked = drill.mark("Kafka acknowledged the revocation", write_s=round(time.monotonic() - stamped, 3))
    drill.results["revocation_write_s"] = round(acked - stamped, 3)
    return acked


def revocation_report(load: Load, gateways: list[Gateway], acked: float) -> dict[str, Any]:
    """Per replica, in seconds from Kafka's acknowledgement of the revocation: when its last answer accepting the
    revoked key came back (an upper bound on when it last accepted it) and when its first refusal came back.
    Negative: before the acknowledgement (the write lands before the producer hears back). The probe stream
    ticks every 1/probe_rate s: that is the resolution."""
    out: dict[str, Any] = {}
    for gw in gateways:
        probes = [a for a in load.answers if a.gateway == gw.index and a.key == "revoked"]
        accepted = [a.done_at - acked for a in probes if a.status == 200]
        refused = [a.done_at - acked for a in probes if a.status == 401]
        late = [t for t in accepted if t > 1.0]
        out[f"gw{gw.index}"] = {"last_accepted_after_s": round(max(accepted), 3) if accepted else None,
                                "first_refused_after_s": round(min(refused), 3) if refused else None,
                                "accepted_later_than_1_s": len(late), "refused": len(refused)}
    return out


def wait_drained(drill: Drill, stores: Stores, names: list[str], answered: set[str], timeout: float,
                 ) -> dict[str, set[str]]:
    t0 = time.monotonic()
    held: dict[str, set[str]] = {}
    while True:
        for name in names:
            try:
                held[name] = stores.ids(name)
            except Exception:  # noqa: BLE001 - a pricer restarting: its endpoint comes back
                held.setdefault(name, set())
        union = set().union(*held.values())
        if answered <= union or time.monotonic() - t0 > timeout:
            drill.mark("stores drained" if answered <= union else "stores NOT drained", stored=len(union),
                       answered=len(answered), after_s=round(time.monotonic() - t0, 1))
            return held
        time.sleep(2)


def run(drill: Drill, args: argparse.Namespace) -> dict[str, Any]:
    net: Network | None = None
    cluster: KafkaCluster | None = None
    procs = Procs(drill.root / "logs")
    load: Load | None = None
    stores = Stores()
    try:
        if not args.loopback:
            net = Network()
            try:
                net.create()
                drill.mark("hosts made: network namespaces amdrill-gw1, amdrill-gw2 on bridge amdrill-br")
            except NetError as exc:
                drill.mark("network namespaces not permitted: falling back to loopback ports", error=str(exc))
                net.remove()
                net = None
        drill.results["hosts"] = "network namespaces + veth" if net else "loopback ports (fallback)"
        cluster = make_cluster(drill, net is not None)  # assigned first: `finally` stops a half-started one
        start_cluster(drill, cluster)
        bootstrap = cluster.bootstrap
        (drill.root / "config.yaml").write_text(CONFIG.format(port=UPSTREAM_PORT))
        for name in ("pricer1", "pricer2"):
            start_pricer(procs, stores, drill, name, "drill", bootstrap)
        drill.mark("two pricers up in group drill", assignment=group_assignment(bootstrap, "drill"))
        key_env = clean_env(data_dir=str(drill.root / "admin"), kafka_bootstrap=bootstrap, topic_replication_factor="3")
        main_key, _ = create_key(key_env, TEAMS[0])
        probe_key, probe_id = create_key(key_env, TEAMS[1])
        gateways = start_gateways(procs, drill, bootstrap, net)
        drill.mark("two gateways up", urls=[g.url for g in gateways])

        streams = [s for gw in gateways for s in (Stream(gw.index, gw.url, "main", main_key, drill.rate),
                                                  Stream(gw.index, gw.url, "revoked", probe_key, drill.probe_rate))]
        load = Load(streams)
        load.start()
        load_t0 = drill.mark("load started", rate_per_gateway=drill.rate, probe_rate=drill.probe_rate)
        time.sleep(args.settle_s)
        kill_and_restart_broker(drill, cluster, args.broker_down_s)
        time.sleep(3)
        cut_gateway(drill, net, gateways[0])
        time.sleep(3)
        kill_pricer(drill, procs, bootstrap)
        revoked = revoke(drill, probe_id, bootstrap)
        time.sleep(5)
        start_pricer(procs, stores, drill, "pricer1", "drill", bootstrap)
        drill.mark("pricer 1 restarted", assignment=group_assignment(bootstrap, "drill"))
        time.sleep(args.settle_s)
        load.stop()
        drill.mark("load stopped", seconds=round(time.monotonic() - load_t0, 1))
        drill.results["revocation"] = revocation_report(load, gateways, revoked)

        answers = load.answers
        answered = {a.event_id for a in answers if a.event_id and 200 <= a.status < 300}
        drill.results["requests"] = {
            "sent": len(answers), "answered": len(answered),
            "refused_401": sum(a.status == 401 for a in answers),
            "other": sum(a.status not in (200, 401) for a in answers),
            "skipped_ticks": sum(s.skipped for s in load.streams),
            "error_samples": sorted({a.error for a in answers if a.status not in (200, 401)})[:5],
        }
        held = wait_drained(drill, stores, ["pricer1", "pricer2"], answered, args.drain_timeout_s)
        union = set().union(*held.values())
        drill.results["two_pricers"] = {
            "stored_by_pricer": {n: len(ids) for n, ids in held.items()},
            "union_distinct": len(union), "lost": len(answered - union), "not_answered": len(union - answered),
            "in_both_stores": len(held["pricer1"] & held["pricer2"]),
            "duplicated_within_a_store": {n: int(stores.scalar(n, DUPS_SQL)[0]) for n in held},
        }
        gw_metrics = {}
        for gw in gateways:
            m = scrape(f"{gw.url}/metrics", drill.root / f"gw{gw.index}" / "metrics_token")
            gw_metrics[f"gw{gw.index}"] = {k.removeprefix("aimeter_events_"): int(v) for k, v in m.items()
                                           if k.startswith("aimeter_events_") and k.endswith("_total")}
        drill.results["gateway_metrics"] = gw_metrics
        for gw in gateways:
            procs.stop(f"gateway{gw.index}")
        for name in ("pricer1", "pricer2"):
            procs.stop(name)
        drill.mark("gateways and pricers stopped")

        start_pricer(procs, stores, drill, "ledger", "drill-ledger", bootstrap)
        ledger = wait_drained(drill, stores, ["ledger"], answered, args.drain_timeout_s)["ledger"]
        count, cost = stores.scalar("ledger", COST_SQL)
        drill.results["ledger"] = {
            "stored": len(ledger), "lost": len(answered - ledger), "not_answered": len(ledger - answered),
            "duplicated": int(stores.scalar("ledger", DUPS_SQL)[0]), "priced_rows": int(count),
            "cost_usd": str(cost), "cost_expected_usd": str(COST_EACH * len(answered)),
        }
        rec_env = clean_env(data_dir=str(drill.root / "admin"), kafka_bootstrap=bootstrap,
                            clickhouse_url=stores.endpoints["ledger"][0], query_port=str(stores.endpoints["ledger"][1]))
        since = (datetime.now(UTC) - timedelta(seconds=time.monotonic() - drill.started + 60)).isoformat()
        rec = subprocess.run([sys.executable, "-m", "aimeter", "reconcile", "--since", since],
                             env=rec_env, capture_output=True, text=True, check=False, timeout=120)
        drill.results["reconcile"] = {"exit": rec.returncode, "output": (rec.stdout + rec.stderr).strip()[-3000:]}
        drill.mark("aimeter reconcile", exit=rec.returncode)
    finally:
        if load is not None:
            try:
                load.stop()
            except RuntimeError as exc:
                print(f"drill: {exc}", flush=True)
        procs.stop_all()
        if cluster is not None:
            cluster.stop()
        if net is not None:
            net.remove()
            drill.results["leftovers"] = net.leftovers()
    drill.mark("everything stopped and removed")
    return drill.results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/aimeter-drill"), help="data, logs (wiped first)")
    parser.add_argument("--out", type=Path, help="write drill.json and drill.md here")
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s per gateway with the main key")
    parser.add_argument("--probe-rate", type=float, default=10.0, help="requests/s per gateway with the revoked key")
    parser.add_argument("--cut-s", type=float, default=30.0, help="how long gateway 1's host is cut off from Kafka")
    parser.add_argument("--broker-down-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--drain-timeout-s", type=float, default=180.0)
    parser.add_argument("--timeout", type=int, default=900, help="the whole drill stops itself after this")
    parser.add_argument("--loopback", action="store_true", help="no namespaces: every part on 127.0.0.1")
    args = parser.parse_args(argv)
    import shutil  # noqa: PLC0415

    shutil.rmtree(args.root, ignore_errors=True)
    args.root.mkdir(parents=True)
    drill = Drill(args.root, args.rate, args.probe_rate, args.cut_s)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)
    signal.alarm(args.timeout)
    try:
        results = run(drill, args)
    except Exception as exc:  # noqa: BLE001 - everything is stopped by now: write what was measured, then fail
        traceback.print_exc()
        results = {**drill.results, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        signal.alarm(0)
    checks = verdicts(results)
    if args.out:
        write_results(args.out, drill.timeline, results, checks)
    print(json.dumps({"checks": checks, **{k: v for k, v in results.items() if k != "reconcile"}}, indent=2,
                     default=str))
    print(results.get("reconcile", {}).get("output", ""))
    failed = [k for k, ok in checks.items() if not ok]
    print(f"drill: {len(checks) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
