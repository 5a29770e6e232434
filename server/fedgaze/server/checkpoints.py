"""The server's checkpoints: the model after every round together with the run's progress.

``checkpoints/round_NNN/`` is a model directory (:mod:`fedgaze.model.store`) whose provenance
also holds :class:`RunProgress`: the rounds log, the evaluations, the server's view of every
device and the key each device signed with. A checkpoint is written before the ledger record
that commits its round, so a resumed server continues from the last committed round's
checkpoint and repeats at most the round that was under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.features.v2 import FEATURE_SET, N_SIDE_FEATURES
from fedgaze.federation.results import DeviceView, Evaluation, RoundLog
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import ServerSettings
from fedgaze.model.store import ModelDirError, SavedModel, load_model, save_model
from fedgaze.model.weights import ModelState
from fedgaze.server.ledger import ResumeError, check_start, ledger_progress

PROGRESS_KEY = "server_progress"


@dataclass
class RunProgress:
    """Everything the server carries from round to round; each checkpoint stores it."""

    completed: int
    state: ModelState
    rounds: list[RoundLog] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    devices: dict[str, DeviceView] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's record of the run so far (the weights are stored beside it)."""
        return {
            "completed": self.completed,
            "rounds": [r.to_json() for r in self.rounds],
            "evaluations": [e.to_json() for e in self.evaluations],
            "devices": [d.to_json() for d in self.devices.values()],
            "pins": self.pins,
        }

    @classmethod
    def from_checkpoint(cls, saved: SavedModel) -> RunProgress:
        """Rebuild the progress a checkpoint recorded."""
        data = saved.provenance[PROGRESS_KEY]
        views = [DeviceView.from_json(d) for d in data["devices"]]
        return cls(
            completed=int(data["completed"]),
            state=saved.state,
            rounds=[RoundLog.from_json(r) for r in data["rounds"]],
            evaluations=[Evaluation.from_json(e) for e in data["evaluations"]],
            devices={v.device_id: v for v in views},
            pins=dict(data["pins"]),
        )


def save_global_model(
    directory: Path,
    state: ModelState,
    settings: ServerSettings,
    rnd: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the global model after round ``rnd`` as a model directory."""
    save_model(
        directory,
        SavedModel(
            state=state,
            feature_set=FEATURE_SET,
            n_features=N_SIDE_FEATURES,
            hidden=settings.hidden,
            provenance={
                "run_key": settings.run_key,
                "round": rnd,
                "kind": "federated",
                **(extra or {}),
            },
        ),
    )


def write_checkpoint(run_dir: Path, progress: RunProgress, settings: ServerSettings) -> None:
    """Commit the model after round ``progress.completed`` with the run's progress so far."""
    save_global_model(
        RunLayout(run_dir).checkpoint(progress.completed),
        progress.state,
        settings,
        progress.completed,
        {PROGRESS_KEY: progress.to_json()},
    )


def start_or_resume(run_dir: Path, settings: ServerSettings) -> RunProgress:
    """The progress to start from: round 0 for a new run, the last committed round's
    checkpoint for a resumed one; :class:`ResumeError` when the run directory disagrees."""
    recorded = ledger_progress(run_dir)
    check_start(run_dir, recorded, settings)
    if not settings.resume:
        # torch, only to draw a new run's initial weights.
        from fedgaze.model.factory import initial_state

        return RunProgress(0, initial_state(settings.hidden, settings.seed))
    try:
        saved = load_model(RunLayout(run_dir).checkpoint(recorded.last_round))
        progress = RunProgress.from_checkpoint(saved)
    except (ModelDirError, KeyError, TypeError, ValueError) as err:
        raise ResumeError(
            f"the checkpoint of committed round {recorded.last_round} is unusable: {err}"
        ) from None
    if progress.completed != recorded.last_round:
        raise ResumeError(
            f"checkpoint round_{recorded.last_round:03d} records round {progress.completed}"
        )
    return progress
