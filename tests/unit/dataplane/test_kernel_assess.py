"""The verdict on a kernel probe's results (``kernel.assess``, pure) and the agent's preflight.

Covers: every feature present -> ok; each required feature missing alone -> refused, the message
naming it, the kernel that first has it and the overall minimum; TCX missing with clsact present
-> ok (the fallback), noted as optional; clsact missing with TCX present -> ok, not mentioned;
both TC hooks missing -> refused naming clsact; VXLAN external missing -> ok, noted; a feature
the probe did not report counts as missing; the agent's preflight refuses a failed assessment,
a probe that could not run (no privilege) and a missing native Maglev builder when it is
required, and not otherwise.
"""

from __future__ import annotations

import pytest

from sfc_k8s.dataplane.errors import BpfError
from sfc_k8s.dataplane.kernel import FEATURES, MINIMUM_KERNEL, Assessment, Feature, assess
from sfc_k8s.operator.agent import AgentConfig, preflight

ALL = {f.name: True for f in FEATURES}
REQUIRED = [f for f in FEATURES if f.required]


def without(*names: str) -> dict[str, bool]:
    return {**ALL, **dict.fromkeys(names, False)}


def test_everything_present() -> None:
    result = assess(ALL, "6.8.0")
    assert result == Assessment(ok=True, missing=(), message=result.message)
    assert result.message == "kernel 6.8.0: every required feature present."


@pytest.mark.parametrize(
    "feature", [f for f in REQUIRED if f.name != "clsact"], ids=lambda f: f.name
)
def test_a_required_feature_missing_is_refused(feature: Feature) -> None:
    name, minimum = feature.name, feature.minimum
    result = assess(without(name), "5.4.0")
    assert not result.ok
    assert [f.name for f in result.missing] == [name]
    assert f"missing {name} (Linux {minimum}," in result.message
    assert f"needs Linux {MINIMUM_KERNEL} or later" in result.message


def test_tcx_missing_falls_back_to_clsact() -> None:
    result = assess(without("tcx"), "5.15.0")
    assert result.ok
    assert "Optional, missing: tcx (Linux 6.6," in result.message


def test_clsact_missing_with_tcx_is_fine() -> None:
    result = assess(without("clsact"), "6.8.0")
    assert result.ok
    assert "clsact" not in result.message


def test_no_tc_hook_at_all_is_refused() -> None:
    result = assess(without("tcx", "clsact"), "5.10.0")
    assert not result.ok
    assert "missing clsact (Linux 4.5," in result.message
    assert "Optional, missing: tcx" in result.message


def test_vxlan_external_is_optional() -> None:
    result = assess(without("vxlan_external"), "6.1.0")
    assert result.ok
    assert "Optional, missing: vxlan_external" in result.message


def test_unreported_feature_counts_as_missing() -> None:
    results = dict(ALL)
    del results["bpf_redirect_peer"]
    assert not assess(results, "5.10.0").ok


def test_preflight() -> None:
    config = AgentConfig(node="n")
    bad = assess(without("bpf_redirect_peer"), "5.4.0")
    good = assess(ALL, "6.8.0")
    assert preflight(config, check_kernel=lambda: bad, native_maglev=lambda: True) == bad.message
    assert preflight(config, check_kernel=lambda: good, native_maglev=lambda: False) is None
    strict = AgentConfig(node="n", require_native_maglev=True)
    problem = preflight(strict, check_kernel=lambda: good, native_maglev=lambda: False)
    assert problem is not None
    assert "libsfcmaglev.so is missing or does not load" in problem
    assert preflight(strict, check_kernel=lambda: good, native_maglev=lambda: True) is None

    def no_privilege() -> Assessment:
        raise BpfError("failed to probe bpf_redirect_peer: [Errno 1] Operation not permitted", 1)

    problem = preflight(config, check_kernel=no_privilege, native_maglev=lambda: True)
    assert problem is not None
    assert problem.startswith("the kernel feature probe failed: failed to probe bpf_redirect_peer")
    unchecked = AgentConfig(node="n", kernel_check=False)
    assert preflight(unchecked, check_kernel=lambda: bad, native_maglev=lambda: True) is None
