"""The drill's hosts: network namespaces joined by veth pairs to a bridge, made and removed by the drill itself.

Layout (every address lives on interfaces the drill creates; nothing is routed off this machine):

    root namespace: bridge amdrill-br 10.200.0.1/24 (load generator, pricers)
                    + 10.200.0.2-4 (the three Kafka nodes, one address each)
    namespace amdrill-gw1: veth 10.200.0.11/24 (gateway 1 and its own fake upstream on its 127.0.0.1)
    namespace amdrill-gw2: veth 10.200.0.12/24 (gateway 2, likewise)

A host is cut off from Kafka with a blackhole route per Kafka address inside its namespace: packets to the
brokers are dropped while the load generator (10.200.0.1) still reaches the gateway. This box has neither
iptables nor nft, and taking the veth down would also cut the clients off.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

PREFIX = "amdrill"
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.200.0"
ROOT_ADDR = f"{SUBNET}.1"
KAFKA_ADDRS = (f"{SUBNET}.2", f"{SUBNET}.3", f"{SUBNET}.4")


class NetError(RuntimeError):
    """A namespace, link or route could not be made; the message names the command and what it said."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip`` (iproute2) and return stdout; a failure names the command."""
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no iproute2: the drill falls back to loopback ports
        if check:
            raise NetError("`ip` (iproute2) is not installed: apt-get install iproute2") from None
        return ""
    if check and out.returncode != 0:
        raise NetError(f"`ip {' '.join(args)}` failed (exit {out.returncode}): {out.stderr.strip()}")
    return out.stdout


@dataclass(frozen=True)
class Host:
    """One gateway host: its namespace, its address on the bridge, and the two ends of its veth pair."""

    index: int

    @property
    def netns(self) -> str:
        return f"{PREFIX}-gw{self.index}"

    @property
    def addr(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def root_end(self) -> str:
        return f"{PREFIX}-g{self.index}h"

    @property
    def ns_end(self) -> str:
        return f"{PREFIX}-g{self.index}n"

    def exec_prefix(self) -> list[str]:
        """Prefix a command line with this to run it inside the host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns]


class Network:
    """The bridge and the gateway hosts. :meth:`remove` is safe to call at any point, and twice."""

    def __init__(self, hosts: int = 2) -> None:
        self.hosts = [Host(i) for i in range(1, hosts + 1)]

    def create(self) -> None:
        if SUBNET + ".0/24" in ip("route", "show") and BRIDGE not in ip("link", "show"):
            raise NetError(f"{SUBNET}.0/24 is already routed on this machine: the drill will not shadow it")
        self.remove()  # leftovers of a drill that was killed with SIGKILL
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{ROOT_ADDR}/24", "dev", BRIDGE)
        for addr in KAFKA_ADDRS:
            ip("addr", "add", f"{addr}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for host in self.hosts:
            ip("netns", "add", host.netns)
            ip("link", "add", host.root_end, "type", "veth", "peer", "name", host.ns_end)
            ip("link", "set", host.ns_end, "netns", host.netns)
            ip("link", "set", host.root_end, "master", BRIDGE)
            ip("link", "set", host.root_end, "up")
            ip("-n", host.netns, "addr", "add", f"{host.addr}/24", "dev", host.ns_end)
            ip("-n", host.netns, "link", "set", host.ns_end, "up")
            ip("-n", host.netns, "link", "set", "lo", "up")

    def cut_from_kafka(self, host: Host) -> None:
        for addr in KAFKA_ADDRS:
            ip("-n", host.netns, "route", "add", "blackhole", f"{addr}/32")

    def restore(self, host: Host) -> None:
        for addr in KAFKA_ADDRS:
            ip("-n", host.netns, "route", "del", "blackhole", f"{addr}/32", check=False)

    def remove(self) -> None:
        """Delete the namespaces (their veth ends go with them) and the bridge; whatever does not exist is skipped."""
        existing = ip("netns", "list", check=False)
        for host in self.hosts:
            if host.netns in existing:
                ip("netns", "del", host.netns, check=False)
            ip("link", "del", host.root_end, check=False)
        ip("link", "del", BRIDGE, check=False)

    def leftovers(self) -> list[str]:
        """Anything of the drill's still present (the drill asserts this is empty at its end)."""
        names = ip("netns", "list", check=False) + ip("link", "show", check=False)
        return sorted({word.rstrip(":").split("@")[0] for word in names.split() if word.startswith(PREFIX)})
