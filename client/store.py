"""The device store: one device's queries and traces on its own disk.

Layout of a store directory: ``samples-<hash>.npz`` (every query's gaze and mouse columns,
concatenated, with per-query offsets) and ``device.json`` (query metadata, the sample counts it
expects, and the name and SHA-256 of its samples file). The samples are written first under a
new name, then the manifest is replaced atomically, so a crash leaves either the old store or
the new one; on load the hash and the counts are checked and a mismatch names the file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze.atomic import commit_arrays, load_arrays
from fedgaze.data.schema import MODALITIES, Device, Query, Samples

STORE_VERSION = 1
MANIFEST = "device.json"
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
    meta: dict[str, Any] = {
        "version": STORE_VERSION,
        "device_id": device.device_id,
        "calibration": {str(k): v for k, v in device.calibration.items()},
        "samples": {m: int(arrays[f"{m}__offsets"][-1]) for m in MODALITIES},
        "queries": [{f: getattr(q, f) for f in _QUERY_FIELDS} for q in device.queries],
    }
    commit_arrays(directory, "samples", arrays, MANIFEST, meta, compress=True)


def load_device(directory: str | Path) -> Device:
    """Read the device stored at ``directory``; raises :class:`StoreError` naming the bad file."""
    meta_path = Path(directory) / MANIFEST
    try:
        meta, arrays = load_arrays(directory, MANIFEST)
    except FileNotFoundError:
        raise StoreError(f"{meta_path}: no device store here") from None
    except ValueError as err:
        raise StoreError(str(err)) from None
    if meta.get("version") != STORE_VERSION:
        raise StoreError(f"{meta_path}: unsupported store version {meta.get('version')!r}")
    samples_path = Path(directory) / meta["blob"]
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
