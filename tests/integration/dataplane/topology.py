"""Network-namespace topologies for the data-plane traffic tests and ``bench/dataplane.py``.

The chain that the issue describes, built from real namespaces and veths::

    client ns --veth-- [link 1] == N replicas of an L2-transparent NF == [link 2] --veth-- server ns

    link 1: side A = the client's host end,        side B = every replica's eth1 host end
    link 2: side A = every replica's eth2 host end, side B = the server's host end

Each replica is its own namespace holding a bridge ``br0`` with ``eth1`` and ``eth2`` enslaved and
no IP address (the bump-in-the-wire NF). As the CNI plugin does, every replica's ``eth1`` has one
shared MAC and every ``eth2`` another, so neighbours see one logical device. The host ends of all
veths stay in the namespace that builds the topology (the root one): they are what the
cross-connections join. The client and the server share one /24 (and one IPv6 /64): the chain is
transparent, ARP and neighbour discovery cross it.

Besides the chain, ``Pair`` builds two namespaces joined by a direct veth, by a Linux bridge, or
by their host ends only (for a 1:1 cross-connection): the baselines of the benchmark.

Host ends never take part in the root namespace's own networking: IPv6 is disabled on them and
IPv4 forwarding is off for them, so a packet that reaches the root stack through a host end that
is not (yet, or any more) in a link is dropped there instead of being routed anywhere. Replica
namespaces have IPv6 disabled too, so their bridges add no neighbour-discovery noise to the
counters.

Everything is registered with a ``Janitor`` as soon as it exists, so a failing test leaves no
namespace or veth behind. ``Chain`` and ``Pair`` only build namespaces; ``ChainLinks`` wires a
chain into two ``sfc_k8s.dataplane.Dataplane`` links and follows its scale-out and scale-in.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.nettools import Janitor, private_bpffs_root, run, unique

if TYPE_CHECKING:
    from sfc_k8s.dataplane import Dataplane

REPO = Path(__file__).resolve().parents[3]
PYTHON = str(REPO / ".venv" / "bin" / "python")
TRAFFIC = str(Path(__file__).with_name("traffic.py"))
# Session table size for test data planes: small enough to pin little kernel memory per test
# (the default, 1,048,576 sessions, pins ~134 MB).
TEST_SESSIONS = 65536


def ip_batch(commands: Iterable[str], *, netns: str | None = None) -> None:
    """Run several ``ip`` commands in one process (``ip -batch``), in a namespace if given."""
    script = "".join(f"{line}\n" for line in commands)
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    proc = subprocess.run(
        argv, input=script, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip -batch failed in {netns or 'root ns'}: {proc.stderr.strip()}")


def sysctl(settings: dict[str, str | int], *, netns: str | None = None) -> None:
    """Set kernel parameters, all in one ``sysctl`` process."""
    run("sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings.items()), netns=netns)


def random_mac() -> str:
    """A locally administered unicast MAC."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True)
class Addressing:
    """The client/server subnet and MACs; two topologies may share one to test isolation."""

    net4: ipaddress.IPv4Network
    net6: ipaddress.IPv6Network
    client_mac: str
    server_mac: str
    eth1_mac: str  # shared by every replica's eth1
    eth2_mac: str  # shared by every replica's eth2

    @classmethod
    def random(cls) -> Addressing:
        # 10.64.0.0/10 split into /24s: far from anything a test machine routes itself.
        third = secrets.randbelow(64 * 256)
        net4 = ipaddress.IPv4Network(f"10.{64 + third // 256}.{third % 256}.0/24")
        net6 = ipaddress.IPv6Network(f"fd5f:{secrets.randbelow(0x10000):x}:{third:x}::/64")
        return cls(net4, net6, random_mac(), random_mac(), random_mac(), random_mac())

    @property
    def client_ip(self) -> str:
        return str(self.net4[1])

    @property
    def server_ip(self) -> str:
        return str(self.net4[2])

    @property
    def client_ip6(self) -> str:
        return str(self.net6[1])

    @property
    def server_ip6(self) -> str:
        return str(self.net6[2])


def _host_end_quiet(ifname: str) -> None:
    """Keep a host end out of the root namespace's IP stack (no IPv6, no IPv4 forwarding)."""
    sysctl(
        {
            f"net.ipv6.conf.{ifname}.disable_ipv6": 1,
            f"net.ipv4.conf.{ifname}.forwarding": 0,
        }
    )


