"""The text reward model's features of one answer to a prompt, from a frozen encoder.

Per answer: ``[e(p), e(r), e(p) * e(r), length]`` where ``e`` is the encoder's L2-normalised
embedding (:mod:`fedgaze.text.encoder`), ``e(p) * e(r)`` their element-wise product (how the
answer relates to the prompt) and ``length`` three log-scaled counts of the answer (characters,
words, lines). A comparison is a (2, F) block, left answer first, the shape the pairwise
training code takes; a single answer is one row of F, which :class:`~fedgaze.model.reward.
TextRewardModel` scores on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgaze.text.encoder import TextEncoder

TEXT_FEATURE_SET = "text-v1"
LENGTH_NAMES = ("log_chars", "log_words", "log_lines")


def n_text_features(dim: int) -> int:
    """The width F of one answer's features with an encoder of ``dim`` dimensions."""
    return 3 * dim + len(LENGTH_NAMES)


def length_features(texts: Sequence[str]) -> np.ndarray:
    """``log1p`` of characters / 1000, words / 100 and lines / 10 of each text, shape (n, 3)."""
    counts = np.array(
        [[len(t) / 1000.0, len(t.split()) / 100.0, (t.count("\n") + 1) / 10.0] for t in texts],
        dtype=np.float64,
    ).reshape(len(texts), len(LENGTH_NAMES))
    return np.log1p(counts).astype(np.float32)


def answer_features(
    encoder: TextEncoder, prompts: Sequence[str], responses: Sequence[str]
) -> np.ndarray:
    """Features of each ``(prompt, response)``, shape (n, F)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return np.zeros((0, n_text_features(encoder.dim)), dtype=np.float32)
    unique = list(dict.fromkeys([*prompts, *responses]))
    vectors = encoder.encode(unique)
    index = {text: i for i, text in enumerate(unique)}
    e_p = vectors[[index[p] for p in prompts]]
    e_r = vectors[[index[r] for r in responses]]
    return np.concatenate([e_p, e_r, e_p * e_r, length_features(responses)], axis=1)


def comparison_features(
    encoder: TextEncoder,
    prompts: Sequence[str],
    lefts: Sequence[str],
    rights: Sequence[str],
) -> np.ndarray:
    """Features of each comparison, shape (n, 2, F): the left answer's row, then the right's."""
    left = answer_features(encoder, prompts, lefts)
    right = answer_features(encoder, prompts, rights)
    return np.stack([left, right], axis=1)
