"""``fedgaze server start|status``: the operator's commands and everything they print.

The server's progress events (:func:`_print_server_event`) and a run's status are turned
into operator output here, and only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from fedgaze.federation.events import ProgressEvent

from fedgaze.argtypes import existing_dir


def add_parsers(sub: Any) -> None:
    """Add ``server`` and its subcommands to the ``fedgaze`` subparsers ``sub``."""
    server = sub.add_parser("server", help="commands for the operator of the federation server")
    server_sub = server.add_subparsers(dest="server_command", required=True)
    status = server_sub.add_parser("status", help="state of a run: rounds, devices, refusals")
    status.add_argument("run_dir", type=existing_dir, help="the run directory")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_server_status)
    start = server_sub.add_parser(
        "start", help="run the federation server of a server.toml (TLS, node auth, DP)"
    )
    start.add_argument("--config", type=Path, required=True, help="the server.toml")
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the run_dir's run after its last committed round (after a crash)",
    )
    start.set_defaults(handler=_cmd_server_start)


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_server_event(console: Console, event: ProgressEvent) -> None:
    """One line per ServerApp progress event worth an operator's eye."""
    from fedgaze.federation.events import Evaluated, RoundDone, Started

    if isinstance(event, Started):
        after = event.resumed_after
        resumed = f", resumed after round {after}" if after is not None else ""
        console.print(f"{event.nodes} devices connected{resumed}", soft_wrap=True)
    elif isinstance(event, RoundDone):
        log = event.log
        console.print(
            f"round {log.round}: {log.train_devices} updates aggregated, "
            f"{len(log.refused)} refused, {len(log.failures)} failures, {log.seconds} s",
            soft_wrap=True,
        )
    elif isinstance(event, Evaluated) and event.evaluation.accuracy is not None:
        ev = event.evaluation
        console.print(
            f"  held-out accuracy of the model after round {ev.round}: "
            f"{_num(ev.accuracy)} (n={ev.eval_examples})",
            soft_wrap=True,
        )


def _cmd_server_start(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.server.config import load_server_config
    from fedgaze.server.start import start_server

    config = load_server_config(args.config)
    if not config.tls.enabled:
        console.print(
            "[bold red]WARNING: tls.enabled = false: model updates and privacy records travel "
            "in plaintext.[/bold red]"
        )
    run = start_server(
        config, resume=args.resume, on_event=lambda e: _print_server_event(console, e)
    )
    result = run.result
    console.print(
        f"run {escape(run.run_key)} finished: {result.rounds_completed}/{result.rounds} "
        f"rounds, tls={run.tls}, node_auth={run.node_auth}, "
        f"{run.wall_seconds:.0f} s; ledger {escape(result.ledger)}",
        soft_wrap=True,
    )
    return 0


def _cmd_server_status(args: argparse.Namespace, console: Console) -> int:
    import json

    from fedgaze.server.status import run_status

    st = run_status(args.run_dir)
    if args.json:
        sys.stdout.write(json.dumps(st.to_json(), indent=2) + "\n")
        return 0 if st.state in ("running", "finished") else 1
    color = {"finished": "green", "running": "cyan"}.get(st.state, "red")
    planned = st.rounds_planned if st.rounds_planned is not None else "?"
    console.print(
        f"run {escape(str(st.run_dir))}: [{color}]{st.state}[/{color}], "
        f"{st.rounds_completed}/{planned} rounds, {len(st.live_processes)} live processes, "
        f"server ledger: {st.ledger_records if st.ledger_records is not None else 'none'} records",
        soft_wrap=True,
    )
    if st.labels_stored:
        console.print(
            f"  preference labels: {st.labels_stored} stored from {st.labels_devices} devices "
            "(fedgaze alignment export)",
            soft_wrap=True,
        )
    if st.last_evaluation:
        ev = st.last_evaluation.evaluation
        console.print(
            f"  last evaluation (model after round {ev.round}): accuracy "
            f"{_num(ev.accuracy)}, personalized {_num(ev.accuracy_personal)}, "
            f"n={ev.eval_examples}",
            soft_wrap=True,
        )
    for d in st.devices:
        console.print(
            f"  device {escape(d.device_id)}: {d.status}, epsilon {d.epsilon:.3f}",
            soft_wrap=True,
        )
    for r in st.refused:
        refused = escape(str(r.to_json()))
        console.print(f"  [red]refused[/red]: {refused}", soft_wrap=True, highlight=False)
    for f in st.failures:
        console.print(f"  [red]failure[/red]: {escape(f)}", soft_wrap=True, highlight=False)
    return 0 if st.state in ("running", "finished") else 1
