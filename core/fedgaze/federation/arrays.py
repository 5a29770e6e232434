"""Conversion between model states (name -> numpy array) and Flower ArrayRecords."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from fedgaze.model.weights import ModelState


def to_array_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Wrap a model state in an ArrayRecord, keeping parameter names and order."""
    return ArrayRecord({name: Array.from_numpy_ndarray(np.asarray(a)) for name, a in state.items()})


def from_array_record(record: ArrayRecord) -> ModelState:
    """Unwrap an ArrayRecord into a model state (name -> numpy array)."""
    return {name: record[name].numpy() for name in record}
