"""Privacy audit of the label release (randomized response), from one release of canaries.

The audited path is the device's real one: :func:`fedgaze.labels.release.release_labels` with
the default label source (``explicit-first``), which draws its flips from the OS's entropy.
Canaries: ``m`` pairwise comparisons with the service's ids, each with an explicit choice drawn
uniformly (left or right): canary ``i``'s two neighbouring inputs differ only in that choice,
the replace-one relation that the label epsilon is stated for. The auditor guesses that every
released bit is the canary's own choice (``r = m`` guesses) and counts the correct ones, and
:func:`fedgaze.audit.canary.epsilon_lower_bound` turns that into a lower bound. Randomized
response is pure DP (delta 0), and for it the one-run bound of Steinke, Nasr and Jagielski is
tight: a correct release gives a bound just under the claim (it exceeds the claim with
probability at most ``1 - confidence``, hence the default of 0.999), and a release that flips
half as often as it claims gives one well above it. The threat model is the server's: it sees
every released bit and knows the comparisons.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedgaze.audit.broken import flips_scaled
from fedgaze.audit.canary import epsilon_lower_bound
from fedgaze.audit.outcome import AuditSummary
from fedgaze.data.schema import PREF_LEFT, PREF_RIGHT, Query, ServedIds
from fedgaze.features.v2 import SIDE_FEATURE_NAMES
from fedgaze.labels.release import release_labels
from fedgaze.model.reward import PairwiseRewardModel, state_to_numpy
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import PrivacyState

__all__ = ["LabelAuditConfig", "LabelAuditResult", "run_label_audit"]

_NO_BUDGET = 1e12
_RUN_ID = "label-audit"


class LabelAuditConfig(BaseModel):
    """The claimed label epsilon, the number of canaries, the confidence and the seed (which
    fixes the canaries' choices; the flips use the OS's entropy, as on a device)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon_label: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    m: int = Field(default=20_000, ge=2)
    confidence: float = Field(default=0.999, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class LabelAuditResult:
    """One label audit: the claimed label epsilon against the observed lower bound."""

    config: LabelAuditConfig
    summary: AuditSummary

    @property
    def violated(self) -> bool:
        """True when the lower bound exceeds the claim."""
        return self.summary.violated

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``fedgaze audit canary --kind labels --json``)."""
        return self.summary.to_json()


def _canaries(m: int, rng: np.random.Generator) -> tuple[list[Query], np.ndarray]:
    right = rng.integers(0, 2, size=m)
    queries = [
        Query(
            query_id=i + 1,
            task_id=1,
            pairwise=True,
            prompt="canary",
            response_left="left",
            response_right="right",
            preference=PREF_RIGHT if bit else PREF_LEFT,
            likert_left=None,
            likert_right=None,
            shown_at_ms=None,
            served=ServedIds(
                prompt_id=f"canary-{i}",
                response_left_id=f"canary-{i}/1",
                response_right_id=f"canary-{i}/2",
            ),
        )
        for i, bit in enumerate(right)
    ]
    return queries, right


def run_label_audit(config: LabelAuditConfig, *, flip_factor: float = 1.0) -> LabelAuditResult:
    """Release ``config.m`` canary choices through the device's label release and bound the
    label epsilon from how many released bits kept the canary's choice.

    ``flip_factor`` < 1 is a self-test only (:func:`fedgaze.audit.broken.flips_scaled`): the
    release flips that share of what it claims (0: never), and the audit must catch it.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x1ABE1]))
    queries, right = _canaries(config.m, rng)
    model = state_to_numpy(PairwiseRewardModel(len(SIDE_FEATURE_NAMES), seed=config.seed))
    broken = None
    if flip_factor < 1.0:
        broken = "flips-off" if flip_factor == 0.0 else f"flips x{flip_factor:g}"
    with flips_scaled(flip_factor) if broken else nullcontext():
        outcome = release_labels(
            PrivacyState(),
            queries,
            None,
            model,
            run_id=_RUN_ID,
            round=0,
            epsilon_label=config.epsilon_label,
            source="explicit-first",
            budget=DeviceBudget(delta=1e-5, epsilon_budget=_NO_BUDGET),
        )
    released = {r.prompt_id: r.right_preferred for r in outcome.rows}
    got = np.array([released.get(f"canary-{i}", -1) for i in range(config.m)])
    if len(outcome.rows) != config.m or (got < 0).any():
        raise RuntimeError(f"{config.m} canaries, {len(outcome.rows)} released bits")
    correct = int((got == right).sum())
    bound = epsilon_lower_bound(
        m=config.m, r=config.m, v=correct, delta=0.0, confidence=config.confidence
    )
    summary = AuditSummary(
        "labels",
        "randomized-response",
        "the server: every released bit, the comparisons known",
        config.epsilon_label,
        0.0,
        bound,
        config.confidence,
        broken,
        config.m,
        config.m,
        correct,
        config.seed,
        time.perf_counter() - started,
    )
    return LabelAuditResult(config, summary)
