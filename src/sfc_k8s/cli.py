"""The ``sfc-k8s`` command: one entry point for people, dispatching to each component's CLI.

Each subcommand lives in the component that owns it and exposes ``main(argv) -> int``; the
component is imported only when its subcommand runs, so ``sfc-k8s dp show`` does not pay for
Kopf or the local cluster. A reader that goes away (``sfc-k8s local status | head``) or a
Ctrl-C ends the command quietly, as with any Unix tool.
"""

from __future__ import annotations

import importlib
import os
import sys

from sfc_k8s import __version__

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dp": ("sfc_k8s.dataplane.cli", "the data plane alone: links, endpoints, counters"),
    "controller": ("sfc_k8s.operator.cli", "run the ServiceFunctionChain controller"),
    "agent": ("sfc_k8s.operator.cli", "run the node agent that programs the local data plane"),
    "install-cni": ("sfc_k8s.cni.install", "put the sfc-cni shim into a node's CNI bin directory"),
    "metrics-provider": (
        "sfc_k8s.operator.metrics_provider",
        "serve per-pod traffic as the custom metrics API (for the HPA)",
    ),
    "uninstall": ("sfc_k8s.operator.uninstall", "remove sfc-k8s from a cluster (--dry-run first)"),
    "local": ("sfc_k8s.local.cli", "the local cluster: up, down, status, exec"),
    "demo": ("sfc_k8s.local.demo", "run the showcase on the local cluster"),
}


def _usage() -> str:
    lines = [f"usage: sfc-k8s COMMAND [ARGS...]   (sfc-k8s {__version__})", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'sfc-k8s COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a closed output pipe or an interrupt ends it without a traceback."""
    try:
        code = _dispatch(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could not be caught
        return code
    except BrokenPipeError:
        # The reader left: point stdout at /dev/null so that the interpreter's final flush
        # does not fail again, and exit 1 (the Python documentation's recipe for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"sfc-k8s: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    # The operator module serves two subcommands and needs to know which one ran.
    if name in ("controller", "agent"):
        rest = [name, *rest]
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
