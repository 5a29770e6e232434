"""Capture operations: their journal encoding, and how they fold into a :class:`Device` (pure).

Each journal record holds one operation: a query's metadata (:class:`MetaOp`), a batch of
samples and events (:class:`BatchOp`), a label, a calibration value, or a commit's
:class:`PrepareOp`. Samples travel as packed little-endian rows (:data:`ROW`, 39 bytes each),
everything else as JSON; the journal encrypts both. :func:`fold` applies operations to the
device as stored and :func:`fingerprint` identifies a device's exact content, which is how a
commit interrupted between writing the store and retiring its journal records is told apart
from one interrupted before writing the store. A :class:`MetaOp` carries the answering
service's ids of the prompt and answers when the capture client gave them; they become the
query's :class:`~fedgaze.data.schema.ServedIds` (records written before they existed fold to
``served=None``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgaze.client.capture.samples import (
    SIDE_CODES,
    CaptureEvent,
    CaptureSample,
    Label,
    QueryMeta,
)
from fedgaze.data.schema import MODALITIES, Device, Query, Samples

__all__ = [
    "ROW",
    "BatchOp",
    "CalibrationOp",
    "LabelOp",
    "MetaOp",
    "Op",
    "PrepareOp",
    "decode_op",
    "encode_op",
    "fingerprint",
    "fold",
    "meta_of",
    "rows_of",
]

ROW = np.dtype(
    [
        ("query_id", "<i8"),
        ("modality", "u1"),  # index into MODALITIES
        ("t_ms", "<f8"),
        ("x", "<f8"),
        ("y", "<f8"),
        ("side", "i1"),
        ("char_index", "<i4"),
        ("validate", "i1"),
    ]
)
"""One positional sample as stored in the journal (packed, 39 bytes)."""

_COLUMNS = ("t_ms", "x", "y", "side", "char_index", "validate")
_ID_FIELDS = frozenset({"prompt_id", "response_left_id", "response_right_id"})
_MODALITY_CODE = {m: i for i, m in enumerate(MODALITIES)}


@dataclass(frozen=True)
class MetaOp:
    """A query was shown (``begin_query``)."""

    meta: QueryMeta


@dataclass(frozen=True)
class BatchOp:
    """Valid samples (as :data:`ROW` rows) and events of one ``add`` call."""

    rows: np.ndarray
    events: tuple[CaptureEvent, ...]


@dataclass(frozen=True)
class LabelOp:
    """A label for a query; it replaces the query's previous label as a whole."""

    label: Label


@dataclass(frozen=True)
class CalibrationOp:
    """The calibration precision (percent) measured for a task."""

    task_id: int
    precision: float


@dataclass(frozen=True)
class PrepareOp:
    """A commit is about to store every record numbered below ``upto`` as ``fingerprint``."""

    upto: int
    fingerprint: str


Op = MetaOp | BatchOp | LabelOp | CalibrationOp | PrepareOp


def rows_of(samples: Iterable[CaptureSample]) -> np.ndarray:
    """The :data:`ROW` array of validated samples (pure)."""
    return np.array(
        [
            (
                s.query_id,
                _MODALITY_CODE[s.modality],
                s.t_ms,
                s.x,
                s.y,
                SIDE_CODES[s.side],
                s.char_index,
                s.validate_,
            )
            for s in samples
        ],
        dtype=ROW,
    )


def encode_op(op: Op) -> bytes:
    """The journal plaintext of ``op``: a one-letter tag, then JSON or packed rows."""
    if isinstance(op, MetaOp):
        return b"Q" + op.meta.model_dump_json().encode()
    if isinstance(op, LabelOp):
        return b"L" + op.label.model_dump_json().encode()
    if isinstance(op, CalibrationOp):
        return b"C" + json.dumps([op.task_id, op.precision]).encode()
    if isinstance(op, PrepareOp):
        return b"P" + json.dumps([op.upto, op.fingerprint]).encode()
    events = json.dumps([e.model_dump(mode="json") for e in op.events]).encode()
    rows = np.ascontiguousarray(op.rows, dtype=ROW)
    return b"B" + len(rows).to_bytes(8, "little") + rows.tobytes() + events


def decode_op(data: bytes) -> Op:
    """Inverse of :func:`encode_op`; ValueError on a record it did not write."""
    tag, body = data[:1], data[1:]
    if tag == b"Q":
        return MetaOp(QueryMeta.model_validate_json(body))
    if tag == b"L":
        return LabelOp(Label.model_validate_json(body))
    if tag == b"C":
        task_id, precision = json.loads(body)
        return CalibrationOp(int(task_id), float(precision))
    if tag == b"P":
        upto, digest = json.loads(body)
        return PrepareOp(int(upto), str(digest))
    if tag == b"B":
        n = int.from_bytes(body[:8], "little")
        end = 8 + n * ROW.itemsize
        rows = np.frombuffer(body[8:end], dtype=ROW, count=n).copy()
        events = tuple(CaptureEvent.model_validate(e) for e in json.loads(body[end:]))
        return BatchOp(rows, events)
    raise ValueError(f"unknown capture record tag {tag!r}")


