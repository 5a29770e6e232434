"""The pure parts of bench/text_reward_benchmark.py (labelled subsets, training targets, the
longer-answer baseline, the embedding cache, recipe choice, the table and its reading) on tiny
inputs; and its --quick run on the real data (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared_data import IFLLM_ROOT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import alignment_labels as al
import text_reward_benchmark as trb
from fedgaze.text.features import comparison_features


def test_labelled_subsets_are_exact_nested_and_seeded() -> None:
    draws = al.explicit_draws(1000, seed=0, protocol="grouped")[:517]
    masks = {s: trb.labelled_mask(draws, s) for s in (0.0, 0.1, 0.3, 1.0)}
    assert [int(m.sum()) for m in masks.values()] == [0, 52, 155, 517]
    assert np.all(masks[0.3][masks[0.1]])  # labelled at 10% stays labelled at 30%
    assert trb.labelled_mask(draws[:3], 0.1).sum() == 1  # a positive share labels at least one
    other = al.explicit_draws(1000, seed=1, protocol="grouped")[:517]
    assert not np.array_equal(trb.labelled_mask(other, 0.1), masks[0.1])


def test_training_targets_explicit_only_and_with_the_implicit_rest() -> None:
    y = np.array([1, 0, 1, 0])
    labelled = np.array([True, False, False, True])
    rows, targets = trb.training_targets(y, labelled, None)
    assert rows.tolist() == [0, 3] and targets.tolist() == [1.0, 0.0]
    rows, targets = trb.training_targets(y, labelled, np.array([0.9, 0.2, 0.7, 0.6]))
    assert rows.tolist() == [0, 1, 2, 3] and targets.dtype == np.float32
    assert targets.tolist() == pytest.approx([1.0, 0.2, 0.7, 0.0])


def test_the_longer_answer_baseline_matches_the_length_labeller() -> None:
    lengths = np.array([[10, 20], [30, 5], [7, 7], [0, 1]])
    logits = trb.longer_answer_logits(lengths)
    assert ((logits > 0).astype(int) == al.longer_answer_bits(lengths)).all()  # ties go right
    assert np.argsort(logits).tolist() == [1, 2, 3, 0]


class _CountingEncoder:
    name, version, dim = "fake", "0", 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen += list(texts)
        return np.array([[len(t), t.count("a"), 1.0, 0.5] for t in texts], dtype=np.float32)


def test_the_cache_embeds_each_distinct_text_once_and_changes_nothing() -> None:
    prompts, lefts, rights = ["p", "p", "q"], ["a", "bb", "a"], ["bb", "c", "aa"]
    raw = _CountingEncoder()
    cached = trb.CachedEncoder(_CountingEncoder())
    want = comparison_features(raw, prompts, lefts, rights)
    got = comparison_features(cached, prompts, lefts, rights)
    np.testing.assert_array_equal(got, want)
    assert sorted(cached._encoder.seen) == sorted({*prompts, *lefts, *rights})
    assert cached.encoded == 6 and len(raw.seen) > 6
    assert cached.encode([]).shape == (0, 4)


def _sel(candidate: int, fold: int, acc: float, auc: float) -> dict[str, Any]:
    return {"task": {"candidate": candidate, "fold": fold}, "accuracy": acc, "auc": auc}


def test_pick_recipe_by_mean_inner_auc_then_accuracy_then_order() -> None:
    results = [_sel(c, f, 0.5, 0.5) for c in range(len(trb.GRID)) for f in range(2)]
    results[6:8] = [_sel(3, 0, 0.6, 0.70), _sel(3, 1, 0.6, 0.60)]
    results[10:12] = [_sel(5, 0, 0.7, 0.64), _sel(5, 1, 0.7, 0.66)]
    recipe, scores = trb.pick_recipe(results)
    assert recipe == trb.GRID[5]  # same mean AUC (0.65) as candidate 3, better accuracy
    assert scores[3]["auc_mean"] == pytest.approx(0.65) and scores[0]["outer_folds"] == 2
    assert trb.pick_recipe([_sel(c, 0, 0.5, 0.5) for c in range(len(trb.GRID))])[0] == trb.GRID[0]


def _summary(gain: float) -> dict[str, Any]:
    out = {}
    for p in trb.PROTOCOLS:
        for i, (row, _, _) in enumerate(trb.ROWS):
            for c in trb.COLUMNS:
                m = 0.55 if row == trb.LONGER else 0.55 + gain + 0.001 * i
                out[trb.cell_key(p, row, c)] = trb.summarize(
                    [{"accuracy": m, "auc": m + 0.05, "n": 10}, {"accuracy": m, "auc": m, "n": 10}]
                )
    return out


def test_summary_table_and_reading() -> None:
    cell = trb.summarize([{"accuracy": 0.6, "auc": 0.7, "n": 5}, {"accuracy": 0.5, "auc": 0.6}])
    assert cell["accuracy_mean"] == pytest.approx(0.55) and cell["auc_std"] == pytest.approx(0.05)
    assert trb.format_pair(cell) == "0.550 ± 0.050 | 0.650 ± 0.050"
    summary = _summary(0.04)
    del summary[trb.cell_key("grouped", "explicit 30%", trb.FEDERATED)]
    table = trb.render_table(summary, "grouped")
    assert len(table) == 2 + len(trb.ROWS)
    assert all(line.count("|") == 6 for line in table)
    assert table[0].startswith("| training labels | central, non-private: accuracy")
    assert table[5].endswith("| - | - |")  # the missing cell
    assert trb.format_pair(summary[trb.cell_key("grouped", trb.LONGER, trb.CENTRAL)]) in table[2]
    agree = {trb.CENTRAL: 0.61, trb.FEDERATED: 0.555}
    verdict, text = trb.reading(_summary(0.04), agree)
    assert "met centrally (accuracy / AUC +4.5 / +4.5 points), met federated" in verdict
    assert "in 8 of the 8" in text and "on 0.610 (non-private behaviour model) and 0.555" in text
    assert "not met centrally" in trb.reading(_summary(0.02), agree)[0]


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_run_on_the_real_data(tmp_path: Path) -> None:
    if not (IFLLM_ROOT / "query_logs_table.csv.gz").exists():
        pytest.skip("real IFLLM data not present")
    out, js = tmp_path / "results.md", tmp_path / "out.json"
    script = Path(__file__).resolve().parents[1] / "bench" / "text_reward_benchmark.py"
    cmd = [sys.executable, str(script), "--quick", "--out", str(out), "--json", str(js)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    text = out.read_text(encoding="utf-8")
    assert "<!-- text-reward:begin -->" in text and trb.HEADING in text
    assert "**grouped**" in text and "**chronological**" in text and "Target (" in text
    result = json.loads(js.read_text(encoding="utf-8"))
    for p in trb.PROTOCOLS:
        for row, _, _ in trb.ROWS:
            for c in trb.COLUMNS:
                cell = result["summary"][trb.cell_key(p, row, c)]
                assert 0 <= cell["accuracy_mean"] <= 1 and 0 <= cell["auc_mean"] <= 1
    assert result["config"]["seeds"] == [0] and result["scoring_cost"]["responses_per_s_cpu"] > 0
    assert all(c["max_device_epsilon"] <= 8.0 + 1e-9 for c in result["cells"] if "declined" in c)
