"""The text reward model end to end: encoder and features, the model, its directory, the Python
API, ``fedgaze reward score|best-of-n`` and central ``fedgaze train --kind text``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedgaze.cli.main import main
from fedgaze.local.train_text import composed_privacy, train_text_model
from fedgaze.model.reward import TextRewardModel, predict_logits, state_to_numpy
from fedgaze.privacy.dp_train import train_central
from fedgaze.text.encoder import TextEncoder, WordLlamaEncoder, load_encoder
from fedgaze.text.features import answer_features, comparison_features, n_text_features
from fedgaze.text.model_dir import (
    CONFIG,
    TextModelDirError,
    encoder_info,
    load_text_model,
    save_text_model,
)
from fedgaze.text.reward_model import RewardModel, RewardModelError
from ifllm_builders import Page, build
from shared_data import IFLLM_ROOT

GOOD = "Here is a careful answer to {}: first the idea, then the steps, then an example."
BAD = "no"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return load_encoder()


@pytest.fixture(scope="module")
def trained(encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small text model trained to prefer a careful answer to a curt one, saved."""
    prompts = [f"question {i} on topic {i % 5}" for i in range(24)]
    right_good = np.arange(24) % 2 == 0
    lefts = [BAD if g else GOOD.format(p) for p, g in zip(prompts, right_good, strict=True)]
    rights = [GOOD.format(p) if g else BAD for p, g in zip(prompts, right_good, strict=True)]
    X = comparison_features(encoder, prompts, lefts, rights)
    state, _ = train_central(
        X,
        right_good.astype(float),
        epochs=30,
        lr=0.01,
        seed=0,
        hidden=4,
        kind="text",
        soft_labels=True,
    )
    out = tmp_path_factory.mktemp("text") / "model"
    info = encoder_info(encoder, "wordllama")
    save_text_model(out, state, encoder=info, hidden=4, provenance={"mode": "test"})
    return out


@dataclass
class Renamed:
    """The real encoder under another name, version or width (to test refusals)."""

    inner: TextEncoder
    name: str
    version: str
    dim: int
    calls: tuple[int, ...] = ()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls = (*self.calls, len(texts))
        return self.inner.encode(texts)


def like(encoder: TextEncoder, **changes: Any) -> Renamed:
    return replace(Renamed(encoder, encoder.name, encoder.version, encoder.dim), **changes)


# Encoder, features, model -------------------------------------------------------------------


