"""pyproject's runtime dependencies are exactly what the product code imports.

Covers: every third-party module imported under api/, operator/, dataplane/, cni/ and the
package's top-level modules comes from a runtime dependency; every runtime dependency is
imported by that code (nothing like an unused netlink library rides along into the image);
the local cluster's and the demo's third-party imports come from the runtime dependencies or
the ``local`` extra, and the extra holds nothing the product code needs.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "src" / "sfc_k8s"
PRODUCT = ["api", "operator", "dataplane", "cni"]


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, normalised (PEP 503)."""
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]).lower()
        for r in requirements
    }


def _third_party(files: list[Path]) -> dict[str, set[str]]:
    """Distribution name -> the files importing it, for every non-stdlib, non-project import."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "sfc_k8s":
                    continue
                assert top in owners, f"{path}: {top} is installed by no distribution"
                for dist in owners[top]:
                    name = re.sub(r"[-_.]+", "-", dist).lower()
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = _names(PROJECT["dependencies"])
LOCAL = _names(PROJECT["optional-dependencies"]["local"])
PRODUCT_FILES = [p for d in PRODUCT for p in (PACKAGE / d).rglob("*.py")] + list(
    PACKAGE.glob("*.py")
)


def test_product_imports_only_runtime_dependencies() -> None:
    used = _third_party(PRODUCT_FILES)
    missing = {name: sorted(files) for name, files in used.items() if name not in RUNTIME}
    assert not missing, f"imported but not runtime dependencies: {missing}"


def test_every_runtime_dependency_is_imported() -> None:
    assert set(_third_party(PRODUCT_FILES)) >= RUNTIME


def test_local_cluster_imports_come_from_runtime_or_the_local_extra() -> None:
    used = _third_party(list((PACKAGE / "local").rglob("*.py")))
    missing = {n: sorted(f) for n, f in used.items() if n not in RUNTIME | LOCAL}
    assert not missing, f"the local cluster imports these, declared nowhere: {missing}"
    assert not (LOCAL & RUNTIME)
    assert set(used) >= LOCAL
