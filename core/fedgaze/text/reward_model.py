"""The text reward model's Python API: load a model directory, score responses, compare pairs.

>>> model = RewardModel.load("models/text")                            # doctest: +SKIP
>>> model.score(["What is 2+2?"], ["4."])                              # doctest: +SKIP
array([0.83])
>>> model.prefer(["What is 2+2?"], ["5."], ["4."])  # P(right preferred)  # doctest: +SKIP
array([0.91])

The encoder is loaded from the spec the directory recorded, or passed in; a different encoder
(``name`` or ``dim``) is refused, a different version of the same one only noted in
:attr:`RewardModel.warnings`. Texts are embedded and scored in batches of ``batch_size``, so
memory stays bounded whatever the number of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgaze.model.reward import TextRewardModel, model_from_state
from fedgaze.text.encoder import EncoderError, TextEncoder, load_encoder
from fedgaze.text.features import answer_features
from fedgaze.text.model_dir import EncoderInfo, SavedTextModel, load_text_model

DEFAULT_BATCH_SIZE = 256


class RewardModelError(ValueError):
    """The model cannot be used as asked (wrong encoder, bad inputs); the message says why."""


def encoder_warnings(saved: EncoderInfo, encoder: TextEncoder) -> tuple[str, ...]:
    """Check ``encoder`` against the one a model was trained with.

    Raises :class:`RewardModelError` when its name or dimension differs (its embeddings would
    mean something else); returns a warning when only the version differs.
    """
    if encoder.name != saved.name or int(encoder.dim) != saved.dim:
        raise RewardModelError(
            f"the model was trained with encoder {saved.name!r} (dim {saved.dim}), not "
            f"{encoder.name!r} (dim {encoder.dim}); its scores would be meaningless"
        )
    if encoder.version != saved.version:
        return (
            f"encoder {saved.name!r} is version {encoder.version}, the model was trained with "
            f"{saved.version}; scores may differ slightly",
        )
    return ()


def _texts(name: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        raise RewardModelError(f"{name} must be a sequence of strings, not one string")
    texts = list(values)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise RewardModelError(f"{name}[{bad}] is {type(texts[bad]).__name__}, not a string")
    return texts


def _same_length(**columns: list[str]) -> int:
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise RewardModelError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


class RewardModel:
    """A trained text reward model ``r(prompt, response)`` with its frozen encoder."""

    def __init__(
        self,
        saved: SavedTextModel,
        encoder: TextEncoder,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.warnings: tuple[str, ...] = encoder_warnings(saved.encoder, encoder)
        net = model_from_state(saved.state)
        if not isinstance(net, TextRewardModel):
            raise RewardModelError("the saved state is not a text reward model's")
        net.eval()
        self._net = net
        self._saved = saved
        self._encoder = encoder
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        directory: str | Path,
        encoder: TextEncoder | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> RewardModel:
        """The model in ``directory`` (see :mod:`fedgaze.text.model_dir`), with ``encoder`` or
        else the encoder its config names.

        Raises :class:`~fedgaze.text.model_dir.TextModelDirError` for a missing or corrupt
        directory and :class:`RewardModelError` when the encoder cannot be loaded or differs.
        """
        saved = load_text_model(directory)
        if encoder is None:
            try:
                encoder = load_encoder(saved.encoder.spec)
            except EncoderError as err:
                raise RewardModelError(
                    f"{directory}: cannot load its encoder {saved.encoder.spec!r}: {err}"
                ) from None
        return cls(saved, encoder, batch_size=batch_size)

    @property
    def encoder_info(self) -> EncoderInfo:
        """The encoder the model was trained with (as its directory records it)."""
        return self._saved.encoder

    @property
    def provenance(self) -> dict[str, Any]:
        """How the model was trained (a copy of its directory's ``provenance``)."""
        return dict(self._saved.provenance)

    @property
    def hidden(self) -> int:
        """Width of the model's hidden layer (0: linear)."""
        return self._saved.hidden

    def _rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Rewards of one batch, float64."""
        features = answer_features(self._encoder, prompts, responses)
        with torch.no_grad():
            rewards = self._net.reward(torch.from_numpy(np.ascontiguousarray(features)))
        return rewards.double().numpy()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward of each ``(prompt, response)``, float64 of shape (n,); higher is better."""
        p, r = _texts("prompts", prompts), _texts("responses", responses)
        n = _same_length(prompts=p, responses=r)
        out = np.empty(n, dtype=np.float64)
        for i in range(0, n, self.batch_size):
            j = min(i + self.batch_size, n)
            out[i:j] = self._rewards(p[i:j], r[i:j])
        return out

    def prefer(
        self, prompts: Sequence[str], lefts: Sequence[str], rights: Sequence[str]
    ) -> np.ndarray:
        """P(right answer preferred) of each comparison, float64 of shape (n,):
        ``sigmoid(r(prompt, right) - r(prompt, left))``."""
        p = _texts("prompts", prompts)
        left, right = _texts("lefts", lefts), _texts("rights", rights)
        n = _same_length(prompts=p, lefts=left, rights=right)
        logits = np.empty(n, dtype=np.float64)
        step = max(1, self.batch_size // 2)
        for i in range(0, n, step):
            j = min(i + step, n)
            # One call per batch, so each prompt is embedded once for both of its answers.
            rewards = self._rewards(p[i:j] * 2, left[i:j] + right[i:j])
            logits[i:j] = rewards[j - i :] - rewards[: j - i]
        return _sigmoid(logits)
