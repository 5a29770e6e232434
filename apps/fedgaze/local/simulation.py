"""In-process federated training with the same device and server functions as a real run.

A real run moves models between processes over Flower's gRPC link; the learning itself is
``train_local`` (device DP-SGD with its own budget check and ledger), ``fedavg`` and, for
client-level DP, ``dp_fedavg``. This module calls exactly those functions in a loop, so a
benchmark can compare training modes over many folds and seeds without starting hundreds of
processes. Each device keeps its own in-memory :class:`PrivacyState`, and a device whose budget
would be exceeded declines the round, as it would in a real run.

That this loop computes what the deployed apps compute is checked, not assumed: given the
accountant histories a real run's devices recorded (``recorded``), every device round is
replayed with its recorded secret noise seed, and :func:`fedgaze.privacy.dp_train.train_local`
refuses unless the global model it starts from, the device's rows and the DP-SGD settings are
bit for bit those of the real round, and its output bit for bit the weights the device sent
(``tests/test_simulate.py`` compares a ``fedgaze simulate`` run with this loop this way).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from fedgaze import defaults
from fedgaze.model.factory import initial_state
from fedgaze.model.kind import ModelKind
from fedgaze.model.weights import ModelState
from fedgaze.privacy.accounting import calibrate_noise_multiplier
from fedgaze.privacy.central import CentralDPConfig, central_epsilon
from fedgaze.privacy.dp_train import (
    BudgetExhausted,
    DPConfig,
    device_round_seed,
    train_local,
    train_local_nonprivate,
)
from fedgaze.privacy.params import DeviceBudget, DPSGDParams
from fedgaze.privacy.state import PrivacyState
from fedgaze.server.aggregate import dp_fedavg, fedavg

Mode = Literal["nonprivate", "device_dp", "client_dp"]


@dataclass(frozen=True, eq=False)
class DeviceRows:
    """One device's training comparisons: ``X`` (n, 2, F) and ``y`` (n,) in time order."""

    device_id: str
    X: np.ndarray
    y: np.ndarray


class SimulationPlan(DPSGDParams):
    """How to federate: rounds, local training, and which privacy mode (validated, immutable).

    - ``nonprivate``: plain local training and example-weighted FedAvg (a baseline only).
    - ``device_dp``: every device runs DP-SGD within ``device_epsilon``; the noise multiplier is
      calibrated so that the worst-case device fits all rounds (as ``fedgaze demo`` does), in
      place of the plan's ``noise_multiplier``.
    - ``client_dp``: plain local training, then clipped, noised, equally weighted aggregation
      (``central``); the population epsilon is computed with ``dp_accounting``.

    ``kind`` picks the model (the behaviour model, or the text reward model); ``soft_labels``
    lets a device's ``y`` be probabilities that the right answer is preferred (soft targets).
    ``run_key`` names the run in each device's accountant history, as a real run's key does.
    """

    mode: Mode
    rounds: int = Field(default=20, ge=1)
    hidden: int = Field(default=defaults.HIDDEN, ge=0)
    device_epsilon: float = Field(default=defaults.DEVICE_EPSILON, gt=0)
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    central: CentralDPConfig | None = None
    seed: int = defaults.SEED
    kind: ModelKind = "behaviour"
    soft_labels: bool = False
    run_key: str = "simulation"


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The final global model and the privacy spent: per device, and (client DP) central."""

    state: ModelState
    device_epsilons: dict[str, float] = field(default_factory=dict)
    noise_multiplier: float | None = None
    central_epsilon: float | None = None
    declined: int = 0
    replayed: int = 0


def simulate_federation(
    devices: Sequence[DeviceRows],
    plan: SimulationPlan,
    recorded: Mapping[str, PrivacyState] | None = None,
) -> SimulationResult:
    """Run ``plan.rounds`` rounds over ``devices`` and return the global model.

    Every device with at least one comparison takes part in every round (for ``client_dp`` that
    is sampling rate 1, which ``plan.central.sample_rate`` must state), in device-id order, as
    the server aggregates. The first model is the server's (:func:`initial_state`). With
    ``recorded`` (``device_dp``), a device starts from that accountant history: the rounds it
    holds for ``plan.run_key`` are replayed, not charged again, or refused with
    :class:`~fedgaze.privacy.state.RoundAlreadyCharged` when anything differs. Raises
    ValueError when no device has data or the plan's mode lacks its settings.
    """
    active = sorted((d for d in devices if len(d.y) > 0), key=lambda d: d.device_id)
    if not active:
        raise ValueError("no device has a labelled comparison to train on")
    n_features = active[0].X.shape[2]
    state = initial_state(plan.hidden, plan.seed, plan.kind, n_features)
    if plan.mode == "client_dp" and plan.central is None:
        raise ValueError("client_dp needs plan.central (clip norm, noise multiplier)")
    sigma = (
        calibrate_noise_multiplier(
            plan.device_epsilon,
            rounds=plan.rounds,
            local_epochs=plan.local_epochs,
            delta=plan.delta,
        )
        if plan.mode == "device_dp"
        else None
    )
    dp = (
        DPConfig.for_device(
            plan.model_copy(update={"noise_multiplier": sigma}),
            DeviceBudget(plan.delta, plan.device_epsilon),
        )
        if sigma is not None
        else None
    )
    ledgers = {d.device_id: (recorded or {}).get(d.device_id, PrivacyState()) for d in active}
    rng = np.random.default_rng(secrets.randbits(128))
    declined = replayed = 0
    for server_round in range(1, plan.rounds + 1):
        updates: list[tuple[ModelState, int]] = []
        for dev in active:
            seed = device_round_seed(plan.seed, server_round, dev.device_id)
            if dp is None:
                new = train_local_nonprivate(
                    state,
                    dev.X,
                    dev.y,
                    epochs=plan.local_epochs,
                    lr=plan.lr,
                    batch_size=plan.batch_size,
                    seed=seed,
                    soft_labels=plan.soft_labels,
                )
                updates.append((new, len(dev.y)))
                continue
            try:
                result = train_local(
                    state,
                    dev.X,
                    dev.y,
                    dp,
                    ledgers[dev.device_id],
                    run_id=plan.run_key,
                    round=server_round,
                    seed=seed,
                    soft_labels=plan.soft_labels,
                )
            except BudgetExhausted:
                declined += 1
                continue
            ledgers[dev.device_id] = result.new_privacy_state
            replayed += result.replayed
            updates.append((result.state, result.examples))
        if not updates:
            break
        if plan.mode == "client_dp" and plan.central is not None:
            state, _ = dp_fedavg(
                state,
                [u for u, _ in updates],
                clip_norm=plan.central.clip_norm,
                noise_multiplier=plan.central.noise_multiplier,
                expected_devices=plan.central.sample_rate * len(active),
                rng=rng,
            )
        else:
            state = fedavg(updates)
    central = (
        central_epsilon(
            plan.central.noise_multiplier,
            sample_rate=plan.central.sample_rate,
            rounds=plan.rounds,
            delta=plan.central.delta,
        )
        if plan.mode == "client_dp" and plan.central is not None
        else None
    )
    epsilons = (
        {k: v.epsilon(plan.delta, "rdp") for k, v in ledgers.items()} if dp is not None else {}
    )
    return SimulationResult(
        state=state,
        device_epsilons=epsilons,
        noise_multiplier=sigma,
        central_epsilon=central,
        declined=declined,
        replayed=replayed,
    )
