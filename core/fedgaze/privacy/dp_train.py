"""DP-SGD training of the reward model with Opacus: on a device (federated) or centrally.

:func:`train_local` is what a device runs each round. Before any gradient is computed it
checks that the round's charge keeps the device within its epsilon budget (else
:class:`BudgetExhausted`), trains with Poisson sampling, per-example clipping and Gaussian noise,
and returns the new weights together with a new :class:`PrivacyState` that includes the charge.
The caller must persist that state (``result.new_privacy_state.save(path)``) before releasing
the weights; :func:`train_local_persisted` does load, train and save in one call.

Randomness: DP noise and Poisson sampling are drawn from a fresh secret seed (OS entropy), never
from the caller's ``seed``, which may be known to the server (a server that knows the noise seed
can subtract the noise). ``seed`` only initialises a fresh model. The secret seed is recorded in
the device's privacy state so that a retried ``(run_id, round)`` is answered by an exact replay
at no new charge (see :func:`train_local`).

What is *not* covered by the DP guarantee: ``LocalResult.train_loss`` and the numbers from
:func:`fedgaze.model.evaluation.evaluate` are computed from private data without noise. The
ClientApp never sends the training loss; the held-out evaluation metrics it sends are a declared
release outside the guarantee (see docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedgaze import defaults
from fedgaze.model.kind import ModelKind
from fedgaze.model.reward import (
    RewardNet,
    model_from_state,
    new_model,
    state_to_numpy,
)
from fedgaze.model.weights import ModelState
from fedgaze.privacy.accounting import (
    ORDER_GRID_NOTICE,
    BudgetExhausted,
    HistoryEntry,
    check_budget,
    epsilon_for,
    merge_history,
    steps_per_epoch,
)
from fedgaze.privacy.params import AccountantName, DeviceBudget, DPSGDParams
from fedgaze.privacy.state import PrivacyEvent, PrivacyState, RoundAlreadyCharged

__all__ = [
    "BudgetExhausted",
    "DPConfig",
    "LocalResult",
    "ModelKind",
    "RoundAlreadyCharged",
    "device_round_seed",
    "train_central",
    "train_local",
    "train_local_nonprivate",
    "train_local_persisted",
]


class DPConfig(DPSGDParams):
    """DP-SGD hyperparameters and the device's privacy budget (validated, immutable).

    ``batch_size`` is the expected Poisson batch; Opacus realises it as ``n / ceil(n / b)``
    (see :func:`fedgaze.privacy.accounting.steps_per_epoch`).
    """

    optimizer: Literal["sgd", "adam"] = "sgd"
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    epsilon_budget: float = Field(default=10.0, gt=0)
    accountant: AccountantName = "rdp"

    @classmethod
    def for_device(cls, params: DPSGDParams, budget: DeviceBudget) -> DPConfig:
        """What a device trains with: the planned hyperparameters within its own budget."""
        return cls(
            **params.dp_sgd().model_dump(),
            delta=budget.delta,
            epsilon_budget=budget.epsilon_budget,
            accountant=budget.accountant,
        )

    @property
    def budget(self) -> DeviceBudget:
        """The device budget this configuration trains within."""
        return DeviceBudget(self.delta, self.epsilon_budget, self.accountant)

    def training_key(self) -> str:
        """The fields that determine the trained weights (not the budget or accountant)."""
        return self.model_dump_json(
            include={
                "noise_multiplier",
                "max_grad_norm",
                "batch_size",
                "local_epochs",
                "lr",
                "optimizer",
            }
        )


def device_round_seed(seed: int, server_round: int, device_id: str) -> int:
    """The public seed of a device's round (it only initialises a fresh model; noise and
    sampling always come from a secret seed)."""
    return (seed * 1_000_003 + server_round * 7919 + zlib.crc32(device_id.encode())) % (2**31)


@dataclass(frozen=True, eq=False)
class LocalResult:
    """Outcome of one local round. ``new_privacy_state`` must be persisted by the caller.

    ``epsilon`` is the device's cumulative epsilon at ``delta`` including this round;
    ``replayed`` is True when a retried round was answered from the ledger without a new charge.
    """

    state: ModelState
    new_privacy_state: PrivacyState
    epsilon: float
    delta: float
    examples: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    train_loss: float
    replayed: bool = False


class _DropEmptyBatchNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("First batch is empty")


@contextmanager
def _training_env() -> Iterator[None]:
    """One CPU thread, and without Opacus' notices that are expected here.

    Silenced: the secure-RNG notice (``torchcsprng`` is not used; noise comes from a secret
    seed), the edge-of-order-grid notice of noise calibration (the bound is valid), torch's
    notice that Opacus' backward hooks fire although the inputs need no gradient (expected:
    features are data), and the empty-first-Poisson-batch notice (handled: zero-row batch).
    """
    threads = torch.get_num_threads()
    log = logging.getLogger("opacus.data_loader")
    empty_batch_filter = _DropEmptyBatchNotice()
    torch.set_num_threads(1)
    log.addFilter(empty_batch_filter)
    try:
        with warnings.catch_warnings():
            for notice in (
                "Secure RNG turned off",
                "Full backward hook is firing",
                ORDER_GRID_NOTICE,
            ):
                warnings.filterwarnings("ignore", message=notice, category=UserWarning)
            yield
    finally:
        log.removeFilter(empty_batch_filter)
        torch.set_num_threads(threads)


def _as_training_arrays(
    X: np.ndarray, y: np.ndarray, soft: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    Xa = np.ascontiguousarray(X, dtype=np.float32)
    ya = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
    if Xa.ndim != 3 or Xa.shape[1] != 2 or len(Xa) != len(ya):
        raise ValueError(f"expected X (n, 2, F) and y (n,), got {Xa.shape} and {ya.shape}")
    if not np.isfinite(Xa).all():
        raise ValueError("X has non-finite values")
    if soft:
        if not (np.isfinite(ya).all() and ((ya >= 0) & (ya <= 1)).all()):
            raise ValueError("soft labels y must be probabilities in [0, 1] of right preferred")
    elif not np.isin(ya, (0.0, 1.0)).all():
        raise ValueError("y must be 0 (left preferred) or 1 (right preferred)")
    return Xa, ya


def _initial_model(
    model_state: Mapping[str, np.ndarray] | None,
    n_features: int,
    seed: int,
    kind: ModelKind = "behaviour",
) -> RewardNet:
    if model_state is None:
        return new_model(kind, n_features, defaults.HIDDEN, seed)
    model = model_from_state(model_state)
    if model.n_features != n_features:
        raise ValueError(f"model expects {model.n_features} features, X has {n_features}")
    return model


def _make_optimizer(model: nn.Module, kind: str, lr: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run_epochs(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, epochs: int
) -> float:
    """Mean per-example training loss over all batches; Poisson batches may be empty."""
    model.train()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            losses = F.binary_cross_entropy_with_logits(model(xb), yb, reduction="none")
            (losses.sum() / max(len(yb), 1)).backward()
            optimizer.step()
            loss_sum += float(losses.detach().sum())
            seen += len(yb)
    return loss_sum / seen if seen else math.nan


def _dp_sgd(
    model: nn.Module, X: np.ndarray, y: np.ndarray, cfg: DPConfig, noise_seed: int
) -> tuple[ModelState, list[HistoryEntry], float]:
    """Opacus DP-SGD run; returns weights, the accountant's actual history, mean loss."""
    sampling_seed, noise_seed2 = np.random.SeedSequence(noise_seed).generate_state(2, np.uint64)
    with _training_env():
        loader = DataLoader(
            TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
            batch_size=cfg.batch_size,
            generator=_generator(int(sampling_seed)),
        )
        engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=False)
        module, optimizer, dp_loader = engine.make_private(
            module=model,
            optimizer=_make_optimizer(model, cfg.optimizer, cfg.lr),
            data_loader=loader,
            noise_multiplier=cfg.noise_multiplier,
            max_grad_norm=cfg.max_grad_norm,
            poisson_sampling=True,
            noise_generator=_generator(int(noise_seed2)),
        )
        loss = _run_epochs(module, optimizer, dp_loader, cfg.local_epochs)
    return state_to_numpy(module), list(engine.accountant.history), loss


