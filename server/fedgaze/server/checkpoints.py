"""The server's checkpoints: the model after every round together with the run's progress.

``checkpoints/round_NNN/`` is a model directory (:mod:`fedgaze.model.store`) whose provenance
also holds :class:`RunProgress`: the rounds log, the evaluations, the server's view of every
device and the key each device signed with. A checkpoint is written before the ledger record
that commits its round, so a resumed server continues from the last committed round's
checkpoint and repeats at most the round that was under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
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


def model_width(settings: ServerSettings) -> tuple[str, int]:
    """The feature set and input width of the run's model (a text run's depends on its
    encoder, which is loaded here to read its dimension: WordLlama needs no torch)."""
    if settings.model_kind == "behaviour":
        return FEATURE_SET, N_SIDE_FEATURES
    from fedgaze.text.encoder import load_encoder
    from fedgaze.text.features import TEXT_FEATURE_SET, n_text_features

    return TEXT_FEATURE_SET, n_text_features(load_encoder(settings.encoder).dim)


def save_global_model(
    directory: Path,
    state: ModelState,
    settings: ServerSettings,
    rnd: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the global model after round ``rnd`` as a model directory."""
    feature_set, n_features = model_width(settings)
    save_model(
        directory,
        SavedModel(
            state=state,
            feature_set=feature_set,
            n_features=n_features,
            hidden=settings.hidden,
            provenance={
                "run_key": settings.run_key,
                "round": rnd,
                "kind": "federated",
                **(extra or {}),
            },
        ),
    )


@lru_cache(maxsize=2)
def _behaviour(directory: str) -> ModelState:
    try:
        return load_model(directory).state
    except ModelDirError as err:
        raise ResumeError(f"behaviour-model: {err}") from None


def behaviour_state(settings: ServerSettings) -> ModelState | None:
    """The behaviour model a text run's devices infer labels with (None: they need none)."""
    if settings.model_kind != "text" or settings.text_labels == "explicit":
        return None
    assert settings.behaviour_model is not None  # ServerSettings requires it here
    return _behaviour(settings.behaviour_model)


def save_text_global_model(
    directory: Path, progress: RunProgress, settings: ServerSettings
) -> None:
    """Write a text run's final model as a text model directory (:mod:`fedgaze.text.model_dir`),
    with the privacy provenance of the devices that trained it."""
    from fedgaze.text.encoder import load_encoder
    from fedgaze.text.model_dir import encoder_info, save_text_model

    trained = [d for d in progress.devices.values() if d.rounds_participated]
    epsilons = sorted(d.epsilon for d in trained)
    provenance: dict[str, Any] = {
        "mode": "federated",
        "run_key": settings.run_key,
        "rounds": progress.completed,
        "labels": settings.text_labels,
        "behaviour_model": settings.behaviour_model,
        "devices": len(epsilons),
        "examples": sum(d.examples for d in trained),
        "epsilon_per_device": (
            {"min": epsilons[0], "median": epsilons[len(epsilons) // 2], "max": epsilons[-1]}
            if epsilons
            else None
        ),
        "delta": sorted({d.delta for d in trained}),
        "unit": "one comparison on one device (DP-SGD on each device)",
        "ledger": str(RunLayout(Path(settings.run_dir)).server_ledger),
    }
    save_text_model(
        directory,
        progress.state,
        encoder=encoder_info(load_encoder(settings.encoder), settings.encoder),
        hidden=settings.hidden,
        provenance=provenance,
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

        _, n_features = model_width(settings)
        state = initial_state(settings.hidden, settings.seed, settings.model_kind, n_features)
        return RunProgress(0, state)
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
