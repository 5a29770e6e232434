"""``fedgaze train`` (central) and ``fedgaze score`` on real IFLLM folders, via the CLI entry."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from fedgaze.cli.main import main
from fedgaze.data.ifllm import labelled_comparison_counts, load_ifllm
from fedgaze.data.ifllm_subset import write_subset
from shared_data import IFLLM_ROOT

IFLLM = IFLLM_ROOT
TRAIN = ["worker_030da562", "worker_0ff5001d", "worker_1d147b43"]
TEST = ["worker_01e1127e", "worker_19651352"]

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not IFLLM.is_dir(), reason="IFLLM data not available"),
]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_subset_matches_source(tmp_path: Path) -> None:
    sub = write_subset(IFLLM, TEST, tmp_path / "sub")
    counts = labelled_comparison_counts(sub)
    full = labelled_comparison_counts(IFLLM)
    assert counts == {w: full[w] for w in TEST}
    a, b = load_ifllm(sub), load_ifllm(IFLLM, workers=TEST)
    assert [len(q.gaze) for d in a.devices for q in d.queries] == [
        len(q.gaze) for d in b.devices for q in d.queries
    ]


def test_train_then_score_unseen_workers(tmp_path: Path) -> None:
    train = write_subset(IFLLM, TRAIN, tmp_path / "train")
    test = write_subset(IFLLM, TEST, tmp_path / "test")
    # One unseen worker's traces are gone: the model must still answer for its comparisons.
    (test / "user_behavior" / TEST[0]).unlink()
    model = tmp_path / "model"
    assert main(["train", "--data", str(train), "--out", str(model), "--epochs", "3"]) == 0
    assert (model / "model.json").exists() and list(model.glob("weights-*.npz"))
    preds = tmp_path / "preds.csv"
    assert main(["score", "--model", str(model), "--data", str(test), "--out", str(preds)]) == 0
    rows = _rows(preds)
    assert list(rows[0]) == ["query_ID", "p_right"]
    expected = {q.query_id for d in load_ifllm(test).devices for q in d.comparisons()}
    assert {int(r["query_ID"]) for r in rows} >= expected
    assert len(expected) == sum(labelled_comparison_counts(test).values())
    assert all(0.0 <= float(r["p_right"]) <= 1.0 for r in rows)


def test_train_with_epsilon_records_privacy(tmp_path: Path) -> None:
    train = write_subset(IFLLM, TRAIN, tmp_path / "train")
    model = tmp_path / "model"
    args = ["train", "--data", str(train), "--out", str(model), "--epochs", "2", "--epsilon", "8"]
    assert main(args) == 0
    manifest = (model / "model.json").read_text()
    assert '"epsilon": ' in manifest and '"unit": "one labelled comparison"' in manifest


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "m")]) == 2
    assert "query_logs_table" in capsys.readouterr().err
    broken = tmp_path / "broken_model"
    shutil.copytree(IFLLM / "user_behavior" / TEST[0], broken)  # a folder, but not a model
    code = main(
        ["score", "--model", str(broken), "--data", str(IFLLM), "--out", str(tmp_path / "p")]
    )
    assert code == 2
    assert "model.json" in capsys.readouterr().err


def test_features_command_writes_one_row_per_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import polars as pl

    from fedgaze.features.v2 import SIDE_FEATURE_NAMES

    data = write_subset(IFLLM, TEST, tmp_path / "data")
    out = tmp_path / "features.parquet"
    assert main(["features", "--data", str(data), "--out", str(out), "--jobs", "2"]) == 0
    frame = pl.read_parquet(out)
    expected = [
        q.query_id
        for d in load_ifllm(data).devices
        for q in d.queries
        if q.pairwise and q.response_right is not None
    ]
    assert frame.columns[0] == "query_ID" and sorted(frame["query_ID"]) == sorted(expected)
    assert frame.width == 4 + 2 * len(SIDE_FEATURE_NAMES)
    assert f"{len(expected)} comparisons" in capsys.readouterr().out
    bad = tmp_path / "features.xlsx"
    assert main(["features", "--data", str(data), "--out", str(bad)]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err and not bad.exists()
