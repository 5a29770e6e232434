"""The pairwise reward model: Bradley-Terry over a small MLP, antisymmetric by construction.

Each side's reward ``r(own, other)`` is an MLP of ``[own, own - other]``; the logit that the
right answer is preferred is ``r(right, left) - r(left, right)``. Swapping the two answers swaps
the MLP's two input rows and therefore exactly negates the logit, so the model cannot learn a
position bias. One comparison is one (2, F) input row: under DP-SGD one pair is one example,
and Opacus' per-sample gradient of ``nn.Linear`` sums over the two sides of that example.

``hidden=0`` gives the linear special case: ``r(own, other) = a . own + b . (own - other)``, so
the logit is ``(a + 2b) . (right - left)``, logistic regression on the feature difference (few
parameters: the better choice with little data or heavy DP noise).

Only ``nn.Linear`` and ``nn.Tanh`` are used, which Opacus supports without ``ModuleValidator.fix``.
The MLP is applied once per side (shared weights); Opacus sums the two calls' per-sample
gradients into one per comparison.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from fedgaze import defaults
from fedgaze.model.kind import ModelKind

OPACUS_PREFIX = "_module."
"""Prefix that Opacus' ``GradSampleModule`` adds to parameter names."""


def _mlp(width: int, hidden: int, seed: int | None) -> nn.Sequential:
    """``Linear(width, 1)`` for ``hidden == 0``, else ``Linear, Tanh, Linear``; initialised
    from ``seed`` without touching the global torch RNG (the global RNG when None)."""
    if width < 1 or hidden < 0:
        raise ValueError(f"need n_features >= 1 and hidden >= 0, got width {width} and {hidden}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if hidden == 0:
            return nn.Sequential(nn.Linear(width, 1))
        return nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))


