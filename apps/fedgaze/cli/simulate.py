"""``fedgaze simulate``: many synthetic devices on Flower's simulation engine, with progress."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fedgaze import defaults
from fedgaze.argtypes import fraction, positive_float, positive_int

if TYPE_CHECKING:
    from fedgaze.federation.settings import ServerSettings
from fedgaze.federation.settings import ServerSettings


def add_parsers(sub: Any) -> None:
    """Add ``simulate`` to the ``fedgaze`` subparsers ``sub``."""
    simulate = sub.add_parser(
        "simulate",
        help="N synthetic devices on Flower's simulation engine (Ray), the deployment's "
        "ServerApp and ClientApp code",
        description="Ray's servers listen on every network interface: run on a trusted or "
        "firewalled machine, or in a loopback-only network namespace (unshare --net).",
    )
    simulate.add_argument("--devices", type=positive_int, required=True, help="N devices")
    simulate.add_argument(
        "--rounds", type=positive_int, default=defaults.ROUNDS, help=f"R ({defaults.ROUNDS})"
    )
    simulate.add_argument(
        "--epsilon",
        type=positive_float,
        default=defaults.DEVICE_EPSILON,
        help=f"each device's budget ({defaults.DEVICE_EPSILON:g}); noise calibrated to fit",
    )
    simulate.add_argument(
        "--fraction",
        type=fraction,
        default=1.0,
        help="each round, each device takes part with this probability (1)",
    )
    simulate.add_argument(
        "--client-dp-epsilon",
        type=positive_float,
        help="client-level DP of the aggregate, epsilon per person (sampling amplification "
        "credited); default off",
    )
    simulate.add_argument(
        "--secagg",
        action="store_true",
        help="secure aggregation (Flower's SecAgg+): the server learns only the sum of updates",
    )
    simulate.add_argument(
        "--secagg-threshold",
        type=positive_int,
        help="with --secagg: SecAgg+ threshold (default: a majority of a round's devices)",
    )
    simulate.add_argument("--seed", type=int, default=defaults.SEED, help="devices' data, draws")
    simulate.add_argument("--run-dir", type=Path, help="run directory (default: new under ./runs/)")
    simulate.add_argument("--cpus", type=positive_int, help="CPUs for Ray (default: all)")
    simulate.set_defaults(handler=_cmd_simulate)


def client_dp_line(settings: ServerSettings) -> str:
    """ ", client-level DP epsilon E per person after R rounds (...)", or "" when it is off."""
    spent = settings.client_dp_spent(settings.rounds)
    if spent is None:
        return ""
    return (
        f", client-level DP epsilon {spent.epsilon:.3g} per person after {settings.rounds} "
        f"rounds (delta {spent.delta:g}, noise multiplier {spent.noise_multiplier:.3g}, "
        f"sample rate {spent.sample_rate:g})"
    )


def _cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.local.demo import default_run_dir, round_progress
    from fedgaze.local.simulate import SimulationSpec, run_simulation_engine

    fields: dict[str, Any] = {
        "devices": args.devices,
        "rounds": args.rounds,
        "epsilon": args.epsilon,
        "seed": args.seed,
        "fraction": args.fraction,
        "client_dp_epsilon": args.client_dp_epsilon,
        "secagg": args.secagg,
        "secagg_threshold": args.secagg_threshold,
        "run_dir": args.run_dir or default_run_dir(),
    }
    if args.cpus is not None:
        fields["cpus"] = args.cpus
    spec = SimulationSpec(**fields)
    settings = spec.settings()
    console.print(
        f"[bold]fedgaze simulate[/bold]: {spec.devices} devices, {spec.rounds} rounds, device "
        f"budget epsilon={spec.epsilon:g}, fraction {spec.fraction:g} per round"
        f"{client_dp_line(settings)}"
        f"{', secure aggregation (SecAgg+)' if settings.secure_aggregation else ''}"
        f"; run dir {spec.run_dir}"
    )
    with round_progress(console, settings, "starting the simulation engine") as on_event:
        summary = run_simulation_engine(spec, settings, on_event)
    console.print(
        f"done in {summary.wall_seconds:.1f} s: {summary.rounds_completed}/{summary.rounds} "
        f"rounds on {spec.devices} simulated devices; summary {spec.run_dir}/summary.json"
    )
    return 0 if summary.complete else 1
