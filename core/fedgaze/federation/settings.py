"""Validated settings that cross process boundaries: run config, node config, round plans.

Flower passes flat key/value configs (``--node-config``, the app's run config, ConfigRecords).
These models are the single place where those flat configs are built and parsed, so a wrong key
or value fails with the key named instead of surfacing as a confused error rounds later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedgaze import defaults
from fedgaze.federation.secure import SecureAggregation
from fedgaze.labels.rows import LabelSource
from fedgaze.model.kind import ModelKind, TextLabels
from fedgaze.privacy.params import DeviceBudget, DPSGDParams

M = TypeVar("M", bound=BaseModel)

Aggregation = Literal["fedavg", "trimmed-mean", "median"]


class SettingsError(ValueError):
    """A flat config could not be parsed; the message names the offending key."""


def _parse(model: type[M], flat: Mapping[str, Any], where: str) -> M:
    data = {k.replace("-", "_"): v for k, v in flat.items()}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p).replace('_', '-') for p in e['loc'])}: {e['msg']}"
            for e in err.errors()
        )
        raise SettingsError(f"invalid {where}: {details}") from None


def _flat(model: BaseModel) -> dict[str, Any]:
    """Flower configs hold scalars only: a nested settings value travels as JSON."""
    return {
        k.replace("_", "-"): json.dumps(v) if isinstance(v, dict) else v
        for k, v in model.model_dump().items()
        if v is not None
    }


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeSettings(_Frozen):
    """What a device (SuperNode) knows about itself: identity, storage, and its own budget.

    The budget lives here, on the device, because the device enforces it without trusting the
    server.
    """

    device_id: str = Field(min_length=1)
    device_dir: str = Field(min_length=1)
    data: str = Field(min_length=1)
    data_format: Literal["store", "ifllm"] = "store"
    worker: str | None = None
    store_key: str | None = None
    """The device store's key file (None: ``store.key`` next to the store folder)."""
    epsilon_budget: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    trainer: str | None = None
    """The folder of the device's warm trainer (socket and key); None: every message is
    answered in its own ClientApp process."""

    @property
    def budget(self) -> DeviceBudget:
        """The budget this device enforces on every charge."""
        return DeviceBudget(self.delta, self.epsilon_budget)

    @classmethod
    def from_node_config(cls, flat: Mapping[str, Any]) -> NodeSettings:
        """Parse a SuperNode's ``--node-config`` mapping."""
        known = {k: v for k, v in flat.items() if k.replace("-", "_") in cls.model_fields}
        return _parse(cls, known, "node config")

    def to_node_config(self) -> dict[str, Any]:
        """As the node config mapping a SuperNode hands its ClientApp (``from_node_config``)."""
        return _flat(self)

    def to_node_config_arg(self) -> str:
        """Render as the ``--node-config`` argument of ``flower-supernode``."""
        parts = []
        for key, value in _flat(self).items():
            if isinstance(value, str):
                if '"' in value or "\\" in value:
                    raise SettingsError(f"node config {key} may not contain quotes: {value!r}")
                parts.append(f'{key}="{value}"')
            else:
                parts.append(f"{key}={value!r}")
        return " ".join(parts)


class TrainingPlan(DPSGDParams):
    """What the server asks of every device: DP-SGD hyperparameters, the held-out split, and
    which model it trains (the behaviour model, or the text reward model with its encoder and
    the labels it learns from)."""

    run_key: str = Field(min_length=1)
    holdout: float = Field(default=defaults.HOLDOUT, ge=0, lt=1)
    seed: int = defaults.SEED
    model_kind: ModelKind = "behaviour"
    text_labels: TextLabels = defaults.TEXT_LABELS
    encoder: str = Field(default=defaults.TEXT_ENCODER, min_length=1)
    """The frozen text encoder of the text model (``wordllama`` or
    ``sentence-transformers:PATH`` on the device)."""


