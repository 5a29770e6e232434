"""Accepted private preference labels joined to the served texts: TRL's preference format.

:func:`build_preferences` is the pure join. Each stored release (a device's noised bit for a
comparison ``(prompt_id, left_id, right_id)``) becomes one row ``{prompt, chosen, rejected,
flip_rate}``: chosen is the right response's text when the released bit says the right one was
preferred, else the left one's; rejected is the other. A release whose prompt id or response
ids the served log does not know is dropped and reported (counted, the first few listed), never
guessed. The same comparison released by several devices stays as several rows: they are
different people's (noised) preferences; how many is reported.

Writers (atomic: a reader sees the old file or the new one): ``.jsonl`` (one JSON object per
line) or ``.parquet`` (written with polars, a core dependency), chosen by the output's suffix.
:func:`read_run_settings` reads the run's ``run-start`` settings from its server ledger.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedgaze.atomic import write_bytes_atomic
from fedgaze.labels.rows import ComparisonKey
from fedgaze.labels.served import ServedLog
from fedgaze.labels.store import StoredLabel

OutputFormat = Literal["jsonl", "parquet"]
FORMATS: dict[str, OutputFormat] = {".jsonl": "jsonl", ".parquet": "parquet"}
COLUMNS = ("prompt", "chosen", "rejected", "flip_rate")
EXAMPLES = 5
"""How many ids of each kind of dropped release are listed."""

UNKNOWN_PROMPT = "prompt id not in the served log"
UNKNOWN_RESPONSE = "response id not in the served log under that prompt"


class ExportError(ValueError):
    """The export cannot be written as asked; the message says why."""


@dataclass(frozen=True)
class PreferenceRow:
    """One preference pair in TRL's format, with the flip rate its bit was released with."""

    prompt: str
    chosen: str
    rejected: str
    flip_rate: float

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "flip_rate": self.flip_rate,
        }


@dataclass(frozen=True)
class Dropped:
    """Releases dropped for one reason: how many, and the first few ids (as text)."""

    reason: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ExportResult:
    """The exported rows and what the join did (for the summary and the dataset card)."""

    rows: tuple[PreferenceRow, ...]
    releases: int
    """Stored releases read."""
    devices: int
    """Distinct devices among the stored releases."""
    exported_devices: int
    """Distinct devices among the exported rows."""
    run_keys: tuple[str, ...]
    """The run keys of the stored releases, in order of first appearance."""
    comparisons: int
    """Distinct comparisons among the exported rows."""
    shared_comparisons: int
    """Exported comparisons released by more than one device (every release kept)."""
    shared_rows: int
    """Exported rows of those comparisons."""
    flip_rates: tuple[tuple[float, int], ...]
    """Each flip rate among the exported rows with its row count, smallest rate first."""
    dropped: tuple[Dropped, ...]

    @property
    def dropped_count(self) -> int:
        return sum(d.count for d in self.dropped)


def epsilon_label(rate: float) -> float:
    """The label-DP epsilon of randomized response with flip rate ``rate``: ``ln((1-r)/r)``."""
    if not (0 < rate < 0.5):
        raise ValueError(f"a flip rate must be in (0, 0.5), got {rate!r}")
    return math.log((1 - rate) / rate)


def build_preferences(stored: Iterable[StoredLabel], served: ServedLog) -> ExportResult:
    """Join stored releases to the served texts (pure; see the module docstring)."""
    rows: list[PreferenceRow] = []
    devices: set[str] = set()
    exported_devices: set[str] = set()
    run_keys: dict[str, None] = {}
    by_comparison: Counter[ComparisonKey] = Counter()
    rates: Counter[float] = Counter()
    drops: dict[str, tuple[int, list[str]]] = {}
    releases = 0

    def drop(reason: str, example: str) -> None:
        count, examples = drops.get(reason, (0, []))
        if len(examples) < EXAMPLES and example not in examples:
            examples.append(example)
        drops[reason] = (count + 1, examples)

    for item in stored:
        releases += 1
        devices.add(item.device)
        run_keys.setdefault(item.run_key, None)
        label = item.label
        prompt = served.get(label.prompt_id)
        if prompt is None:
            drop(UNKNOWN_PROMPT, label.prompt_id)
            continue
        left = served.response(label.prompt_id, label.left_id)
        right = served.response(label.prompt_id, label.right_id)
        if left is None or right is None:
            pairs = ((label.left_id, left), (label.right_id, right))
            missing = ", ".join(rid for rid, text in pairs if text is None)
            drop(UNKNOWN_RESPONSE, f"{label.prompt_id}: {missing}")
            continue
        chosen, rejected = (right, left) if label.right_preferred else (left, right)
        rows.append(PreferenceRow(prompt, chosen, rejected, label.flip_rate))
        exported_devices.add(item.device)
        by_comparison[label.key] += 1
        rates[label.flip_rate] += 1
    shared = [n for n in by_comparison.values() if n > 1]
    return ExportResult(
        rows=tuple(rows),
        releases=releases,
        devices=len(devices),
        exported_devices=len(exported_devices),
        run_keys=tuple(run_keys),
        comparisons=len(by_comparison),
        shared_comparisons=len(shared),
        shared_rows=sum(shared),
        flip_rates=tuple(sorted(rates.items())),
        dropped=tuple(
            Dropped(reason, count, tuple(examples)) for reason, (count, examples) in drops.items()
        ),
    )


