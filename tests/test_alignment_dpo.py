"""An export trains with TRL's robust DPO: the rows ``fedgaze alignment export`` writes load with
``datasets`` and drive ``DPOTrainer(loss_type="robust", label_smoothing=<flip rate>)``.

Everything is built inside the test, nothing downloaded: a word-level tokenizer trained on the
export's own texts and a two-layer Llama of hidden size 32 with random weights. Skips without
the ``alignment`` extra (trl, datasets, transformers).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgaze.data.schema import Device, Query, ServedIds
from fedgaze.federation.rundir import RunLayout
from fedgaze.labels.export import build_preferences, write_preferences
from fedgaze.labels.rows import ReleasedLabel
from fedgaze.labels.served import read_served, write_served_log
from fedgaze.labels.store import add_releases, stored_labels
from fedgaze.privacy.label_dp import flip_rate, randomized_response

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.slow

EPSILON_LABEL = 2.0
WORDS = ("the", "sky", "sea", "grass", "is", "blue", "green", "red", "because", "light")


def _devices(rng: np.random.Generator, n: int) -> tuple[Device, ...]:
    queries = []
    for i in range(n):
        topic = " ".join(rng.choice(WORDS, 3))
        pid = f"q{i}"
        queries.append(
            Query(
                query_id=i,
                task_id=1,
                pairwise=True,
                prompt=f"Why is {topic}?",
                response_left=f"Because {' '.join(rng.choice(WORDS, 4))}.",
                response_right=f"Because {' '.join(rng.choice(WORDS, 6))}.",
                preference=None,
                likert_left=None,
                likert_right=None,
                shown_at_ms=None,
                served=ServedIds(pid, f"{pid}/1", f"{pid}/2"),
            )
        )
    return (Device("dev-a", tuple(queries[: n // 2])), Device("dev-b", tuple(queries[n // 2 :])))


def _export(tmp_path: Path) -> tuple[Path, float]:
    """A run directory with released labels and a served log, exported to JSONL."""
    rng = np.random.default_rng(0)
    layout = RunLayout(tmp_path / "run")
    devices = _devices(rng, 8)
    write_served_log(layout.served_log, devices)
    rate = flip_rate(EPSILON_LABEL)
    for device in devices:
        bits = randomized_response(rng.integers(0, 2, len(device.queries)), EPSILON_LABEL, seed=1)
        rows = [
            ReleasedLabel(
                prompt_id=q.served.prompt_id,
                left_id=q.served.response_left_id,
                right_id=q.served.response_right_id,
                right_preferred=int(bit),
                flip_rate=rate,
            )
            for q, bit in zip(device.queries, bits, strict=True)
            if q.served is not None and q.served.response_right_id is not None
        ]
        add_releases(layout.labels, device.device_id, rows, run_key="r", round=1, record_hash="h")
    result = build_preferences(stored_labels(layout.labels), read_served(layout.served_log))
    assert len(result.rows) == 8 and result.dropped == ()
    out = tmp_path / "prefs.jsonl"
    write_preferences(out, result.rows)
    return out, rate


def _tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"])
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


def test_robust_dpo_trains_on_an_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out, rate = _export(tmp_path)
    train = datasets.load_dataset(
        "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert train.column_names == ["prompt", "chosen", "rejected", "flip_rate"]
    assert set(train["flip_rate"]) == {rate}
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    tokenizer = _tokenizer([r[k] for r in rows for k in ("prompt", "chosen", "rejected")])

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = transformers.LlamaForCausalLM(config)
    ref_model = copy.deepcopy(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    args = trl.DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        loss_type="robust",
        label_smoothing=train[0]["flip_rate"],
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        max_length=64,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert trainer.loss_types == ["robust"] and trainer.label_smoothing == pytest.approx(rate)
    output = trainer.train()

    assert output.global_step == 3
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert len(set(losses)) > 1, f"the loss did not change over 3 steps: {losses}"
    assert math.isfinite(output.training_loss)
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert changed, "no weight changed after 3 DPO steps"