def test_encoder_loads_offline_and_gives_normalised_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("the encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = WordLlamaEncoder()  # a fresh load, not the cached one
    rows = enc.encode(["a short text", "another, longer text about reward models", "x"])
    assert rows.shape == (3, enc.dim) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    assert enc.encode([]).shape == (0, enc.dim)


def test_features_shape_and_swapping_answers_swaps_rows(encoder: TextEncoder) -> None:
    prompts, lefts, rights = ["p1", "p2"], ["left one", "left two\nlines"], ["right", "r2"]
    single = answer_features(encoder, prompts, lefts)
    assert single.shape == (2, n_text_features(encoder.dim))
    X = comparison_features(encoder, prompts, lefts, rights)
    swapped = comparison_features(encoder, prompts, rights, lefts)
    assert X.shape == (2, 2, n_text_features(encoder.dim))
    np.testing.assert_array_equal(swapped[:, 0], X[:, 1])
    np.testing.assert_array_equal(swapped[:, 1], X[:, 0])
    np.testing.assert_array_equal(X[:, 0], single)


def test_text_model_is_antisymmetric_and_reward_matches_forward() -> None:
    model = TextRewardModel(7, hidden=5, seed=3)
    x = torch.randn(6, 2, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        # Antisymmetric up to float rounding (a matmul's result depends on memory alignment).
        np.testing.assert_allclose(model(x.flip(1)).numpy(), -logits.numpy(), rtol=0, atol=1e-6)
        expected = model.reward(x[:, 1]) - model.reward(x[:, 0])
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=0, atol=1e-6)


# The model directory ------------------------------------------------------------------------


def test_model_dir_round_trip(trained: Path, encoder: TextEncoder, tmp_path: Path) -> None:
    saved = load_text_model(trained)
    assert saved.encoder == encoder_info(encoder, "wordllama")
    assert (saved.hidden, saved.n_features) == (4, n_text_features(encoder.dim))
    out = tmp_path / "copy"
    prov = {"epsilon": np.float64(1.5), "data": tmp_path}  # numpy scalars and paths convert
    save_text_model(out, saved.state, encoder=saved.encoder, hidden=4, provenance=prov)
    again = load_text_model(out)
    assert again.provenance == {"epsilon": 1.5, "data": str(tmp_path)}
    assert list(again.state) == list(saved.state)
    for name, value in saved.state.items():
        np.testing.assert_array_equal(again.state[name], value)
    changed = {k: v + 1.0 for k, v in saved.state.items()}
    save_text_model(out, changed, encoder=saved.encoder, hidden=4, provenance={})
    assert len(list(out.glob("model-*.safetensors"))) == 1  # the old weights are gone
    np.testing.assert_array_equal(
        load_text_model(out).state["score.2.bias"], changed["score.2.bias"]
    )


def test_linear_model_round_trips(encoder: TextEncoder, tmp_path: Path) -> None:
    state = state_to_numpy(TextRewardModel(n_text_features(encoder.dim), hidden=0, seed=1))
    info = encoder_info(encoder, "wordllama")
    save_text_model(tmp_path / "m", state, encoder=info, hidden=0, provenance={})
    assert load_text_model(tmp_path / "m").hidden == 0
    assert RewardModel.load(tmp_path / "m").score(["p"], ["r"]).shape == (1,)


def _config(directory: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((directory / CONFIG).read_text())
    return result


def test_changed_weights_byte_is_detected(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(trained, tmp_path / "m"))
    weights = copy / _config(copy)["weights"]["file"]
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(TextModelDirError, match=weights.name) as err:
        load_text_model(copy)
    assert "SHA-256" in str(err.value)
    weights.unlink()
    with pytest.raises(TextModelDirError, match=f"{weights.name}: missing"):
        load_text_model(copy)


def test_inconsistent_or_missing_configs_are_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(trained, tmp_path / "m"))
    config = _config(copy)
    bad_shape = json.loads(json.dumps(config))
    bad_shape["parameters"]["score.0.weight"] = [3, config["n_features"]]
    (copy / CONFIG).write_text(json.dumps(bad_shape))
    with pytest.raises(TextModelDirError, match=r"config.json.*shape mismatch"):
        load_text_model(copy)
    (copy / CONFIG).write_text(json.dumps({**config, "encoder": {**config["encoder"], "dim": 8}}))
    with pytest.raises(TextModelDirError, match=r"config.json: field 'n_features'"):
        load_text_model(copy)
    (copy / CONFIG).write_text("{not json")
    with pytest.raises(TextModelDirError, match=r"config.json: corrupt JSON"):
        load_text_model(copy)
    (copy / CONFIG).unlink()
    (copy / "model.json").write_text("{}")
    with pytest.raises(TextModelDirError, match="behaviour model"):
        load_text_model(copy)
    with pytest.raises(TextModelDirError, match="no such model directory"):
        load_text_model(tmp_path / "absent")


def test_save_refuses_wrong_states_and_foreign_directories(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    info = encoder_info(encoder, "wordllama")
    state = state_to_numpy(TextRewardModel(n_text_features(encoder.dim), hidden=4, seed=0))
    with pytest.raises(ValueError, match="hidden 8"):
        save_text_model(tmp_path / "a", state, encoder=info, hidden=8, provenance={})
    with pytest.raises(ValueError, match="non-finite"):
        nan = {**state, "score.2.bias": np.array([np.nan], np.float32)}
        save_text_model(tmp_path / "a", nan, encoder=info, hidden=4, provenance={})
    with pytest.raises(ValueError, match="JSON"):
        save_text_model(tmp_path / "a", state, encoder=info, hidden=4, provenance={"x": object()})
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match=r"thesis.tex"):
        save_text_model(foreign, state, encoder=info, hidden=4, provenance={})
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert not (tmp_path / "a").exists()


# The Python API -----------------------------------------------------------------------------


def test_wrong_encoder_is_refused_and_another_version_warned(
    trained: Path, encoder: TextEncoder
) -> None:
    with pytest.raises(RewardModelError, match="trained with encoder"):
        RewardModel.load(trained, like(encoder, name="another/encoder"))
    with pytest.raises(RewardModelError, match="dim"):
        RewardModel.load(trained, like(encoder, dim=encoder.dim + 1))
    model = RewardModel.load(trained, like(encoder, version="0.0.1"))
    assert len(model.warnings) == 1 and "0.0.1" in model.warnings[0]
    assert RewardModel.load(trained).warnings == ()


def test_score_and_prefer(trained: Path, encoder: TextEncoder) -> None:
    model = RewardModel.load(trained)
    assert model.encoder_info.name == encoder.name and model.provenance == {"mode": "test"}
    prompts = ["how do tides work?", "what is a prime?", "why is the sky blue?"]
    good = [GOOD.format(p) for p in prompts]
    bad = [BAD] * 3
    scores = model.score(prompts, good)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert (scores > model.score(prompts, bad)).all()  # it learned what it was taught
    p = model.prefer(prompts, bad, good)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(scores - model.score(prompts, bad)))))
    np.testing.assert_allclose(model.prefer(prompts, good, bad), 1 - p, atol=1e-6)
    net = TextRewardModel(n_text_features(encoder.dim), hidden=4)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in load_text_model(trained).state.items()})
    logits = predict_logits(net, comparison_features(encoder, prompts, bad, good))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert model.score([], []).shape == (0,)
    with pytest.raises(RewardModelError, match="differ in length"):
        model.score(prompts, good[:2])
    with pytest.raises(RewardModelError, match="not a string"):
        model.score(["p"], [3])  # type: ignore[list-item]


