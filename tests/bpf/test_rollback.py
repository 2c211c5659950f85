"""A fault injected in the middle of a multi-step change leaves the state as it was
(``docs/dataplane.md``: "a failed call leaves the state as it was").

The fault is the kernel refusing an attachment (``bpf_link_create`` returning -EPERM, at the
libbpf boundary) on the third interface of a new link, or on an endpoint being added; before
it, the change has written endpoint slots, the interface index and attachments. Covers:
``create_link`` failing that way leaves no link, no slot, no interface index entry and no
attachment, and the same link can then be created; ``add_endpoint`` failing that way leaves
the link with its endpoints, slots and forwarding as before, and the endpoint can be added
afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import BpfError, Dataplane, Side, loader, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from tests.bpf.conftest import SESSIONS
from tests.bpf.harness import TC_ACT_REDIRECT, Harness
from tests.fixtures import frames as f
from tests.nettools import Janitor, private_bpffs_root, unique

pytestmark = pytest.mark.root


class Fault:
    """``bpf_link_create`` refuses its ``nth`` call from now on (once) with EPERM."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls = 0
        self.nth = 0
        real = bpf._link_create

        def link_create(prog_fd: int, target: int, attach_type: int, opts: object) -> int:
            self.calls += 1
            if self.calls == self.nth:
                return -errno.EPERM
            return int(real(prog_fd, target, attach_type, opts))

        monkeypatch.setattr(bpf, "_link_create", link_create)

    def arm(self, nth: int) -> None:
        self.calls, self.nth = 0, nth


@pytest.fixture
def dp(janitor: Janitor) -> Iterator[Dataplane]:
    root = private_bpffs_root()
    plane = Dataplane(root, session_table_size=SESSIONS)

    def teardown() -> None:
        plane.close()
        with Dataplane(root) as fresh:
            fresh.destroy()

    janitor.add(teardown)
    yield plane


def _ifaces(janitor: Janitor, count: int) -> list[str]:
    return [janitor.veth(unique("rb"), unique("rp"), up=False)[0] for _ in range(count)]


def _slots(dp: Dataplane) -> dict[int, bytes]:
    """Endpoint slot -> its raw entry (ifindex, generation, link, side, state, name)."""
    return {slot: bytes(entry) for slot, entry in Harness(dp).slots().items()}


def _ifslots(dp: Dataplane) -> dict[int, int]:
    fd = dp.map_fd(structs.MAP_IFSLOTS)
    return {k.value: v.value for k, v in maps.walk(fd, ctypes.c_uint32, ctypes.c_uint32)}


def _attachments(dp: Dataplane, link: str) -> list[str]:
    folder = loader.Pins(dp.root).link_dir(link)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_create_link_failing_on_its_third_attach_leaves_nothing(
    janitor: Janitor, dp: Dataplane, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _ifaces(janitor, 4)
    fault = Fault(monkeypatch)
    slots_before, ifslots_before = _slots(dp), _ifslots(dp)
    fault.arm(3)
    with pytest.raises(BpfError) as err:
        dp.create_link("rb", side_a=names[:1], side_b=names[1:])
    assert err.value.errno == errno.EPERM
    assert fault.calls == 3  # two interfaces were attached before the fault
    assert dp.links() == [] and _attachments(dp, "rb") == []
    assert _slots(dp) == slots_before and _ifslots(dp) == ifslots_before
    # Nothing left in the way: the same link now comes up whole.
    fault.arm(0)
    dp.create_link("rb", side_a=names[:1], side_b=names[1:])
    assert len(dp.status("rb").endpoints) == 4


def test_add_endpoint_failing_on_its_attach_leaves_the_link_as_it_was(
    janitor: Janitor, dp: Dataplane, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, b0, b1, late = _ifaces(janitor, 4)
    dp.create_link("rb", side_a=[client], side_b=[b0, b1])
    h = Harness(dp)
    frame = f.eth(f.ETH_IP, f.ipv4("10.5.0.1", "10.5.0.2", f.UDP, f.l4(4242, 53)))
    first = h.run(client, frame)
    assert first.retval == TC_ACT_REDIRECT
    before = [(e.side, e.ifname, e.state) for e in dp.status("rb").endpoints]
    slots, ifslots, pins = _slots(dp), _ifslots(dp), _attachments(dp, "rb")

    fault = Fault(monkeypatch)
    fault.arm(1)
    with pytest.raises(BpfError):
        dp.add_endpoint("rb", Side.B, late)
    assert [(e.side, e.ifname, e.state) for e in dp.status("rb").endpoints] == before
    assert _slots(dp) == slots and _ifslots(dp) == ifslots and _attachments(dp, "rb") == pins
    assert h.run(client, frame) == first  # the flow still goes where it went
    # New flows are spread over the two endpoints only: the table was not changed.
    for sport in range(5000, 5064):
        new = f.eth(f.ETH_IP, f.ipv4("10.5.0.1", "10.5.0.2", f.UDP, f.l4(sport, 53)))
        assert h.run(client, new).target in (b0, b1)

    dp.add_endpoint("rb", Side.B, late)
    assert late in {e.ifname for e in dp.status("rb").side(Side.B)}
