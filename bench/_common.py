"""What every data-plane benchmark does around its measurements (bench/dataplane.py,
bench/crossnode.py, bench/dataplane_pair.py): refuse to run without root, note the machine's
load before and after (a busy machine reads differently, so the JSON says how busy it was), and
write the JSON report.

Imported as ``bench._common`` once the script has put the repository root first on
``sys.path`` (each script's first lines).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def needs_root(script: str) -> bool:
    """False (and why, on stderr) when not run as root: the setups are namespaces, veths, BPF."""
    if os.geteuid() == 0:
        return True
    print(f"{script} needs root (namespaces, veths, BPF)", file=sys.stderr)
    return False


class Machine:
    """The machine and its load average from when the benchmark started (``start``)."""

    def __init__(self) -> None:
        self.load_at_start = os.getloadavg()

    @classmethod
    def start(cls) -> Machine:
        """Take the load at start and print it."""
        machine = cls()
        load = machine.load_at_start[0]
        print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs", flush=True)
        return machine

    def load(self) -> dict[str, Any]:
        """The load averages at start and now (the report's ``loadavg_at_*``)."""
        return {"loadavg_at_start": self.load_at_start, "loadavg_at_end": os.getloadavg()}

    def describe(self) -> dict[str, Any]:
        """The report's ``machine``: kernel, CPUs, load at start and now."""
        return {"kernel": platform.release(), "cpus": os.cpu_count(), **self.load()}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The JSON report at ``path`` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
