"""``summary.json``: what a local run ran, how, its metrics and every device's privacy spend.

Each device's epsilon is what it reported to the server; ``epsilon_device_state`` is
recomputed from the accountant history the device persisted, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgaze.client.device.layout import DeviceLayout
from fedgaze.federation.results import ChargeSeen, Evaluation, RoundLog
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.local.launcher import FederationOutcome
from fedgaze.privacy.params import DPSGDParams
from fedgaze.privacy.state import PrivacyState

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class DeviceSummary:
    """One device's privacy spend and participation (``status``: its last reply)."""

    device_id: str
    epsilon: float
    epsilon_device_state: float
    delta: float
    epsilon_budget: float
    examples: int
    rounds_participated: int
    status: str
    events: tuple[ChargeSeen, ...]
    privacy_state: str
    accountant: str = "rdp"

    def to_json(self) -> JsonDict:
        return {
            "device_id": self.device_id,
            "epsilon": self.epsilon,
            "epsilon_device_state": self.epsilon_device_state,
            "delta": self.delta,
            "epsilon_budget": self.epsilon_budget,
            "accountant": self.accountant,
            "examples": self.examples,
            "rounds_participated": self.rounds_participated,
            "status": self.status,
            "events": [e.to_json() for e in self.events],
            "privacy_state": self.privacy_state,
        }


@dataclass(frozen=True)
class RunSummary:
    """A finished local run (``tls`` and ``node_auth``: what the launcher actually started)."""

    outcome: FederationOutcome
    data: Mapping[str, Any]
    nodes: int
    settings: ServerSettings
    noise_calibrated: bool
    devices: tuple[DeviceSummary, ...]
    wall_seconds: float
    labels: JsonDict | None = None
    """The labels round (:func:`fedgaze.local.demo.labels_summary`), None without one."""

    @property
    def rounds(self) -> int:
        return self.settings.rounds

    @property
    def rounds_completed(self) -> int:
        return self.outcome.server_result.rounds_completed

    @property
    def complete(self) -> bool:
        """True when every planned round was committed."""
        return self.rounds_completed == self.rounds

    @property
    def model(self) -> Path:
        return RunLayout(Path(self.settings.run_dir)).model

    @property
    def evaluations(self) -> tuple[Evaluation, ...]:
        return self.outcome.server_result.evaluations

    @property
    def rounds_log(self) -> tuple[RoundLog, ...]:
        return self.outcome.server_result.rounds_log

    def client_dp(self) -> JsonDict | None:
        """Client-level DP of the aggregate, with its epsilon per person (None when off)."""
        spent = self.settings.client_dp_spent(self.rounds_completed)
        if spent is None:
            return None
        return {
            **spent.to_json(),
            "unit": "one person (all of a device's data)",
            "accountant": "dp_accounting RDP",
        }

    def to_json(self) -> JsonDict:
        out, settings = self.outcome, self.settings
        dp_sgd = settings.dp_sgd()
        initial = next((e for e in self.evaluations if e.round == 0), None)
        return {
            "transport": "grpc",
            "fleet_api": "grpc-rere",
            "fleet_address": out.fleet_address,
            "tls": out.tls,
            "node_auth": out.node_auth,
            "processes": {
                "superlink_pid": out.superlink_pid,
                "supernode_pids": list(out.supernode_pids),
            },
            "data": dict(self.data),
            "nodes": self.nodes,
            "rounds": self.rounds,
            "rounds_completed": self.rounds_completed,
            "client_dp": self.client_dp(),
            "secure_aggregation": settings.secure_aggregation is not None,
            "secure_aggregation_params": (
                None
                if settings.secure_aggregation is None
                else settings.secure_aggregation.model_dump()
            ),
            "labels": self.labels,
            "metrics": [
                {
                    "round": e.round,
                    "accuracy": e.accuracy,
                    "accuracy_personal": e.accuracy_personal,
                    "loss": e.loss,
                    "eval_examples": e.eval_examples,
                }
                for e in self.evaluations
                if e.round >= 1
            ],
            "initial_metrics": (
                {
                    "accuracy": initial.accuracy,
                    "loss": initial.loss,
                    "eval_examples": initial.eval_examples,
                }
                if initial is not None
                else None
            ),
            "rounds_log": [r.to_json() for r in self.rounds_log],
            "devices": [d.to_json() for d in self.devices],
            "dp_sgd": _dp_sgd_json(dp_sgd, self.noise_calibrated),
            "model": str(self.model),
            "checkpoints": str(RunLayout(Path(settings.run_dir)).checkpoints),
            "run_key": settings.run_key,
            "wall_seconds": round(self.wall_seconds, 2),
        }


def _dp_sgd_json(params: DPSGDParams, calibrated: bool) -> JsonDict:
    return {
        "noise_multiplier": params.noise_multiplier,
        "noise_calibrated": calibrated,
        "max_grad_norm": params.max_grad_norm,
        "expected_batch_size": params.batch_size,
        "local_epochs": params.local_epochs,
        "sampling": "poisson",
        "unit": "one labelled comparison on one device",
    }


def device_summaries(
    nodes: Sequence[NodeSettings], outcome: FederationOutcome
) -> tuple[DeviceSummary, ...]:
    """Every device's spend as the server saw it and as its own privacy state says."""
    out = []
    for node in nodes:
        state_file = DeviceLayout(Path(node.device_dir)).privacy_state
        state = PrivacyState.load(state_file)
        view = outcome.server_result.device(node.device_id)
        out.append(
            DeviceSummary(
                device_id=node.device_id,
                epsilon=view.epsilon if view else 0.0,
                epsilon_device_state=state.epsilon(node.delta, "rdp"),
                delta=node.delta,
                epsilon_budget=node.epsilon_budget,
                examples=view.examples if view else 0,
                rounds_participated=view.rounds_participated if view else 0,
                status=view.status if view else "never replied",
                events=view.events if view else (),
                privacy_state=str(state_file),
            )
        )
    return tuple(out)
