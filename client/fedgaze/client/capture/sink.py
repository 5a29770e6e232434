"""The capture sink: where every capture front end (HTTP page, gRPC tracker) puts what it records.

One :class:`CaptureSink` owns one device folder. Front ends call it from any thread:

1. :meth:`CaptureSink.begin_query` once per query shown (metadata and answer texts),
2. :meth:`CaptureSink.add` with batches of JSON-like items (see
   :mod:`fedgaze.client.capture.samples` for the item format) — each item is validated on its
   own and the result says how many were stored and why each other one was not,
3. :meth:`CaptureSink.set_label` / :meth:`CaptureSink.set_calibration` when known,
4. :meth:`CaptureSink.commit` now and then (and at shutdown) to fold everything into the
   encrypted device store that training reads (``fedgaze.client.device.store``).

Durability: every write call returns only after its data is fsynced in an encrypted,
append-only journal (``device_dir/capture.journal``, :mod:`fedgaze.client.capture.journal`),
so data acknowledged to a front end survives a crash or kill; reopening the sink replays it.
:meth:`CaptureSink.commit` records which journal records it is folding and the fingerprint of
the device it is about to store, writes the store, and only then retires those records: after
a crash in between, reopening compares the store with that fingerprint and so neither loses
nor duplicates a sample. Events (scroll, click, ...) go to their own encrypted file
(:mod:`fedgaze.client.capture.event_store`). Nothing is written in plaintext and nothing
captured is logged.

While the device is paused (:mod:`fedgaze.client.device.pause`) every write call raises
:class:`CapturePaused`. Only one sink may have a device folder open at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedgaze.client.capture.event_store import EVENTS_FILE, read_events, write_events
from fedgaze.client.capture.fold import (
    BatchOp,
    CalibrationOp,
    LabelOp,
    MetaOp,
    Op,
    PrepareOp,
    decode_op,
    encode_op,
    fingerprint,
    fold,
    meta_of,
    rows_of,
)
from fedgaze.client.capture.journal import Journal
from fedgaze.client.capture.samples import (
    ID_MAX,
    CaptureEvent,
    CaptureSample,
    Label,
    QueryMeta,
    Rejection,
    check_label,
    parse_item,
)
from fedgaze.client.device.pause import is_paused, pause_path
from fedgaze.client.device.store import MANIFEST, load_device, save_device
from fedgaze.client.device.store_crypto import (
    StoreCryptoError,
    create_store_key,
    default_key_path,
    load_store_key,
)
from fedgaze.data.schema import Device

__all__ = [
    "DEFAULT_DEVICE_ID",
    "JOURNAL_FILE",
    "LOCK_FILE",
    "AddResult",
    "CaptureError",
    "CapturePaused",
    "CaptureSink",
]

JOURNAL_FILE = "capture.journal"
LOCK_FILE = "capture.lock"
DEFAULT_DEVICE_ID = "device"


class CaptureError(ValueError):
    """A write the sink cannot accept (unknown query, conflicting metadata, bad label...).

    The message starts with the offending field (``"query_id: ..."``) and never quotes
    captured content.
    """


class CapturePaused(RuntimeError):
    """The person paused this device: nothing is recorded until they resume."""


class AddResult(BaseModel):
    """What happened to a batch: how many items were stored, and why each other one was not.

    ``rejected`` holds one :class:`~fedgaze.client.capture.samples.Rejection` per refused item,
    by index into the batch, in index order.
    """

    model_config = ConfigDict(frozen=True)

    accepted: int
    rejected: list[Rejection]


def _has_label(label: Label) -> bool:
    return any(v is not None for v in (label.preference, label.likert_left, label.likert_right))


class CaptureSink:
    """Durable, encrypted, thread-safe capture into one device's store (see the module doc)."""

    def __init__(
        self,
        device_dir: Path,
        *,
        store_dir: Path | None = None,
        key_path: Path | None = None,
        device_id: str | None = None,
    ) -> None:
        """Open the sink of ``device_dir`` (created, mode 0700, when missing).

        ``store_dir``: the device store to commit into (default ``device_dir/store``).
        ``key_path``: the store key file (default: the store's default, ``store.key`` beside
        ``store_dir``), created 0600 when missing; journal and events use the same key.
        ``device_id``: the id of a store this sink creates (default ``"device"``); an existing
        store keeps its id, and a different ``device_id`` for it is a :class:`CaptureError`.

        Replays the journal left by an earlier sink (crashed or not). Raises
        :class:`CaptureError` when another sink has the folder open, and the store's,
        journal's or key's own errors (naming the file) when they are damaged.
        """
        self.device_dir = Path(device_dir)
        self.device_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store_dir = Path(store_dir) if store_dir is not None else self.device_dir / "store"
        self.key_path = Path(key_path) if key_path is not None else default_key_path(self.store_dir)
        if self.key_path.absolute().is_relative_to(self.store_dir.absolute()):
            raise CaptureError(f"key_path: {self.key_path} must be outside the store")
        self._lock_fd = self._lock()
        try:
            self._open(device_id)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _lock(self) -> int:
        fd = os.open(self.device_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CaptureError(
                f"device_dir: {self.device_dir} is already open in another capture sink"
            ) from None
        return fd

    def _open(self, device_id: str | None) -> None:
        existing = (self.store_dir / MANIFEST).exists() or (self.device_dir / JOURNAL_FILE).exists()
        try:  # a missing key for existing data is an error, not a reason for a new key
            self._key = (load_store_key if existing else create_store_key)(self.key_path)
        except StoreCryptoError as err:
            raise CaptureError(f"key_path: {err}") from None
        stored = self._load_store()
        if stored is not None and device_id is not None and stored.device_id != device_id:
            raise CaptureError(
                f"device_id: the store at {self.store_dir} belongs to device "
                f"{stored.device_id!r}, not {device_id!r}"
            )
        self.device_id = stored.device_id if stored is not None else device_id or DEFAULT_DEVICE_ID
        self._mutex = threading.Lock()
        self._commit_mutex = threading.Lock()
        self._events_path = self.device_dir / EVENTS_FILE
        self._journal = Journal(self.device_dir / JOURNAL_FILE, self._key)
        try:
            self._pending = self._recover(stored)
            self._reset_counts(stored)
        except BaseException:
            self._journal.close()
            raise

    def _load_store(self) -> Device | None:
        if not (self.store_dir / MANIFEST).exists():
            return None
        return load_device(self.store_dir, key=self._key)

    def _recover(self, stored: Device | None) -> list[tuple[int, Op]]:
        """The journal's records not yet in the store; retires the ones that are."""
        ops = [(seq, decode_op(plain)) for seq, plain in self._journal.take_records()]
        stored_fp = fingerprint(stored) if stored is not None else None
        folded_below = 0
        for _, op in reversed(ops):
            if isinstance(op, PrepareOp) and op.fingerprint == stored_fp:
                folded_below = op.upto  # the store was written; its retire step was not
                break
        pending: list[tuple[int, Op]] = [
            (s, op) for s, op in ops if s >= folded_below and not isinstance(op, PrepareOp)
        ]
        if len(pending) < len(ops):
            keep = {s for s, _ in pending}
            self._journal.retire(lambda s: s in keep)
        return pending

    def _reset_counts(self, stored: Device | None) -> None:
        queries = stored.queries if stored is not None else ()
        self._metas: dict[int, QueryMeta] = {q.query_id: meta_of(q) for q in queries}
        self._labelled: dict[int, bool] = {
            q.query_id: any(v is not None for v in (q.preference, q.likert_left, q.likert_right))
            for q in queries
        }
        self._counts = {
            "gaze_samples": sum(len(q.gaze) for q in queries),
            "mouse_samples": sum(len(q.mouse) for q in queries),
        }
        self._events_folded_upto, events = read_events(self._events_path, self._key)
        self._counts["events"] = len(events)
        for seq, op in self._pending:
            self._account(seq, op)

    def _account(self, seq: int, op: Op) -> None:
        if isinstance(op, MetaOp):
            self._metas.setdefault(op.meta.query_id, op.meta)
        elif isinstance(op, LabelOp):
            self._labelled[op.label.query_id] = _has_label(op.label)
        elif isinstance(op, BatchOp):
            gaze = int(np.count_nonzero(op.rows["modality"] == 0))
            self._counts["gaze_samples"] += gaze
            self._counts["mouse_samples"] += len(op.rows) - gaze
            if seq >= self._events_folded_upto:
                self._counts["events"] += len(op.events)

    # -- writes ------------------------------------------------------------------------------

    def _refuse_if_paused(self) -> None:
        if is_paused(self.device_dir):
            raise CapturePaused(
                f"capture is paused on this device ({pause_path(self.device_dir)} exists); "
                "nothing is recorded until it is resumed"
            )

    def _append(self, op: Op) -> None:
        """Journal ``op`` durably, then account for it. Call with the mutex held."""
        self._refuse_if_paused()
        seq = self._journal.append(encode_op(op))
        self._pending.append((seq, op))
        self._account(seq, op)

    def begin_query(self, meta: QueryMeta) -> None:
        """Announce a query before its samples; durable on return.

        Idempotent for the same ``meta`` (also after a commit or restart); a different
        ``meta`` for a known ``query_id`` raises :class:`CaptureError` (``query_id: ...``).
        Raises :class:`CapturePaused` while the device is paused.
        """
        with self._mutex:
            self._refuse_if_paused()
            known = self._metas.get(meta.query_id)
            if known == meta:
                return
            if known is not None:
                raise CaptureError(
                    f"query_id: query {meta.query_id} was begun with different metadata"
                )
            self._append(MetaOp(meta))

    def add(self, items: Sequence[Mapping[str, Any]]) -> AddResult:
        """Validate and store a batch of JSON-like items; durable on return.

        Each item is a dict with a ``"type"`` (``"gaze"``, ``"mouse"``, or an event kind; see
        :mod:`fedgaze.client.capture.samples`). Invalid items are rejected one by one, naming
        the field, and the valid ones are stored regardless. Besides the per-item checks, a
        sample is rejected when its ``query_id`` was never begun (``"query_id"``), when it
        lies on the right side of a pointwise query (``"side"``), or when its ``char_index``
        is past the end of that side's answer (``"char_index"``). Raises
        :class:`CapturePaused` (storing nothing) while the device is paused.
        """
        self._refuse_if_paused()
        parsed = [parse_item(i, item) for i, item in enumerate(items)]
        valid = [(i, p) for i, p in enumerate(parsed) if not isinstance(p, Rejection)]
        rejected = [p for p in parsed if isinstance(p, Rejection)]
        return self._store(valid, rejected)

    def add_samples(self, samples: Sequence[CaptureSample | CaptureEvent]) -> AddResult:
        """Store already-validated samples and events (the gRPC path); as :meth:`add`.

        Rejection indices refer to positions in ``samples``.
        """
        self._refuse_if_paused()
        return self._store(list(enumerate(samples)), [])

    def _check(self, index: int, item: CaptureSample | CaptureEvent) -> Rejection | None:
        meta = self._metas.get(item.query_id)
        if meta is None:
            return Rejection(
                index=index, field="query_id", reason="unknown query: call begin_query first"
            )
        if item.side == "right" and not meta.pairwise:
            return Rejection(index=index, field="side", reason="a pointwise query has no right")
        if item.char_index >= 0:
            text = meta.response_right if item.side == "right" else meta.response_left
            if item.side == "none" or text is None or item.char_index > len(text):
                return Rejection(
                    index=index,
                    field="char_index",
                    reason="past the end of that side's answer (or no side)",
                )
        return None

    def _store(
        self,
        valid: list[tuple[int, CaptureSample | CaptureEvent]],
        rejected: list[Rejection],
    ) -> AddResult:
        with self._mutex:
            samples: list[CaptureSample] = []
            events: list[CaptureEvent] = []
            for index, item in valid:
                problem = self._check(index, item)
                if problem is not None:
                    rejected.append(problem)
                elif isinstance(item, CaptureSample):
                    samples.append(item)
                else:
                    events.append(item)
            if samples or events:
                self._append(BatchOp(rows_of(samples), tuple(events)))
        rejected.sort(key=lambda r: r.index)
        return AddResult(accepted=len(samples) + len(events), rejected=rejected)

    def set_label(self, label: Label) -> None:
        """Record the person's label of a begun query (it replaces an earlier label as a
        whole); durable on return. :class:`CaptureError` naming the field when the query is
        unknown or the label does not fit it (see :class:`Label`); :class:`CapturePaused`."""
        with self._mutex:
            self._refuse_if_paused()
            meta = self._metas.get(label.query_id)
            if meta is None:
                raise CaptureError(
                    f"query_id: unknown query {label.query_id}; call begin_query first"
                )
            problem = check_label(label, meta)
            if problem is not None:
                raise CaptureError(f"{problem.field}: {problem.reason}")
            self._append(LabelOp(label))

    def set_calibration(self, task_id: int, precision: float) -> None:
        """Record the gaze calibration precision (percent, 0-100) measured for ``task_id``;
        the latest value of a task wins. Durable on return; :class:`CaptureError` naming the
        field when out of range; :class:`CapturePaused`."""
        if isinstance(task_id, bool) or not isinstance(task_id, int) or not 0 <= task_id <= ID_MAX:
            raise CaptureError(f"task_id: must be an integer from 0 to {ID_MAX}")
        if isinstance(precision, bool) or not isinstance(precision, int | float):
            raise CaptureError("precision: must be a number")
        if not (math.isfinite(precision) and 0.0 <= precision <= 100.0):
            raise CaptureError("precision: must be a finite percentage between 0 and 100")
        with self._mutex:
            self._append(CalibrationOp(task_id, float(precision)))

    # -- commit ------------------------------------------------------------------------------

    def _store_fingerprint(self) -> str | None:
        with contextlib.suppress(Exception):
            stored = self._load_store()
            return fingerprint(stored) if stored is not None else None
        return None

    def commit(self) -> Device:
        """Fold everything captured so far into the encrypted device store; returns the device.

        Merges with the queries already stored (new queries appended in the order they were
        begun, samples sorted by time within each query, the latest label and calibration
        winning), writes the store with :func:`fedgaze.client.device.store.save_device`, and only
        then retires the folded journal records. Idempotent: with nothing new it rewrites
        nothing. Writes that arrive during a commit are kept for the next one. Allowed while
        paused (it records nothing new). On error the journal keeps everything.
        """
        with self._commit_mutex:
            with self._mutex:
                ops = list(self._pending)
                upto = self._journal.next_seq
            stored = self._load_store()
            base = stored if stored is not None else Device(self.device_id, ())
            device = fold(base, [op for _, op in ops])
            self._fold_events(ops, upto)
            target = fingerprint(device)
            if stored is not None and not ops:
                return stored
            if ops:
                with self._mutex:
                    self._journal.append(encode_op(PrepareOp(upto, target)))
            if stored is None or target != fingerprint(stored):
                try:
                    save_device(self.store_dir, device, key=self._key)
                except Exception:
                    if self._store_fingerprint() != target:
                        raise  # the store was not replaced: everything stays in the journal
            with self._mutex:
                self._pending = [(s, op) for s, op in self._pending if s >= upto]
                keep = {s for s, _ in self._pending}
                self._journal.retire(lambda s: s in keep)
                self._reset_counts(device)
            return device

    def _fold_events(self, ops: list[tuple[int, Op]], upto: int) -> None:
        """Add the events of ``ops`` not yet in the events file to it (before the store)."""
        folded_upto, events = read_events(self._events_path, self._key)
        new = [
            e for s, op in ops if isinstance(op, BatchOp) and s >= folded_upto for e in op.events
        ]
        if new:
            write_events(self._events_path, self._key, upto, events + new)
            self._events_folded_upto = upto

    # -- reading -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts only (never content): queries, gaze_samples, mouse_samples, events, labels
        (queries with a label), committed or not, and uncommitted_records (journal records
        that the next :meth:`commit` will fold)."""
        with self._mutex:
            return {
                "queries": len(self._metas),
                **self._counts,
                "labels": sum(self._labelled.values()),
                "uncommitted_records": len(self._pending),
            }

    def events(self) -> list[CaptureEvent]:
        """The committed events (decrypted); uncommitted ones follow at the next commit."""
        return read_events(self._events_path, self._key)[1]

    def close(self) -> None:
        """Close the journal and release the device folder; uncommitted data stays durable
        in the journal for the next sink."""
        self._journal.close()
        os.close(self._lock_fd)

    def __enter__(self) -> CaptureSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
