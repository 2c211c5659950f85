"""``sfc-k8s dp``: the low-level data plane CLI, usable with no Kubernetes at all.

Each call is stateless: it adopts the state pinned under ``--bpffs-root`` (default
``$SFC_K8S_BPFFS_ROOT`` or /sys/fs/bpf/sfc-k8s), changes it and exits; traffic keeps flowing.
Errors print one line on stderr and exit non-zero, leaving the state as it was. Dispatched
from ``sfc_k8s.cli`` (``main(argv) -> int``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any, NoReturn

from sfc_k8s.api.models import Side
from sfc_k8s.dataplane import tunnel
from sfc_k8s.dataplane.errors import DataplaneError, InvalidValue, LinkNotFound
from sfc_k8s.dataplane.loader import Pins
from sfc_k8s.dataplane.manager import DEFAULT_BPFFS_ROOT, Dataplane
from sfc_k8s.dataplane.records import DropReason, LinkStatus
from sfc_k8s.dataplane.structs import SESSIONS_DEFAULT

PROG = "sfc-k8s dp"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _interfaces(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise argparse.ArgumentTypeError(f"empty interface name in {text!r}")
    return names


def _parser() -> argparse.ArgumentParser:
    root_default = os.environ.get("SFC_K8S_BPFFS_ROOT") or DEFAULT_BPFFS_ROOT
    p = _Parser(prog=PROG, description="Cross-connections (links) of this node's data plane.")
    p.add_argument(
        "--bpffs-root",
        default=root_default,
        help=f"bpffs folder holding the pinned state (default: {root_default})",
    )
    p.add_argument(
        "--session-table-size",
        type=int,
        default=SESSIONS_DEFAULT,
        help="entries of each session table (IPv4 L4, other), used when nothing is pinned yet"
        " (default: %(default)s)",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    link = sub.add_parser("link", help="create or delete a link").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    add = link.add_parser("add", help="create a link between two sets of interfaces")
    add.add_argument("link")
    add.add_argument("--side-a", type=_interfaces, default=[], metavar="IF[,IF...]")
    add.add_argument("--side-b", type=_interfaces, default=[], metavar="IF[,IF...]")
    add.add_argument(
        "--id",
        type=int,
        default=0,
        dest="cluster_id",
        metavar="N",
        help="the link's cluster-wide id, the same on every node (default: lowest free here)",
    )
    delete = link.add_parser("del", help="delete a link (detach, purge its sessions)")
    delete.add_argument("link")

    ep = sub.add_parser(
        "endpoint",
        help="add, remove, drain or re-activate an endpoint",
        description="A local endpoint is named by its interface (IF); a remote one, on another"
        " node, by --remote NODE_IP --id N when added and by --id N afterwards.",
    )
    ep.add_argument("action", choices=["add", "del", "drain", "activate"])
    ep.add_argument("link")
    ep.add_argument("side", choices=["a", "b"])
    ep.add_argument("interface", nargs="?", default="", metavar="IF")
    ep.add_argument(
        "--remote",
        default="",
        metavar="NODE_IP",
        help="add: the endpoint is on the node with this underlay IPv4 address",
    )
    ep.add_argument(
        "--id",
        type=int,
        default=0,
        dest="endpoint_id",
        metavar="N",
        help="the endpoint's stable id within the link, the same on every node",
    )

    tun = sub.add_parser("tunnel", help="the node's tunnel device to other nodes")
    tun.add_argument("action", choices=["set", "del"])
    tun.add_argument("--name", default=tunnel.DEFAULT_NAME, help="device (default: %(default)s)")
    tun.add_argument(
        "--port", type=int, default=tunnel.DEFAULT_PORT, help="UDP port (default: %(default)s)"
    )
    tun.add_argument(
        "--mtu",
        type=int,
        default=0,
        help=f"device MTU: the underlay's minus {tunnel.OVERHEAD_IPV4} (default: leave it)",
    )
    tun.add_argument(
        "--no-udp-csum", action="store_true", help="send outer UDP packets without checksum"
    )

    show = sub.add_parser("show", help="endpoints, states, counters, sessions and drops")
    show.add_argument("link", nargs="?")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    sessions = sub.add_parser("sessions", help="list the sessions of a link")
    sessions.add_argument("link")
    sessions.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "reset", help="remove every link, attachment, pin and the tunnel of sfc-k8s on this node"
    )
    return p


def _kebab(reason: DropReason) -> str:
    return reason.name.lower().replace("_", "-")


def _status_json(status: LinkStatus) -> dict[str, Any]:
    data = asdict(status)
    data["drops"] = {r.name.lower().replace("_", "-"): n for r, n in status.drops.items()}
    return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]


def _status_table(status: LinkStatus) -> str:
    lines = [
        f"link {status.name} (id {status.link_id}, cluster id {status.cluster_id}):"
        f" {status.sessions} sessions, {status.sessions_created} created"
    ]
    header = ("side", "endpoint", "id", "node", "ifindex", "state",
              "rx-pkts", "rx-bytes", "tx-pkts", "tx-bytes")  # fmt: skip
    rows = [header] + [
        (
            e.side.value,
            e.ifname or "(remote)",
            str(e.id),
            e.node or "(local)",
            str(e.ifindex),
            e.state.value,
            str(e.counters.rx_packets),
            str(e.counters.rx_bytes),
            str(e.counters.tx_packets),
            str(e.counters.tx_bytes),
        )
        for e in status.endpoints
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]  # fmt: skip
    if not status.endpoints:
        lines.append("  (no endpoints)")
    drops = ", ".join(f"{r.name.lower().replace('_', '-')} {status.drops.get(r, 0)}"
                      for r in DropReason)  # fmt: skip
    lines.append(f"  drops: {drops}")
    return "\n".join(lines)


def _show(dp: Dataplane | None, link: str | None, as_json: bool) -> None:
    if link is not None:
        if dp is None:
            raise LinkNotFound(f"no link named {link!r}")
        status = dp.status(link)
        print(json.dumps(_status_json(status), indent=2) if as_json else _status_table(status))
        return
    statuses = dp.statuses() if dp is not None else []
    tun = dp.tunnel() if dp is not None else None
    drops = dp.tunnel_drops() if dp is not None else {}
    if as_json:
        node = {
            "links": [_status_json(s) for s in statuses],
            "tunnel": asdict(tun) if tun is not None else None,
            "tunnel_drops": {_kebab(r): n for r, n in drops.items()},
        }
        print(json.dumps(node, indent=2))
        return
    print("\n\n".join(_status_table(s) for s in statuses) if statuses else "no links")
    if tun is not None:
        csum = "on" if tun.udp_csum else "off"
        print(
            f"\ntunnel {tun.ifname} (ifindex {tun.ifindex}): udp port {tun.port}, mtu {tun.mtu},"
            f" udp checksum {csum}; drops: "
            + ", ".join(f"{_kebab(r)} {n}" for r, n in drops.items())
        )


def _sessions(dp: Dataplane, link: str, as_json: bool) -> None:
    sessions = dp.sessions(link)
    if as_json:
        print(json.dumps([asdict(s) for s in sessions], indent=2))
        return
    for s in sessions:
        lo = f"{s.addr_lo}:{s.port_lo}" if s.kind.startswith("l4") else s.addr_lo
        hi = f"{s.addr_hi}:{s.port_hi}" if s.kind.startswith("l4") else s.addr_hi
        vlan = f" vlan {s.vlan}" if s.vlan else ""
        print(f"{s.kind} proto {s.proto}{vlan} {lo} <-> {hi}: a={s.a_ifname} b={s.b_ifname}")


def _endpoint(dp: Dataplane, args: argparse.Namespace) -> None:
    side = Side(args.side)
    if args.action == "add" and bool(args.interface) == bool(args.remote):
        raise InvalidValue(
            "endpoint add: name an interface IF or, for a remote endpoint, --remote NODE_IP"
            " --id N (not both)"
        )
    if args.action != "add" and args.remote:
        raise InvalidValue(f"endpoint {args.action}: --remote is for add; name it by --id N")
    if args.action == "add":
        dp.add_endpoint(
            args.link, side, args.interface, node=args.remote, endpoint_id=args.endpoint_id
        )
        return
    if not args.interface and not args.endpoint_id:
        raise InvalidValue(f"endpoint {args.action}: name an interface IF or an endpoint --id N")
    action = {
        "del": dp.remove_endpoint,
        "drain": dp.drain_endpoint,
        "activate": dp.activate_endpoint,
    }[args.action]
    action(args.link, side, args.interface, endpoint_id=args.endpoint_id)


def _destroy(root: str) -> list[str] | None:
    """Destroy the pinned data plane through an adopter; its links, or None if none is pinned."""
    if not os.path.exists(Pins(root).program):
        return None
    try:
        # Every attachment detached the way it was made; the pinned build, not replaced first.
        with Dataplane(root, upgrade=False) as dp:
            links = dp.links()
            dp.destroy()
    except DataplaneError as err:  # e.g. pins of another layout: unpinning is what is left
        print(f"could not adopt the pinned data plane ({str(err).splitlines()[0]}): unpinning it")
        return []
    return links


def _unpin_tree(root: str) -> list[str]:
    """Remove every pin and folder under ``root`` (unpinning a TCX link pin detaches it)."""
    removed = []
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.unlink(os.path.join(folder, name))
            removed.append(os.path.relpath(os.path.join(folder, name), root))
        for name in dirs:
            os.rmdir(os.path.join(folder, name))
    os.rmdir(root)
    return sorted(removed)


def _reset(root: str) -> None:
    """``dp reset``: this node's data plane removed (idempotent); traffic through it stops."""
    if not os.path.isdir(root):
        print(f"nothing to reset: {root} does not exist")
        return
    links = _destroy(root)
    if links is not None:
        names = f": {', '.join(links)}" if links else ""
        print(f"removed {len(links)} link(s){names}, the program and the node's maps")
    strays = _unpin_tree(root) if os.path.isdir(root) else []
    if strays:
        print(f"removed {len(strays)} stray pin(s): {', '.join(strays)}")
    print(f"{root} removed")


