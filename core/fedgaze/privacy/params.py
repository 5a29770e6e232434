"""The DP-SGD hyperparameters of one local training run, as one validated value type.

:class:`DPSGDParams` is what a server plans for its devices (it is part of every round plan,
:class:`fedgaze.federation.settings.TrainingPlan`) and what a device trains with, together with
its own budget (:class:`fedgaze.privacy.dp_train.DPConfig`). One run of DP-SGD is
``local_epochs`` epochs of Poisson-sampled batches of expected size ``batch_size``, each
per-example gradient clipped to L2 norm ``max_grad_norm`` and the sum noised with
``N(0, (noise_multiplier * max_grad_norm)^2)`` per coordinate, then a step of size ``lr``.

No torch or Opacus here: the server and the CLI plan runs without importing a training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedgaze import defaults

AccountantName = Literal["rdp", "prv"]


class DPSGDParams(BaseModel):
    """DP-SGD hyperparameters (validated, immutable); the privacy unit is one comparison."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise_multiplier: float = Field(default=defaults.NOISE_MULTIPLIER, gt=0, allow_inf_nan=False)
    max_grad_norm: float = Field(default=defaults.MAX_GRAD_NORM, gt=0, allow_inf_nan=False)
    batch_size: int = Field(default=defaults.BATCH_SIZE, ge=1)
    local_epochs: int = Field(default=defaults.LOCAL_EPOCHS, ge=1)
    lr: float = Field(default=defaults.LR, gt=0, allow_inf_nan=False)

    def dp_sgd(self) -> DPSGDParams:
        """Just these hyperparameters (of a subclass that carries more)."""
        return DPSGDParams(**{k: getattr(self, k) for k in DPSGDParams.model_fields})


@dataclass(frozen=True)
class DeviceBudget:
    """A device's own privacy budget: it refuses any charge that would take its cumulative
    epsilon at ``delta`` (by ``accountant``) over ``epsilon_budget``."""

    delta: float
    epsilon_budget: float
    accountant: AccountantName = "rdp"
