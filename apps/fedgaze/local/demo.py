"""``fedgaze demo`` and federated ``fedgaze train``: a real local federation, end to end.

Provision devices -> start SuperLink and one SuperNode per device -> run the fedgaze app ->
show progress -> write the run directory (model, checkpoints, device privacy state, summary).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedgaze.atomic import write_json_atomic
from fedgaze.client.app import privacy_state_path
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.local.cohort import provision_ifllm, provision_synthetic, select_workers
from fedgaze.local.launcher import FederationOutcome, LaunchLimits, launch_federation
from fedgaze.privacy.accounting import calibrate_noise_multiplier
from fedgaze.privacy.central import calibrate_central_noise
from fedgaze.privacy.state import PrivacyState

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class FederationOptions:
    """What a person can choose for a local federation run (defaults: the one-minute demo)."""

    nodes: int = 5
    rounds: int = 3
    data: Path | None = None
    workers: tuple[str, ...] | None = None
    max_workers: int | None = 8
    run_dir: Path | None = None
    seed: int = 0
    epsilon_budget: float = 8.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    batch_size: int = 8
    local_epochs: int = 1
    lr: float = 0.05
    hidden: int = 16
    holdout: float = 0.25
    round_timeout: float = 120.0
    node_wait_timeout: float = 120.0
    max_device_epsilon: float | None = None
    client_dp_epsilon: float | None = None
    client_dp_clip_norm: float = 0.5
    insecure: bool = False
    """Opt out of TLS and SuperNode authentication (plaintext gRPC/HTTP, any node may join)."""
    aggregation: Literal["fedavg", "trimmed-mean", "median"] = "fedavg"
    trim_fraction: float = 0.1
    max_update_norm: float | None = None


INSECURE_WARNING = (
    "[bold red]WARNING: --insecure: TLS and SuperNode authentication are OFF. Model updates "
    "and privacy reports travel in plaintext and any process that can reach the SuperLink can "
    "join as a device. Use only for debugging on a trusted machine.[/bold red]"
)


def default_run_dir(base: Path = Path("runs")) -> Path:
    """A new, unique run directory under ``base``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return base / f"{stamp}-{uuid.uuid4().hex[:6]}"


def provision(opts: FederationOptions, run_dir: Path) -> tuple[list[NodeSettings], dict[str, Any]]:
    """Create the devices for ``opts`` under ``run_dir/devices``; also describe the data source."""
    devices_dir = run_dir / "devices"
    if opts.data is None:
        nodes = provision_synthetic(
            devices_dir, opts.nodes, opts.seed, opts.epsilon_budget, opts.delta
        )
        return nodes, {"kind": "synthetic", "seed": opts.seed, "devices": opts.nodes}
    workers = select_workers(opts.data, opts.workers, opts.max_workers)
    nodes = provision_ifllm(devices_dir, opts.data, workers, opts.epsilon_budget, opts.delta)
    return nodes, {"kind": "ifllm", "path": str(opts.data.resolve()), "workers": workers}


