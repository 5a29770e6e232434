"""``fedgaze alignment export``: the served log, the join to stored releases, the writers, the
dataset card and the command end to end (no TRL needed: see test_alignment_dpo.py for that)."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import polars as pl
import pytest

from fedgaze.cli.main import main
from fedgaze.data.schema import Device, Query, ServedIds
from fedgaze.federation.rundir import RunLayout
from fedgaze.labels.card import (
    CARD_MARKER,
    CardError,
    CardSource,
    render_card,
    write_card,
)
from fedgaze.labels.export import (
    EXAMPLES,
    UNKNOWN_PROMPT,
    UNKNOWN_RESPONSE,
    ExportError,
    ExportResult,
    OutputFormat,
    PreferenceRow,
    RunSettings,
    build_preferences,
    epsilon_label,
    output_format,
    read_run_settings,
    write_preferences,
)
from fedgaze.labels.rows import ReleasedLabel
from fedgaze.labels.served import (
    ServedLog,
    ServedLogError,
    read_ifllm_query_table,
    read_served,
    read_served_jsonl,
    served_prompts,
    write_served_log,
)
from fedgaze.labels.store import StoredLabel, add_releases, stored_labels
from fedgaze.privacy.label_dp import flip_rate
from shared_data import IFLLM_ROOT

RATE_1 = flip_rate(1.0)
RATE_3 = flip_rate(3.0)


def _query(qid: int, prompt_id: str, right: bool = True) -> Query:
    return Query(
        query_id=qid,
        task_id=1,
        pairwise=right,
        prompt=f"prompt {prompt_id}",
        response_left=f"left answer {prompt_id}",
        response_right=f"right answer {prompt_id}" if right else None,
        preference=None,
        likert_left=None,
        likert_right=None,
        shown_at_ms=None,
        served=ServedIds(prompt_id, f"{prompt_id}/1", f"{prompt_id}/2" if right else None),
    )


def _devices() -> tuple[Device, ...]:
    return (
        Device("dev-a", (_query(1, "p1"), _query(2, "p2"), _query(3, "p3", right=False))),
        Device("dev-b", (_query(4, "p4"),)),
    )


def _label(prompt: str, bit: int, rate: float = RATE_1) -> ReleasedLabel:
    return ReleasedLabel(
        prompt_id=prompt,
        left_id=f"{prompt}/1",
        right_id=f"{prompt}/2",
        right_preferred=bit,
        flip_rate=rate,
    )


def _stored(device: str, label: ReleasedLabel, run_key: str = "run-1") -> StoredLabel:
    return StoredLabel(device=device, label=label, run_key=run_key, round=1, record_hash="h")


def _served() -> ServedLog:
    return ServedLog(
        source="test",
        prompts={"p1": "prompt p1", "p2": "prompt p2"},
        responses={
            ("p1", "p1/1"): "left answer p1",
            ("p1", "p1/2"): "right answer p1",
            ("p2", "p2/1"): "left answer p2",
            ("p2", "p2/2"): "right answer p2",
        },
    )


def _line(prompt_id: str, prompt: str = "P", **responses: str) -> str:
    return json.dumps(
        {"prompt_id": prompt_id, "prompt": prompt, "responses": responses or {"a": "A"}}
    )


# ------------------------------------------------------------------------------ served log


def test_served_log_round_trip_through_write_served_log(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    assert write_served_log(path, _devices()) == 4
    log = read_served(path)
    assert sorted(log) == ["p1", "p2", "p3", "p4"]
    assert log["p2"] == "prompt p2"
    assert log.response("p2", "p2/1") == "left answer p2"
    assert log.response("p2", "p2/2") == "right answer p2"
    assert log.response("p3", "p3/1") == "left answer p3"
    assert log.response("p3", "p3/2") is None  # pointwise: one answer
    assert log.response("p1", "p2/1") is None  # a response belongs to its prompt
    assert [p.name for p in tmp_path.iterdir()] == ["served.jsonl"]  # no temporary left
    with pytest.raises(TypeError):
        log.prompts["p9"] = "x"  # type: ignore[index]


def test_write_served_log_refuses_a_prompt_served_with_two_texts() -> None:
    clash = Device("dev-c", (_query(9, "p1"),))
    other = Query(**{**_query(9, "p1").__dict__, "prompt": "another text"})
    with pytest.raises(ServedLogError, match=r"device dev-c query 9: prompt id 'p1'.*dev-a"):
        served_prompts((*_devices(), Device("dev-c", (other,))))
    assert len(served_prompts((*_devices(), clash))) == 4  # the same text again: logged once


_DROP = object()


def _obj(**change: object) -> str:
    """One log line: a valid object with fields changed, or dropped (``_DROP``)."""
    base: dict[str, object] = {"prompt_id": "p", "prompt": "P", "responses": {}}
    return json.dumps({k: v for k, v in {**base, **change}.items() if v is not _DROP}) + "\n"


SERVED_LOG_ERRORS = {
    "malformed": (f"{_line('p1')}\n{{not json\n{_line('p2')}\n", ":2:", "malformed JSON"),
    "truncated-last": (f"{_line('p1')}\n{_line('p2')}\n{_line('p3')[:20]}", ":3:", "truncated"),
    "not-object": ("[1, 2]\n", ":1:", "expected a JSON object"),
    "no-prompt-id": (_line("p1") + "\n" + _obj(prompt_id=_DROP), ":2:", "'prompt_id' is missing"),
    "no-prompt": (_obj(prompt=_DROP), ":1:", "'prompt' is missing"),
    "no-responses": (_obj(responses=_DROP), ":1:", "'responses' is missing"),
    "empty-prompt-id": (_obj(prompt_id=""), ":1:", "'prompt_id' must be a non-empty"),
    "int-prompt-id": (_obj(prompt_id=7), ":1:", "'prompt_id' must be a string"),
    "list-prompt": (_obj(prompt=["P"]), ":1:", "'prompt' must be a string"),
    "list-responses": (_obj(responses=["a"]), ":1:", "'responses' must be an object"),
    "int-response": (_obj(responses={"a": 1}), ":1:", "'responses.a' must be a string"),
}


@pytest.mark.parametrize("case", SERVED_LOG_ERRORS)
def test_served_log_errors_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    content, where, match = SERVED_LOG_ERRORS[case]
    path = tmp_path / "served.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ServedLogError, match=match) as err:
        read_served_jsonl(path)
    assert f"{path}{where}" in str(err.value)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    path.write_bytes(_line("p1").encode() + b"\n\xff\xfe\n")
    with pytest.raises(ServedLogError, match="invalid UTF-8") as err:
        read_served_jsonl(path)
    assert f"{path}:2:" in str(err.value)


def test_complete_last_line_without_line_end_and_blank_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    path.write_text(_line("p1") + "\n\n" + _line("p2"), encoding="utf-8")
    assert sorted(read_served_jsonl(path)) == ["p1", "p2"]


def test_duplicate_prompt_identical_is_fine_different_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    path.write_text(f"{_line('p1')}\n{_line('p2')}\n{_line('p1')}\n", encoding="utf-8")
    assert len(read_served_jsonl(path)) == 2
    path.write_text(f"{_line('p1')}\n{_line('p2')}\n{_line('p1', 'other')}\n", encoding="utf-8")
    with pytest.raises(ServedLogError) as err:
        read_served_jsonl(path)
    assert f"{path}:3:" in str(err.value)
    assert f"{path}:1 " in str(err.value)
    assert "'p1'" in str(err.value)


def test_a_response_id_under_two_texts_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    path.write_text(
        f"{_line('p1', x='same')}\n{_line('p2', x='same')}\n{_line('p3', x='changed')}\n",
        encoding="utf-8",
    )
    with pytest.raises(ServedLogError, match=r"'responses.x'.*'x'") as err:
        read_served_jsonl(path)
    assert f"{path}:3:" in str(err.value)
    assert f"{path}:1 " in str(err.value)


def test_missing_served_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ServedLogError, match="no such served log"):
        read_served(tmp_path / "served.jsonl")


def _write_query_table(path: Path, rows: list[dict[str, str]]) -> None:
    header = [
        "query_ID", "user_id", "task_id", "user_query", "llm_response_1", "llm_response_2",
        "llm_name_1", "llm_name_2", "likert_1", "likert_2", "preference", "adjustment",
        "query_timestamp",
    ]  # fmt: skip
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def test_ifllm_query_table_reads_as_a_served_log(tmp_path: Path) -> None:
    path = tmp_path / "query_logs_table.csv.gz"
    stamp = "2025-10-01 10:00:00"
    _write_query_table(
        path,
        [
            {"query_ID": "11", "user_id": "w", "task_id": "1", "user_query": 'Why "x",\nnow?',
             "llm_response_1": "one", "llm_response_2": "two", "query_timestamp": stamp},
            {"query_ID": "12", "user_id": "w", "task_id": "2", "user_query": "solo",
             "llm_response_1": "only", "query_timestamp": stamp},
            {"query_ID": "bad", "user_id": "w", "task_id": "1", "user_query": "q",
             "llm_response_1": "a", "llm_response_2": "b", "query_timestamp": stamp},
        ],
    )  # fmt: skip
    log = read_served(path)
    assert dict(log) == {"11": 'Why "x",\nnow?', "12": "solo"}
    assert log.response("11", "11/1") == "one"
    assert log.response("11", "11/2") == "two"
    assert log.response("12", "12/1") == "only"
    assert log.response("12", "12/2") is None
    assert len(log.problems) == 1 and "query_ID" in log.problems[0]
    with pytest.raises(ServedLogError, match="no such IFLLM query table"):
        read_ifllm_query_table(tmp_path / "query_logs_table.csv")


# ------------------------------------------------------------------------------ the join


def test_chosen_and_rejected_follow_the_released_bit_with_each_rows_flip_rate() -> None:
    result = build_preferences(
        [_stored("a", _label("p1", 1, RATE_1)), _stored("a", _label("p2", 0, RATE_3))], _served()
    )
    first, second = result.rows
    assert (first.prompt, first.chosen, first.rejected) == (
        "prompt p1",
        "right answer p1",
        "left answer p1",
    )
    assert (second.prompt, second.chosen, second.rejected) == (
        "prompt p2",
        "left answer p2",
        "right answer p2",
    )
    assert (first.flip_rate, second.flip_rate) == (RATE_1, RATE_3)
    assert result.flip_rates == ((RATE_3, 1), (RATE_1, 1))
    assert result.dropped == ()


def test_unknown_ids_are_dropped_and_reported_never_guessed() -> None:
    unknown_prompts = [_stored("a", _label(f"gone{i}", 1)) for i in range(EXAMPLES + 2)]
    bad_right = _stored("a", ReleasedLabel(**{**_label("p1", 1).model_dump(), "right_id": "p1/9"}))
    bad_both = _stored(
        "b",
        ReleasedLabel(**{**_label("p2", 0).model_dump(), "left_id": "x", "right_id": "p1/2"}),
    )
    result = build_preferences(
        [*unknown_prompts, bad_right, bad_both, _stored("a", _label("p2", 1))], _served()
    )
    assert len(result.rows) == 1 and result.rows[0].chosen == "right answer p2"
    reasons = {d.reason: d for d in result.dropped}
    assert reasons[UNKNOWN_PROMPT].count == EXAMPLES + 2
    assert reasons[UNKNOWN_PROMPT].examples == tuple(f"gone{i}" for i in range(EXAMPLES))
    assert reasons[UNKNOWN_RESPONSE].count == 2
    # p1/2 exists, but under p1, not under p2: not guessed either
    assert reasons[UNKNOWN_RESPONSE].examples == ("p1: p1/9", "p2: x, p1/2")
    assert result.dropped_count == EXAMPLES + 4
    assert (result.releases, result.devices, result.exported_devices) == (EXAMPLES + 5, 2, 1)


def test_the_same_comparison_from_several_devices_keeps_every_row() -> None:
    result = build_preferences(
        [
            _stored("a", _label("p1", 1)),
            _stored("b", _label("p1", 0)),
            _stored("c", _label("p1", 1)),
            _stored("a", _label("p2", 1), run_key="run-2"),
        ],
        _served(),
    )
    assert [r.chosen for r in result.rows] == [
        "right answer p1",
        "left answer p1",
        "right answer p1",
        "right answer p2",
    ]
    assert (result.comparisons, result.shared_comparisons, result.shared_rows) == (2, 1, 3)
    assert (result.devices, result.exported_devices) == (3, 3)
    assert result.run_keys == ("run-1", "run-2")


# ------------------------------------------------------------------------------ writers


def _two_rows() -> tuple[PreferenceRow, ...]:
    return build_preferences(
        [_stored("a", _label("p1", 1)), _stored("b", _label("p2", 0, RATE_3))], _served()
    ).rows


def test_jsonl_output_has_one_trl_object_per_line(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    assert write_preferences(out, _two_rows()) == "jsonl"
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"prompt": "prompt p1", "chosen": "right answer p1", "rejected": "left answer p1",
         "flip_rate": RATE_1},
        {"prompt": "prompt p2", "chosen": "left answer p2", "rejected": "right answer p2",
         "flip_rate": RATE_3},
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["prefs.jsonl"]


def test_parquet_output_has_the_same_rows(tmp_path: Path) -> None:
    out = tmp_path / "prefs.parquet"
    assert write_preferences(out, _two_rows()) == "parquet"
    frame = pl.read_parquet(out)
    assert frame.columns == ["prompt", "chosen", "rejected", "flip_rate"]
    assert frame.to_dicts() == [
        {"prompt": "prompt p1", "chosen": "right answer p1", "rejected": "left answer p1",
         "flip_rate": RATE_1},
        {"prompt": "prompt p2", "chosen": "left answer p2", "rejected": "right answer p2",
         "flip_rate": RATE_3},
    ]  # fmt: skip


def test_parquet_output_loads_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "prefs.parquet"
    write_preferences(out, _two_rows())
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.column_names == ["prompt", "chosen", "rejected", "flip_rate"]
    assert loaded[1]["chosen"] == "left answer p2"


@pytest.mark.parametrize("name", ["prefs.csv", "prefs", "prefs.json"])
def test_other_suffixes_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ExportError, match=r"\.jsonl or \.parquet"):
        output_format(tmp_path / name)
    with pytest.raises(ExportError):
        write_preferences(tmp_path / name, _two_rows())
    assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------ the card


def _card(result: ExportResult, run: RunSettings, fmt: OutputFormat = "jsonl") -> str:
    source = CardSource(
        run_dir="/runs/r1",
        served_log="/runs/r1/served.jsonl",
        output=f"prefs.{fmt}",
        output_format=fmt,
        run=run,
    )
    return render_card(result, source)


def test_card_numbers_come_from_the_rows_and_the_run_settings() -> None:
    result = build_preferences(
        [
            _stored("a", _label("p1", 1, RATE_1)),
            _stored("b", _label("p1", 0, RATE_1)),
            _stored("b", _label("p2", 1, RATE_3)),
            _stored("c", _label("gone", 1, RATE_3)),
        ],
        _served(),
    )
    run = RunSettings(
        {"labels": {"epsilon_label": 1.0, "source": "explicit-first"}, "delta": 1e-5}, ()
    )
    text = _card(result, run)
    assert text.splitlines()[0] == CARD_MARKER
    assert "`run-1`" in text and "/runs/r1/served.jsonl" in text
    for rate, rows in ((RATE_1, 2), (RATE_3, 1)):
        eps = math.log((1 - rate) / rate)
        assert f"| {eps:.6g} | {rate:.6g} | {rows} |" in text
    assert epsilon_label(RATE_3) == pytest.approx(3.0)
    assert "delta of the run (its `run-start` settings): 1e-05" in text
    assert "epsilon_label 1.0, source 'explicit-first'" in text
    assert "Privacy unit: one comparison" in text
    assert "randomized response" in text and "Only the preference bits are noised" in text
    assert "releases stored by the run: 4, from 3 device(s)" in text
    assert "rows exported: 3, from 2 device(s), 2 distinct comparison(s)" in text
    assert "more than one device: 1 (2 rows)" in text
    assert "releases dropped: 1" in text and "`gone`" in text
    assert f'loss_type="robust", label_smoothing={RATE_3!r}' in text
    assert 'load_dataset("json", data_files="prefs.jsonl"' in text
    assert f'row["flip_rate"] == {RATE_3!r}' in text  # two rates: train one at a time
    assert "Chowdhury et al. 2024" in text and "biased toward the noise" in text


def test_card_without_settings_says_so_and_flags_a_mismatched_epsilon() -> None:
    result = build_preferences([_stored("a", _label("p1", 1, RATE_1))], _served())
    text = _card(result, RunSettings(None, ("ledger.db: no server ledger",)), fmt="parquet")
    assert "delta: not recorded" in text and "Note: ledger.db: no server ledger." in text
    assert 'load_dataset("parquet", data_files="prefs.parquet"' in text
    assert "row[" not in text  # one rate: no filter
    mismatched = _card(result, RunSettings({"labels": {"epsilon_label": 4.0}}, ()))
    assert "no exported row carries the flip rate of the configured epsilon_label" in mismatched
    assert "no exported row" not in _card(result, RunSettings({"labels": {"epsilon_label": 1}}, ()))


def test_card_refuses_a_foreign_readme_unless_forced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n", encoding="utf-8")
    with pytest.raises(CardError, match="--force"):
        write_card(readme, f"{CARD_MARKER}\nnew\n")
    assert readme.read_text(encoding="utf-8") == "# my project\n"
    write_card(readme, f"{CARD_MARKER}\nnew\n", force=True)
    write_card(readme, f"{CARD_MARKER}\nnewer\n")  # ours now: replaced without --force
    assert readme.read_text(encoding="utf-8") == f"{CARD_MARKER}\nnewer\n"


def test_run_settings_come_from_the_verified_run_start_record(tmp_path: Path) -> None:
    from fedgaze.ledger.contract import RecordKind
    from fedgaze.ledger.keys import load_or_create_signing_key
    from fedgaze.ledger.records import LedgerRecord, SqliteLedger

    layout = RunLayout(tmp_path)
    missing = read_run_settings(layout.server_ledger)
    assert missing.settings is None and "no server ledger" in missing.problems[0]
    key = load_or_create_signing_key(layout.server_key)
    device_record = LedgerRecord.sign_next(key, None, RecordKind.LABEL_RELEASE, {"delta": 1e-6})
    with SqliteLedger(layout.server_ledger, key) as ledger:
        ledger.append(
            RecordKind.RUN_START,
            {"settings": {"run_key": "r", "epsilon_label": 2.0, "label_source": "implicit-only"}},
        )
        ledger.append(RecordKind.LABELS_ROUND, {"accepted": [device_record.line(), "torn"]})
    run = read_run_settings(layout.server_ledger)
    assert run.problems == ()
    assert run.labels == {"epsilon_label": 2.0, "source": "implicit-only"}
    assert run.delta is None and run.release_deltas == (1e-6,)
    assert "- delta: 1e-06, the one at which the devices state" in _card(
        build_preferences([_stored("a", _label("p1", 1))], _served()), run
    )
    nested = RunSettings({"labels": {"epsilon_label": 1.0, "delta": 3e-6}, "delta": 0.1}, ())
    assert nested.labels == {"epsilon_label": 1.0, "delta": 3e-6} and nested.delta == 3e-6
    assert RunSettings({"labels": None}, ()).labels is None


# ------------------------------------------------------------------------------ the command


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    layout = RunLayout(run)
    write_served_log(layout.served_log, _devices())
    add_releases(
        layout.labels,
        "dev-a",
        [_label("p1", 1), _label("p2", 0), _label("gone", 1)],
        run_key="run-1",
        round=1,
        record_hash="h1",
    )
    add_releases(
        layout.labels, "dev-b", [_label("p1", 0)], run_key="run-1", round=1, record_hash="h2"
    )
    return run


def test_cli_exports_rows_and_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_dir(tmp_path)
    out = tmp_path / "export" / "prefs.jsonl"
    assert main(["alignment", "export", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported 3 preference rows" in printed and "of 4 releases" in printed
    assert "dropped 1" in printed and "gone" in printed
    assert "1 comparisons were released by several devices" in printed
    assert str(out.parent / "README.md") in printed
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("right answer p1", "left answer p1"),
        ("left answer p2", "right answer p2"),
        ("left answer p1", "right answer p1"),
    ]
    assert {r["flip_rate"] for r in rows} == {RATE_1}
    card = (out.parent / "README.md").read_text(encoding="utf-8")
    assert card.startswith(CARD_MARKER) and "rows exported: 3" in card
    assert f"| {epsilon_label(RATE_1):.6g} | {RATE_1:.6g} | 3 |" in card
    # the card is ours: a second export replaces it without --force
    assert main(["alignment", "export", str(run), "--out", str(out)]) == 0


def test_cli_parquet_with_card_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_dir(tmp_path)
    out = tmp_path / "prefs.parquet"
    card = tmp_path / "cards" / "prefs-card.md"
    args = ["alignment", "export", str(run), "--out", str(out), "--card", str(card)]
    assert main(args) == 0
    assert pl.read_parquet(out).height == 3
    assert 'data_files="../prefs.parquet"' in card.read_text(encoding="utf-8")
    assert not (tmp_path / "README.md").exists()


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(["alignment", "export", *args]) == 1
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


def test_cli_errors_exit_1_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_dir(tmp_path)
    out = tmp_path / "out" / "prefs.jsonl"
    _fails(
        [str(run), "--out", str(tmp_path / "prefs.csv")], capsys, "prefs.csv", ".jsonl or .parquet"
    )
    _fails([str(tmp_path / "nope"), "--out", str(out)], capsys, "not a run directory")
    # a README.md the command did not write
    out.parent.mkdir()
    (out.parent / "README.md").write_text("mine\n", encoding="utf-8")
    _fails([str(run), "--out", str(out)], capsys, "README.md", "--force", "--card")
    assert not out.exists() and (out.parent / "README.md").read_text(encoding="utf-8") == "mine\n"
    assert main(["alignment", "export", str(run), "--out", str(out), "--force"]) == 0
    out.unlink()
    # a served log that does not parse: file:line
    served = RunLayout(run).served_log
    good = served.read_bytes()
    served.write_bytes(good + b'{"prompt_id": "p9", "prompt": "x"\n')
    _fails([str(run), "--out", str(out)], capsys, f"{served}:5:", "malformed JSON")
    # no default served log
    served.unlink()
    _fails([str(run), "--out", str(out)], capsys, "served.jsonl", "pass --responses")
    # a log none of the releases joins to
    other = tmp_path / "other.jsonl"
    other.write_text(_line("zzz") + "\n", encoding="utf-8")
    _fails(
        [str(run), "--out", str(out), "--responses", str(other)],
        capsys,
        "none of the 4",
        "Nothing written",
    )
    # no label store
    RunLayout(run).labels.unlink()
    (tmp_path / "run" / "served.jsonl").write_bytes(good)
    _fails([str(run), "--out", str(out)], capsys, "labels.db", "no label store")
    assert not out.exists()


@pytest.mark.realdata
def test_cli_with_ifllm_query_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = IFLLM_ROOT / "query_logs_table.csv.gz"
    if not table.is_file():
        pytest.skip(f"{table} is not here")
    log = read_served(table)
    pairwise = [p for p in log if log.response(p, f"{p}/2") is not None][:6]
    assert len(pairwise) == 6
    run = tmp_path / "run"
    run.mkdir()
    rows = [_label(p, i % 2, RATE_3) for i, p in enumerate(pairwise)]
    add_releases(RunLayout(run).labels, "w1", rows, run_key="ifllm", round=1, record_hash="h")
    out = tmp_path / "prefs.jsonl"
    args = ["alignment", "export", str(run), "--out", str(out), "--responses", str(table)]
    assert main(args) == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(exported) == 6
    first = pairwise[0]  # bit 0: the left answer (llm_response_1) is chosen
    assert exported[0]["prompt"] == log[first]
    assert exported[0]["chosen"] == log.response(first, f"{first}/1")
    assert exported[1]["chosen"] == log.response(pairwise[1], f"{pairwise[1]}/2")
    assert [r["flip_rate"] for r in exported] == [RATE_3] * 6
    assert len(list(stored_labels(RunLayout(run).labels))) == 6
