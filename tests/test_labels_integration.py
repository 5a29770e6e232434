"""A real local federation with a labels round: SuperLink and SuperNodes over loopback gRPC with
TLS, devices releasing preference labels with label DP, the server storing them, the audit
recomputing them, and the export joining them with the served log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fedgaze.audit.verify import audit_path, export_events
from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.federation.rundir import RunLayout
from fedgaze.labels.release import releasable
from fedgaze.labels.store import stored_labels
from fedgaze.ledger.contract import RecordKind
from fedgaze.local.demo import FederationOptions, run_local_federation
from fedgaze.privacy.label_dp import flip_rate
from fedgaze.server.status import run_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NODES, SEED = 3, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    run_dir = tmp_path_factory.mktemp("labels") / "run"
    out = io.StringIO()
    summary = run_local_federation(
        FederationOptions(
            nodes=NODES, rounds=1, run_dir=run_dir, seed=SEED, epsilon_budget=8.0, epsilon_label=2.0
        ),
        Console(file=out, width=200),
    ).to_json()
    return run_dir, summary, out.getvalue()


def test_every_comparison_is_released_once_and_stored(
    run: tuple[Path, dict[str, Any], str],
) -> None:
    run_dir, summary, shown = run
    cohort = generate_cohort(NODES, seed=SEED)
    expected = {
        (q.served.prompt_id, q.served.response_left_id, q.served.response_right_id)  # type: ignore[union-attr]
        for d in cohort
        for q in releasable(d.queries)
    }
    stored = list(stored_labels(RunLayout(run_dir).labels))
    assert {s.label.key for s in stored} == expected and len(stored) == len(expected)
    assert {s.label.flip_rate for s in stored} == {flip_rate(2.0)}
    labels = summary["labels"]
    assert labels["stored"] == len(expected) and labels["epsilon_label"] == 2.0
    assert labels["flip_rate"] == pytest.approx(flip_rate(2.0))
    assert f"released {len(expected)} new preference labels" in shown
    assert run_status(run_dir).labels_stored == len(expected)


def test_the_budget_holds_and_the_audit_recomputes_the_release(
    run: tuple[Path, dict[str, Any], str],
) -> None:
    run_dir, summary, _ = run
    audits = audit_path(run_dir)
    assert all(a.ok for a in audits), [p for a in audits for p in a.problems]
    server = next(a for a in audits if a.kind == "server")
    assert server.summary["labels_rounds"] == 1
    for device in summary["devices"]:
        assert device["epsilon_device_state"] <= device["epsilon_budget"] + 1e-9
    released = [a for a in audits if a.kind == "device" and a.summary["labels_released"] > 0]
    assert released
    for audit in released:
        last = audit.device_records[-1]
        assert last.kind == RecordKind.LABEL_RELEASE
        assert audit.summary["epsilon_rdp"] == pytest.approx(last.body["epsilon"], rel=1e-2)
    exported = export_events(audits)
    mechanisms = {e["mechanism"] for d in exported["devices"] for e in d["events"]}
    assert mechanisms == {"dp-sgd", "randomized-response"}


def test_export_joins_the_releases_with_the_served_log(
    run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    run_dir, summary, _ = run
    out = tmp_path / "prefs.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedgaze.cli",
            "alignment",
            "export",
            str(run_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["labels"]["stored"]
    assert all(set(r) == {"prompt", "chosen", "rejected", "flip_rate"} for r in rows)
    assert all(r["chosen"] != r["rejected"] for r in rows)
    card = (tmp_path / "README.md").read_text()
    assert "robust" in card and "label_smoothing" in card