def run_local_federation(opts: FederationOptions, console: Console | None = None) -> dict[str, Any]:
    """Run a whole local federation and return (and write) its ``summary.json``."""
    console = console or Console()
    run_dir = (opts.run_dir or default_run_dir()).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        # Devices' ledgers, the SuperLink database and logs would silently carry over.
        raise ValueError(f"run directory {run_dir} is not empty; choose a new one")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    nodes, source = provision(opts, run_dir)
    noise = opts.noise_multiplier or calibrate_noise_multiplier(
        opts.epsilon_budget, rounds=opts.rounds, local_epochs=opts.local_epochs, delta=opts.delta
    )
    settings = ServerSettings(
        run_dir=str(run_dir),
        run_key=f"{run_dir.name}-{uuid.uuid4().hex[:8]}",
        rounds=opts.rounds,
        min_nodes=len(nodes),
        node_wait_timeout=opts.node_wait_timeout,
        round_timeout=opts.round_timeout,
        hidden=opts.hidden,
        noise_multiplier=noise,
        max_grad_norm=opts.max_grad_norm,
        batch_size=opts.batch_size,
        local_epochs=opts.local_epochs,
        lr=opts.lr,
        holdout=opts.holdout,
        seed=opts.seed,
        max_device_epsilon=opts.max_device_epsilon,
        client_dp_noise_multiplier=(
            calibrate_central_noise(
                opts.client_dp_epsilon, sample_rate=1.0, rounds=opts.rounds, delta=opts.delta
            )
            if opts.client_dp_epsilon is not None
            else None
        ),
        client_dp_clip_norm=opts.client_dp_clip_norm if opts.client_dp_epsilon else None,
        client_dp_delta=opts.delta,
        aggregation=opts.aggregation,
        trim_fraction=opts.trim_fraction,
        max_update_norm=opts.max_update_norm,
    )
    console.print(
        f"[bold]fedgaze[/bold]: {len(nodes)} devices ({source['kind']}), {opts.rounds} rounds, "
        f"device budget epsilon={opts.epsilon_budget} delta={opts.delta}, noise multiplier "
        f"{noise:g}{' (calibrated to fit every round)' if opts.noise_multiplier is None else ''}; "
        f"run dir {run_dir}"
    )
    if opts.insecure:
        console.print(INSECURE_WARNING)
    outcome = _run_with_progress(run_dir, settings, nodes, opts, console)
    summary = build_summary(opts, settings, nodes, source, outcome, time.monotonic() - t0)
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    _print_devices(console, summary)
    console.print(
        f"done in {summary['wall_seconds']:.1f} s: {summary['rounds_completed']}/"
        f"{summary['rounds']} rounds; summary {run_dir / SUMMARY_FILE}"
    )
    return summary


def _run_with_progress(
    run_dir: Path,
    settings: ServerSettings,
    nodes: list[NodeSettings],
    opts: FederationOptions,
    console: Console,
) -> FederationOutcome:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting SuperLink and SuperNodes", total=opts.rounds)

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "waiting":
                progress.update(task, description=f"waiting for {event['min_nodes']} devices")
            elif event["event"] == "started":
                progress.update(task, description="training")
            elif event["event"] == "round":
                progress.update(task, completed=event["round"])
                console.print(_round_line(event))
            elif event["event"] == "evaluation":
                console.print(_evaluation_line(event))

        limits = LaunchLimits(
            run_total=opts.node_wait_timeout + opts.rounds * opts.round_timeout * 2
        )
        return launch_federation(
            run_dir, settings, nodes, on_event=on_event, limits=limits, secure=not opts.insecure
        )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _round_line(event: dict[str, Any]) -> str:
    eps = [d["epsilon"] for d in event["devices"]]
    eps_text = (
        f"epsilon min/median/max {min(eps):.2f}/{statistics.median(eps):.2f}/{max(eps):.2f}"
        if eps
        else "epsilon n/a"
    )
    failures = f", [red]{len(event['failures'])} failures[/red]" if event["failures"] else ""
    if event.get("refused"):
        failures += f", [red]{len(event['refused'])} updates refused[/red]"
    return (
        f"round {event['round']}: {event['train_devices']} devices trained on "
        f"{event['train_examples']} comparisons, {eps_text}, {event['seconds']:.1f} s{failures}"
    )


def _evaluation_line(event: dict[str, Any]) -> str:
    which = "initial model" if event["round"] == 0 else f"model after round {event['round']}"
    return (
        f"  {which}: held-out accuracy {_fmt(event['accuracy'])} "
        f"(personalized on-device {_fmt(event.get('accuracy_personal'))}), "
        f"loss {_fmt(event['loss'])} "
        f"(n={event['eval_examples']} on {event['eval_devices']} devices)"
    )


