"""The capture sink: per-item validation, encrypted durable journal, crash recovery, commit."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capture_replay import T0, replay_into_sink
from fedgaze.client.capture import event_store
from fedgaze.client.capture import sink as sink_module
from fedgaze.client.capture.fold import BatchOp, encode_op, fingerprint, rows_of
from fedgaze.client.capture.journal import HEADER_BYTES, Journal, JournalError
from fedgaze.client.capture.samples import CaptureSample, Label, QueryMeta, parse_batch, parse_item
from fedgaze.client.capture.sink import (
    JOURNAL_FILE,
    CaptureError,
    CapturePaused,
    CaptureSink,
)
from fedgaze.client.device.pause import set_paused
from fedgaze.client.device.store import load_device, save_device
from fedgaze.client.device.store_crypto import create_store_key, load_store_key
from fedgaze.data.schema import ServedIds
from fedgaze.data.synthetic import generate_cohort
from fedgaze.features.v2 import featurize_device

CANARY_TEXT = "CANARY-capture-7f3a91"
CANARY_X = 31337.4242
CANARY_T = T0 + 123.456


def meta(query_id: int = 1, *, pairwise: bool = True, prompt: str = "a prompt") -> QueryMeta:
    return QueryMeta(
        query_id=query_id,
        task_id=0,
        pairwise=pairwise,
        prompt=prompt,
        response_left="left answer text",
        response_right="right answer" if pairwise else None,
        shown_at_ms=T0,
    )


def gaze(query_id: int = 1, t: float = T0, **over: Any) -> dict[str, Any]:
    item = {
        "type": "gaze",
        "query_id": query_id,
        "t_ms": t,
        "x": 10.0,
        "y": -20.0,
        "side": "left",
        "char_index": 3,
        "validate": 1,
    }
    return {**item, **over}


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    return tmp_path / "device"


@pytest.fixture
def sink(device_dir: Path) -> Iterator[CaptureSink]:
    s = CaptureSink(device_dir)
    try:
        yield s
    finally:
        s.close()


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"query_id": 1}, "type"),
        (gaze(type="blink"), "type"),
        (gaze(x=float("nan")), "x"),
        (gaze(y=float("inf")), "y"),
        (gaze(x=2e5), "x"),
        (gaze(x="10"), "x"),
        (gaze(t_ms=5.0), "t_ms"),
        (gaze(t_ms=5e12), "t_ms"),
        (gaze(side="top"), "side"),
        (gaze(char_index=-2), "char_index"),
        (gaze(validate=2), "validate"),
        (gaze(validate=True), "validate"),
        (gaze(query_id=-1), "query_id"),
        (gaze(query_id=2**63), "query_id"),
        (gaze(charIndex=3), "charIndex"),
        (gaze(modality="mouse"), "modality"),
        ({k: v for k, v in gaze().items() if k != "y"}, "y"),
        ({"type": "scroll", "query_id": 1, "t_ms": T0, "detail": "x" * 201}, "detail"),
        ({"type": "click", "query_id": 1, "t_ms": T0, "x": 1.0}, "x"),
        ("not an object", "item"),
    ],
)
def test_each_bad_item_is_rejected_naming_its_field(item: Any, field: str) -> None:
    valid, rejected = parse_batch([gaze(), item, gaze(t=T0 + 1)])
    assert [r.index for r in rejected] == [1]
    assert rejected[0].field == field and rejected[0].reason
    assert [v.t_ms for v in valid] == [T0, T0 + 1]  # the valid ones survive


def test_rejection_reasons_do_not_quote_the_value() -> None:
    _, rejected = parse_batch([gaze(x=CANARY_X * 100), gaze(side=CANARY_TEXT)])
    assert len(rejected) == 2
    assert all(str(CANARY_X) not in r.reason and CANARY_TEXT not in r.reason for r in rejected)


def test_query_meta_and_label_checks(sink: CaptureSink) -> None:
    with pytest.raises(ValueError, match="response_right"):
        QueryMeta(**{**meta().model_dump(), "response_right": None})
    sink.begin_query(meta(1))
    sink.begin_query(meta(1))  # idempotent
    sink.begin_query(meta(2, pairwise=False))
    with pytest.raises(CaptureError, match=r"^query_id: query 1 was begun with different"):
        sink.begin_query(meta(1, prompt="another"))
    with pytest.raises(CaptureError, match=r"^query_id: unknown query 9"):
        sink.set_label(Label(query_id=9, preference=1))
    with pytest.raises(CaptureError, match=r"^preference: a pointwise query"):
        sink.set_label(Label(query_id=2, preference=2))
    with pytest.raises(CaptureError, match=r"^likert_right"):
        sink.set_label(Label(query_id=2, likert_right=3.0))
    with pytest.raises(CaptureError, match=r"^precision"):
        sink.set_calibration(0, 101.0)
    with pytest.raises(CaptureError, match=r"^task_id"):
        sink.set_calibration(-1, 50.0)
    sink.set_label(Label(query_id=1, preference=2, likert_left=4.0))
    assert sink.stats()["labels"] == 1 and sink.stats()["queries"] == 2


# -- the answering service's ids ------------------------------------------------------------

IDS = {"prompt_id": "chatcmpl-9", "response_left_id": "chatcmpl-9/0", "response_right_id": "r/1"}


def test_service_ids_reach_the_store_and_are_kept_across_restarts(device_dir: Path) -> None:
    fields = {**meta(1).model_dump(mode="json"), **IDS}  # as a capture client sends them
    with CaptureSink(device_dir) as s:
        s.begin_query(QueryMeta.model_validate_json(json.dumps(fields)))
        s.begin_query(meta(2))  # the service gave no ids
        s.commit()
    with CaptureSink(device_dir) as s:
        s.begin_query(QueryMeta.model_validate(fields))  # known from the store: idempotent
        for other in (meta(1), QueryMeta.model_validate({**fields, "prompt_id": "other"})):
            with pytest.raises(CaptureError, match=r"^query_id: query 1 was begun with different"):
                s.begin_query(other)
        assert s.add([gaze(1), gaze(2)]).accepted == 2
        s.commit()
    stored = load_device(device_dir / "store")
    assert [q.served for q in stored.queries] == [ServedIds(*IDS.values()), None]
    no_ids = dataclasses.replace(stored.queries[0], served=None)  # the ids are stored content
    assert fingerprint(dataclasses.replace(stored, queries=(no_ids, stored.queries[1]))) != (
        fingerprint(stored)
    )


def test_a_journal_written_before_service_ids_still_loads(device_dir: Path) -> None:
    with CaptureSink(device_dir) as s:  # creates the key and the journal
        key = load_store_key(s.key_path)
    old = {k: v for k, v in meta(1).model_dump().items() if k not in IDS}  # no id keys at all
    sample = parse_item(0, gaze())
    assert isinstance(sample, CaptureSample)
    journal = Journal(device_dir / JOURNAL_FILE, key)
    journal.append(b"Q" + json.dumps(old).encode())
    journal.append(encode_op(BatchOp(rows_of([sample]), ())))
    journal.close()
    with CaptureSink(device_dir) as s:
        assert s.stats()["queries"] == 1 and s.stats()["gaze_samples"] == 1
        s.begin_query(meta(1))  # the same metadata: idempotent
        device = s.commit()
    (q,) = load_device(device_dir / "store").queries
    assert q.served is None and q.prompt == "a prompt" and len(q.gaze) == 1
    assert fingerprint(device) == fingerprint(load_device(device_dir / "store"))


def test_sink_rejects_samples_that_do_not_fit_their_query(sink: CaptureSink) -> None:
    sink.begin_query(meta(1))
    sink.begin_query(meta(2, pairwise=False))
    result = sink.add(
        [
            gaze(1),
            gaze(7),  # never begun
            gaze(2, side="right"),  # pointwise: no right panel
            gaze(1, side="right", char_index=len("right answer") + 1),
            gaze(1, side="none", char_index=0),
            gaze(1, x=float("nan")),
            {"type": "scroll", "query_id": 1, "t_ms": T0, "detail": "down"},
        ]
    )
    assert result.accepted == 2
    assert [(r.index, r.field) for r in result.rejected] == [
        (1, "query_id"),
        (2, "side"),
        (3, "char_index"),
        (4, "char_index"),
        (5, "x"),
    ]
    assert sink.stats() | {"uncommitted_records": 0} == {
        "queries": 2,
        "gaze_samples": 1,
        "mouse_samples": 0,
        "events": 1,
        "labels": 0,
        "uncommitted_records": 0,
    }


def test_pause_refuses_every_write_and_resume_allows_them(
    sink: CaptureSink, device_dir: Path
) -> None:
    sink.begin_query(meta(1))
    before = sink.stats()
    size = (device_dir / JOURNAL_FILE).stat().st_size
    set_paused(device_dir, True)
    (parsed,), _ = parse_batch([gaze()])
    for write in (
        lambda: sink.add([gaze()]),
        lambda: sink.add_samples([parsed]),
        lambda: sink.begin_query(meta(2)),
        lambda: sink.set_label(Label(query_id=1, preference=1)),
        lambda: sink.set_calibration(0, 80.0),
    ):
        with pytest.raises(CapturePaused, match="paused"):
            write()
    assert sink.stats() == before and (device_dir / JOURNAL_FILE).stat().st_size == size
    sink.commit()  # folding what was captured before the pause records nothing new
    set_paused(device_dir, False)
    assert sink.add([gaze()]).accepted == 1


# -- commit ----------------------------------------------------------------------------------


def test_commit_merges_sorts_and_is_idempotent(sink: CaptureSink, device_dir: Path) -> None:
    sink.begin_query(meta(1))
    sink.add([gaze(t=T0 + 30), gaze(t=T0 + 10), {**gaze(t=T0 + 5), "type": "mouse"}])
    sink.add([gaze(t=T0 + 20)])
    sink.set_label(Label(query_id=1, preference=1))
    sink.set_calibration(0, 77.5)
    first = sink.commit()
    q = first.queries[0]
    assert q.gaze.t_ms.tolist() == [T0 + 10, T0 + 20, T0 + 30] and len(q.mouse) == 1
    assert q.preference == 1 and first.calibration == {0: 77.5}
    assert sink.stats()["uncommitted_records"] == 0
    assert fingerprint(load_device(device_dir / "store")) == fingerprint(first)
    stamps = {p: p.stat().st_mtime_ns for p in (device_dir / "store").iterdir()}
    again = sink.commit()
    assert fingerprint(again) == fingerprint(first)
    assert {p: p.stat().st_mtime_ns for p in (device_dir / "store").iterdir()} == stamps
    # Later data merges into the stored query, in time order.
    sink.begin_query(meta(1))
    sink.add([gaze(t=T0 + 15)])
    assert sink.commit().queries[0].gaze.t_ms.tolist() == [T0 + 10, T0 + 15, T0 + 20, T0 + 30]


def test_commit_keeps_the_queries_already_stored(device_dir: Path) -> None:
    (existing,) = generate_cohort(1, seed=4, comparisons_per_device=2)
    save_device(device_dir / "store", existing)
    with pytest.raises(CaptureError, match=r"^device_id"):
        CaptureSink(device_dir, device_id="someone-else")
    with CaptureSink(device_dir) as s:
        assert s.device_id == existing.device_id
        assert s.stats()["queries"] == len(existing.queries)
        old = existing.queries[0]
        s.begin_query(sink_module.meta_of(old))  # known from the store: accepted as is
        new_id = max(q.query_id for q in existing.queries) + 1
        s.begin_query(meta(new_id))
        s.add([gaze(new_id)])
        device = s.commit()
    assert [q.query_id for q in device.queries] == [
        *(q.query_id for q in existing.queries),
        new_id,
    ]
    kept = dataclasses.replace(device, queries=device.queries[:-1])
    assert fingerprint(kept) == fingerprint(existing)


def test_a_replayed_device_is_stored_exactly_and_featurizes(device_dir: Path) -> None:
    (original,) = generate_cohort(1, seed=2, comparisons_per_device=8)
    with CaptureSink(device_dir, device_id=original.device_id) as s:
        accepted = replay_into_sink(s, original)
        assert accepted == sum(len(q.gaze) + len(q.mouse) for q in original.queries)
        committed = s.commit()
    stored = load_device(device_dir / "store")
    assert fingerprint(stored) == fingerprint(committed) == fingerprint(original)
    assert [q.served for q in stored.queries] == [q.served for q in original.queries]
    assert all(q.served is not None for q in stored.queries)
    features = featurize_device(stored)
    expected = featurize_device(original)
    assert len(features.y) == len(expected.y) == 8
    np.testing.assert_array_equal(features.X, expected.X)
    assert np.isfinite(features.X).all() and features.X.shape[1] == 2


def test_concurrent_writers_and_commits_store_every_sample_once(device_dir: Path) -> None:
    writers, batches, size = 4, 30, 20
    with CaptureSink(device_dir) as s:
        for w in range(writers):
            s.begin_query(meta(w))

        def write(w: int) -> None:
            for b in range(batches):
                t = T0 + (b * size) * 10.0
                result = s.add([gaze(w, t=t + i * 10.0, x=float(w)) for i in range(size)])
                assert result.accepted == size

        def commit_repeatedly() -> None:
            while any(t.is_alive() for t in threads):
                s.commit()

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        committer = threading.Thread(target=commit_repeatedly)
        for t in threads:
            t.start()
        committer.start()
        for t in [*threads, committer]:
            t.join(timeout=60)
            assert not t.is_alive()
        assert s.stats()["gaze_samples"] == writers * batches * size
        device = s.commit()
    for w, q in enumerate(device.queries):
        assert q.gaze.t_ms.tolist() == [T0 + k * 10.0 for k in range(batches * size)]
        assert set(q.gaze.x.tolist()) == {float(w)}
    with CaptureSink(device_dir) as s:  # and the journal holds nothing twice either
        assert s.stats()["uncommitted_records"] == 0
        assert fingerprint(s.commit()) == fingerprint(device)


# -- encryption at rest ----------------------------------------------------------------------


def _needles() -> dict[str, bytes]:
    return {
        "text": CANARY_TEXT.encode(),
        "text utf-16": CANARY_TEXT.encode("utf-16-le"),
        "x float64": struct.pack("<d", CANARY_X),
        "x float64 be": struct.pack(">d", CANARY_X),
        "x float32": struct.pack("<f", CANARY_X),
        "x text": str(CANARY_X).encode(),
        "t float64": struct.pack("<d", CANARY_T),
        "t text": repr(CANARY_T).encode(),
    }


def _leaks(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {n}" for n, b in _needles().items() if b in data]
    return found


def test_nothing_captured_is_on_disk_in_plaintext(sink: CaptureSink, device_dir: Path) -> None:
    sink.begin_query(meta(1, prompt=f"{CANARY_TEXT} prompt"))
    sink.add(
        [
            gaze(t=CANARY_T, x=CANARY_X),
            {"type": "copy", "query_id": 1, "t_ms": CANARY_T, "detail": CANARY_TEXT},
        ]
    )
    assert not _leaks(device_dir), "journal"
    device = sink.commit()
    assert device.queries[0].gaze.x.tolist() == [CANARY_X]
    assert [e.detail for e in sink.events()] == [CANARY_TEXT]
    assert (device_dir / event_store.EVENTS_FILE).is_file()
    assert not _leaks(device_dir), "store and events"


# -- durability and crash recovery -----------------------------------------------------------


def test_reopening_replays_the_journal(device_dir: Path) -> None:
    with CaptureSink(device_dir) as s:
        s.begin_query(meta(1))
        s.add([gaze(t=T0 + i) for i in range(5)])
        s.set_label(Label(query_id=1, preference=2))
        stats = s.stats()
    with CaptureSink(device_dir) as s:
        assert s.stats() == stats
        with pytest.raises(CaptureError, match="already open"):
            CaptureSink(device_dir)
        device = s.commit()
    assert len(device.queries[0].gaze) == 5 and device.queries[0].preference == 2


def test_a_torn_last_record_is_skipped_at_every_cut(device_dir: Path) -> None:
    journal = device_dir / JOURNAL_FILE
    with CaptureSink(device_dir) as s:
        s.begin_query(meta(1))
        s.add([gaze(t=T0 + i) for i in range(3)])
        kept_size = journal.stat().st_size
        kept = s.stats()
        s.add([gaze(t=T0 + 10 + i) for i in range(3)])
    full = journal.read_bytes()
    assert len(full) > kept_size
    cuts = [*range(kept_size, len(full))]
    for cut in cuts:
        journal.write_bytes(full[:cut])
        with CaptureSink(device_dir) as s:
            assert s.stats() == kept, cut
        assert journal.stat().st_size == kept_size  # the torn tail was cut off
    # Unwritten blocks can also read back as zeros: still a torn tail.
    journal.write_bytes(full[:kept_size] + bytes(len(full) - kept_size))
    with CaptureSink(device_dir) as s:
        assert s.stats() == kept
        s.add([gaze(t=T0 + 99)])  # appends after the cut are intact
    with CaptureSink(device_dir) as s:
        assert s.stats()["gaze_samples"] == kept["gaze_samples"] + 1


def test_damage_before_intact_records_refuses_to_open(device_dir: Path) -> None:
    journal = device_dir / JOURNAL_FILE
    with CaptureSink(device_dir) as s:
        s.begin_query(meta(1))
        s.add([gaze()])
    data = bytearray(journal.read_bytes())
    data[HEADER_BYTES + 40] ^= 0xFF  # inside the first record's ciphertext
    journal.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"offset \d+ is damaged.*later records are intact"):
        CaptureSink(device_dir)


def test_a_journal_under_another_key_does_not_open(device_dir: Path, tmp_path: Path) -> None:
    with CaptureSink(device_dir) as s:
        s.begin_query(meta(1))
        s.add([gaze()])
    size = (device_dir / JOURNAL_FILE).stat().st_size
    with pytest.raises(JournalError, match="wrong store key"):
        Journal(device_dir / JOURNAL_FILE, b"\x01" * 32)
    other = tmp_path / "other.key"
    with pytest.raises(CaptureError, match=r"^key_path: .*store key file missing"):
        CaptureSink(device_dir, key_path=other)  # a new key is never made for existing data
    create_store_key(other)
    with pytest.raises(JournalError, match="wrong store key"):
        CaptureSink(device_dir, key_path=other)
    assert (device_dir / JOURNAL_FILE).stat().st_size == size  # nothing was cut off
    with CaptureSink(device_dir) as s:
        assert s.stats()["gaze_samples"] == 1


class Crash(BaseException):
    """The process dying at a chosen step (not an error any code may catch and handle)."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    real_save = sink_module.save_device

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash(step)

    def save_then_crash(*args: Any, **kwargs: Any) -> None:
        real_save(*args, **kwargs)
        raise Crash(step)

    if step == "events":
        monkeypatch.setattr(sink_module, "write_events", crash)
    elif step == "prepare":
        real_append = Journal.append

        def append(self: Journal, plaintext: bytes) -> int:
            if plaintext.startswith(b"P"):
                raise Crash(step)
            return real_append(self, plaintext)

        monkeypatch.setattr(Journal, "append", append)
    elif step == "store":
        monkeypatch.setattr(sink_module, "save_device", crash)
    elif step == "after-store":
        monkeypatch.setattr(sink_module, "save_device", save_then_crash)
    elif step == "retire":
        monkeypatch.setattr(Journal, "retire", crash)
    else:
        raise AssertionError(step)