def test_scoring_is_batched(trained: Path, encoder: TextEncoder) -> None:
    counting = like(encoder)
    model = RewardModel.load(trained, counting, batch_size=3)
    prompts = [f"prompt {i}" for i in range(10)]
    responses = [f"response {i}" for i in range(10)]
    scores = model.score(prompts, responses)
    assert max(counting.calls) <= 6 and len(counting.calls) == 4
    np.testing.assert_allclose(scores, RewardModel.load(trained).score(prompts, responses), 1e-6)
    model.prefer(prompts, responses, responses[::-1])
    assert max(counting.calls) <= 6


# fedgaze reward -----------------------------------------------------------------------------


def _write_lines(path: Path, lines: Sequence[object]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


SCORE_LINES: list[object] = [
    {"id": 1, "prompt": "how do tides work?", "response": GOOD.format("tides"), "meta": [1]},
    "not json at all",
    {"id": 2, "prompt": "what is a prime?", "chosen": GOOD.format("primes"), "rejected": BAD},
    [1, 2],
    "",
    {"id": 3, "response": "no prompt"},
    {"id": 4, "prompt": "p", "response": 7},
    {"id": 5, "prompt": "p", "chosen": "only chosen"},
    {"id": 6, "prompt": "é?", "response": "ünïcode answer"},
]


def test_reward_score_keeps_order_and_fields_and_skips_bad_lines(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write_lines(tmp_path / "in.jsonl", SCORE_LINES)
    out = tmp_path / "out.jsonl"
    args = ["reward", "score", "--model", str(trained), "--in", str(src), "--out", str(out)]
    assert main([*args, "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 6]
    assert rows[0]["meta"] == [1] and list(rows[0]) == ["id", "prompt", "response", "meta", "score"]
    model = RewardModel.load(trained)
    assert rows[0]["score"] == pytest.approx(
        model.score([rows[0]["prompt"]], [GOOD.format("tides")])[0], abs=1e-6
    )
    assert rows[1]["score_chosen"] > rows[1]["score_rejected"] and "score" not in rows[1]
    for number, reason in [
        (2, "not JSON"),
        (4, "not a JSON object"),
        (6, "missing field 'prompt'"),
        (7, "field 'response' must be a string, got int"),
        (8, "missing field 'rejected'"),
    ]:
        assert f"in.jsonl:{number}: {reason}" in captured.err
    assert "in.jsonl:5" not in captured.err  # a blank line is not an error
    assert "scored 3 lines (4 responses), skipped 5 bad lines" in captured.out


def test_reward_best_of_n_to_stdout_and_file(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[object] = [
        {"prompt": "explain rainbows", "responses": [BAD, GOOD.format("rainbows"), "hmm"], "k": 0},
        {"prompt": "p", "responses": []},
        {"prompt": "p", "responses": ["ok", None]},
        {"prompt": "explain rust", "responses": ["single"]},
    ]
    src = _write_lines(tmp_path / "n.jsonl", lines)
    assert main(["reward", "best-of-n", "--model", str(trained), "--in", str(src)]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["prompt"] for r in rows] == ["explain rainbows", "explain rust"]
    assert rows[0]["best_index"] == 1 and rows[0]["k"] == 0
    assert rows[0]["best_score"] == max(rows[0]["scores"]) and len(rows[0]["scores"]) == 3
    assert rows[1]["best_index"] == 0 and len(rows[1]["scores"]) == 1
    assert "n.jsonl:2: field 'responses' must be a non-empty list" in captured.err
    assert "n.jsonl:3: responses[1] must be a string, got NoneType" in captured.err
    out = tmp_path / "best.jsonl"
    argv = ["reward", "best-of-n", "--model", str(trained), "--in", str(src), "--out", str(out)]
    assert main(argv) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_reward_failures_exit_1_and_write_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write_lines(tmp_path / "good.jsonl", [{"prompt": "p", "response": "r"}])
    bad = _write_lines(tmp_path / "bad.jsonl", ["{", {"prompt": 1, "response": "r"}])
    out = tmp_path / "out.jsonl"
    out.write_text("earlier output\n")

    def run(model: Path, src: Path) -> int:
        return main(["reward", "score", "--model", str(model), "--in", str(src), "--out", str(out)])

    assert run(tmp_path / "nowhere", good) == 1
    assert "no such model directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG).write_text("[]")
    assert run(broken, good) == 1
    assert "config.json: expected a JSON object" in capsys.readouterr().err
    assert run(trained, tmp_path / "missing.jsonl") == 1
    assert "missing.jsonl: No such file" in capsys.readouterr().err
    assert run(trained, bad) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:1: not JSON" in err and "no line could be scored (2 bad)" in err
    assert out.read_text() == "earlier output\n"
    assert not list(tmp_path.glob(".out.jsonl.*"))  # no temporary file left behind


@pytest.mark.slow
def test_reward_commands_through_python_m_fedgaze_cli(trained: Path, tmp_path: Path) -> None:
    src = _write_lines(tmp_path / "in.jsonl", SCORE_LINES)
    out = tmp_path / "out.jsonl"
    cli = [sys.executable, "-m", "fedgaze.cli", "reward"]
    model = ["--model", str(trained)]
    proc = subprocess.run(
        [*cli, "score", *model, "--in", str(src), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 2, 6]
    assert "in.jsonl:2: not JSON" in proc.stderr
    best = _write_lines(tmp_path / "n.jsonl", [{"prompt": "q", "responses": [BAD, GOOD]}])
    proc = subprocess.run(
        [*cli, "best-of-n", *model, "--in", str(best)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best_index"] == 1
    proc = subprocess.run(
        [*cli, "best-of-n", "--model", str(tmp_path), "--in", str(best)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "config.json: missing" in proc.stderr


# Central training ---------------------------------------------------------------------------


@dataclass
class PartlyLabelled(Page):
    """A page whose listed queries carry no preference (no explicit choice)."""

    unlabelled: tuple[int, ...] = ()

    def query_rows(self) -> list[dict[str, str]]:
        rows = super().query_rows()
        for k in self.unlabelled:
            rows[k]["preference"] = ""
        return rows


@pytest.fixture(scope="module")
def ifllm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three workers with four comparisons each; one comparison has no explicit choice."""
    pages = [
        PartlyLabelled(
            worker=f"worker_{c * 4}",
            n_queries=4,
            first_id=1 + 10 * i,
            unlabelled=(3,) if i == 0 else (),
        )
        for i, c in enumerate("abc")
    ]
    return build(tmp_path_factory.mktemp("ifllm"), pages)


@pytest.mark.parametrize(
    ("labels", "explicit", "implicit", "skipped"),
    [("explicit", 11, 0, 1), ("implicit", 0, 12, 0), ("both", 11, 1, 0)],
)
def test_central_training_for_each_labels_mode(
    ifllm: Path, tmp_path: Path, labels: Any, explicit: int, implicit: int, skipped: int
) -> None:
    saved = train_text_model(ifllm, tmp_path / "m", labels=labels, epsilon=None, epochs=2)
    prov = saved.provenance
    assert prov["mode"] == "central" and prov["labels"] == labels
    assert prov["label_sources"] == {"explicit": explicit, "implicit": implicit}
    assert prov["examples"] == explicit + implicit and prov["skipped"] == skipped
    assert prov["devices"] == 3 and prov["data"] == str(ifllm.resolve())
    assert prov["epsilon"] is None and prov["epsilon_total"] is None
    behaviour = prov["behaviour_model"]
    if labels == "explicit":
        assert behaviour is None
    else:
        assert behaviour["source"] == "trained here" and behaviour["examples"] == 11
        assert behaviour["epsilon"] is None
    assert load_text_model(tmp_path / "m").provenance == prov
    assert RewardModel.load(tmp_path / "m").score(["question 0"], ["x"]).shape == (1,)


def test_central_training_with_a_behaviour_model_directory(ifllm: Path, tmp_path: Path) -> None:
    from fedgaze.local.train_score import train_central_model

    behaviour = tmp_path / "behaviour"
    train_central_model(ifllm, behaviour, epsilon=None, epochs=2)
    saved = train_text_model(
        ifllm, tmp_path / "m", labels="implicit", epochs=2, behaviour_model=behaviour
    )
    record = saved.provenance["behaviour_model"]
    assert record["source"] == "directory" and record["path"] == str(behaviour.resolve())
    assert record["trained"] == "central" and record["epsilon"] is None
    with pytest.raises(ValueError, match="only used with labels"):
        train_text_model(ifllm, tmp_path / "x", labels="explicit", behaviour_model=behaviour)
    with pytest.raises(ValueError, match="is a text model directory"):
        train_text_model(ifllm, tmp_path / "y", labels="implicit", behaviour_model=tmp_path / "m")


def test_privacy_composition() -> None:
    @dataclass
    class Source:
        epsilon: float | None
        delta: float | None

    b = Source(epsilon=3.0, delta=1e-5)
    total = composed_privacy(2.0, 1e-5, b)  # type: ignore[arg-type]
    assert total["epsilon_total"] == 5.0 and total["delta_total"] == pytest.approx(2e-5)
    assert "basic composition" in total["composition"]
    assert composed_privacy(2.0, 1e-5, None)["epsilon_total"] == 2.0
    assert composed_privacy(2.0, 1e-5, Source(None, None))["epsilon_total"] is None  # type: ignore[arg-type]
    assert composed_privacy(None, None, b)["epsilon_total"] is None  # type: ignore[arg-type]


@pytest.mark.slow
def test_dp_central_training_states_both_epsilons(ifllm: Path, tmp_path: Path) -> None:
    saved = train_text_model(ifllm, tmp_path / "m", labels="both", epsilon=4.0, epochs=2)
    prov = saved.provenance
    behaviour = prov["behaviour_model"]
    assert 0 < prov["epsilon"] <= 4.0 + 1e-6 and 0 < behaviour["epsilon"] <= 4.0 + 1e-6
    assert prov["epsilon_total"] == pytest.approx(prov["epsilon"] + behaviour["epsilon"])
    assert prov["delta"] == 1e-5 and prov["unit"].startswith("one pairwise comparison")


def test_train_cli_text_options(
    ifllm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["train", "--data", str(ifllm), "--out", str(tmp_path / "m")]
    assert main([*base, "--labels", "both"]) == 2
    assert "--labels only apply with --kind text" in capsys.readouterr().err
    assert main([*base, "--kind", "text", "--mode", "federated", "--labels", "implicit"]) == 2
    assert "needs --behaviour-model DIR" in capsys.readouterr().err
    assert main([*base, "--kind", "text", "--labels", "explicit", "--epochs", "2"]) == 0
    assert "11 explicit, 0 inferred labels" in capsys.readouterr().out
    assert load_text_model(tmp_path / "m").provenance["labels"] == "explicit"

    seen = []

    class Incomplete:
        complete = False

    def fake_federation(opts: Any, console: Any) -> Incomplete:
        seen.append(opts)
        return Incomplete()

    monkeypatch.setattr("fedgaze.local.demo.run_local_federation", fake_federation)
    behaviour = tmp_path / "behaviour"  # the faked federation never opens it
    behaviour.mkdir()
    federated = ["--kind", "text", "--mode", "federated", "--labels", "both"]
    assert (
        main([*base, *federated, "--encoder", "wordllama", "--behaviour-model", str(behaviour)])
        == 1
    )
    (opts,) = seen
    assert (opts.model_kind, opts.text_labels, opts.encoder) == ("text", "both", "wordllama")
    assert opts.behaviour_model == behaviour and opts.data == ifllm


@pytest.mark.realdata
@pytest.mark.skipif(not IFLLM_ROOT.is_dir(), reason="IFLLM data not available")
def test_central_training_on_real_data(tmp_path: Path) -> None:
    from fedgaze.data.ifllm import labelled_comparison_counts
    from fedgaze.data.ifllm_subset import write_subset

    workers = ["worker_baa3f9fa", "worker_61e55ed0", "worker_91a679fb"]  # the most comparisons
    data = write_subset(IFLLM_ROOT, workers, tmp_path / "d")
    saved = train_text_model(data, tmp_path / "m", labels="both", epochs=3)
    prov = saved.provenance
    assert prov["devices"] == 3 and prov["skipped"] == 0
    assert prov["label_sources"]["explicit"] == sum(labelled_comparison_counts(data).values())
    assert prov["label_sources"]["implicit"] > 0  # comparisons without a choice are inferred
    model = RewardModel.load(tmp_path / "m")
    assert np.isfinite(model.score(["What is DP?"], ["Differential privacy bounds..."])).all()
