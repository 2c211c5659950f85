"""``sfc-k8s controller`` and ``sfc-k8s agent``: the operator's two processes.

``sfc_k8s.cli`` passes the subcommand name first (``main(["controller", ...])``). The controller
is started here; the agent is dispatched to ``sfc_k8s.operator.agent.main`` (imported only when
it runs, so the controller never loads the data plane).
"""

from __future__ import annotations

import importlib
import sys

USAGE = "usage: sfc-k8s {controller|agent} [ARGS...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("controller", "agent"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "agent":
        agent = importlib.import_module("sfc_k8s.operator.agent")
        result: int = agent.main(rest)
        return result

    from sfc_k8s.operator.controller import run
    from sfc_k8s.operator.settings import (
        SettingsError,
        configure_logging,
        controller_config_from_args,
    )

    config = controller_config_from_args(rest)
    configure_logging(config.log_format, verbose=config.verbose, debug=config.debug)
    try:
        return run(config)
    except SettingsError as err:
        print(f"sfc-k8s controller: {err}", file=sys.stderr)
        return 2
