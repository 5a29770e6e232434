"""Splits that respect time and people: never train on a device's future or a test user."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def chronological_split(items: Sequence[T], holdout: float) -> tuple[list[T], list[T]]:
    """Split time-ordered ``items`` into (earlier for training, later for evaluation).

    The later ``holdout`` share is held out, rounded up, but at least one item stays for
    training when there are two or more: a device evaluates on the comparisons it made after the
    ones it trained on, which is how a deployed model is used.
    """
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    n = len(items)
    n_test = min(math.ceil(n * holdout), max(n - 1, 0)) if holdout > 0 else 0
    return list(items[: n - n_test]), list(items[n - n_test :])
