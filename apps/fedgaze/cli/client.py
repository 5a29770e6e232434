"""``fedgaze client``: ``budget`` here, and the agent's subcommands wired in.

The agent's subcommands (enroll, start, status, pause, resume, forget, service) and their
handlers are defined in :mod:`fedgaze.client.agent.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fedgaze.argtypes import existing_dir


def add_parsers(sub: Any) -> None:
    """Add ``client`` and its subcommands to the ``fedgaze`` subparsers ``sub``."""
    client = sub.add_parser("client", help="commands for a person on their own device")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    budget = client_sub.add_parser(
        "budget", help="privacy spent by this device, per run and in total (verified ledger)"
    )
    budget.add_argument(
        "--device-dir",
        type=existing_dir,
        help="the device folder (default: the enrolled device's, from the client config)",
    )
    budget.add_argument("--config", type=Path, help="client config (default: the enrolled one)")
    budget.set_defaults(handler=_cmd_client_budget)
    from fedgaze.client.agent.commands import add_client_parsers

    add_client_parsers(client_sub)


def _cmd_client_budget(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from fedgaze.audit.budget import device_budget

    if args.device_dir is None:
        from fedgaze.client.agent.config import load_config

        args.device_dir = load_config(args.config).device_dir
    view = device_budget(args.device_dir)
    for problem in view.problems:
        console.print(f"[red]problem[/red]: {escape(problem)}", soft_wrap=True, highlight=False)
    if view.problems:
        console.print("[red]the ledger does not verify[/red]; the figures below are not reliable")
    table = Table(title=f"privacy spent by device {view.device} (ledger {view.ledger})")
    for col in ("run", "rounds", "labels released", "epsilon (this run alone)", "delta"):
        table.add_column(col)
    for run in view.runs:
        table.add_row(
            escape(run["run_id"]),
            str(run["rounds"]),
            str(run["labels_released"]),
            f"{run['epsilon']:.3f}",
            f"{run['delta']:g}",
        )
    console.print(table)
    budget = "n/a" if view.epsilon_budget is None else f"{view.epsilon_budget:g}"
    console.print(
        f"total: {view.rounds} rounds in {len(view.runs)} runs, epsilon {view.epsilon:.3f} "
        f"(dp_accounting RDP {view.epsilon_rdp:.3f}) at delta {view.delta:g}; budget {budget}",
        soft_wrap=True,
    )
    return 1 if view.problems else 0
