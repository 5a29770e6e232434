"""The ``fedgaze`` command line: builds the parser of every subcommand and runs the handler.

Each command group has its own module (:mod:`.federation` demo/train, :mod:`.certs`,
:mod:`.data` score/features, :mod:`.audit`, :mod:`.server`, :mod:`.client`,
:mod:`.alignment`, :mod:`.reward`), which adds its parsers and sets each one's handler with
``set_defaults(handler=...)``; the agent's ``fedgaze client`` subcommands come from
:mod:`fedgaze.client.agent.commands`. Heavy modules are imported inside the handlers so
``fedgaze --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from fedgaze.cli import (
    alignment,
    audit,
    certs,
    client,
    data,
    federation,
    reward,
    server,
    simulate,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``fedgaze`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedgaze",
        description="Federated, differentially private reward models from implicit feedback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    federation.add_parsers(sub)
    simulate.add_parsers(sub)
    certs.add_parsers(sub)
    data.add_parsers(sub)
    audit.add_parsers(sub)
    server.add_parsers(sub)
    client.add_parsers(sub)
    alignment.add_parsers(sub)
    reward.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedgaze`` console script; returns the process exit code."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    args = build_parser().parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/red]: every child process was stopped", soft_wrap=True)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        # Soft wrap keeps file paths in error messages whole (copyable, greppable).
        errors.print(f"[red]error[/red]: {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
