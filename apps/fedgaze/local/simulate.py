"""``fedgaze simulate``: many synthetic devices on Flower's simulation engine (Ray), in one process.

The learning runs through the deployment's own code: the server side is
:func:`fedgaze.server.app.run_and_report` (the body of the deployed ServerApp, given the
settings instead of parsing them from a run config), and every device message is answered by the
deployed ClientApp's own entry (:func:`fedgaze.client.app.answer`, here with no warm trainer:
a Ray actor stays loaded between messages anyway, and answers ``train``, ``evaluate`` and the
``labels`` query with :mod:`fedgaze.client.rounds`). Only the transport differs: Flower's
in-memory grid and Ray actors instead of a SuperLink, SuperNodes and a ``flwr-clientapp``
process per message.

Flower gives a simulated node only ``partition-id`` in its node config, so the ClientApp here
turns that id into the device's :class:`NodeSettings` (:func:`device_node`) before calling the
handler: device ``i`` is ``sim-0000i``, its folder ``RUN/devices/sim-0000i``, and its data a
synthetic person generated from ``(seed, i)`` alone, written into its encrypted store on the
device's first message. So N devices are never all in memory, and a device's accountant history,
ledger and personal head persist in its folder across rounds as on a real device:
``fedgaze audit verify RUN`` works on a simulated run. The simulation's parameters reach the Ray
actors through the environment they inherit from this process (:data:`ENV`).

Network: Ray 2.55 (what ``flwr[simulation]`` 1.39 pins) starts its GCS and raylet gRPC servers
on every network interface, whatever node address it is given (here 127.0.0.1). They carry
only the simulation's own traffic, but run ``fedgaze simulate`` on a trusted or firewalled
machine, or in a loopback-only network namespace (``unshare --net``, as the tests do).

Flower 1.39's ``run_simulation`` is marked deprecated (in favour of ``flwr run`` against a
simulation federation) but is the line's in-process entry point; fedgaze pins that line.

How it scales (100 to 10,000 devices), and where a message's time goes: ``bench/scale.py``,
results in docs/results.md. That the benchmarks' in-process loop
(:mod:`fedgaze.local.simulation`) computes bit for bit what these apps compute is a test in
``tests/test_simulate.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecordValues, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedgaze import defaults
from fedgaze.atomic import write_json_atomic
from fedgaze.client import app as device_app
from fedgaze.client.device.store import MANIFEST, save_device
from fedgaze.client.device.store_crypto import KEY_FILE
from fedgaze.data.synthetic import generate_cohort
from fedgaze.federation.events import ProgressEvent
from fedgaze.federation.results import ServerResult
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.local.demo import FederationOptions
from fedgaze.local.launcher import FederationOutcome
from fedgaze.local.summary import RunSummary, device_summaries
from fedgaze.server.app import run_and_report
from fedgaze.server.submit import ProgressTail

__all__ = ["ENV", "SimulationSpec", "device_node", "run_simulation_engine"]

ENV = "FEDGAZE_SIMULATION"
"""Environment variable carrying the simulation's device parameters to the Ray actors (JSON)."""
MAX_DEVICES = 100_000


class SimulationSpec(BaseModel):
    """What ``fedgaze simulate`` runs: ``devices`` synthetic devices for ``rounds`` rounds, each
    with its own budget ``epsilon`` at ``delta`` (the noise multiplier is calibrated to fit every
    round); ``seed`` fixes the devices' data and the run's draws."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: int = Field(ge=1, le=MAX_DEVICES)
    rounds: int = Field(default=defaults.ROUNDS, ge=1, le=1000)
    epsilon: float = Field(default=defaults.DEVICE_EPSILON, gt=0, allow_inf_nan=False)
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    seed: int = Field(default=defaults.SEED, ge=0)
    fraction: float = Field(default=1.0, gt=0, le=1)
    """Each round, each device is sampled independently with this probability."""
    client_dp_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Client-level DP of the aggregate at this epsilon per person (None: off); its noise is
    calibrated with the sampling fraction's amplification."""
    secagg: bool = False
    """Train rounds run SecAgg+ (:mod:`fedgaze.federation.secure`)."""
    secagg_threshold: int | None = Field(default=None, ge=2)
    run_dir: Path

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()  # the devices and the ServerApp must agree on one folder

    cpus: int = Field(default=max(1, os.cpu_count() or 1), ge=1)

    def settings(self) -> ServerSettings:
        """The ServerApp's settings: devices sampled with ``fraction``, waits scaled to N."""
        options = FederationOptions(
            nodes=self.devices,
            rounds=self.rounds,
            seed=self.seed,
            epsilon_budget=self.epsilon,
            delta=self.delta,
            fraction=self.fraction,
            client_dp_epsilon=self.client_dp_epsilon,
            secagg=self.secagg,
            secagg_threshold=self.secagg_threshold,
            node_wait_timeout=max(60.0, 0.05 * self.devices),
            round_timeout=max(600.0, 2.0 * self.devices),
        )
        run_key = f"{self.run_dir.name}-{uuid.uuid4().hex[:8]}"
        return options.settings(self.run_dir, run_key, self.devices)

    def device_env(self) -> dict[str, Any]:
        """What a simulated device needs to find its folder and budget."""
        return {
            "run_dir": str(self.run_dir),
            "seed": self.seed,
            "epsilon": self.epsilon,
            "delta": self.delta,
        }


def _device_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def node_settings(index: int, env: dict[str, Any]) -> NodeSettings:
    """The settings of simulated device ``index`` (nothing is written)."""
    device_id = f"sim-{index:05d}"
    device_dir = Path(env["run_dir"]) / "devices" / device_id
    return NodeSettings(
        device_id=device_id,
        device_dir=str(device_dir),
        data=str(device_dir / "store"),
        data_format="store",
        store_key=str(device_dir / KEY_FILE),
        epsilon_budget=float(env["epsilon"]),
        delta=float(env["delta"]),
    )


