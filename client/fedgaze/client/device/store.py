"""The device store: one device's queries and traces on its own disk, encrypted at rest.

Layout of a store directory: ``samples-<id>.npz.enc`` (every query's gaze and mouse columns,
concatenated, with per-query offsets, as an uncompressed ``.npz``; a compressed one, as older
stores hold, loads too) and ``device.json.enc`` (query metadata
and texts, the answering service's ids of each prompt and answer when known, the sample counts
it expects, and the name and SHA-256 of its samples file). Both are encrypted with AES-256-GCM
under the device's store key (:mod:`fedgaze.client.device.store_crypto`; by default
``store.key`` beside the store folder), each with a fresh nonce and associated data binding its
role and file name; nothing is ever written in plaintext. ``<id>`` is a keyed hash
of the samples (content-addressed, but revealing nothing without the key). The samples are
written first under their own name, then the manifest is replaced atomically, so a crash leaves
either the old store or the new one; on load every file is authenticated, the hash and the
counts are checked, and a mismatch, a wrong key or an altered or swapped file names the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze.atomic import write_bytes_atomic
from fedgaze.client.device.store_crypto import (
    StoreCryptoError,
    create_store_key,
    decrypt_file,
    default_key_path,
    encrypt_file,
    load_store_key,
)
from fedgaze.data.schema import MODALITIES, Device, Query, Samples, ServedIds

STORE_VERSION = 2
MANIFEST = "device.json.enc"
SAMPLES_PREFIX = "samples-"
SAMPLES_SUFFIX = ".npz.enc"
_LEGACY_PLAINTEXT = ("device.json", "samples-*.npz")
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


def _key(directory: Path, key: bytes | None, key_path: str | Path | None, create: bool) -> bytes:
    if key is not None:
        if len(key) != 32:
            raise StoreError(f"{directory}: a store key has 32 bytes, got {len(key)}")
        return key
    path = Path(key_path) if key_path is not None else default_key_path(directory)
    if path.absolute().is_relative_to(directory.absolute()):
        raise StoreError(f"{path}: the store key must be kept outside the store {directory}")
    try:
        return create_store_key(path) if create else load_store_key(path)
    except StoreCryptoError as err:
        raise StoreError(str(err)) from None


def _samples_name(key: bytes, blob: bytes) -> str:
    # A keyed hash: content-addressed, yet equal stores cannot be recognized without the key.
    tag = hmac.new(key, b"fedgaze-store-name|" + blob, hashlib.sha256).hexdigest()
    return f"{SAMPLES_PREFIX}{tag[:16]}{SAMPLES_SUFFIX}"


def save_device(
    directory: str | Path,
    device: Device,
    *,
    key: bytes | None = None,
    key_path: str | Path | None = None,
) -> None:
    """Write ``device`` to the store at ``directory`` (created if needed), encrypted, crash-safely.

    The key is ``key`` (32 bytes) when given, else the key file ``key_path`` (default:
    ``store.key`` beside ``directory``), created with mode 0600 when missing.
    """
    root = Path(directory)
    secret = _key(root, key, key_path, create=True)
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
    payload: dict[str, Any] = dict(arrays)  # numpy's stub types **kwds poorly
    np.savez(buf, **payload)  # deflate cost 25x the write and 6x the read, for half the size
    blob = buf.getvalue()
    name = _samples_name(secret, blob)
    meta: dict[str, Any] = {
        "version": STORE_VERSION,
        "device_id": device.device_id,
        "calibration": {str(k): v for k, v in device.calibration.items()},
        "samples": {m: int(arrays[f"{m}__offsets"][-1]) for m in MODALITIES},
        "queries": [_query_meta(q) for q in device.queries],
        "blob": name,
        "blob_sha256": hashlib.sha256(blob).hexdigest(),
    }
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Same samples -> same name, and any ciphertext of them under that name is valid: so
    # rewriting it cannot break the manifest that already points at it.
    write_bytes_atomic(root / name, encrypt_file(secret, blob, role="samples", name=name))
    manifest = json.dumps(meta).encode()
    write_bytes_atomic(
        root / MANIFEST, encrypt_file(secret, manifest, role="manifest", name=MANIFEST)
    )
    for old in root.glob(f"{SAMPLES_PREFIX}*{SAMPLES_SUFFIX}"):
        if old.name != name:
            old.unlink(missing_ok=True)
    for pattern in _LEGACY_PLAINTEXT:  # an older, unencrypted store at the same place
        for old in root.glob(pattern):
            old.unlink(missing_ok=True)


def _query_meta(query: Query) -> dict[str, Any]:
    """A query's manifest entry: its fields and, when known, the service's ids."""
    meta = {f: getattr(query, f) for f in _QUERY_FIELDS}
    if query.served is not None:
        meta["served"] = dataclasses.asdict(query.served)
    return meta


def _query(meta: dict[str, Any], gaze: Samples, mouse: Samples, where: Path) -> Query:
    """A query from its manifest entry (``served`` is absent in stores written before it)."""
    fields = dict(meta)
    served = fields.pop("served", None)
    try:
        ids = None if served is None else ServedIds(**served)
        return Query(**fields, gaze=gaze, mouse=mouse, served=ids)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{where}: query {meta.get('query_id')!r}: {err}") from None


def _read(root: Path, name: str, secret: bytes, role: str, named_by: Path | None) -> bytes:
    path = root / Path(name).name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        where = f" (named by {named_by})" if named_by is not None else ""
        raise StoreError(f"{path}: missing{where}") from None
    try:
        return decrypt_file(secret, data, role=role, path=path)
    except StoreCryptoError as err:
        raise StoreError(str(err)) from None


def load_device(
    directory: str | Path,
    *,
    key: bytes | None = None,
    key_path: str | Path | None = None,
) -> Device:
    """Read the device stored at ``directory``; raises :class:`StoreError` naming the bad file.

    The key is found as for :func:`save_device`, but a missing key file is an error.
    """
    root = Path(directory)
    meta_path = root / MANIFEST
    if not meta_path.exists():
        if (root / "device.json").exists():
            raise StoreError(
                f"{root / 'device.json'}: an unencrypted (version 1) device store; provision "
                "the device again to store its data encrypted"
            )
        raise StoreError(f"{meta_path}: no device store here")
    secret = _key(root, key, key_path, create=False)
    try:
        meta = json.loads(_read(root, MANIFEST, secret, "manifest", None))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{meta_path}: corrupt manifest ({err})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_path}: expected a JSON object")
    if meta.get("version") != STORE_VERSION:
        raise StoreError(f"{meta_path}: unsupported store version {meta.get('version')!r}")
    try:
        name, digest = str(meta["blob"]), str(meta["blob_sha256"])
    except KeyError as err:
        raise StoreError(f"{meta_path}: missing field {err}") from None
    samples_path = root / Path(name).name
    blob = _read(root, name, secret, "samples", meta_path)
    if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), digest):
        raise StoreError(f"{samples_path}: content does not match the SHA-256 in {MANIFEST}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # zip, format and value errors all mean "corrupt"
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
        _query(q, g, m, meta_path)
        for q, g, m in zip(meta["queries"], blocks["gaze"], blocks["mouse"], strict=True)
    )
    calibration = {int(k): float(v) for k, v in meta["calibration"].items()}
    return Device(device_id=meta["device_id"], queries=queries, calibration=calibration)
