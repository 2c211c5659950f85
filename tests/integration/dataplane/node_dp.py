"""One node's data plane, driven from the multi-node tests: run inside the node's namespace.

``nsenter --net=/run/netns/NODE python node_dp.py ROOT COMMAND``, with COMMAND one of:
- ``apply``: read a JSON plan on stdin (the tunnel, then links with their local and remote
  endpoints, as a node agent would program them, then endpoint changes: add, drain, remove)
  and apply it through ``Dataplane``;
- ``report``: print one JSON object with every link's status and sessions and the node-wide
  tunnel drops;
- ``evict``: delete every session, as LRU evictions would, and empty the flow caches (so the
  next packets go through the tables);
- ``destroy``: remove everything under the root;
- ``serve``: any of the above, one request a line on stdin (``{"command", "plan"}``), one
  answer a line on stdout (``{"out"}`` or ``{"error"}``), until stdin closes: a node's calls
  without a Python start-up and an import of the data plane each (about half a second on a
  loaded machine), for tests that make many calls and need no fresh process for each.
``SFC_TEST_OBJECT``, when set, names another build of the eBPF object to open the root with (an
upgrade test's new build).
Only the network namespace is switched (not the mount namespace, as ``ip netns exec`` would),
so the pins land in the host's bpffs. Used by ``tests/integration/dataplane/multinode.py``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sfc_k8s.dataplane import Dataplane, EndpointSpec, Side, loader, maps, structs

SESSIONS = 65536


def apply(dp: Dataplane, plan: dict[str, Any]) -> None:
    tunnel = plan.get("tunnel")
    if tunnel is not None:
        dp.ensure_tunnel(**tunnel)
    for link in plan.get("links", []):
        specs = {
            side: [EndpointSpec(**e) for e in link.get(f"side_{side}", [])] for side in ("a", "b")
        }
        if link["name"] not in dp.links():
            dp.create_link(
                link["name"],
                side_a=specs["a"],
                side_b=specs["b"],
                cluster_id=link["cluster_id"],
            )
    for change in plan.get("changes", []):
        side, link, ep_id = Side(change["side"]), change["link"], change["id"]
        if change["action"] == "drain":
            dp.drain_endpoint(link, side, endpoint_id=ep_id)
        elif change["action"] == "remove":
            dp.remove_endpoint(link, side, endpoint_id=ep_id)
        else:
            dp.add_endpoint(link, side, change.get("ifname", ""), node=change.get("node", ""),
                            endpoint_id=ep_id)  # fmt: skip


def report(dp: Dataplane) -> dict[str, Any]:
    return {
        "links": {
            s.name: {
                "status": json.loads(json.dumps(asdict(s), default=str)),
                "drops": {r.name: n for r, n in s.drops.items()},
                "sessions": [asdict(x) for x in dp.sessions(s.name)],
            }
            for s in dp.statuses()
        },
        "tunnel_drops": {r.name: n for r, n in dp.tunnel_drops().items()},
    }


def evict(dp: Dataplane) -> None:
    for name in structs.SESSION_MAPS:
        fd = dp.map_fd(name)
        ksize, vsize = structs.MAP_LAYOUTS[name]
        keys = b"".join(k.tobytes() for k, _ in maps.walk_raw(fd, ksize, vsize))
        maps.delete_raw(fd, keys, ksize)
    for name, entry in structs.FLOW_CACHES.items():
        maps.percpu_zero_all(dp.map_fd(name), structs.FLOW_CACHE_SIZE, entry)


def run(dp: Dataplane, command: str, plan: dict[str, Any]) -> str:
    """Run one command; what it prints."""
    if command == "apply":
        apply(dp, plan)
    elif command == "report":
        return json.dumps(report(dp))
    elif command == "evict":
        evict(dp)
    elif command == "destroy":
        dp.destroy()
    else:
        raise ValueError(f"unknown command {command!r}")
    return ""


def serve(dp: Dataplane) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"out": run(dp, request["command"], request.get("plan") or {})}
        except Exception as err:  # reported to the caller, which raises it there
            answer = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


def main(argv: list[str]) -> int:
    root, command = argv
    built = os.environ.get("SFC_TEST_OBJECT") or loader.OBJECT_PATH
    upgrade = command != "destroy"  # removal: whatever build a test left pinned
    with Dataplane(
        root, session_table_size=SESSIONS, object_path=Path(built), upgrade=upgrade
    ) as dp:
        if command == "serve":
            serve(dp)
        else:
            out = run(dp, command, json.load(sys.stdin) if command == "apply" else {})
            if out:
                print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