def _endpoint_ns(
    janitor: Janitor,
    prefix: str,
    *,
    ip4: str,
    ip6: str | None,
    mac: str,
) -> tuple[str, str]:
    """A namespace with ``eth0`` (address, MAC) whose peer, returned, is in the root namespace."""
    netns = janitor.netns(prefix)
    host = unique(prefix[:4] + "h")
    run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "address", mac,
        "netns", netns)  # fmt: skip
    janitor.add(lambda: run("ip", "link", "del", host, check=False))
    if ip6 is None:
        sysctl({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
               netns=netns)  # fmt: skip
    commands = [f"addr add {ip4} dev eth0", "link set eth0 up"]
    if ip6 is not None:
        commands.insert(1, f"addr add {ip6} dev eth0 nodad")
    ip_batch(commands, netns=netns)
    _host_end_quiet(host)
    run("ip", "link", "set", host, "up")
    return netns, host


@dataclass(frozen=True)
class Replica:
    """One replica of the L2-transparent NF: a namespace with eth1 and eth2 in bridge br0."""

    name: str
    netns: str
    eth1_host: str  # host end of eth1: link 1, side B
    eth2_host: str  # host end of eth2: link 2, side A


@dataclass
class Chain:
    """client ns -> link 1 -> replicas (bridges) -> link 2 -> server ns, without the links."""

    janitor: Janitor
    addressing: Addressing = field(default_factory=Addressing.random)
    ipv6: bool = True
    client_ns: str = ""
    server_ns: str = ""
    client_host: str = ""
    server_host: str = ""
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        janitor: Janitor,
        *,
        replicas: int = 3,
        ipv6: bool = True,
        addressing: Addressing | None = None,
    ) -> Chain:
        chain = cls(janitor, addressing or Addressing.random(), ipv6)
        a = chain.addressing
        chain.client_ns, chain.client_host = _endpoint_ns(
            janitor,
            "sfct-cli",
            ip4=f"{a.client_ip}/24",
            ip6=f"{a.client_ip6}/64" if ipv6 else None,
            mac=a.client_mac,
        )
        chain.server_ns, chain.server_host = _endpoint_ns(
            janitor,
            "sfct-srv",
            ip4=f"{a.server_ip}/24",
            ip6=f"{a.server_ip6}/64" if ipv6 else None,
            mac=a.server_mac,
        )
        for _ in range(replicas):
            chain.add_replica()
        return chain

    def add_replica(self) -> Replica:
        """Create one more replica namespace; the caller then adds its host ends to the links."""
        netns = self.janitor.netns("sfct-nf")
        sysctl({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
               netns=netns)  # fmt: skip
        suffix = secrets.token_hex(3)
        eth1_host, eth2_host = f"sfct1-{suffix}", f"sfct2-{suffix}"
        a = self.addressing
        for host, peer, mac in ((eth1_host, "eth1", a.eth1_mac), (eth2_host, "eth2", a.eth2_mac)):
            run("ip", "link", "add", host, "type", "veth", "peer", "name", peer, "address", mac,
                "netns", netns)  # fmt: skip
            self.janitor.add(lambda host=host: run("ip", "link", "del", host, check=False))
            _host_end_quiet(host)
        ip_batch(
            [
                "link add br0 type bridge stp_state 0 mcast_snooping 0",
                "link set eth1 master br0",
                "link set eth2 master br0",
                "link set eth1 up",
                "link set eth2 up",
                "link set br0 up",
            ],
            netns=netns,
        )
        ip_batch([f"link set {eth1_host} up", f"link set {eth2_host} up"])
        replica = Replica(netns, netns, eth1_host, eth2_host)
        self.replicas.append(replica)
        return replica

    def remove_replica(self, replica: Replica) -> None:
        """Delete a replica's namespace and veths (after its host ends left the links)."""
        self.replicas.remove(replica)
        run("ip", "link", "del", replica.eth1_host, check=False)
        run("ip", "link", "del", replica.eth2_host, check=False)
        run("ip", "netns", "del", replica.netns, check=False)

    def replica_of(self, ifname: str) -> Replica:
        """The replica owning a host end (either side)."""
        for replica in self.replicas:
            if ifname in (replica.eth1_host, replica.eth2_host):
                return replica
        raise KeyError(ifname)

    # --- what the links join -------------------------------------------------------------
    @property
    def link1_side_a(self) -> list[str]:
        return [self.client_host]

    @property
    def link1_side_b(self) -> list[str]:
        return [r.eth1_host for r in self.replicas]

    @property
    def link2_side_a(self) -> list[str]:
        return [r.eth2_host for r in self.replicas]

    @property
    def link2_side_b(self) -> list[str]:
        return [self.server_host]

    def set_static_neighbours(self) -> None:
        """Permanent ARP/ND entries on client and server, so no resolution adds packets later."""
        a = self.addressing
        for netns, ip4, ip6, mac in (
            (self.client_ns, a.server_ip, a.server_ip6, a.server_mac),
            (self.server_ns, a.client_ip, a.client_ip6, a.client_mac),
        ):
            commands = [f"neigh replace {ip4} lladdr {mac} dev eth0 nud permanent"]
            if self.ipv6:
                commands.append(f"neigh replace {ip6} lladdr {mac} dev eth0 nud permanent")
            ip_batch(commands, netns=netns)


@dataclass
class ChainLinks:
    """The two cross-connections of a chain, kept in step with its replicas."""

    dataplane: Dataplane
    chain: Chain
    link1: str
    link2: str

    @classmethod
    def create(cls, dataplane: Dataplane, chain: Chain, *, prefix: str = "sfct") -> ChainLinks:
        link1, link2 = unique(prefix + "-l1"), unique(prefix + "-l2")
        # Link 2 first: a replica is reachable from link 1 only once its way out exists.
        dataplane.create_link(link2, side_a=chain.link2_side_a, side_b=chain.link2_side_b)
        dataplane.create_link(link1, side_a=chain.link1_side_a, side_b=chain.link1_side_b)
        return cls(dataplane, chain, link1, link2)

    def scale_out(self, count: int = 1) -> list[Replica]:
        """Add replicas: namespace first, then link 2 (the way out), then link 1 (the way in)."""
        from sfc_k8s.dataplane import Side

        added = []
        for _ in range(count):
            replica = self.chain.add_replica()
            self.dataplane.add_endpoint(self.link2, Side.A, replica.eth2_host)
            self.dataplane.add_endpoint(self.link1, Side.B, replica.eth1_host)
            added.append(replica)
        return added

    def drain(self, replica: Replica) -> None:
        from sfc_k8s.dataplane import Side

        self.dataplane.drain_endpoint(self.link1, Side.B, replica.eth1_host)
        self.dataplane.drain_endpoint(self.link2, Side.A, replica.eth2_host)

    def scale_in(self, replica: Replica) -> None:
        """Remove a replica from both links (its sessions are purged), then delete it."""
        from sfc_k8s.dataplane import Side

        self.dataplane.remove_endpoint(self.link1, Side.B, replica.eth1_host)
        self.dataplane.remove_endpoint(self.link2, Side.A, replica.eth2_host)
        self.chain.remove_replica(replica)


@dataclass
class Pair:
    """Two namespaces (client, server) on one /24, joined in one of the benchmark's ways.

    ``mode``: ``"direct"`` one veth between them (the ceiling); ``"bridge"`` each to a Linux
    bridge in the root namespace; ``"ends"`` each with a host end in the root namespace and
    nothing joining them (a 1:1 cross-connection joins ``client_host`` and ``server_host``).
    """

    janitor: Janitor
    mode: str
    addressing: Addressing
    client_ns: str = ""
    server_ns: str = ""
    client_host: str = ""
    server_host: str = ""
    bridge: str = ""

    @classmethod
    def build(cls, janitor: Janitor, mode: str) -> Pair:
        a = Addressing.random()
        pair = cls(janitor, mode, a)
        if mode == "direct":
            pair.client_ns = janitor.netns("sfct-cli")
            pair.server_ns = janitor.netns("sfct-srv")
            run("ip", "-n", pair.client_ns, "link", "add", "eth0", "address", a.client_mac,
                "type", "veth", "peer", "name", "eth0", "address", a.server_mac,
                "netns", pair.server_ns)  # fmt: skip
            for netns, ip4 in ((pair.client_ns, a.client_ip), (pair.server_ns, a.server_ip)):
                ip_batch([f"addr add {ip4}/24 dev eth0", "link set eth0 up"], netns=netns)
            return pair
        if mode not in ("bridge", "ends"):
            raise ValueError(f"unknown pair mode {mode!r}: use direct, bridge or ends")
        pair.client_ns, pair.client_host = _endpoint_ns(
            janitor, "sfct-cli", ip4=f"{a.client_ip}/24", ip6=None, mac=a.client_mac
        )
        pair.server_ns, pair.server_host = _endpoint_ns(
            janitor, "sfct-srv", ip4=f"{a.server_ip}/24", ip6=None, mac=a.server_mac
        )
        if mode == "bridge":
            pair.bridge = unique("sfctbr")
            run("ip", "link", "add", pair.bridge, "type", "bridge", "stp_state", "0")
            janitor.add(lambda: run("ip", "link", "del", pair.bridge, check=False))
            _host_end_quiet(pair.bridge)
            ip_batch(
                [
                    f"link set {pair.client_host} master {pair.bridge}",
                    f"link set {pair.server_host} master {pair.bridge}",
                    f"link set {pair.bridge} up",
                ]
            )
        return pair


def bpffs_root(janitor: Janitor) -> str:
    """A private bpffs root for one test, removed afterwards whatever is left in it."""
    root = private_bpffs_root()
    janitor.add(lambda: subprocess.run(["rm", "-rf", root], check=False))
    return root


def in_netns(netns: str, *argv: str) -> list[str]:
    """The argv that runs ``argv`` in a namespace."""
    return ["ip", "netns", "exec", netns, *argv]


def traffic_argv(netns: str, *args: str) -> list[str]:
    """The argv that runs the traffic helper (``traffic.py``) in a namespace."""
    return in_netns(netns, PYTHON, TRAFFIC, *args)


def spawn(janitor: Janitor, argv: Sequence[str], *, output: bool = True) -> subprocess.Popen[str]:
    """Start a process that the janitor kills (by its pid) if it is still running.

    With ``output`` its stdout/stderr are pipes to read (keep reading a chatty process, or the
    pipe fills and blocks it); without, they go to /dev/null.
    """
    sink = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen(list(argv), stdout=sink, stderr=sink, text=True, env=os.environ)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)

    janitor.add(stop)
    return proc
