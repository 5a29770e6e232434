"""The HTML privacy report: recomputed epsilons, the statement, plots, and loud failures."""

from __future__ import annotations

import dp_accounting
import pytest

from fedgaze.audit.report import cumulative_epsilons, privacy_statement, render_report

EVENTS = [
    {"round": 1, "run_id": "r", "noise_multiplier": 1.1, "sample_rate": 0.5, "steps": 2},
    {"round": 2, "run_id": "r", "noise_multiplier": 1.1, "sample_rate": 0.5, "steps": 2},
]
EXPORT = {
    "devices": [
        {"device_id": "d1", "delta": 1e-5, "epsilon": 3.0, "accountant": "rdp", "events": EVENTS},
        {"device_id": "d2", "delta": 1e-5, "epsilon": 0.0, "accountant": "rdp", "events": []},
    ],
    "central": None,
}


def test_cumulative_epsilon_matches_dp_accounting() -> None:
    eps = cumulative_epsilons(EVENTS, 1e-5)
    acc = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(1.1))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, 4))
    assert eps[-1] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert eps[0] < eps[1]


def test_statement_names_unit_epsilon_delta_and_sampling() -> None:
    text = privacy_statement(EXPORT)
    eps = cumulative_epsilons(EVENTS, 1e-5)[-1]
    assert f"epsilon = {eps:.3f}" in text and "delta = 1e-05" in text
    assert "one labelled comparison" in text and "Poisson" in text
    assert "not applied" in text
    assert "no privacy was spent" in privacy_statement({"devices": [], "central": None})


@pytest.mark.slow  # renders a whole HTML report with its charts: seconds
def test_report_is_self_contained_and_flags_problems() -> None:
    evals = [{"round": 1, "accuracy": 0.6, "accuracy_personal": 0.7}]
    good = render_report(EXPORT, source="run", evaluations=evals)
    assert good.count("data:image/png;base64,") == 3 and "http" not in good.replace("https", "")
    assert "verified" in good
    bad = render_report(EXPORT, source="run", problems=["record 3: gap (expected seq 2)"])
    assert "did NOT verify" in bad and "record 3: gap" in bad