def meta_of(query: Query) -> QueryMeta:
    """The :class:`QueryMeta` a stored query was begun with (its service ids included)."""
    served = query.served
    return QueryMeta(
        query_id=query.query_id,
        task_id=query.task_id,
        pairwise=query.pairwise,
        prompt=query.prompt,
        response_left=query.response_left,
        response_right=query.response_right,
        shown_at_ms=query.shown_at_ms,
        prompt_id=served.prompt_id if served is not None else None,
        response_left_id=served.response_left_id if served is not None else None,
        response_right_id=served.response_right_id if served is not None else None,
    )


def _query_fields(meta: QueryMeta) -> dict[str, Any]:
    """The :class:`Query` fields a new query takes from its metadata (ids as ``served``)."""
    return {**meta.model_dump(exclude=set(_ID_FIELDS)), "served": meta.served}


def _merge(old: Samples, new: np.ndarray) -> Samples:
    if len(new) == 0:
        return old
    cols = {c: np.concatenate([getattr(old, c), new[c]]) for c in _COLUMNS}
    order = np.argsort(cols["t_ms"], kind="stable")  # stored first among equal times
    return Samples(**{c: v[order] for c, v in cols.items()})


def fold(base: Device, ops: Sequence[Op]) -> Device:
    """``base`` with ``ops`` applied in order (pure).

    New queries are appended in the order they were begun; each query's samples stay sorted by
    time (stable, so equal times keep their arrival order); a label replaces the query's
    previous label; calibration values replace older ones of the same task. Events and
    :class:`PrepareOp` leave the device unchanged. Raises ValueError when an operation names a
    query that was never begun (the sink prevents this).
    """
    fields: dict[int, dict[str, Any]] = {q.query_id: dict(vars(q)) for q in base.queries}
    calibration = dict(base.calibration)
    batches: list[np.ndarray] = []
    for op in ops:
        if isinstance(op, MetaOp):
            if op.meta.query_id not in fields:
                fields[op.meta.query_id] = {
                    **_query_fields(op.meta),
                    "preference": None,
                    "likert_left": None,
                    "likert_right": None,
                    "gaze": Samples.empty(),
                    "mouse": Samples.empty(),
                }
        elif isinstance(op, LabelOp):
            if op.label.query_id not in fields:
                raise ValueError(f"label for query {op.label.query_id}, which was never begun")
            fields[op.label.query_id].update(op.label.model_dump(exclude={"query_id"}))
        elif isinstance(op, CalibrationOp):
            calibration[op.task_id] = op.precision
        elif isinstance(op, BatchOp):
            batches.append(op.rows)
    rows = np.concatenate(batches) if batches else np.empty(0, dtype=ROW)
    unknown = set(np.unique(rows["query_id"]).tolist()) - set(fields)
    if unknown:
        raise ValueError(f"samples for queries {sorted(unknown)}, which were never begun")
    rows = rows[np.argsort(rows["query_id"], kind="stable")]  # arrival order within a query
    for qid, f in fields.items():
        lo, hi = np.searchsorted(rows["query_id"], [qid, qid + 1])
        mine = rows[lo:hi]
        for modality in MODALITIES:
            f[modality] = _merge(f[modality], mine[mine["modality"] == _MODALITY_CODE[modality]])
    queries = tuple(Query(**f) for f in fields.values())
    return Device(device_id=base.device_id, queries=queries, calibration=calibration)


def _query_head(query: Query) -> dict[str, Any]:
    """A query's fields but its samples, as JSON values. ``served`` is left out when None, so a
    device without service ids keeps the fingerprint it had before they existed (a commit
    prepared by an older version is still recognised)."""
    head = {k: v for k, v in vars(query).items() if k not in MODALITIES and k != "served"}
    if query.served is not None:
        head["served"] = dataclasses.asdict(query.served)
    return head


def fingerprint(device: Device) -> str:
    """SHA-256 (hex) of everything :mod:`fedgaze.client.device.store` stores of ``device``.

    Equal after a store round trip, different whenever a query, label, calibration value or
    sample differs, so a commit can tell whether the store already holds what it prepared.
    """
    digest = hashlib.sha256()
    head = {
        "device_id": device.device_id,
        "calibration": sorted(device.calibration.items()),
        "queries": [_query_head(q) for q in device.queries],
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for q in device.queries:
        for modality in MODALITIES:
            block: Samples = getattr(q, modality)
            digest.update(len(block).to_bytes(8, "little"))
            for c in _COLUMNS:
                digest.update(np.ascontiguousarray(getattr(block, c)).tobytes())
    return digest.hexdigest()
