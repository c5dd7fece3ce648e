"""The ``nas`` command line: ``nas search`` (any agent, any executor, resumable), ``nas compare``,
``nas report``, ``nas retrain`` and ``nas export``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from nas_cli import evaluation, search


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Neural architecture search with reinforcement learning")
    sub = parser.add_subparsers(dest="command", required=True)
    search.add_command(sub)
    evaluation.add_commands(sub)
    return parser


#: exceptions that report bad input or a bad environment (the message names the problem), by module
_USER_ERRORS = {
    "nas_env.errors": "SetupError",  # missing, corrupt or undownloadable dataset, a device that is not there
    "slurm.config": "ClusterConfigError",  # bad executor settings, unreachable cluster
    "evaluation.compare_spec": "CompareError",
    "gymnasium.error": "Error",  # e.g. an unknown environment id
}


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input (a bad value, file, dataset, cluster) rather than a bug."""
    kinds: list[type] = [ValueError, FileNotFoundError, NotADirectoryError, PermissionError]
    for module, name in _USER_ERRORS.items():
        if module in sys.modules:  # a module that raised has been imported
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(exc, tuple(kinds))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``nas`` command. Bad input ends with one ``nas CMD: error: ...`` line and exit status 2
    (``NAS_TRACEBACK=1`` shows the traceback); Ctrl-C ends with status 130 and SIGTERM with 143, the store
    intact and the run resumable."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print(f"\nnas {args.command}: interrupted; finished evaluations are in the run's store.sqlite"
              " and `nas search --resume RUN_DIR` goes on from there", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("NAS_TRACEBACK"):
            raise
        print(f"nas {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
