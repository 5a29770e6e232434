"""The feature matrix that every feature set produces, and the helpers that build one.

A feature set turns one query into a ``(2, F)`` block of per-side rows (row 0 = left answer,
row 1 = right answer); :func:`build_matrix` stacks those blocks for the queries a caller chose
(:func:`training_queries` or :func:`scoring_queries`) together with their labels and ids. Kept
apart from any one feature set so that the model, the trainers and every feature version share
one container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedgaze.data.schema import Query

__all__ = [
    "FeatureMatrix",
    "build_matrix",
    "concat_matrices",
    "scoring_queries",
    "training_queries",
]


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Features of ``n`` comparisons: ``X`` (n, 2, F) float32, ``y`` (n,) float32, ids int64.

    ``y`` is 1 where the right answer was preferred, 0 where the left was, NaN when unlabelled
    (only in scoring matrices).
    """

    X: np.ndarray
    y: np.ndarray
    query_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def training_queries(queries: Iterable[Query]) -> list[Query]:
    """The labelled comparisons (left or right preferred; ties and pointwise queries dropped)."""
    return [q for q in queries if q.is_labelled_comparison]


def scoring_queries(queries: Iterable[Query]) -> list[Query]:
    """Every pairwise query that has a right answer, labelled or not."""
    return [q for q in queries if q.pairwise and q.response_right is not None]


def build_matrix(
    queries: Iterable[Query], rows: Callable[[Query], np.ndarray], n_features: int
) -> FeatureMatrix:
    """Stack ``rows(q)`` (each (2, n_features)) of the given queries, in order, with labels.

    ``y`` is the query's ``label_right`` for a labelled comparison and NaN otherwise.
    """
    chosen = list(queries)
    X = np.zeros((len(chosen), 2, n_features), dtype=np.float32)
    for i, q in enumerate(chosen):
        X[i] = rows(q)
    y = np.array(
        [q.label_right if q.is_labelled_comparison else np.nan for q in chosen],
        dtype=np.float32,
    )
    ids = np.array([q.query_id for q in chosen], dtype=np.int64)
    return FeatureMatrix(X=X, y=y, query_ids=ids)


def concat_matrices(parts: Sequence[FeatureMatrix], n_features: int) -> FeatureMatrix:
    """Rows of every part, in order (e.g. one matrix per device); empty parts are fine."""
    if not parts:
        return FeatureMatrix(
            X=np.zeros((0, 2, n_features), np.float32),
            y=np.zeros(0, np.float32),
            query_ids=np.zeros(0, np.int64),
        )
    return FeatureMatrix(
        X=np.concatenate([p.X for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        query_ids=np.concatenate([p.query_ids for p in parts]),
    )