def device_node(index: int, env: dict[str, Any]) -> NodeSettings:
    """The settings of simulated device ``index``; its store is written on first use."""
    node = node_settings(index, env)
    if not (Path(node.data) / MANIFEST).exists():
        (person,) = generate_cohort(1, seed=_device_seed(int(env["seed"]), index))
        person = dataclasses.replace(person, device_id=node.device_id)
        save_device(node.data, person, key_path=node.store_key)
    return node


def _as_device(context: Context) -> Context:
    env = json.loads(os.environ[ENV])
    node = device_node(int(context.node_config["partition-id"]), env)
    return dataclasses.replace(context, node_config=node.to_node_config())


client_app = ClientApp(mods=[device_app.secure_stages])


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """The deployed ClientApp's ``train``, for the simulated device of this node."""
    return device_app.answer(msg, _as_device(context))


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The deployed ClientApp's ``evaluate``, for the simulated device of this node."""
    return device_app.answer(msg, _as_device(context))


@client_app.query("labels")
def labels(msg: Message, context: Context) -> Message:
    """The deployed ClientApp's ``labels`` query, for the simulated device of this node."""
    return device_app.answer(msg, _as_device(context))


class SimulationInterrupted(RuntimeError):
    """The person stopped the simulation (Ctrl-C)."""


class StoppableGrid:
    """The engine's grid, refusing every call once ``stop`` is set. Flower runs the ServerApp
    in a thread that Python cannot kill and waits for it at exit; refusing its next grid call
    (within one poll) ends it, at a point where a kill would be as safe."""

    def __init__(self, grid: Grid, stop: threading.Event) -> None:
        self._grid, self._stop = grid, stop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._grid, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._stop.is_set():
                raise SimulationInterrupted("the simulation was interrupted")
            return attr(*args, **kwargs)

        return call


@contextmanager
def _signals_set(event: threading.Event) -> Iterator[None]:
    """Set ``event`` the moment SIGINT or SIGTERM arrives. While the engine runs, Flower's main
    thread waits in calls that run no Python signal handler until the ServerApp thread ends
    (Ctrl-C would wait for the whole run), so a thread reads the signal from the wakeup fd
    that Python's C-level handler writes to at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write)

    def watch() -> None:
        while chunk := os.read(read, 64):
            if {signal.SIGINT, signal.SIGTERM} & set(chunk):
                event.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write)
        watcher.join(timeout=5)
        os.close(read)


def run_simulation_engine(
    spec: SimulationSpec,
    settings: ServerSettings,
    on_event: Callable[[ProgressEvent], None] | None = None,
) -> RunSummary:
    """Run ``spec`` with its ``settings`` (:meth:`SimulationSpec.settings`) on Flower's
    simulation engine; write and return ``summary.json``."""
    from flwr.simulation import run_simulation

    run_dir = spec.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {run_dir} is not empty; choose a new one")
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[ServerResult] = []
    server_app = ServerApp()
    interrupted = threading.Event()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        results.append(run_and_report(cast(Grid, StoppableGrid(grid, interrupted)), settings))

    env = {ENV: json.dumps(spec.device_env()), "FLWR_TELEMETRY_ENABLED": "0"}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env |= {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    os.environ.update(env)  # Ray starts its actors from this process: they inherit it
    backend: dict[str, dict[str, ConfigRecordValues]] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": spec.cpus,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
        },
    }
    stop = threading.Event()
    follower = threading.Thread(
        target=_follow, args=(RunLayout(run_dir).progress, on_event, stop), daemon=True
    )
    flwr_log = logging.getLogger("flwr")
    quiet = (flwr_log.level, flwr_log.propagate)
    flwr_log.setLevel(logging.ERROR)  # the engine's step-by-step log is not for the person
    flwr_log.propagate = False
    t0 = time.monotonic()
    follower.start()
    try:
        with _signals_set(interrupted):
            run_simulation(
                server_app, client_app, num_supernodes=spec.devices, backend_config=backend
            )
    finally:
        stop.set()
        follower.join(timeout=5)
        flwr_log.setLevel(quiet[0])
        flwr_log.propagate = quiet[1]
    if not results:
        raise RuntimeError(f"the simulation ended without a result; see {run_dir}")
    wall = time.monotonic() - t0
    outcome = FederationOutcome(results[0], "in-memory", wall, os.getpid(), ())
    # Only the devices that got a message were provisioned; the others stay unwritten.
    nodes = [node_settings(i, spec.device_env()) for i in range(spec.devices)]
    summary = RunSummary(
        outcome=outcome,
        data={"kind": "synthetic", "seed": spec.seed, "devices": spec.devices},
        nodes=spec.devices,
        settings=settings,
        noise_calibrated=True,
        devices=device_summaries(nodes, outcome),
        wall_seconds=wall,
    )
    record = summary.to_json() | {
        "engine": "simulation",
        "transport": "flower simulation engine (in-memory grid, Ray actors)",
        "fleet_api": None,
        "fraction": spec.fraction,
        "sampled_per_round": [r.sampled for r in results[0].rounds_log],
    }
    write_json_atomic(RunLayout(run_dir).summary, record)
    return summary


def _follow(
    progress: Path, on_event: Callable[[ProgressEvent], None] | None, stop: threading.Event
) -> None:
    tail = ProgressTail(progress)
    while True:
        done = stop.wait(0.5)
        for event in tail.poll():
            if on_event is not None:
                on_event(event)
        if done:
            return
