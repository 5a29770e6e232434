"""Hand-built traces and queries for the features v2 tests, and the helpers that read their
feature blocks by column name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    SIDE_LEFT,
    SIDE_NONE,
    SIDE_RIGHT,
    Query,
    Samples,
)
from fedgaze.features.v2 import SIDE_FEATURE_NAMES

F = len(SIDE_FEATURE_NAMES)
COL = {name: i for i, name in enumerate(SIDE_FEATURE_NAMES)}
L, R, N = SIDE_LEFT, SIDE_RIGHT, SIDE_NONE
NAN = float("nan")


def samples(
    t_ms: Sequence[float],
    side: Sequence[int],
    char_index: Sequence[int] | None = None,
    x: Sequence[float] | None = None,
    y: Sequence[float] | None = None,
    validate: Sequence[int] | None = None,
) -> Samples:
    """Samples built by hand; x, y default to 0, carets to -1, validate to 1."""
    n = len(t_ms)
    return Samples(
        t_ms=np.asarray(t_ms, dtype=np.float64),
        x=np.zeros(n) if x is None else np.asarray(x, dtype=np.float64),
        y=np.zeros(n) if y is None else np.asarray(y, dtype=np.float64),
        side=np.asarray(side, dtype=np.int8),
        char_index=np.full(n, -1) if char_index is None else np.asarray(char_index),
        validate=np.ones(n, dtype=np.int8) if validate is None else np.asarray(validate),
    )


def query(
    qid: int = 1,
    left: str = "left answer",
    right: str | None = "the right answer\nhas two lines",
    preference: int | None = PREF_RIGHT,
    gaze: Samples | None = None,
    mouse: Samples | None = None,
    pairwise: bool = True,
    task_id: int = 1,
) -> Query:
    """A query built by hand; missing traces are empty."""
    return Query(
        query_id=qid,
        task_id=task_id,
        pairwise=pairwise,
        prompt="why?",
        response_left=left,
        response_right=right,
        preference=preference,
        likert_left=None,
        likert_right=None,
        shown_at_ms=0.0,
        gaze=gaze if gaze is not None else Samples.empty(),
        mouse=mouse if mouse is not None else Samples.empty(),
    )


def flip(s: Samples) -> Samples:
    """The same samples with left and right exchanged."""
    side = np.select([s.side == L, s.side == R], [R, L], N)
    return Samples(s.t_ms, s.x, s.y, side, s.char_index, s.validate)


def swapped(q: Query) -> Query:
    """The same query with the two answers (texts, traces, preference) exchanged."""
    pref = {PREF_LEFT: PREF_RIGHT, PREF_RIGHT: PREF_LEFT}.get(q.preference, q.preference)  # type: ignore[arg-type]
    return query(
        q.query_id,
        q.response_right or "",
        q.response_left,
        pref,
        flip(q.gaze),
        flip(q.mouse),
        task_id=q.task_id,
    )


def feats(f: np.ndarray, *names: str) -> dict[str, np.ndarray]:
    """Columns of a (2, F) block by name, each as a (2,) array (left, right)."""
    return {name: f[:, COL[name]] for name in names}


def close(actual: np.ndarray, expected: Sequence[float] | float) -> None:
    """Assert equal within the tolerance these tests allow float32 features."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def good_gaze(n: int = 20, step_ms: float = 100.0, **kw: Sequence[int]) -> Samples:
    """A usable gaze trace unless ``kw`` (``side``, ``validate``) says otherwise: ``n`` samples
    ``step_ms`` apart, every other one on the left answer, the first 15 face boxes good."""
    t = [i * step_ms for i in range(n)]
    side = kw.get("side", [L if i % 2 == 0 else N for i in range(n)])
    validate = kw.get("validate", [1] * 15 + [0] * (n - 15))
    return samples(t, side, validate=validate)


# The five-sample trace of the brief. Five gaze samples are too few to be usable (MIN_SAMPLES),
# so tests give it as a mouse trace, which has no usability rule.
FIVE = samples([0, 100, 200, 1700, 1800], [L, L, R, R, L], [0, 30, 5, 40, 2])
