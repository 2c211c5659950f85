"""Several "nodes" joined by an underlay, each with its own data plane: the multi-node chain.

::

    underlay ns: bridge br0 ----+-------------------+-------------------+
                           node 1 ns (ul0)     node 2 ns (ul0)     node 3 ns (ul0)
                           client, NF r1       NF r2               NF r3, server

    link 1 (cluster id 101): side A = the client (id 1), side B = every replica's eth1 (11, 12, 13)
    link 2 (cluster id 102): side A = every replica's eth2 (21, 22, 23), side B = the server (2)

Each node is a network namespace with an underlay interface ``ul0`` (its node address), a
bpffs root of its own, and its own data plane, programmed as a node agent would: every link
with an endpoint on the node, its own endpoints by interface and the others by node address
and stable id. Pods (client, server, NF replicas: a bridge of eth1 and eth2, as in
``topology.py``) are namespaces whose host ends live in their node's namespace. Every
interface a packet crosses inside the chain has the tunnel's MTU (underlay 1500 - 50).

Everything is registered with the Janitor as it is made: the nodes' data planes are destroyed
and the namespaces deleted even when a test fails half-way. Used by ``test_multinode.py`` and
``bench/crossnode.py`` (two nodes on a veth underlay, ``underlay="veth"``).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.topology import (
    PYTHON,
    Addressing,
    bpffs_root,
    ip_batch,
    sysctl,
)
from tests.nettools import Janitor, run

NODE_DP = str(Path(__file__).with_name("node_dp.py"))
UNDERLAY_MTU = 1500
TUNNEL_MTU = UNDERLAY_MTU - 50
LINK1, LINK2 = "mn-l1", "mn-l2"
CID1, CID2 = 101, 102
CLIENT_ID, SERVER_ID = 1, 2


@dataclass(frozen=True)
class Pod:
    netns: str
    host: str  # host end, in the node's namespace
    node: int  # index in Cluster.nodes


@dataclass(frozen=True)
class NfReplica:
    name: str
    netns: str
    eth1_host: str
    eth2_host: str
    node: int
    in_id: int  # link 1, side B
    out_id: int  # link 2, side A


@dataclass
class Node:
    netns: str
    address: str  # underlay IPv4
    root: str  # bpffs root
    served: bool = False  # ``call`` goes through one long-running node_dp (``serve``)
    _server: subprocess.Popen[str] | None = field(default=None, repr=False, compare=False)

    def dp(self, command: str, plan: dict[str, Any] | None = None) -> str:
        """Run ``command`` in a fresh node_dp process (a manager starting: it adopts the
        pinned state, and opens it with ``SFC_TEST_OBJECT``'s build if set)."""
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", PYTHON, NODE_DP, self.root, command]
        proc = subprocess.run(
            argv, input=json.dumps(plan or {}), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"node_dp {command} failed in {self.netns}: {proc.stderr}")
        return proc.stdout

    def call(self, command: str, plan: dict[str, Any] | None = None) -> str:
        """Run ``command`` through the node's node_dp server if ``served`` (started on first
        use, stopped by ``stop``), else in a fresh process (``dp``)."""
        if not self.served:
            return self.dp(command, plan)
        if self._server is None:
            argv = ["nsenter", f"--net=/run/netns/{self.netns}", PYTHON, NODE_DP, self.root,
                    "serve"]  # fmt: skip
            self._server = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps({"command": command, "plan": plan or {}}) + "\n")
        self._server.stdin.flush()
        line = self._server.stdout.readline()
        if not line:
            raise RuntimeError(f"node_dp serve in {self.netns} exited ({self._server.wait()})")
        answer: dict[str, str] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"node_dp {command} failed in {self.netns}: {answer['error']}")
        return answer["out"]

    def stop(self) -> None:
        """Stop the node_dp server, if one runs."""
        server, self._server = self._server, None
        if server is None:
            return
        assert server.stdin is not None and server.stdout is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.call("report"))
        return data