class PairwiseRewardModel(nn.Module):
    """Bradley-Terry reward model over per-side features; ``forward`` gives logits of right.

    ``hidden`` is the MLP's width; 0 makes each side's reward linear in ``[own, own - other]``.

    ``seed``, when given, makes the initial weights reproducible without touching the global
    torch RNG; without it the current global RNG is used (callers may ``torch.manual_seed``).
    """

    def __init__(
        self, n_features: int, hidden: int = defaults.HIDDEN, *, seed: int | None = None
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.net = _mlp(2 * n_features, hidden, seed)

    def rewards(self, x: Tensor) -> Tensor:
        """Reward of each side, shape (B, 2), from ``x`` of shape (B, 2, F)."""
        if x.dim() != 3 or x.shape[1] != 2 or x.shape[2] != self.n_features:
            raise ValueError(f"expected input (B, 2, {self.n_features}), got {tuple(x.shape)}")
        left, right = x[:, 0], x[:, 1]
        # Two calls on equal-shaped tensors, not one call on (B, 2, 2F): a matmul is not
        # bitwise identical across row positions, and exact antisymmetry needs it to be.
        r_left = self.net(torch.cat([left, left - right], dim=-1))
        r_right = self.net(torch.cat([right, right - left], dim=-1))
        return torch.cat([r_left, r_right], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Logit that the right answer is preferred, shape (B,): ``r(right) - r(left)``."""
        r = self.rewards(x)
        return r[:, 1] - r[:, 0]


class TextRewardModel(nn.Module):
    """The text reward model ``r(prompt, response)``: an MLP of one answer's text features
    (:mod:`fedgaze.text.features`); the logit that the right answer is preferred is
    ``r(right) - r(left)`` (Bradley-Terry, antisymmetric by construction).

    Unlike :class:`PairwiseRewardModel` a side's reward does not look at the other side, so
    :meth:`reward` scores any single response to a prompt. Its parameters are named ``score.*``
    (the behaviour model's ``net.*``), so a state says which model it is.
    """

    def __init__(
        self, n_features: int, hidden: int = defaults.HIDDEN, *, seed: int | None = None
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.score = _mlp(n_features, hidden, seed)

    def reward(self, x: Tensor) -> Tensor:
        """Reward of each answer, shape (B,), from ``x`` of shape (B, F)."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected input (B, {self.n_features}), got {tuple(x.shape)}")
        return self.score(x)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """Logit that the right answer is preferred, shape (B,): ``r(right) - r(left)``."""
        if x.dim() != 3 or x.shape[1] != 2 or x.shape[2] != self.n_features:
            raise ValueError(f"expected input (B, 2, {self.n_features}), got {tuple(x.shape)}")
        return self.score(x[:, 1])[:, 0] - self.score(x[:, 0])[:, 0]


RewardNet = PairwiseRewardModel | TextRewardModel


def new_model(kind: ModelKind, n_features: int, hidden: int, seed: int | None) -> RewardNet:
    """A freshly initialised model of ``kind`` (``seed``: reproducible weights)."""
    if kind == "text":
        return TextRewardModel(n_features, hidden=hidden, seed=seed)
    return PairwiseRewardModel(n_features, hidden=hidden, seed=seed)


def clean_name(name: str) -> str:
    """A parameter name without the Opacus wrapper prefix."""
    return name.removeprefix(OPACUS_PREFIX)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Copy of the model's state as float32 numpy arrays, in ``state_dict`` order, clean names.

    Works for a bare model and for one wrapped by Opacus (``_module.`` prefix stripped).
    """
    return {
        clean_name(k): v.detach().cpu().numpy().astype(np.float32, copy=True)
        for k, v in model.state_dict().items()
    }


def load_numpy_state(model: nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Load a state from :func:`state_to_numpy` into ``model``, in place.

    Names and shapes must match exactly; the error names the offending parameters.
    """
    own = model.state_dict()
    prefix = OPACUS_PREFIX if all(k.startswith(OPACUS_PREFIX) for k in own) and own else ""
    expected = {clean_name(k): v.shape for k, v in own.items()}
    given = {k: tuple(np.shape(v)) for k, v in state.items()}
    if set(expected) != set(given):
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        raise ValueError(f"state mismatch: missing {missing}, unexpected {unexpected}")
    bad = [k for k in expected if tuple(expected[k]) != given[k]]
    if bad:
        detail = ", ".join(f"{k}: {given[k]} != {tuple(expected[k])}" for k in bad)
        raise ValueError(f"state shape mismatch: {detail}")
    tensors = {
        prefix + k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items()
    }
    model.load_state_dict(tensors, strict=True)


def model_from_state(state: Mapping[str, np.ndarray]) -> RewardNet:
    """Rebuild a model whose kind and architecture (features, hidden units) are read off
    ``state``: ``score.*`` parameters are a :class:`TextRewardModel`, ``net.*`` a
    :class:`PairwiseRewardModel`."""
    if "score.0.weight" in state:
        hidden, n_features = np.shape(state["score.0.weight"])
        text = TextRewardModel(n_features, hidden=hidden if "score.2.weight" in state else 0)
        load_numpy_state(text, state)
        return text
    try:
        hidden, twice_f = np.shape(state["net.0.weight"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"not a PairwiseRewardModel state ({err!r})") from None
    if twice_f % 2:
        raise ValueError(f"net.0.weight has odd input width {twice_f}")
    model = PairwiseRewardModel(twice_f // 2, hidden=hidden if "net.2.weight" in state else 0)
    load_numpy_state(model, state)
    return model


def predict_logits(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Logit of "right answer preferred" for each row of ``X`` (n, 2, F), float64 (n,)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.as_tensor(np.asarray(X, dtype=np.float32)))
    finally:
        model.train(was_training)
    return logits.double().numpy()


def predict_proba(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """P(right answer preferred) for each row of ``X`` (n, 2, F), as float64 of shape (n,)."""
    return torch.sigmoid(torch.from_numpy(predict_logits(model, X))).numpy()
