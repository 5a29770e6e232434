"""The server's signed ledger of a run, and its checks of every device's signed record.

``run_dir/server_ledger.db`` (:class:`fedgaze.ledger.records.SqliteLedger`) signed with
``run_dir/server_key.pem`` holds a ``run-start`` record (the settings) and one ``server-round``
record per round: the participants (device pseudonyms), every accepted device ``dp-round``
record (the full signed line, byte for byte as the device stored it), every refused update with
its reason (a record the server refused, or an update :mod:`fedgaze.server.validate` refused),
the aggregation (``fedavg``, ``trimmed-mean``, ``median`` or ``dp-fedavg``) and ``central_dp``
(the client-level DP parameters and epsilon, or null when that is off).

A trained reply is aggregated only if :func:`check_device_record` accepts its record: the hash
and signature hold, the key is the one pinned for that device in this run (first sight pins
it), the record is for this run, round, noise multiplier and clipping norm, it matches the
DP parameters the reply declares, and its epsilon is within the server's cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedgaze.federation.protocol import DP_EVENT_METRICS, DeviceReport
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import ClientDPSpend, LabelPlan, RoundPlan, ServerSettings
from fedgaze.labels.rows import ReleasedLabel, rows_digest
from fedgaze.ledger.contract import RecordKind, software_versions
from fedgaze.ledger.keys import load_or_create_signing_key, pseudonym
from fedgaze.ledger.records import LedgerError, LedgerRecord, SqliteLedger, verify_sqlite

# Settings a resumed run may change: how long to wait and how many rounds to run. Everything
# that shapes the model or the privacy charge must stay as the run started.
RESUME_MUTABLE = frozenset(
    {"rounds", "min_nodes", "node_wait_timeout", "round_timeout", "resume", "run_dir"}
)


class ResumeError(RuntimeError):
    """The run in a run directory cannot be started or resumed as asked; the message says why."""


@dataclass(frozen=True)
class LedgerProgress:
    """How far the run recorded in a server ledger got."""

    settings: dict[str, Any] | None
    """The settings of the ``run-start`` record (None: no run was started)."""
    last_round: int
    """The last round with a ``server-round`` record: every round up to it is committed."""
    resumes: int
    labels_rounds: int = 0
    """How many ``labels-round`` records the run committed."""


def ledger_progress(run_dir: str | Path) -> LedgerProgress:
    """Read (and verify) the server ledger of ``run_dir``; an empty one when there is none.

    Raises :class:`ResumeError` when the ledger does not verify: resuming on top of a damaged
    ledger would hide the damage.
    """
    path = RunLayout(Path(run_dir)).server_ledger
    if not path.exists():
        return LedgerProgress(None, 0, 0)
    try:
        report = verify_sqlite(path)
    except (LedgerError, OSError) as err:
        raise ResumeError(f"{path}: cannot read the server ledger ({err})") from None
    if not report.ok:
        raise ResumeError(
            f"{path}: the server ledger does not verify "
            f"({'; '.join(str(p) for p in report.problems[:3])})"
        )
    settings = next(
        (r.body.get("settings") for r in report.records if r.kind == RecordKind.RUN_START), None
    )
    rounds = [int(r.body["round"]) for r in report.records if r.kind == RecordKind.SERVER_ROUND]
    resumes = sum(r.kind == RecordKind.RUN_RESUME for r in report.records)
    labels = sum(r.kind == RecordKind.LABELS_ROUND for r in report.records)
    return LedgerProgress(settings, max(rounds, default=0), resumes, labels)


def resume_conflicts(original: dict[str, Any], settings: ServerSettings) -> list[str]:
    """The settings that differ from the run's ``run-start`` record and may not (pure).

    Only :data:`RESUME_MUTABLE` may change; anything else (the run key, the DP-SGD plan, the
    model, the aggregation) would make the resumed rounds a different run under the same name.
    """
    new = settings.model_dump()
    # A setting the run-start record lacks (a run started by an older fedgaze) had its default.
    started = {k: original.get(k, ServerSettings.model_fields[k].default) for k in new}
    return [
        f"{key.replace('_', '-')}: the run started with {started[key]!r}, "
        f"the config now says {new[key]!r}"
        for key in sorted(new)
        if key not in RESUME_MUTABLE and started[key] != new[key]
    ]


def check_start(run_dir: str | Path, recorded: LedgerProgress, settings: ServerSettings) -> None:
    """Whether ``settings`` may start (or, with ``settings.resume``, continue) the run recorded
    in ``run_dir``'s ledger; :class:`ResumeError` naming the reason when not (pure).

    A new run never overwrites a recorded one; a resumed run needs one, with the same settings
    (see :func:`resume_conflicts`) and no fewer rounds than it already committed. Checked by
    ``fedgaze server start`` before any process starts and again by the ServerApp.
    """
    if not settings.resume:
        if recorded.settings is not None:
            raise ResumeError(
                f"{run_dir} already holds run {recorded.settings.get('run_key')!r} "
                f"({recorded.last_round} rounds committed); use --resume to continue it, or a "
                "new run_dir"
            )
        return
    if recorded.settings is None:
        raise ResumeError(f"{run_dir} holds no started run: nothing to resume")
    conflicts = resume_conflicts(recorded.settings, settings)
    if conflicts:
        raise ResumeError("cannot resume with changed settings: " + "; ".join(conflicts))
    if settings.rounds < recorded.last_round:
        raise ResumeError(
            f"rounds {settings.rounds} is below the {recorded.last_round} already committed"
        )


@dataclass(frozen=True)
class CentralRound:
    """A round's client-level DP, as the ``central_dp`` of its ``server-round`` record: the
    parameters and epsilon so far, the expected device count (the fixed denominator), and how
    many of the ``updates`` had to be clipped. With client sampling the denominator is the
    sampling fraction times the devices connected at the start."""

    spend: ClientDPSpend
    expected_devices: float
    clipped: int
    updates: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.spend.to_json(),
            "expected_devices": self.expected_devices,
            "clipped": self.clipped,
            "updates": self.updates,
        }


class RecordRefused(ValueError):
    """A device's update is excluded from aggregation; the message is the recorded reason."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_RECORD_NAME = {RecordKind.DP_ROUND: "dp-record", RecordKind.LABEL_RELEASE: "label-release record"}