@dataclass
class Cluster:
    janitor: Janitor
    underlay_ns: str = ""
    net: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(
            f"10.{128 + secrets.randbelow(64)}.{secrets.randbelow(256)}.0/24"
        )
    )
    addressing: Addressing = field(default_factory=Addressing.random)
    ipv6: bool = True
    udp_csum: bool = True  # outer UDP checksums on the tunnel
    served: bool = False  # each node's calls through one node_dp server (``Node.call``)
    nodes: list[Node] = field(default_factory=list)
    client: Pod | None = None
    server: Pod | None = None
    replicas: list[NfReplica] = field(default_factory=list)

    # --- building ----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        janitor: Janitor,
        *,
        nodes: int = 3,
        replica_nodes: tuple[int, ...] = (0, 1, 2),
        ipv6: bool = True,
        udp_csum: bool = True,
        underlay: str = "bridge",
        served: bool = False,
    ) -> Cluster:
        """``nodes`` nodes, the client on the first, the server on the last, an NF replica on
        each node of ``replica_nodes``; nothing programmed yet (``program``).

        ``underlay``: ``"bridge"``, every node's ``ul0`` on one bridge in an underlay namespace,
        or ``"veth"``, two nodes whose ``ul0`` are the two ends of one veth pair (the
        cross-node benchmark's underlay: nothing between the nodes but the wire).
        ``served``: every node's ``call``s (``program``, ``change``, ``report``) go through one
        long-running node_dp each, not a process a call; ``Node.dp`` still starts a fresh
        one (a manager restarting)."""
        if underlay not in ("bridge", "veth") or (underlay == "veth" and nodes != 2):
            raise ValueError(f"underlay {underlay!r} for {nodes} nodes: use bridge, or veth for 2")
        cluster = cls(janitor, ipv6=ipv6, udp_csum=udp_csum, served=served)
        if underlay == "bridge":
            cluster.underlay_ns = janitor.netns("sfct-ul")
            ip_batch(["link add br0 type bridge stp_state 0", "link set br0 up"],
                     netns=cluster.underlay_ns)  # fmt: skip
        for i in range(nodes):
            cluster._add_node(i)
        if underlay == "veth":
            first, second = (n.netns for n in cluster.nodes)
            run("ip", "link", "add", "ul0", "netns", first, "type", "veth", "peer", "name", "ul0",
                "netns", second)  # fmt: skip
        for each in cluster.nodes:
            ip_batch([f"addr add {each.address}/24 dev ul0", f"link set ul0 mtu {UNDERLAY_MTU}",
                      "link set ul0 up"], netns=each.netns)  # fmt: skip
        a = cluster.addressing
        cluster.client = cluster.pod(0, "sfct-cli", f"{a.client_ip}/24", f"{a.client_ip6}/64",
                                     a.client_mac)  # fmt: skip
        cluster.server = cluster.pod(nodes - 1, "sfct-srv", f"{a.server_ip}/24",
                                     f"{a.server_ip6}/64", a.server_mac)  # fmt: skip
        for n, node in enumerate(replica_nodes):
            cluster._replica(node, 11 + n, 21 + n)
        return cluster

    def _add_node(self, index: int) -> None:
        netns = self.janitor.netns(f"sfct-n{index + 1}")
        address = str(self.net[index + 1])
        root = bpffs_root(self.janitor)
        node = Node(netns, address, root, served=self.served)
        # Registered after the namespace: runs before it is deleted (the server stops first).
        self.janitor.add(lambda: node.dp("destroy"))
        self.janitor.add(node.stop)
        if self.underlay_ns:  # its ul0 on the underlay bridge
            port = f"ul{index}-{secrets.token_hex(3)}"
            run("ip", "link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", netns,
                netns=self.underlay_ns)  # fmt: skip
            ip_batch([f"link set {port} master br0", f"link set {port} up"],
                     netns=self.underlay_ns)  # fmt: skip
        self.nodes.append(node)

    def _host_end(self, node: int, host: str) -> None:
        netns = self.nodes[node].netns
        sysctl({f"net.ipv6.conf.{host}.disable_ipv6": 1, f"net.ipv4.conf.{host}.forwarding": 0},
               netns=netns)  # fmt: skip
        ip_batch([f"link set {host} mtu {TUNNEL_MTU}", f"link set {host} up"], netns=netns)

    def pod(self, node: int, prefix: str, ip4: str, ip6: str, mac: str) -> Pod:
        """A pod namespace on node ``node``: ``eth0`` with these addresses (``ip6`` unused
        without IPv6), its host end in the node's namespace, both at the tunnel's MTU."""
        netns = self.janitor.netns(prefix)
        host = f"{prefix[5:8]}-{secrets.token_hex(3)}"
        run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "address", mac,
            "netns", netns, netns=self.nodes[node].netns)  # fmt: skip
        commands = [
            f"addr add {ip4} dev eth0",
            f"link set eth0 mtu {TUNNEL_MTU}",
            "link set eth0 up",
        ]
        if self.ipv6:
            commands.insert(1, f"addr add {ip6} dev eth0 nodad")
        else:
            sysctl({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
                   netns=netns)  # fmt: skip
        ip_batch(commands, netns=netns)
        self._host_end(node, host)
        return Pod(netns, host, node)

    def _replica(self, node: int, in_id: int, out_id: int) -> None:
        netns = self.janitor.netns("sfct-nf")
        sysctl({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
               netns=netns)  # fmt: skip
        suffix = secrets.token_hex(3)
        eth1_host, eth2_host = f"nf1-{suffix}", f"nf2-{suffix}"
        a = self.addressing
        for host, peer, mac in ((eth1_host, "eth1", a.eth1_mac), (eth2_host, "eth2", a.eth2_mac)):
            run("ip", "link", "add", host, "type", "veth", "peer", "name", peer, "address", mac,
                "netns", netns, netns=self.nodes[node].netns)  # fmt: skip
            self._host_end(node, host)
        ip_batch(
            [
                "link add br0 type bridge stp_state 0 mcast_snooping 0",
                f"link set br0 mtu {TUNNEL_MTU}",
                f"link set eth1 mtu {TUNNEL_MTU}",
                f"link set eth2 mtu {TUNNEL_MTU}",
                "link set eth1 master br0",
                "link set eth2 master br0",
                "link set eth1 up",
                "link set eth2 up",
                "link set br0 up",
            ],
            netns=netns,
        )
        name = f"r{len(self.replicas) + 1}"
        self.replicas.append(NfReplica(name, netns, eth1_host, eth2_host, node, in_id, out_id))

    # --- programming the nodes -----------------------------------------------------------------

    def endpoint_spec(self, node: int, on: int, ifname: str, ep_id: int) -> dict[str, Any]:
        """Endpoint ``ep_id`` (interface ``ifname`` on node ``on``) as node ``node`` sees it."""
        if on == node:
            return {"ifname": ifname, "id": ep_id}
        return {"node": self.nodes[on].address, "id": ep_id}

    def plan(self, node: int, replicas: list[NfReplica] | None = None) -> dict[str, Any]:
        """What node ``node``'s agent programs: both links (each has an endpoint on every
        node here) with all their endpoints (of ``replicas`` only, if given)."""
        assert self.client is not None and self.server is not None
        chosen = self.replicas if replicas is None else replicas
        return {
            "tunnel": {"mtu": TUNNEL_MTU, "udp_csum": self.udp_csum},
            "links": [
                {
                    "name": LINK1,
                    "cluster_id": CID1,
                    "side_a": [
                        self.endpoint_spec(node, self.client.node, self.client.host, CLIENT_ID)
                    ],
                    "side_b": [
                        self.endpoint_spec(node, r.node, r.eth1_host, r.in_id) for r in chosen
                    ],
                },
                {
                    "name": LINK2,
                    "cluster_id": CID2,
                    "side_a": [
                        self.endpoint_spec(node, r.node, r.eth2_host, r.out_id) for r in chosen
                    ],
                    "side_b": [
                        self.endpoint_spec(node, self.server.node, self.server.host, SERVER_ID)
                    ],
                },
            ],
        }

    def program(self, replicas: list[NfReplica] | None = None) -> None:
        """Program every node with the links over ``replicas`` (default: all of them)."""
        for index, node in enumerate(self.nodes):
            node.call("apply", self.plan(index, replicas))

    def change(self, action: str, replica: NfReplica) -> None:
        """Add (``add``), drain (``drain``) or remove (``remove``) a replica's endpoints on
        every node, as the agents would: its own node by interface, the others by address."""
        for index, node in enumerate(self.nodes):
            changes = []
            for link, side, ifname, ep_id in (
                (LINK1, "b", replica.eth1_host, replica.in_id),
                (LINK2, "a", replica.eth2_host, replica.out_id),
            ):
                spec = self.endpoint_spec(index, replica.node, ifname, ep_id)
                changes.append({"action": action, "link": link, "side": side, **spec})
            node.call("apply", {"changes": changes})

    def set_static_neighbours(self) -> None:
        a = self.addressing
        assert self.client is not None and self.server is not None
        for netns, ip4, ip6, mac in (
            (self.client.netns, a.server_ip, a.server_ip6, a.server_mac),
            (self.server.netns, a.client_ip, a.client_ip6, a.client_mac),
        ):
            commands = [f"neigh replace {ip4} lladdr {mac} dev eth0 nud permanent"]
            if self.ipv6:
                commands.append(f"neigh replace {ip6} lladdr {mac} dev eth0 nud permanent")
            ip_batch(commands, netns=netns)

    def rogue(self) -> tuple[str, str]:
        """A namespace on the underlay that is no node: (namespace, its address)."""
        netns = self.janitor.netns("sfct-rogue")
        address = str(self.net[200])
        port = f"ulr-{secrets.token_hex(3)}"
        run("ip", "link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", netns,
            netns=self.underlay_ns)  # fmt: skip
        ip_batch([f"link set {port} master br0", f"link set {port} up"], netns=self.underlay_ns)
        ip_batch([f"addr add {address}/24 dev ul0", "link set ul0 up"], netns=netns)
        return netns, address

    # --- reading -------------------------------------------------------------------------------

    def replica_by_endpoint(self, link: str, name: str) -> str:
        """The replica a session's endpoint name (local interface or #ID@NODE) designates."""
        for r in self.replicas:
            ifname, ep_id = (r.eth1_host, r.in_id) if link == LINK1 else (r.eth2_host, r.out_id)
            if name in (ifname, f"#{ep_id}@{self.nodes[r.node].address}"):
                return r.name
        return ""