@pytest.mark.parametrize("step", ["events", "prepare", "store", "after-store", "retire"])
def test_a_crash_during_commit_neither_loses_nor_duplicates(
    device_dir: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    with CaptureSink(device_dir) as s:  # something already committed
        s.begin_query(meta(1))
        s.add([gaze(t=T0 + 1), {"type": "click", "query_id": 1, "t_ms": T0, "detail": "a"}])
        s.commit()
    s = CaptureSink(device_dir)
    s.add([gaze(t=T0 + 2), {"type": "click", "query_id": 1, "t_ms": T0 + 2, "detail": "b"}])
    s.set_label(Label(query_id=1, preference=1))
    expected = s.stats()
    with monkeypatch.context() as patch:
        _crash_at(patch, step)
        with pytest.raises(Crash):
            s.commit()
    s.close()
    with CaptureSink(device_dir) as again:
        assert again.stats() | {"uncommitted_records": 0} == expected | {"uncommitted_records": 0}
        device = again.commit()
        assert [e.detail for e in again.events()] == ["a", "b"]
    assert device.queries[0].gaze.t_ms.tolist() == [T0 + 1, T0 + 2]
    assert device.queries[0].preference == 1


def test_a_store_error_after_replacing_the_store_still_completes(
    sink: CaptureSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = sink_module.save_device

    def save_then_fail(*args: Any, **kwargs: Any) -> None:
        real_save(*args, **kwargs)
        raise OSError("cleanup of an old file failed")

    sink.begin_query(meta(1))
    sink.add([gaze()])
    monkeypatch.setattr(sink_module, "save_device", save_then_fail)
    device = sink.commit()  # the store holds the new device: the commit stands
    assert len(device.queries[0].gaze) == 1 and sink.stats()["uncommitted_records"] == 0
    monkeypatch.setattr(sink_module, "save_device", real_save)
    assert len(sink.commit().queries[0].gaze) == 1


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fedgaze.client.capture.samples import QueryMeta
    from fedgaze.client.capture.sink import CaptureSink

    sink = CaptureSink(Path(sys.argv[1]))
    sink.begin_query(QueryMeta(query_id=1, task_id=0, pairwise=False, prompt="p",
                               response_left="answer", response_right=None, shown_at_ms=None))
    n = 0
    while True:
        t = 1.7e12 + n * 50
        batch = [{"type": "gaze", "query_id": 1, "t_ms": t + i, "x": float(i), "y": 1.0,
                  "side": "left", "char_index": 1} for i in range(50)]
        assert sink.add(batch).accepted == 50
        n += 1
        print(n, flush=True)
    """
)


def test_killing_a_writer_loses_no_acknowledged_batch(device_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(device_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while acked < 40:
            assert time.monotonic() < deadline, "the writer acknowledged too few batches"
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "writer died"
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is writing batch acked + 1
        proc.wait(timeout=10)
        acked = max([acked, *(int(x) for x in proc.stdout.read().split())])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    with CaptureSink(device_dir) as s:
        gaze_n = s.stats()["gaze_samples"]
        assert gaze_n % 50 == 0 and gaze_n // 50 in (acked, acked + 1)
        t = s.commit().queries[0].gaze.t_ms
    assert np.array_equal(t, 1.7e12 + np.arange(gaze_n))