class RoundPlan(TrainingPlan):
    """The training plan the server sends with every round (a ConfigRecord)."""

    server_round: int = Field(ge=1)

    @classmethod
    def from_config(cls, flat: Mapping[str, Any]) -> RoundPlan:
        """Parse the ConfigRecord a train/evaluate message carries."""
        return _parse(cls, flat, "round config")

    def to_config(self) -> dict[str, Any]:
        """Flat mapping for a Flower ConfigRecord."""
        return _flat(self)


class LabelPlan(_Frozen):
    """What the server asks in a labels message (a ConfigRecord): release a noised preference
    for every comparison at ``epsilon_label``, with the model after ``server_round``."""

    run_key: str = Field(min_length=1)
    server_round: int = Field(ge=0)
    epsilon_label: float = Field(gt=0, le=50, allow_inf_nan=False)
    label_source: LabelSource = defaults.LABEL_SOURCE

    @classmethod
    def from_config(cls, flat: Mapping[str, Any]) -> LabelPlan:
        """Parse the ConfigRecord a labels message carries."""
        return _parse(cls, flat, "labels config")

    def to_config(self) -> dict[str, Any]:
        """Flat mapping for a Flower ConfigRecord."""
        return _flat(self)


@dataclass(frozen=True)
class ClientDPSpend:
    """Client-level DP of the aggregate after some rounds: Gaussian noise of
    ``noise_multiplier * clip_norm`` on the sum of updates clipped to ``clip_norm``, devices
    taking part with probability ``sample_rate``; ``epsilon`` per person at ``delta``."""

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    delta: float
    epsilon: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