def _signed(line: str | None, kind: RecordKind, pinned_key: str | None) -> LedgerRecord:
    """The verified record of ``kind`` in ``line``, signed by the device's pinned key (pure)."""
    name = _RECORD_NAME[kind]
    if line is None:
        reply = "trained" if kind == RecordKind.DP_ROUND else "labels"
        raise RecordRefused(f"{reply} reply carries no signed {name}")
    try:
        record = LedgerRecord.parse_checked(line)
    except ValueError as err:
        raise RecordRefused(f"{name} does not verify: {err}") from None
    if record.kind != kind:
        raise RecordRefused(f"{name} is of kind {record.kind!r}, not {kind.value!r}")
    if pinned_key is not None and record.signer != pinned_key:
        raise RecordRefused(f"{name} signed by another key than this device used earlier")
    if record.body.get("device") != pseudonym(record.signer):
        raise RecordRefused(f"{name} names another device than its signer")
    return record


def _as_asked(body: Mapping[str, Any], kind: RecordKind, **asked: object) -> None:
    """RecordRefused naming the first field of the record that is not what the server asked."""
    for name, want in asked.items():
        if body.get(name) != want:
            raise RecordRefused(
                f"{_RECORD_NAME[kind]} {name} is {body.get(name)!r}, the server asked {want!r}"
            )


def _epsilon_within(body: Mapping[str, Any], kind: RecordKind, cap: float | None) -> None:
    """RecordRefused unless the record's epsilon is a number >= 0 within the server's ``cap``."""
    epsilon = body.get("epsilon")
    if not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon < 0:
        raise RecordRefused(f"{_RECORD_NAME[kind]} epsilon {epsilon!r} is not a number >= 0")
    if cap is not None and epsilon > cap:
        raise RecordRefused(f"device epsilon {epsilon:.4g} exceeds the server's cap {cap:g}")


def check_device_record(
    line: str | None,
    *,
    plan: RoundPlan,
    metrics: Mapping[str, float],
    pinned_key: str | None,
    max_device_epsilon: float | None,
) -> LedgerRecord:
    """The device's verified ``dp-round`` record for ``plan``, or :class:`RecordRefused` (pure).

    ``pinned_key`` is the key this device signed with earlier in the run (None: first sight).
    """
    record = _signed(line, RecordKind.DP_ROUND, pinned_key)
    body = record.body
    _as_asked(
        body,
        RecordKind.DP_ROUND,
        run_id=plan.run_key,
        round=plan.server_round,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
    )
    for metric in DP_EVENT_METRICS:
        name = metric.replace("-", "_")
        if metric in metrics and float(metrics[metric]) != float(body.get(name, math.nan)):
            raise RecordRefused(
                f"dp-record {name} {body.get(name)!r} differs from the reply's {metrics[metric]!r}"
            )
    _epsilon_within(body, RecordKind.DP_ROUND, max_device_epsilon)
    return record