# ------------------------------------------------------------------------------ writers


def output_format(path: str | Path) -> OutputFormat:
    """The format an output path asks for by its suffix; ExportError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ExportError(
            f"{path}: unknown output format {suffix or '(no suffix)'!r}; "
            "name the file .jsonl or .parquet"
        )
    return FORMATS[suffix]


def render_jsonl(rows: Iterable[PreferenceRow]) -> bytes:
    """One JSON object per row and line (UTF-8, texts unescaped)."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def render_parquet(rows: Iterable[PreferenceRow]) -> bytes:
    """The rows as a parquet file with columns :data:`COLUMNS` (written by polars, a core
    dependency: no extra needed; pyarrow and ``datasets`` read it)."""
    import polars as pl

    items = list(rows)
    frame = pl.DataFrame(
        {
            "prompt": [r.prompt for r in items],
            "chosen": [r.chosen for r in items],
            "rejected": [r.rejected for r in items],
            "flip_rate": [r.flip_rate for r in items],
        },
        schema={
            "prompt": pl.String,
            "chosen": pl.String,
            "rejected": pl.String,
            "flip_rate": pl.Float64,
        },
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def write_preferences(path: str | Path, rows: Iterable[PreferenceRow]) -> OutputFormat:
    """Write ``rows`` to ``path`` atomically in the format its suffix names; returns it."""
    fmt = output_format(path)
    data = render_jsonl(rows) if fmt == "jsonl" else render_parquet(rows)
    write_bytes_atomic(path, data)
    return fmt


# ------------------------------------------------------------------------------ the run


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class RunSettings:
    """What the run's server ledger says about the labels (None: not recorded)."""

    settings: Mapping[str, Any] | None
    """The ``run-start`` record's settings."""
    problems: tuple[str, ...]
    """Why the ledger could not be read or does not verify (empty: it verifies)."""
    release_deltas: tuple[float, ...] = ()
    """The distinct ``delta`` of the accepted ``label-release`` records of the run's
    ``labels-round`` records: the delta each device states its total spend at."""

    @property
    def labels(self) -> Mapping[str, Any] | None:
        """The labels settings (``epsilon_label``, ``source``): a ``labels`` entry, or the
        flat ``epsilon_label`` and ``label_source``; None when off or absent."""
        settings = self.settings or {}
        value = settings.get("labels")
        if isinstance(value, Mapping):
            return value
        if settings.get("epsilon_label") is not None:
            return {
                "epsilon_label": settings["epsilon_label"],
                "source": settings.get("label_source"),
            }
        return None

    @property
    def delta(self) -> float | None:
        """The settings' delta (the labels entry's, else their own); None if absent."""
        for source in (self.labels or {}, self.settings or {}):
            value = _number(source.get("delta"))
            if value is not None:
                return value
        return None


def _release_deltas(bodies: Iterable[Mapping[str, Any]]) -> tuple[float, ...]:
    """The distinct deltas of the accepted label-release records in labels-round bodies."""
    from fedgaze.ledger.records import LedgerRecord

    found: set[float] = set()
    for body in bodies:
        accepted = body.get("accepted")
        for line in accepted if isinstance(accepted, list) else []:
            try:
                value = _number(LedgerRecord.parse(line).body.get("delta"))
            except (TypeError, ValueError):
                continue
            if value is not None:
                found.add(value)
    return tuple(sorted(found))


def read_run_settings(ledger: str | Path) -> RunSettings:
    """The ``run-start`` settings and the label releases' deltas of the server ledger at
    ``ledger``, from verified records only; a missing, unreadable or damaged ledger is
    reported in ``problems``, never fatal."""
    from fedgaze.ledger.contract import RecordKind
    from fedgaze.ledger.records import verify_sqlite

    path = Path(ledger)
    if not path.exists():
        return RunSettings(None, (f"{path}: no server ledger",))
    try:
        report = verify_sqlite(path)
    except (OSError, ValueError) as err:
        return RunSettings(None, (f"{path}: cannot read the server ledger ({err})",))
    settings = next(
        (
            r.body.get("settings")
            for r in report.records
            if r.kind == RecordKind.RUN_START and isinstance(r.body.get("settings"), dict)
        ),
        None,
    )
    problems = tuple(f"{path}: {p}" for p in report.problems[:3])
    if settings is None and not problems:
        problems = (f"{path}: no run-start record",)
    deltas = _release_deltas(r.body for r in report.records if r.kind == RecordKind.LABELS_ROUND)
    return RunSettings(settings, problems, deltas)