def _client_dp_summary(settings: ServerSettings, rounds: int) -> dict[str, Any] | None:
    """Client-level DP of the aggregate, with its epsilon per person (None when off)."""
    spent = settings.client_dp_spent(rounds)
    if spent is None:
        return None
    return {
        **spent,
        "unit": "one person (all of a device's data)",
        "accountant": "dp_accounting RDP",
    }


def build_summary(
    opts: FederationOptions,
    settings: ServerSettings,
    nodes: list[NodeSettings],
    source: dict[str, Any],
    outcome: FederationOutcome,
    wall_seconds: float,
) -> dict[str, Any]:
    """The run's ``summary.json``: what ran, how, its metrics and every device's privacy spend.

    Each device's epsilon is what it reported to the server; ``epsilon_device_state`` is
    recomputed here from the accountant history the device persisted, so the two can be
    compared.
    """
    server = outcome.server_result
    reported = {d["device_id"]: d for d in server["devices"]}
    devices = []
    for node in nodes:
        state = PrivacyState.load(privacy_state_path(node))
        view = reported.get(node.device_id, {})
        devices.append(
            {
                "device_id": node.device_id,
                "epsilon": view.get("epsilon", 0.0),
                "epsilon_device_state": state.epsilon(node.delta, "rdp"),
                "delta": node.delta,
                "epsilon_budget": node.epsilon_budget,
                "accountant": "rdp",
                "examples": view.get("examples", 0),
                "rounds_participated": view.get("rounds_participated", 0),
                "status": view.get("status", "never replied"),
                "events": view.get("events", []),
                "privacy_state": str(privacy_state_path(node)),
            }
        )
    return {
        "transport": "grpc",
        "fleet_api": "grpc-rere",
        "fleet_address": outcome.fleet_address,
        # What the launcher actually started, not what was asked for.
        "tls": outcome.tls,
        "node_auth": outcome.node_auth,
        "processes": {
            "superlink_pid": outcome.superlink_pid,
            "supernode_pids": list(outcome.supernode_pids),
        },
        "data": source,
        "nodes": len(nodes),
        "rounds": settings.rounds,
        "rounds_completed": server["rounds_completed"],
        "client_dp": _client_dp_summary(settings, server["rounds_completed"]),
        "metrics": [
            {
                k: e.get(k)
                for k in ("round", "accuracy", "accuracy_personal", "loss", "eval_examples")
            }
            for e in server["evaluations"]
            if e["round"] >= 1
        ],
        "initial_metrics": next(
            (
                {k: e[k] for k in ("accuracy", "loss", "eval_examples")}
                for e in server["evaluations"]
                if e["round"] == 0
            ),
            None,
        ),
        "rounds_log": server["rounds_log"],
        "devices": devices,
        "dp_sgd": {
            "noise_multiplier": settings.noise_multiplier,
            "noise_calibrated": opts.noise_multiplier is None,
            "max_grad_norm": opts.max_grad_norm,
            "expected_batch_size": opts.batch_size,
            "local_epochs": opts.local_epochs,
            "sampling": "poisson",
            "unit": "one labelled comparison on one device",
        },
        "model": str(Path(settings.run_dir) / "model"),
        "checkpoints": str(Path(settings.run_dir) / "checkpoints"),
        "run_key": settings.run_key,
        "wall_seconds": round(wall_seconds, 2),
    }


def _print_devices(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="devices (privacy spent is cumulative over every round they joined)")
    for col in ("device", "examples", "rounds", "epsilon", "delta", "budget", "status"):
        table.add_column(col)
    for d in summary["devices"]:
        table.add_row(
            d["device_id"],
            str(d["examples"]),
            str(d["rounds_participated"]),
            f"{d['epsilon']:.3f}",
            f"{d['delta']:g}",
            f"{d['epsilon_budget']:g}",
            d["status"],
        )
    console.print(table)
