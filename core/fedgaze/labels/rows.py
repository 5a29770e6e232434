"""The label contract: a released preference row, where its bit comes from, and the canonical
digest that binds a reply's rows to its signed record (light: no model or accountant)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

MAX_ID_LENGTH = 200
"""The longest id of a prompt or answer that a release may carry."""

LabelSource = Literal["explicit-first", "implicit-only"]
"""Where a released bit comes from before noise: the person's explicit choice where given,
else the behaviour model's inference (``explicit-first``); or the inference only."""
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)

ComparisonKey = tuple[str, str, str]
"""A comparison as the answering service names it: ``(prompt_id, left_id, right_id)``."""


class ReleasedLabel(BaseModel):
    """One released preference: the comparison's service ids, the randomized-response bit
    (1: the right answer preferred) and the flip rate it was released with. The bit is what left
    the device, never the one before."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    left_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    right_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    right_preferred: int = Field(ge=0, le=1)
    flip_rate: float = Field(gt=0, lt=0.5, allow_inf_nan=False)
    """The probability that randomized response flipped this bit (``1 / (1 + e^eps)``)."""

    @property
    def key(self) -> ComparisonKey:
        """The comparison: ``(prompt_id, left_id, right_id)``."""
        return (self.prompt_id, self.left_id, self.right_id)


def rows_digest(rows: Iterable[ReleasedLabel]) -> str:
    """SHA-256 of the rows as canonical JSON, in the order given (what a record signs)."""
    canonical = json.dumps(
        [[r.prompt_id, r.left_id, r.right_id, r.right_preferred, r.flip_rate] for r in rows],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