class ServerSettings(TrainingPlan):
    """Everything the ServerApp needs, passed as the Flower app's run config."""

    run_dir: str = Field(min_length=1)
    rounds: int = Field(ge=1, le=10_000)
    min_nodes: int = Field(ge=1)
    node_wait_timeout: float = Field(gt=0)
    round_timeout: float = Field(gt=0)
    hidden: int = Field(ge=0, le=1024)
    max_device_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Server policy: an update whose signed record states a larger cumulative epsilon is not
    aggregated (None: no cap; devices still enforce their own budgets)."""
    client_dp_noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    client_dp_clip_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    client_dp_delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    """Client-level DP of the aggregate (both set: on; see :mod:`fedgaze.privacy.central`):
    every update's change is clipped to ``client_dp_clip_norm`` and the sum gets Gaussian noise
    of ``client_dp_noise_multiplier`` times that norm; each device takes part in a round with
    probability ``fraction`` (Poisson sampling, which the accounting credits)."""
    fraction: float = Field(default=1.0, gt=0, le=1)
    """Client sampling: each round, every connected device is sent the train message
    independently with probability ``fraction``, drawn from OS entropy (1: every device)."""
    aggregation: Aggregation = defaults.AGGREGATION
    """How accepted updates are combined (see :mod:`fedgaze.server.aggregate`): FedAvg weighted
    by examples, or the coordinate-wise trimmed mean or median (unweighted, robust to a minority
    of hostile updates). Client-level DP always uses DP-FedAvg: combining it with a robust rule
    is refused (the DP analysis assumes the clipped sum)."""
    trim_fraction: float = Field(default=defaults.TRIM_FRACTION, ge=0, lt=0.5)
    """Trimmed mean: the fraction of updates dropped at each end, per coordinate (rounded up)."""
    max_update_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """An update whose L2 distance from the model the server sent exceeds this is refused
    (None: no bound; non-finite, misshapen and stale updates are always refused)."""
    epsilon_label: float | None = Field(default=None, gt=0, le=50, allow_inf_nan=False)
    """After the last round, ask every device for its preference labels, released with
    randomized response at this epsilon (None: no labels round)."""
    label_source: LabelSource = defaults.LABEL_SOURCE
    behaviour_model: str | None = None
    """Text model runs: the behaviour model directory (on the server) whose weights the devices
    use to infer labels where the person gave none (needed unless ``text_labels`` is
    ``explicit``; it should be a DP release, e.g. the final model of a federated run)."""
    resume: bool = False
    """Continue the run recorded in ``run_dir`` after its last committed round instead of
    starting one (see :func:`fedgaze.server.ledger.resume_conflicts` for what may change)."""
    secure_aggregation: SecureAggregation | None = None
    """Train rounds run SecAgg+ (:mod:`fedgaze.federation.secure`): the server learns only the
    weighted sum of the devices' updates (None: plain rounds)."""

    @field_validator("secure_aggregation", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _secure_aggregation_sums(self) -> ServerSettings:
        if self.secure_aggregation is None:
            return self
        if self.aggregation != "fedavg" or self.client_dp_noise_multiplier is not None:
            raise ValueError(
                "secure aggregation recovers only a weighted sum: it needs aggregation "
                "'fedavg' and no client-level DP (which clips each update on the server)"
            )
        if self.model_kind != "behaviour":
            raise ValueError("secure aggregation is implemented for the behaviour model only")
        return self

    @model_validator(mode="after")
    def _client_dp_both_or_neither(self) -> ServerSettings:
        if (self.client_dp_noise_multiplier is None) != (self.client_dp_clip_norm is None):
            raise ValueError("client-dp-noise-multiplier and client-dp-clip-norm go together")
        if self.client_dp_noise_multiplier is not None and self.aggregation != "fedavg":
            raise ValueError(
                f"aggregation {self.aggregation!r} cannot be combined with client-level DP "
                "(client-dp-noise-multiplier), which always aggregates with DP-FedAvg"
            )
        return self

    @model_validator(mode="after")
    def _text_labels_need_a_behaviour_model(self) -> ServerSettings:
        if (
            self.model_kind == "text"
            and self.text_labels != "explicit"
            and self.behaviour_model is None
        ):
            raise ValueError(
                f"text-labels {self.text_labels!r} needs behaviour-model: a behaviour model "
                "directory whose inference labels the comparisons people did not label"
            )
        if self.model_kind == "text" and self.epsilon_label is not None:
            raise ValueError("a labels round (epsilon-label) needs the behaviour model kind")
        return self

    @property
    def client_dp(self) -> bool:
        """True when the server adds client-level DP noise to the aggregate."""
        return self.client_dp_noise_multiplier is not None

    def client_dp_spent(self, rounds: int) -> ClientDPSpend | None:
        """Client-level DP parameters and the epsilon per person after ``rounds`` noised
        aggregations, each device sampled with probability ``fraction`` per round; None when
        it is off."""
        if self.client_dp_noise_multiplier is None or self.client_dp_clip_norm is None:
            return None
        from fedgaze.privacy.central import central_epsilon

        return ClientDPSpend(
            noise_multiplier=self.client_dp_noise_multiplier,
            clip_norm=self.client_dp_clip_norm,
            sample_rate=self.fraction,
            delta=self.client_dp_delta,
            epsilon=central_epsilon(
                self.client_dp_noise_multiplier,
                sample_rate=self.fraction,
                rounds=rounds,
                delta=self.client_dp_delta,
            ),
        )

    @classmethod
    def from_run_config(cls, flat: Mapping[str, Any]) -> ServerSettings:
        """Parse the ServerApp's run config."""
        return _parse(cls, flat, "run config")

    def to_run_config(self) -> dict[str, Any]:
        """Flat mapping written into the Flower app's ``[tool.flwr.app.config]``."""
        return _flat(self)

    def label_plan(self) -> LabelPlan | None:
        """The labels message's plan (with the final model), or None without a labels round."""
        if self.epsilon_label is None:
            return None
        return LabelPlan(
            run_key=self.run_key,
            server_round=self.rounds,
            epsilon_label=self.epsilon_label,
            label_source=self.label_source,
        )

    def plan(self, server_round: int) -> RoundPlan:
        """The plan sent to devices for ``server_round``."""
        fields = {k: v for k, v in self.model_dump().items() if k in TrainingPlan.model_fields}
        return RoundPlan(server_round=server_round, **fields)
