"""The pure parts of bench/alignment_labels.py (explicit shares, the length labeller, release
noise, scoring, the table) on tiny synthetic inputs; and its --quick run on the real data (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.features.matrix import training_queries
from fedgaze.privacy.label_dp import effective_labels, randomized_response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import alignment_labels as al


def test_explicit_shares_are_nested_seeded_and_of_the_right_size() -> None:
    draws = al.explicit_draws(20_000, seed=0, protocol="grouped")
    assert np.array_equal(draws, al.explicit_draws(20_000, seed=0, protocol="grouped"))
    assert not np.array_equal(draws, al.explicit_draws(20_000, seed=1, protocol="grouped"))
    assert not np.array_equal(draws, al.explicit_draws(20_000, seed=0, protocol="chronological"))
    masks = {s: al.explicit_mask(draws, s) for s in al.SHARES}
    assert not masks[0.0].any() and masks[1.0].all()
    assert masks[0.1].mean() == pytest.approx(0.1, abs=0.01)
    assert masks[0.3].mean() == pytest.approx(0.3, abs=0.01)
    assert np.all(masks[0.3][masks[0.1]])  # explicit at 10% stays explicit at 30%


def test_explicit_first_and_the_longer_answer_labeller() -> None:
    lengths = np.array([[10, 20], [30, 5], [7, 7], [0, 1]])
    assert al.longer_answer_bits(lengths).tolist() == [1, 0, 1, 1]  # a tie goes right
    mask = np.array([True, False, True, False])
    truth = np.array([0, 1, 0, 0])
    got = al.explicit_first(mask, truth, al.longer_answer_bits(lengths))
    assert got.tolist() == [0, 0, 0, 1] and got.dtype == np.int64


def test_hide_choices_keeps_only_the_masked_choices() -> None:
    device = generate_cohort(1, seed=0, comparisons_per_device=4)[0]
    queries = training_queries(device.queries)
    assert len(queries) == 4 and all(q.served is not None for q in queries)
    hidden = al.hide_choices(queries, np.array([True, False, True, False]))
    assert [q.is_labelled_comparison for q in hidden] == [True, False, True, False]
    assert [q.preference for q in hidden[::2]] == [q.preference for q in queries[::2]]
    assert all(q.is_labelled_comparison for q in queries)  # the originals are untouched
    assert [q.served for q in hidden] == [q.served for q in queries]


def test_release_noise_is_seeded_and_shared_by_labellers() -> None:
    bits = np.tile([0, 1], 500)
    assert np.array_equal(al.release(bits, None, 0), bits)
    seed = al.rr_seed(2, "chronological", 1.0)
    assert np.array_equal(al.release(bits, 1.0, seed), randomized_response(bits, 1.0, seed=seed))
    seeds = {
        al.rr_seed(s, p, e or 0.0) for s in range(3) for p in al.PROTOCOLS for e in al.EPSILONS
    }
    assert len(seeds) == 3 * len(al.PROTOCOLS) * len(al.EPSILONS)


def _cohort(n: int) -> al.Cohort:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    return al.Cohort(
        devices=[],
        index_rows=[],
        X=np.zeros((n, 2, 1), np.float32),
        y=y,
        lengths=np.column_stack([np.full(n, 100), np.where(y == 1, 200, 50)]),  # longer wins
        owner=np.zeros(n, np.intp),
        queries=[],
    )


def test_score_pools_the_splits_of_a_seed() -> None:
    cohort = _cohort(40)
    results = []
    for fold, test in enumerate((np.arange(0, 40, 2), np.arange(1, 40, 2))):
        truth = cohort.y[test]
        results.append(
            {
                "task": {"protocol": "grouped", "seed": 0, "fold": fold, "folds": 2},
                "test": test,
                "bits": {
                    al.DP_MODEL: {s: truth.copy() for s in al.SHARES},  # always right
                    al.NP_MODEL: {s: 1 - truth for s in al.SHARES},  # always wrong
                },
            }
        )
    summary, diagnostics = al.score(cohort, results)
    cell = summary[al.cell_key("grouped", 0.0, al.DP_MODEL, None)]
    assert cell["accuracy_mean"] == 1.0 and cell["n"] == 40 and cell["n_eff"] == 40
    assert summary[al.cell_key("grouped", 0.0, al.NP_MODEL, None)]["accuracy_mean"] == 0.0
    assert summary[al.cell_key("grouped", 0.0, al.LONGER, None)]["accuracy_mean"] == 1.0
    # Every labeller and share sees the same flips: equal bits give equal released accuracy,
    # and always-right and always-wrong bits stay complementary.
    for eps in al.EPSILONS[1:]:
        acc = {
            (s, lab): summary[al.cell_key("grouped", s, lab, eps)]["accuracy_mean"]
            for s in (0.0, 0.3)
            for lab in al.LABELLERS
        }
        assert acc[0.3, al.DP_MODEL] == acc[0.3, al.LONGER] == acc[0.0, al.DP_MODEL]
        assert acc[0.0, al.NP_MODEL] == pytest.approx(1 - acc[0.0, al.DP_MODEL])
        assert "expected_from_no_noise" in summary[al.cell_key("grouped", 0.3, al.NP_MODEL, eps)]
    assert diagnostics[f"grouped|{al.DP_MODEL}|agrees with longer"] == 1.0
    assert diagnostics[f"grouped|{al.NP_MODEL}|right share"] == pytest.approx(1 - cohort.y.mean())


def test_cells_and_the_table() -> None:
    cell = al.summarize_cell([0.6, 0.7, 0.8], 100)
    assert cell["accuracy_mean"] == pytest.approx(0.7)
    assert cell["n_eff"] == pytest.approx(effective_labels(100, 0.7)) == pytest.approx(16.0)
    assert al.format_cell(cell) == "0.700 ± 0.082 (16)"
    summary = {
        al.cell_key("chronological", s, lab, e): cell
        for s in al.SHARES
        for lab in al.LABELLERS
        for e in al.EPSILONS
    }
    lines = al.render_table(summary, "chronological")
    assert lines[0] == "| explicit share | labeller | eps none | eps 8 | eps 4 | eps 2 | eps 1 |"
    assert len(lines) == 2 + 3 * len(al.LABELLERS) + 1  # one row at 100%: no labeller used
    assert lines[2] == f"| 0% | {al.DP_MODEL} | " + " | ".join(["0.700 ± 0.082 (16)"] * 5) + " |"
    assert lines[-1].startswith("| 100% | (every label explicit) |")
    assert al.render_table({}, "grouped")[2].endswith("| - | - | - | - | - |")


@pytest.mark.realdata
def test_quick_run_on_the_real_data(tmp_path: Path) -> None:
    from shared_data import IFLLM_ROOT

    if not IFLLM_ROOT.is_dir():
        pytest.skip(f"real IFLLM data not found at {IFLLM_ROOT}")
    out, js = tmp_path / "results.md", tmp_path / "labels.json"
    script = Path(al.__file__)
    args = ["--quick", "--data", str(IFLLM_ROOT), "--out", str(out), "--json", str(js)]
    subprocess.run([sys.executable, str(script), *args], check=True, timeout=300)
    result = json.loads(js.read_text(encoding="utf-8"))
    assert result["config"]["folds"] == 2 and result["config"]["seeds"] == [0]
    full = result["summary"][al.cell_key("grouped", 1.0, al.DP_MODEL, None)]
    assert full["accuracy_mean"] == 1.0 and full["n"] == result["config"]["comparisons"]
    text = out.read_text(encoding="utf-8")
    assert f"<!-- {al.MARKER}:begin -->" in text and al.HEADING in text
