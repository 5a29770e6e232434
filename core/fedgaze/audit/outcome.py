"""An empirical privacy audit's outcome as text and as a record in a run folder.

Every audit (:mod:`~fedgaze.audit.dirac` gradient canaries, :mod:`~fedgaze.audit.canary` input
canaries, :mod:`~fedgaze.audit.label_audit` label release) reports one JSON-ready mapping
(``to_json()``): its kind, mechanism, threat model, claimed epsilon and delta, lower bound and
confidence, verdict, and the counts behind it. :func:`format_audit` makes the CLI's paragraph
of it; :func:`record_audit` keeps the last one in a run folder, where ``fedgaze audit report``
shows it beside the run's own epsilon (:func:`load_audit`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedgaze.atomic import write_json_atomic
from fedgaze.federation.rundir import RunLayout

__all__ = ["AuditSummary", "format_audit", "load_audit", "record_audit"]


@dataclass(frozen=True)
class AuditSummary:
    """What every audit reports: which mechanism under which threat model, the claim
    (``claimed_epsilon`` at ``delta``) against the lower bound observed at ``confidence``, and
    the counts it rests on (``correct`` of ``guesses`` over ``canaries``). ``broken`` names a
    deliberately broken self-test run (None for a real one)."""

    kind: str
    mechanism: str
    threat_model: str
    claimed_epsilon: float
    delta: float
    epsilon_lower_bound: float
    confidence: float
    broken: str | None
    canaries: int
    guesses: int
    correct: int
    seed: int
    seconds: float

    @property
    def violated(self) -> bool:
        """True when the lower bound exceeds the claim: the guarantee does not hold."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    def to_json(self, **details: Any) -> dict[str, Any]:
        """The JSON record (``--json``, ``--run-dir``), with the kind's own ``details``."""
        return {**asdict(self), "violated": self.violated, **details}


_BROKEN = {
    "noise-off": "noise deliberately switched off",
    "flips-off": "label flips deliberately switched off",
}


def format_audit(result: Mapping[str, Any]) -> str:
    """One readable paragraph: the bound, the claim, the verdict and what it rests on."""
    verdict = (
        "VIOLATED: the mechanism leaks more than its accounting claims"
        if result["violated"]
        else "consistent (an audit can refute a claim, not prove it)"
    )
    broken = result.get("broken")
    note = f" [{_BROKEN.get(broken, f'deliberately broken: {broken}')}]" if broken else ""
    ceiling = result.get("ceiling")
    reach = f"; no claim above {ceiling:.3f} is refutable by this audit" if ceiling else ""
    return (
        f"{str(result['kind']).capitalize()} canary audit of {result['mechanism']}{note} "
        f"({result['threat_model']}): lower bound epsilon >= "
        f"{result['epsilon_lower_bound']:.3f} at {result['confidence']:.1%} confidence from "
        f"{result['guesses']} guesses ({result['correct']} correct) over {result['canaries']} "
        f"canaries; claimed epsilon {result['claimed_epsilon']:.3f} at delta "
        f"{result['delta']:g}: {verdict}{reach}. ({result['seconds']:.1f} s; Steinke, Nasr & "
        "Jagielski 2023.)"
    )


def record_audit(run_dir: Path, result: Mapping[str, Any]) -> Path:
    """Keep ``result`` as the run folder's last audit (atomically); returns the file."""
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a run folder")
    path = RunLayout(run_dir).canary_audit
    stamped = {**result, "recorded": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(path, stamped)
    return path


def load_audit(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's last recorded audit, or None; a damaged record is an error naming it."""
    path = RunLayout(run_dir).canary_audit
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not an audit record ({err})") from None
    needed = ("kind", "claimed_epsilon", "epsilon_lower_bound", "confidence", "violated")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise ValueError(f"{path}: not an audit record (needs {', '.join(needed)})")
    return data