def _digest(*parts: bytes | str | np.ndarray | Mapping[str, np.ndarray] | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"\x00none")
        elif isinstance(part, Mapping):
            for name, arr in part.items():
                h.update(name.encode())
                h.update(_digest(np.asarray(arr)).encode())
        elif isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x1f")
    return h.hexdigest()


def train_local(
    model_state: Mapping[str, np.ndarray] | None,
    X: np.ndarray,
    y: np.ndarray,
    cfg: DPConfig,
    state: PrivacyState,
    *,
    run_id: str,
    round: int,
    seed: int,
    soft_labels: bool = False,
) -> LocalResult:
    """Train one round of DP-SGD on this device's comparisons, within its privacy budget.

    ``soft_labels``: ``y`` holds probabilities that the right answer is preferred (the binary
    cross-entropy then takes them as soft targets); otherwise ``y`` is 0 or 1.

    ``model_state`` is the global model pushed by the server (None: a fresh model from
    ``seed``). Returns new weights and ``new_privacy_state`` = ``state`` plus this round's
    charge, which the caller must persist before releasing the weights.

    - n = 0: nothing is trained or charged; the model comes back unchanged.
    - Budget: the epsilon after this round is computed first; :class:`BudgetExhausted` is raised
      before any training if it would exceed ``cfg.epsilon_budget``.
    - Retry of a charged ``(run_id, round)``: with identical inputs the recorded run is replayed
      with its recorded secret seed and checked bit for bit, and returned with ``replayed=True``
      and no new charge; with different inputs (or a replay that does not reproduce) it raises
      :class:`RoundAlreadyCharged`, because a second, different release would cost again.
    """
    Xa, ya = _as_training_arrays(X, y, soft_labels)
    model = _initial_model(model_state, Xa.shape[2], seed)
    n = len(ya)
    if n == 0:
        return LocalResult(
            state=state_to_numpy(model),
            new_privacy_state=state,
            epsilon=state.epsilon(cfg.delta, cfg.accountant),
            delta=cfg.delta,
            examples=0,
            steps=0,
            sample_rate=0.0,
            noise_multiplier=cfg.noise_multiplier,
            train_loss=math.nan,
        )
    sample_rate, per_epoch = steps_per_epoch(n, cfg.batch_size)
    planned: HistoryEntry = (cfg.noise_multiplier, sample_rate, cfg.local_epochs * per_epoch)
    input_digest = _digest(
        cfg.training_key(), model_state, str(seed) if model_state is None else None, Xa, ya
    )
    previous = state.find(run_id, round)
    if previous is not None:
        return _replay(previous, model, Xa, ya, cfg, state, input_digest)

    check_budget(
        state.history,
        planned,
        delta=cfg.delta,
        budget=cfg.epsilon_budget,
        accountant=cfg.accountant,
        label_epsilon=state.label_epsilon,
    )
    noise_seed = secrets.randbits(63)
    weights, history, loss = _dp_sgd(model, Xa, ya, cfg, noise_seed)
    if merge_history(history) != [planned]:
        raise RuntimeError(f"Opacus charged {history}, expected {[planned]}; result discarded")
    event = PrivacyEvent(
        run_id=run_id,
        round=round,
        noise_multiplier=planned[0],
        sample_rate=planned[1],
        steps=planned[2],
        max_grad_norm=cfg.max_grad_norm,
        input_digest=input_digest,
        output_digest=_digest(weights),
        noise_seed=noise_seed,
    )
    new_state = state.with_event(event)
    return LocalResult(
        state=weights,
        new_privacy_state=new_state,
        epsilon=new_state.epsilon(cfg.delta, cfg.accountant),
        delta=cfg.delta,
        examples=n,
        steps=planned[2],
        sample_rate=sample_rate,
        noise_multiplier=cfg.noise_multiplier,
        train_loss=loss,
    )


