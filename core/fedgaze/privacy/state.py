"""The device's persisted privacy ledger: every DP-SGD charge and label release it ever made.

The ledger is a JSON file on the device (``{"format": 2, "events": [...], "labels": [...]}``;
format 1, without ``labels``, is still read). Each event is one local training run: its Opacus
accountant entry ``(noise_multiplier, sample_rate, steps)`` plus the ``(run_id, round)`` it was
made for. Each label release (:class:`LabelEvent`) holds the randomized-response bits it
released, so a comparison is released once and a retry replays the stored outcome. Epsilon is
recomputed from the full history, so it is cumulative across rounds and restarts; label
releases compose in parallel over comparisons (:mod:`fedgaze.privacy.label_dp`), so they add
one randomized response at the largest epsilon_label released.

Retries: a ``(run_id, round)`` is charged at most once. :meth:`PrivacyState.with_event` refuses
a second event for a key already present (:class:`RoundAlreadyCharged`); ``dp_train`` answers a
retry by replaying the recorded run bit for bit (same inputs, the recorded secret noise seed)
instead of training anew, so a retry releases nothing that has not already been paid for.

Writes are atomic (temporary file in the same directory, flush, fsync, ``os.replace``, fsync
of the directory). A missing file is a fresh ledger; an unreadable or invalid one raises
:class:`PrivacyStateError` naming the file, and is never silently reset, because resetting the
ledger would reset the privacy budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedgaze.atomic import write_json_atomic
from fedgaze.labels.rows import ComparisonKey, ReleasedLabel
from fedgaze.privacy.accounting import AccountantName, HistoryEntry, epsilon_for

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)


class PrivacyStateError(ValueError):
    """The privacy state file is unreadable or invalid; the message names the file."""


class RoundAlreadyCharged(RuntimeError):
    """A (run_id, round) that the ledger already charged was asked to be charged again."""


class PrivacyEvent(BaseModel):
    """One charged local training run.

    ``input_digest`` and ``output_digest`` fingerprint what was trained on and what was released;
    ``noise_seed`` is the secret seed of that run's noise and sampling, kept on the device only
    so that a retried round can be replayed exactly (see ``dp_train``). ``max_grad_norm`` (the
    clipping norm; None in events written before it was recorded) goes into the signed ledger.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1)
    round: int = Field(ge=0)
    noise_multiplier: float = Field(gt=0, allow_inf_nan=False)
    sample_rate: float = Field(gt=0, le=1)
    steps: int = Field(ge=1)
    max_grad_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    input_digest: str = ""
    output_digest: str = ""
    noise_seed: int | None = Field(default=None, ge=0)

    @property
    def key(self) -> tuple[str, int]:
        """The ``(run_id, round)`` this event charged."""
        return (self.run_id, self.round)

    @property
    def entry(self) -> HistoryEntry:
        """The Opacus accountant history entry ``(noise_multiplier, sample_rate, steps)``."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


class LabelEvent(BaseModel):
    """One label release: the comparisons released for the first time at ``(run_id, round)``.

    ``after_charges`` is how many DP-SGD events the state held when it was made (its place in
    the device's history); ``rows`` are the released bits, each a comparison released once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1)
    round: int = Field(ge=0)
    epsilon_label: float = Field(gt=0, allow_inf_nan=False)
    flip_rate: float = Field(gt=0, lt=0.5)
    source: str = Field(min_length=1)
    after_charges: int = Field(ge=0)
    rows: tuple[ReleasedLabel, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        """The ``(run_id, round)`` of the labels message this release answered."""
        return (self.run_id, self.round)


class LabelAlreadyReleased(RuntimeError):
    """A comparison or a labels round was released twice; nothing was added."""


@dataclass(frozen=True)
class PrivacyState:
    """Immutable ledger of privacy events; every change returns a new state."""

    events: tuple[PrivacyEvent, ...] = ()
    labels: tuple[LabelEvent, ...] = ()

    def __post_init__(self) -> None:
        seen: set[tuple[str, int]] = set()
        for event in self.events:
            if event.key in seen:
                raise RoundAlreadyCharged(f"run {event.run_id!r} round {event.round} twice")
            seen.add(event.key)
        rounds: set[tuple[str, int]] = set()
        released: set[ComparisonKey] = set()
        for label in self.labels:
            if label.key in rounds:
                raise LabelAlreadyReleased(f"labels of run {label.run_id!r} round {label.round}")
            rounds.add(label.key)
            for row in label.rows:
                if row.key in released:
                    raise LabelAlreadyReleased(f"comparison {row.key} released twice")
                released.add(row.key)

    @property
    def history(self) -> list[HistoryEntry]:
        """Opacus accountant history of all events, in order."""
        return [e.entry for e in self.events]

    @property
    def label_epsilon(self) -> float | None:
        """The largest epsilon_label any comparison was released at (None: no release)."""
        return max((e.epsilon_label for e in self.labels if e.rows), default=None)

    def epsilon(self, delta: float, accountant: AccountantName = "rdp") -> float:
        """Cumulative epsilon of every charge and label release so far, at ``delta``."""
        return epsilon_for(self.history, delta, accountant, self.label_epsilon)

    def released(self) -> dict[ComparisonKey, ReleasedLabel]:
        """Every comparison released so far, by ``(prompt_id, left_id, right_id)``."""
        return {row.key: row for event in self.labels for row in event.rows}

    def rows_before(self, event: LabelEvent) -> tuple[ReleasedLabel, ...]:
        """The rows released before ``event`` (in release order); a labels reply resends them."""
        rows: list[ReleasedLabel] = []
        for other in self.labels:
            if other.key == event.key:
                return tuple(rows)
            rows.extend(other.rows)
        raise KeyError(f"label release {event.key} is not in the state")

    def find_labels(self, run_id: str, round: int) -> LabelEvent | None:
        """The label release made for ``(run_id, round)``, if any."""
        return next((e for e in self.labels if e.key == (run_id, round)), None)

    def with_labels(self, event: LabelEvent) -> PrivacyState:
        """A new state with ``event`` appended; refuses a round or comparison released before."""
        return PrivacyState(self.events, (*self.labels, event))

    def find(self, run_id: str, round: int) -> PrivacyEvent | None:
        """The event charged for ``(run_id, round)``, if any."""
        return next((e for e in self.events if e.key == (run_id, round)), None)

    def with_event(self, event: PrivacyEvent) -> PrivacyState:
        """A new state with ``event`` appended; refuses a key that was already charged."""
        if self.find(*event.key) is not None:
            raise RoundAlreadyCharged(
                f"run {event.run_id!r} round {event.round} was already charged; not charging again"
            )
        return PrivacyState((*self.events, event), self.labels)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready representation (the on-disk format)."""
        return {
            "format": STATE_FORMAT,
            "events": [e.model_dump() for e in self.events],
            "labels": [e.model_dump() for e in self.labels],
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "<memory>") -> PrivacyState:
        """Parse :meth:`to_json` output; :class:`PrivacyStateError` names ``source`` on failure."""
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            raise PrivacyStateError(
                f"{source}: not a fedgaze privacy state (format {STATE_FORMAT} expected)"
            )
        events, labels = data.get("events"), data.get("labels", [])
        if not isinstance(events, list) or not isinstance(labels, list):
            raise PrivacyStateError(f"{source}: 'events' and 'labels' must be lists")
        try:
            return cls(
                tuple(PrivacyEvent.model_validate(e) for e in events),
                tuple(LabelEvent.model_validate(e) for e in labels),
            )
        except ValidationError as err:
            raise PrivacyStateError(f"{source}: invalid privacy event: {err}") from None
        except (RoundAlreadyCharged, LabelAlreadyReleased) as err:
            raise PrivacyStateError(f"{source}: duplicate event: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> PrivacyState:
        """Read the ledger at ``path``; a missing file is a fresh ledger, a corrupt one an error."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as err:
            raise PrivacyStateError(f"{file}: cannot read privacy state ({err})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PrivacyStateError(
                f"{file}: corrupt privacy state ({err}); refusing to reset the privacy budget"
            ) from None
        return cls.from_json(data, str(file))

    def save(self, path: str | Path) -> None:
        """Write the ledger to ``path`` atomically and durably."""
        write_json_atomic(path, self.to_json())
