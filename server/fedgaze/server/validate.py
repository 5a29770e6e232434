"""Checks of a device's model update before the server aggregates it (hostile or broken devices).

A device controls everything in its reply. The signed ``dp-record`` (``fedgaze.server.ledger``)
proves what the device says it spent, not that its weights are sane: a buggy or hostile device
can send NaN or infinite weights, arrays of the wrong shape or dtype, extra or missing
parameters, a huge update that would drag the average anywhere, or a stale reply to an earlier
round. :func:`validate_update` refuses all of those, naming the parameter and the problem.
"""

from __future__ import annotations

import math

import numpy as np

from fedgaze.model.weights import ModelState

__all__ = ["EXPECTED_DTYPE", "update_norm", "validate_update"]

EXPECTED_DTYPE = np.dtype(np.float32)


def _plural(n: int, what: str) -> str:
    return f"{n} {what} value" if n == 1 else f"{n} {what} values"


def update_norm(update: ModelState, reference: ModelState) -> float:
    """L2 norm of ``update - reference`` over all parameters together (in float64)."""
    total = 0.0
    for name, ref in reference.items():
        diff = np.asarray(update[name], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        total += float(np.sum(diff * diff))
    return math.sqrt(total)


def validate_update(
    update: ModelState,
    reference: ModelState,
    *,
    server_round: int,
    reported_round: int | None,
    max_update_norm: float | None,
) -> str | None:
    """None when ``update`` may be aggregated into ``reference``'s model, else the reason.

    Checks, in order: the round the reply claims is ``server_round`` (a missing round id or an
    earlier one is a stale or replayed reply); the parameter names are exactly the reference's;
    every array has the reference's shape and dtype float32 and holds only finite values; and,
    when ``max_update_norm`` is set, the L2 norm of ``update - reference`` is within it.
    """
    if reported_round is None:
        return f"reply does not state its round (server asked round {server_round})"
    if reported_round != server_round:
        return f"reply is for round {reported_round}, the server asked round {server_round}"
    missing = [name for name in reference if name not in update]
    extra = [name for name in update if name not in reference]
    if missing:
        return f"missing parameters: {', '.join(missing)}"
    if extra:
        return f"unexpected parameters: {', '.join(extra)}"
    for name, ref in reference.items():
        value = update[name]
        if not isinstance(value, np.ndarray):
            return f"{name}: not an array ({type(value).__name__})"
        if value.shape != np.shape(ref):
            return f"{name}: shape {value.shape} != {np.shape(ref)}"
        if value.dtype != EXPECTED_DTYPE:
            return f"{name}: dtype {value.dtype} != {EXPECTED_DTYPE}"
        finite = np.isfinite(value)
        if not finite.all():
            problems = [
                _plural(int(n), what)
                for n, what in (
                    (np.isnan(value).sum(), "NaN"),
                    (np.isposinf(value).sum(), "+Inf"),
                    (np.isneginf(value).sum(), "-Inf"),
                )
                if n
            ]
            return f"{name}: {', '.join(problems)}"
    if max_update_norm is not None:
        norm = update_norm(update, reference)
        if not norm <= max_update_norm:
            return (
                f"update norm {norm:.4g} exceeds the server's max-update-norm {max_update_norm:g}"
            )
    return None