def _replay(
    event: PrivacyEvent,
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    cfg: DPConfig,
    state: PrivacyState,
    input_digest: str,
) -> LocalResult:
    """Answer a retried round by reproducing the charged run exactly, at no new charge."""
    where = f"run {event.run_id!r} round {event.round}"
    if event.noise_seed is None or event.input_digest != input_digest:
        raise RoundAlreadyCharged(
            f"{where} was already charged with other inputs; refusing to train it again"
        )
    weights, _, loss = _dp_sgd(model, X, y, cfg, event.noise_seed)
    if _digest(weights) != event.output_digest:
        raise RoundAlreadyCharged(f"{where}: replay did not reproduce the charged result")
    return LocalResult(
        state=weights,
        new_privacy_state=state,
        epsilon=state.epsilon(cfg.delta, cfg.accountant),
        delta=cfg.delta,
        examples=len(y),
        steps=event.steps,
        sample_rate=event.sample_rate,
        noise_multiplier=event.noise_multiplier,
        train_loss=loss,
        replayed=True,
    )


def train_local_persisted(
    path: str | Path,
    model_state: Mapping[str, np.ndarray] | None,
    X: np.ndarray,
    y: np.ndarray,
    cfg: DPConfig,
    *,
    run_id: str,
    round: int,
    seed: int,
) -> LocalResult:
    """:func:`train_local` with the privacy state loaded from and saved (atomically) to ``path``.

    The state is saved before returning, so the weights are never released uncharged.
    """
    state = PrivacyState.load(path)
    result = train_local(model_state, X, y, cfg, state, run_id=run_id, round=round, seed=seed)
    if result.new_privacy_state is not state:
        result.new_privacy_state.save(path)
    return result