def check_label_record(
    line: str | None,
    *,
    plan: LabelPlan,
    rows: tuple[ReleasedLabel, ...],
    pinned_key: str | None,
    max_device_epsilon: float | None,
) -> LedgerRecord:
    """The device's verified ``label-release`` record for ``plan`` and exactly ``rows``, or
    :class:`RecordRefused` (pure).

    Checked: hash, signature, pinned key, signer = named device; the run, round, epsilon_label
    and source asked; a flip rate that is the one of that epsilon_label; the rows' count and
    digest; the new rows' flip rate; an epsilon within the device's stated budget and the cap.
    """
    from fedgaze.privacy.label_dp import flip_rate_matches

    name = _RECORD_NAME[RecordKind.LABEL_RELEASE]
    record = _signed(line, RecordKind.LABEL_RELEASE, pinned_key)
    body = record.body
    _as_asked(
        body,
        RecordKind.LABEL_RELEASE,
        run_id=plan.run_key,
        round=plan.server_round,
        epsilon_label=plan.epsilon_label,
        source=plan.label_source,
    )
    rate = body.get("flip_rate")
    if not isinstance(rate, int | float) or not flip_rate_matches(plan.epsilon_label, rate):
        raise RecordRefused(
            f"{name} flip_rate {rate!r} is not 1/(1+e^{plan.epsilon_label:g}), the flip rate of "
            "the epsilon_label it states"
        )
    released, resent = body.get("released"), body.get("resent")
    if not (isinstance(released, int) and isinstance(resent, int) and min(released, resent) >= 0):
        raise RecordRefused(f"{name} released/resent are not counts")
    if body.get("rows") != len(rows) or released + resent != len(rows):
        raise RecordRefused(
            f"{name} states {body.get('rows')!r} rows, the reply carries {len(rows)}"
        )
    if body.get("rows_sha256") != rows_digest(rows):
        raise RecordRefused(f"{name}'s rows_sha256 does not match the rows of the reply")
    wrong = next((i for i in range(resent, len(rows)) if rows[i].flip_rate != rate), None)
    if wrong is not None:
        raise RecordRefused(
            f"labels row {wrong}: flip rate {rows[wrong].flip_rate!r}, the record says {rate!r}"
        )
    _epsilon_within(body, RecordKind.LABEL_RELEASE, max_device_epsilon)
    budget = body.get("epsilon_budget")
    if isinstance(budget, int | float) and body["epsilon"] > budget * (1 + 1e-9):
        raise RecordRefused(f"{name} epsilon {body['epsilon']:.4g} exceeds its budget {budget:g}")
    return record


@dataclass
class Refusal:
    """An update the server did not aggregate."""

    node: int
    device_id: str
    device: str | None  # pseudonym, when the record's signature held
    reason: str

    def ledger_entry(self) -> dict[str, Any]:
        """What the server ledger keeps (pseudonym, not the device's name)."""
        return {"node": self.node, "device": self.device, "reason": self.reason}


@dataclass
class RoundBook:
    """The accepted records and refusals of one round."""

    accepted: list[LedgerRecord] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def reject_admitted(self, report: DeviceReport, reason: str) -> None:
        """Move the record just admitted for ``report`` from accepted to refused: its signed
        record held but its update failed the server's checks (:mod:`fedgaze.server.validate`)."""
        record = self.accepted.pop()
        self.refused.append(
            Refusal(report.node_id, report.device_id, pseudonym(record.signer), reason)
        )


