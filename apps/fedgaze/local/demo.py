"""``fedgaze demo`` and federated ``fedgaze train``: a real local federation, end to end.

Provision devices -> start SuperLink and one SuperNode per device -> run the fedgaze app ->
show progress -> write the run directory (model, checkpoints, device privacy state, summary).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedgaze import defaults
from fedgaze.atomic import write_json_atomic
from fedgaze.federation.events import (
    Evaluated,
    Labelled,
    ProgressEvent,
    RoundDone,
    Started,
    Waiting,
)
from fedgaze.federation.planning import plan_settings
from fedgaze.federation.results import Evaluation
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.secure import SecureAggregation
from fedgaze.federation.settings import Aggregation, NodeSettings, ServerSettings
from fedgaze.labels.rows import LabelSource
from fedgaze.local.cohort import provision_ifllm, provision_synthetic, select_workers
from fedgaze.local.launcher import FederationOutcome, LaunchLimits, launch_federation
from fedgaze.local.summary import RunSummary, device_summaries
from fedgaze.model.kind import ModelKind, TextLabels


@dataclass(frozen=True)
class FederationOptions:
    """What a person can choose for a local federation run (defaults: the one-minute demo).

    Fields named as :class:`ServerSettings` fields mean the same; the device noise multiplier is
    calibrated to ``epsilon_budget`` unless ``noise_multiplier`` is given.
    """

    nodes: int = defaults.LOCAL_NODES
    rounds: int = defaults.ROUNDS
    data: Path | None = None
    workers: tuple[str, ...] | None = None
    max_workers: int | None = defaults.LOCAL_MAX_WORKERS
    run_dir: Path | None = None
    seed: int = defaults.SEED
    epsilon_budget: float = defaults.DEVICE_EPSILON
    delta: float = defaults.DELTA
    noise_multiplier: float | None = None
    max_grad_norm: float = defaults.MAX_GRAD_NORM
    batch_size: int = defaults.BATCH_SIZE
    local_epochs: int = defaults.LOCAL_EPOCHS
    lr: float = defaults.LR
    hidden: int = defaults.HIDDEN
    holdout: float = defaults.HOLDOUT
    round_timeout: float = defaults.LOCAL_ROUND_TIMEOUT
    node_wait_timeout: float = defaults.LOCAL_NODE_WAIT_TIMEOUT
    max_device_epsilon: float | None = None
    client_dp_epsilon: float | None = None
    client_dp_clip_norm: float = defaults.CLIENT_DP_CLIP_NORM
    fraction: float = 1.0
    """Client sampling: each device gets a round's train message with this probability."""
    insecure: bool = False
    """Opt out of TLS and SuperNode authentication (plaintext gRPC/HTTP, any node may join)."""
    aggregation: Aggregation = defaults.AGGREGATION
    trim_fraction: float = defaults.TRIM_FRACTION
    max_update_norm: float | None = None
    epsilon_label: float | None = None
    """Ask every device for its preference labels after the last round, released with
    randomized response at this epsilon (None: no labels round)."""
    label_source: LabelSource = defaults.LABEL_SOURCE
    model_kind: ModelKind = "behaviour"
    """Train the behaviour model, or the text reward model (:mod:`fedgaze.text`)."""
    text_labels: TextLabels = defaults.TEXT_LABELS
    encoder: str = defaults.TEXT_ENCODER
    behaviour_model: Path | None = None
    """Text model: the behaviour model directory whose inference labels what people did not."""
    secagg: bool = False
    """Train rounds run SecAgg+: the server learns only the sum of the updates
    (:mod:`fedgaze.federation.secure`)."""
    secagg_threshold: int | None = None
    """SecAgg+'s threshold t (default: a majority of the devices a round samples, at least 2)."""
    warm_trainer: bool = True
    """One warm trainer answers every device's messages (:func:`launch_federation`); False:
    each message loads the training stack in its own ClientApp process (benchmarks compare)."""

    def settings(self, run_dir: Path, run_key: str, min_nodes: int) -> ServerSettings:
        """The ServerApp's settings of this run (noise multipliers calibrated)."""
        chosen = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in ServerSettings.model_fields
            and f.name not in ("run_dir", "client_dp_clip_norm", "behaviour_model")
        }
        if self.behaviour_model is not None:
            chosen["behaviour_model"] = str(self.behaviour_model.resolve())
        if self.secagg:
            expected = max(1, round(self.fraction * min_nodes))
            threshold = self.secagg_threshold or max(2, expected // 2 + 1)
            if expected <= threshold:
                raise ValueError(
                    f"secure aggregation with threshold {threshold} needs more than {threshold} "
                    f"devices in a round; this run has {expected}"
                )
            chosen["secure_aggregation"] = SecureAggregation(threshold=threshold)
        return plan_settings(
            epsilon=self.epsilon_budget,
            client_dp_epsilon=self.client_dp_epsilon,
            client_dp_clip_norm=self.client_dp_clip_norm,
            client_dp_delta=self.delta,
            delta=self.delta,
            run_dir=str(run_dir),
            run_key=run_key,
            min_nodes=min_nodes,
            **chosen,
        )


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
        # The demo plays the answering service too: it logs what it served, as a service would.
        nodes = provision_synthetic(
            devices_dir,
            opts.nodes,
            opts.seed,
            opts.epsilon_budget,
            opts.delta,
            served_log=RunLayout(run_dir).served_log,
        )
        return nodes, {"kind": "synthetic", "seed": opts.seed, "devices": opts.nodes}
    workers = select_workers(opts.data, opts.workers, opts.max_workers)
    nodes = provision_ifllm(devices_dir, opts.data, workers, opts.epsilon_budget, opts.delta)
    return nodes, {"kind": "ifllm", "path": str(opts.data.resolve()), "workers": workers}


def run_local_federation(opts: FederationOptions, console: Console | None = None) -> RunSummary:
    """Run a whole local federation and return (and write) its ``summary.json``."""
    console = console or Console()
    run_dir = (opts.run_dir or default_run_dir()).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        # Devices' ledgers, the SuperLink database and logs would silently carry over.
        raise ValueError(f"run directory {run_dir} is not empty; choose a new one")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    nodes, source = provision(opts, run_dir)
    settings = opts.settings(run_dir, f"{run_dir.name}-{uuid.uuid4().hex[:8]}", len(nodes))
    calibrated = opts.noise_multiplier is None
    console.print(
        f"[bold]fedgaze[/bold]: {len(nodes)} devices ({source['kind']}), {opts.rounds} rounds, "
        f"device budget epsilon={opts.epsilon_budget} delta={opts.delta}, noise multiplier "
        f"{settings.noise_multiplier:g}{' (calibrated to fit every round)' if calibrated else ''}"
        f"; run dir {run_dir}"
    )
    if settings.secure_aggregation is not None:
        secagg = settings.secure_aggregation
        console.print(
            f"secure aggregation (SecAgg+): the server learns only the sum of the updates; "
            f"threshold {secagg.threshold} devices, updates quantized within "
            f"+/-{secagg.clipping_range:g} to {secagg.quantization_range} levels"
        )
    if opts.insecure:
        console.print(INSECURE_WARNING)
    outcome = _run_with_progress(run_dir, settings, nodes, opts, console)
    summary = RunSummary(
        outcome=outcome,
        data=source,
        nodes=len(nodes),
        settings=settings,
        noise_calibrated=calibrated,
        devices=device_summaries(nodes, outcome),
        wall_seconds=time.monotonic() - t0,
        labels=labels_summary(settings, source),
    )
    summary_file = RunLayout(run_dir).summary
    write_json_atomic(summary_file, summary.to_json())
    _print_devices(console, summary)
    console.print(
        f"done in {summary.wall_seconds:.1f} s: {summary.rounds_completed}/"
        f"{summary.rounds} rounds; summary {summary_file}"
    )
    return summary


@contextmanager
def round_progress(
    console: Console, settings: ServerSettings, starting: str
) -> Iterator[Callable[[ProgressEvent], None]]:
    """A progress bar over the run's rounds; yields the handler of its progress events, which
    moves the bar and prints each round, evaluation and labels round."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(starting, total=settings.rounds)

        def on_event(event: ProgressEvent) -> None:
            if isinstance(event, Waiting):
                progress.update(task, description=f"waiting for {event.min_nodes} devices")
            elif isinstance(event, Started):
                progress.update(task, description=f"training on {event.nodes} devices")
            elif isinstance(event, RoundDone):
                progress.update(task, completed=event.log.round)
                console.print(round_line(event))
            elif isinstance(event, Evaluated):
                console.print(evaluation_line(event.evaluation))
            elif isinstance(event, Labelled):
                console.print(_labels_line(event, settings))

        yield on_event


def _run_with_progress(
    run_dir: Path,
    settings: ServerSettings,
    nodes: list[NodeSettings],
    opts: FederationOptions,
    console: Console,
) -> FederationOutcome:
    with round_progress(console, settings, "starting SuperLink and SuperNodes") as on_event:
        limits = LaunchLimits(
            run_total=opts.node_wait_timeout + opts.rounds * opts.round_timeout * 2
        )
        return launch_federation(
            run_dir,
            settings,
            nodes,
            on_event=on_event,
            limits=limits,
            secure=not opts.insecure,
            warm_trainer=opts.warm_trainer,
        )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def round_line(event: RoundDone) -> str:
    log = event.log
    eps = [d.epsilon for d in event.devices]
    eps_text = (
        f"epsilon min/median/max {min(eps):.2f}/{statistics.median(eps):.2f}/{max(eps):.2f}"
        if eps
        else "epsilon n/a"
    )
    failures = f", [red]{len(log.failures)} failures[/red]" if log.failures else ""
    if log.refused:
        failures += f", [red]{len(log.refused)} updates refused[/red]"
    return (
        f"round {log.round}: {log.train_devices} devices trained on "
        f"{log.train_examples} comparisons, {eps_text}, {log.seconds:.1f} s{failures}"
    )


def _labels_line(event: Labelled, settings: ServerSettings) -> str:
    problems = f", [red]{event.refused} refused, {event.failures} failures[/red]" * bool(
        event.refused or event.failures
    )
    return (
        f"labels: {event.released_devices} devices released {event.stored} new preference labels "
        f"(epsilon_label {settings.epsilon_label:g}, {event.already} already stored){problems}"
    )


def labels_summary(settings: ServerSettings, source: dict[str, Any]) -> dict[str, Any] | None:
    """The run's labels round for ``summary.json`` (None without one): counts from the label
    store, the mechanism, and where the export finds the served prompts and answers."""
    if settings.epsilon_label is None:
        return None
    from fedgaze.labels.store import count_labels
    from fedgaze.privacy.label_dp import flip_rate

    layout = RunLayout(Path(settings.run_dir))
    stored, devices = count_labels(layout.labels)
    served = (
        layout.served_log
        if source["kind"] == "synthetic"
        else Path(source["path"]) / "query_logs_table.csv.gz"
    )
    return {
        "epsilon_label": settings.epsilon_label,
        "flip_rate": flip_rate(settings.epsilon_label),
        "source": settings.label_source,
        "mechanism": "randomized response on the device, composed into the device budget",
        "unit": "one comparison",
        "stored": stored,
        "devices": devices,
        "store": str(layout.labels),
        "served_log": str(served),
        "export": f"fedgaze alignment export {settings.run_dir} --out prefs.jsonl"
        + ("" if source["kind"] == "synthetic" else f" --responses {served}"),
    }


def evaluation_line(ev: Evaluation) -> str:
    which = "initial model" if ev.round == 0 else f"model after round {ev.round}"
    return (
        f"  {which}: held-out accuracy {_fmt(ev.accuracy)} "
        f"(personalized on-device {_fmt(ev.accuracy_personal)}), "
        f"loss {_fmt(ev.loss)} "
        f"(n={ev.eval_examples} on {ev.eval_devices} devices)"
    )


def _print_devices(console: Console, summary: RunSummary) -> None:
    table = Table(title="devices (privacy spent is cumulative over every round they joined)")
    for col in ("device", "examples", "rounds", "epsilon", "delta", "budget", "status"):
        table.add_column(col)
    for d in summary.devices:
        table.add_row(
            d.device_id,
            str(d.examples),
            str(d.rounds_participated),
            f"{d.epsilon:.3f}",
            f"{d.delta:g}",
            f"{d.epsilon_budget:g}",
            d.status,
        )
    console.print(table)
