"""The device store: one device's queries and traces on its own disk.

Layout of a store directory: ``samples.npz`` (every query's gaze and mouse columns, concatenated,
with per-query offsets) and ``device.json`` (query metadata and the sample counts it expects).
Both are written atomically, samples first, so a crash leaves either the old store or the new
one; on load the two are cross-checked and a mismatch is an error naming the file.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze.atomic import write_bytes_atomic, write_json_atomic
from fedgaze.data.schema import MODALITIES, Device, Query, Samples

STORE_VERSION = 1
_COLUMNS = ("t_ms", "x", "y", "side", "char_index", "validate")
_QUERY_FIELDS = (
    "query_id",
    "task_id",
    "pairwise",
    "prompt",
    "response_left",
    "response_right",
    "preference",
    "likert_left",
    "likert_right",
    "shown_at_ms",
)


class StoreError(ValueError):
    """The store on disk is missing, corrupt or inconsistent; the message names the file."""


def save_device(directory: str | Path, device: Device) -> None:
    """Write ``device`` to the store at ``directory`` (created if needed), crash-safely."""
    root = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        blocks = [getattr(q, modality) for q in device.queries]
        counts = np.array([len(b) for b in blocks], dtype=np.int64)
        arrays[f"{modality}__offsets"] = np.concatenate([[0], np.cumsum(counts)])
        for col in _COLUMNS:
            parts = [getattr(b, col) for b in blocks]
            arrays[f"{modality}__{col}"] = (
                np.concatenate(parts) if parts else getattr(Samples.empty(), col)
            )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(root / "samples.npz", buf.getvalue())
    meta: dict[str, Any] = {
        "version": STORE_VERSION,
        "device_id": device.device_id,
        "calibration": {str(k): v for k, v in device.calibration.items()},
        "samples": {m: int(arrays[f"{m}__offsets"][-1]) for m in MODALITIES},
        "queries": [{f: getattr(q, f) for f in _QUERY_FIELDS} for q in device.queries],
    }
    write_json_atomic(root / "device.json", meta)


def load_device(directory: str | Path) -> Device:
    """Read the device stored at ``directory``; raises :class:`StoreError` naming the bad file."""
    root = Path(directory)
    meta_path, samples_path = root / "device.json", root / "samples.npz"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{meta_path}: no device store here") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{meta_path}: corrupt JSON ({err})") from None
    if meta.get("version") != STORE_VERSION:
        raise StoreError(f"{meta_path}: unsupported store version {meta.get('version')!r}")
    try:
        with np.load(samples_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise StoreError(f"{samples_path}: missing") from None
    except Exception as err:  # zipfile/pickle/value errors all mean "corrupt"
        raise StoreError(f"{samples_path}: corrupt ({err})") from None
    blocks: dict[str, list[Samples]] = {}
    for modality in MODALITIES:
        try:
            offsets = arrays[f"{modality}__offsets"]
            cols = {c: arrays[f"{modality}__{c}"] for c in _COLUMNS}
        except KeyError as err:
            raise StoreError(f"{samples_path}: missing array {err}") from None
        expected = (meta["samples"][modality], len(meta["queries"]) + 1)
        if (int(offsets[-1]), len(offsets)) != expected:
            raise StoreError(f"{samples_path}: does not match {meta_path} ({modality} counts)")
        blocks[modality] = [
            Samples(**{c: v[a:b] for c, v in cols.items()}) for a, b in itertools.pairwise(offsets)
        ]
    queries = tuple(
        Query(**q, gaze=g, mouse=m)
        for q, g, m in zip(meta["queries"], blocks["gaze"], blocks["mouse"], strict=True)
    )
    calibration = {int(k): float(v) for k, v in meta["calibration"].items()}
    return Device(device_id=meta["device_id"], queries=queries, calibration=calibration)