def train_local_nonprivate(
    model_state: Mapping[str, np.ndarray] | None,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    optimizer: Literal["sgd", "adam"] = "sgd",
    soft_labels: bool = False,
) -> ModelState:
    """One local round without differential privacy: the non-private federated baseline.

    The same model, loss and epoch loop as :func:`train_local`, with shuffled minibatches of
    ``batch_size`` and no clipping or noise, so that comparing the two isolates what DP costs.
    Nothing is charged; this must never run on a deployed device (its update is not private).
    ``seed`` fixes a fresh model's weights and the shuffling. With no rows the model comes
    back unchanged. ``soft_labels`` as for :func:`train_local`.
    """
    Xa, ya = _as_training_arrays(X, y, soft_labels)
    model = _initial_model(model_state, Xa.shape[2], seed)
    if len(ya) == 0:
        return state_to_numpy(model)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(Xa), torch.from_numpy(ya)),
        batch_size=batch_size,
        shuffle=True,
        generator=_generator(seed),
    )
    with _training_env():
        _run_epochs(model, _make_optimizer(model, optimizer, lr), loader, epochs)
    return state_to_numpy(model)


def train_central(
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    seed: int,
    dp: DPConfig | None = None,
    batch_size: int = 32,
    hidden: int = defaults.HIDDEN,
    optimizer: Literal["sgd", "adam"] | None = None,
    kind: ModelKind = "behaviour",
    soft_labels: bool = False,
) -> tuple[ModelState, float | None]:
    """Train on pooled data (baselines): non-private, or DP-SGD calibrated to a target epsilon.

    Non-private (``dp=None``): shuffled minibatches of ``batch_size``, Adam unless ``optimizer``
    says otherwise; returns ``(state, None)``. With ``dp``: Opacus ``make_private_with_epsilon``
    picks the noise multiplier that reaches ``dp.epsilon_budget`` at ``dp.delta`` after
    ``epochs`` (``dp.noise_multiplier`` is ignored), using ``dp.batch_size``,
    ``dp.max_grad_norm``, ``dp.accountant`` and ``dp.optimizer``; returns the epsilon spent.
    ``seed`` fixes the initial weights and (non-private) the shuffling; DP noise and sampling use
    a secret seed, so DP runs are not bit-reproducible. ``kind`` picks the model,
    ``soft_labels`` lets ``y`` be probabilities (soft targets).
    """
    Xa, ya = _as_training_arrays(X, y, soft_labels)
    model = new_model(kind, Xa.shape[2], hidden, seed)
    dataset = TensorDataset(torch.from_numpy(Xa), torch.from_numpy(ya))
    if len(ya) == 0:
        return state_to_numpy(model), (0.0 if dp else None)
    if dp is None:
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=_generator(seed)
        )
        with _training_env():
            _run_epochs(model, _make_optimizer(model, optimizer or "adam", lr), loader, epochs)
        return state_to_numpy(model), None
    secret = np.random.SeedSequence(secrets.randbits(63)).generate_state(2, np.uint64)
    with _training_env():
        engine = PrivacyEngine(accountant=dp.accountant, secure_mode=False)
        module, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=_make_optimizer(model, optimizer or dp.optimizer, lr),
            data_loader=DataLoader(
                dataset, batch_size=dp.batch_size, generator=_generator(int(secret[0]))
            ),
            target_epsilon=dp.epsilon_budget,
            target_delta=dp.delta,
            epochs=epochs,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=_generator(int(secret[1])),
        )
        _run_epochs(module, dp_optimizer, dp_loader, epochs)
    return state_to_numpy(module), epsilon_for(engine.accountant.history, dp.delta, dp.accountant)