class ServerLedger:
    """The run's server ledger plus the per-run key pins of devices."""

    def __init__(self, run_dir: str | Path) -> None:
        layout = RunLayout(Path(run_dir))
        self._ledger = SqliteLedger(
            layout.server_ledger, load_or_create_signing_key(layout.server_key)
        )
        self._pins: dict[str, str] = {}  # device id -> public key
        self._owners: dict[str, str] = {}  # public key -> device id

    def run_start(self, settings: ServerSettings) -> None:
        self._ledger.append(
            RecordKind.RUN_START,
            {
                "settings": settings.model_dump(),
                "versions": software_versions(),
                "time": _now(),
            },
        )

    def run_resume(self, settings: ServerSettings, from_round: int) -> None:
        """Record that the run continues after ``from_round`` (with these settings)."""
        self._ledger.append(
            RecordKind.RUN_RESUME,
            {
                "after_round": from_round,
                "settings": settings.model_dump(),
                "versions": software_versions(),
                "time": _now(),
            },
        )

    @property
    def pins(self) -> dict[str, str]:
        """Device id -> the public key it signed with in this run (for checkpoints)."""
        return dict(self._pins)

    def restore_pins(self, pins: dict[str, str]) -> None:
        """Pin keys as recorded by a checkpoint (a resumed run keeps the first sight's pins)."""
        for device_id, signer in pins.items():
            self._pin(device_id, signer)

    def admit(
        self, report: DeviceReport, plan: RoundPlan, book: RoundBook, max_eps: float | None
    ) -> bool:
        """Check a trained reply's record; note it in ``book`` as accepted or refused."""

        def check(pinned: str | None) -> LedgerRecord:
            return check_device_record(
                report.dp_record,
                plan=plan,
                metrics=report.metrics,
                pinned_key=pinned,
                max_device_epsilon=max_eps,
            )

        return self._admit(report, book, check, "dp-record") is not None

    def admit_labels(
        self,
        report: DeviceReport,
        rows: tuple[ReleasedLabel, ...],
        plan: LabelPlan,
        book: RoundBook,
        max_eps: float | None,
    ) -> LedgerRecord | None:
        """Check a labels reply's record against its ``rows``; note it in ``book``."""

        def check(pinned: str | None) -> LedgerRecord:
            return check_label_record(
                report.dp_record,
                plan=plan,
                rows=rows,
                pinned_key=pinned,
                max_device_epsilon=max_eps,
            )

        return self._admit(report, book, check, _RECORD_NAME[RecordKind.LABEL_RELEASE])

    def _admit(
        self,
        report: DeviceReport,
        book: RoundBook,
        check: Callable[[str | None], LedgerRecord],
        name: str,
    ) -> LedgerRecord | None:
        """Run ``check`` with the device's pinned key, then the key-ownership and replay checks."""
        seen = {r.hash for r in book.accepted}
        try:
            record = check(self._pins.get(report.device_id))
            owner = self._owners.get(record.signer)
            if owner is not None and owner != report.device_id:
                raise RecordRefused(f"{name} key already belongs to device {owner!r}")
            if record.hash in seen:
                raise RecordRefused(f"{name} already submitted this round (replay)")
        except RecordRefused as err:
            self.refuse(report, book, str(err))
            return None
        self._pin(report.device_id, record.signer)
        book.accepted.append(record)
        return record

    def refuse(self, report: DeviceReport, book: RoundBook, reason: str) -> None:
        """Note a refused reply in ``book`` (pinning a verified signer's key on first sight)."""
        signer = _signer_of(report.dp_record)
        book.refused.append(
            Refusal(report.node_id, report.device_id, signer and pseudonym(signer), reason)
        )
        if signer is not None and "signed by another key" not in reason:
            self._pin(report.device_id, signer)

    def _pin(self, device_id: str, signer: str) -> None:
        if device_id not in self._pins and signer not in self._owners:
            self._pins[device_id] = signer
            self._owners[signer] = device_id

    def round_end(
        self,
        rnd: int,
        book: RoundBook,
        failures: list[str],
        central_dp: CentralRound | None = None,
        aggregation: str = "fedavg",
    ) -> None:
        self._ledger.append(
            RecordKind.SERVER_ROUND,
            {
                "round": rnd,
                "participants": [r.body["device"] for r in book.accepted],
                "accepted": [r.line() for r in book.accepted],
                "refused": [r.ledger_entry() for r in book.refused],
                "failures": list(failures),
                "aggregation": aggregation if central_dp is None else "dp-fedavg",
                "central_dp": None if central_dp is None else central_dp.to_json(),
                "time": _now(),
            },
        )

    def labels_round(
        self, plan: LabelPlan, book: RoundBook, failures: list[str], stored: int, already: int
    ) -> None:
        """Commit the labels round: the accepted ``label-release`` records (each device's rows
        are in the label store), refusals, failures, and how many rows were newly stored."""
        self._ledger.append(
            RecordKind.LABELS_ROUND,
            {
                "round": plan.server_round,
                "epsilon_label": plan.epsilon_label,
                "source": plan.label_source,
                "participants": [r.body["device"] for r in book.accepted],
                "accepted": [r.line() for r in book.accepted],
                "refused": [r.ledger_entry() for r in book.refused],
                "failures": list(failures),
                "stored": stored,
                "already_stored": already,
                "time": _now(),
            },
        )

    def close(self) -> None:
        self._ledger.close()


def _signer_of(line: str | None) -> str | None:
    """The signer of a record whose hash and signature hold, else None."""
    if line is None:
        return None
    try:
        return LedgerRecord.parse_checked(line).signer
    except ValueError:
        return None