def _run(args: argparse.Namespace) -> None:
    root: str = args.bpffs_root
    if args.command == "reset":
        _reset(root)
        return
    loaded = os.path.exists(Pins(root).program)
    # Reading or changing what does not exist needs no program: do not load one for it.
    creating = (args.command, getattr(args, "action", "")) in (("link", "add"), ("tunnel", "set"))
    if not loaded and not creating:
        if args.command == "tunnel":
            return  # nothing to delete
        if args.command == "show":
            _show(None, args.link, args.json)
            return
        raise LinkNotFound(f"no link named {args.link!r} (nothing pinned under {root!r})")
    with Dataplane(root, session_table_size=args.session_table_size) as dp:
        if dp.opened.action == "upgraded":  # this CLI's build replaced the node's programs
            print(f"{PROG}: {dp.opened.summary()}", file=sys.stderr)
        if args.command == "link" and args.action == "add":
            dp.create_link(
                args.link, side_a=args.side_a, side_b=args.side_b, cluster_id=args.cluster_id
            )
        elif args.command == "link":
            dp.delete_link(args.link)
        elif args.command == "endpoint":
            _endpoint(dp, args)
        elif args.command == "tunnel" and args.action == "set":
            dp.ensure_tunnel(
                ifname=args.name, port=args.port, udp_csum=not args.no_udp_csum, mtu=args.mtu
            )
        elif args.command == "tunnel":
            dp.remove_tunnel()
        elif args.command == "show":
            _show(dp, args.link, args.json)
        else:
            _sessions(dp, args.link, args.json)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except DataplaneError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{PROG}: error: {first}", file=sys.stderr)
        return 1
    except PermissionError as err:
        print(f"{PROG}: error: {err} (run as root)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
