"""The device store is encrypted at rest: nothing readable on disk, every alteration refused."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgaze.client.device.data import load_node_device
from fedgaze.client.device.store import MANIFEST, StoreError, load_device, save_device
from fedgaze.client.device.store_crypto import KEY_FILE, decrypt_file
from fedgaze.data.schema import Device, Query, Samples
from fedgaze.local.cohort import provision_synthetic

CANARY_ANSWER = "CANARY-answer-5f1e9c0b: my private reply"
CANARY_PROMPT = "CANARY-prompt-a7d2"
RAW_X = np.array([512.123456789, 498.987654321, 601.5555555551, 333.3333333337])


def _samples(x: np.ndarray) -> Samples:
    n = len(x)
    return Samples(
        t_ms=1.7e12 + np.arange(n) * 80.0,
        x=x,
        y=np.linspace(100.0, 200.0, n),
        side=np.zeros(n, dtype=np.int64),
        char_index=np.arange(n, dtype=np.int64),
        validate=np.zeros(n, dtype=np.int64),
    )


def _device() -> Device:
    gaze = _samples(RAW_X)
    query = Query(
        1, 3, True, CANARY_PROMPT, CANARY_ANSWER, "right", 1, None, None, 1.7e12, gaze, gaze
    )
    return Device("worker_canary", (query,), {3: 70.0})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "device" / "store"
    save_device(root, _device())
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file())


def test_round_trip_and_key_file_beside_the_store(store: Path) -> None:
    key = store.parent / KEY_FILE
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list(store.glob("*.key"))
    back = load_device(store)
    assert back.device_id == "worker_canary" and back.queries[0].response_left == CANARY_ANSWER
    np.testing.assert_array_equal(back.queries[0].gaze.x, RAW_X)
    # An explicit key (bytes) works the same way.
    other = store.parent / "explicit"
    save_device(other, _device(), key=b"k" * 32)
    assert load_device(other, key=b"k" * 32).queries[0].prompt == CANARY_PROMPT


def test_nothing_readable_is_stored(store: Path) -> None:
    files = _files(store)
    assert {p.name for p in files} == {MANIFEST, next(store.glob("samples-*.npz.enc")).name}
    needles = [
        CANARY_ANSWER.encode(),
        CANARY_PROMPT.encode(),
        b"CANARY",
        CANARY_ANSWER.encode("utf-16-le"),
        RAW_X.astype("<f8").tobytes(),
        RAW_X[:2].astype("<f8").tobytes(),
        RAW_X.astype("<f4").tobytes(),
        repr(float(RAW_X[0])).encode(),
        b"worker_canary",
    ]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path.name}"
    # Control: the canary is in the (decrypted) manifest, so the test above is meaningful.
    key = (store.parent / KEY_FILE).read_bytes()
    manifest = decrypt_file(
        key, (store / MANIFEST).read_bytes(), role="manifest", path=store / MANIFEST
    )
    assert CANARY_ANSWER.encode() in manifest


def test_wrong_key_fails_naming_the_file(store: Path) -> None:
    with pytest.raises(StoreError, match=rf"{MANIFEST}.*does not decrypt"):
        load_device(store, key=os.urandom(32))
    wrong = store.parent / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    wrong.chmod(0o600)
    with pytest.raises(StoreError, match=rf"{MANIFEST}.*does not decrypt"):
        load_device(store, key_path=wrong)
    (store.parent / KEY_FILE).unlink()
    with pytest.raises(StoreError, match=rf"{KEY_FILE}: store key file missing"):
        load_device(store)


@pytest.mark.parametrize("which", ["manifest", "samples"])
def test_every_flipped_byte_fails_naming_the_file(store: Path, which: str) -> None:
    path = store / MANIFEST if which == "manifest" else next(store.glob("samples-*.npz.enc"))
    original = path.read_bytes()
    positions = sorted({0, 7, 8, 15, 19, 20, len(original) // 2, len(original) - 17})
    positions += [len(original) - 1]
    for pos in positions:
        flipped = bytearray(original)
        flipped[pos] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(StoreError, match=path.name):
            load_device(store)
    path.write_bytes(original)
    assert load_device(store).device_id == "worker_canary"


def test_swapped_files_fail(store: Path, tmp_path: Path) -> None:
    (blob,) = store.glob("samples-*.npz.enc")
    # Manifest and samples exchanged: the role bound into each file's associated data differs.
    manifest_bytes, blob_bytes = (store / MANIFEST).read_bytes(), blob.read_bytes()
    (store / MANIFEST).write_bytes(blob_bytes)
    blob.write_bytes(manifest_bytes)
    with pytest.raises(StoreError, match=MANIFEST):
        load_device(store)
    (store / MANIFEST).write_bytes(manifest_bytes)
    blob.write_bytes(blob_bytes)
    # Another store's samples (same key) put in place of this one's: the name is bound.
    key = (store.parent / KEY_FILE).read_bytes()
    other = tmp_path / "other"
    device = _device()
    changed = replace(device.queries[0], gaze=_samples(RAW_X + 1.0))
    save_device(other, replace(device, queries=(changed,)), key=key)
    (other_blob,) = other.glob("samples-*.npz.enc")
    assert other_blob.name != blob.name
    shutil.copyfile(other_blob, blob)
    with pytest.raises(StoreError, match=blob.name):
        load_device(store)


def test_key_file_mode_is_enforced(tmp_path: Path, store: Path) -> None:
    key = store.parent / KEY_FILE
    key.chmod(0o644)
    with pytest.raises(StoreError, match=rf"{KEY_FILE}.*0644.*0600"):
        load_device(store)
    with pytest.raises(StoreError, match=r"0644"):
        save_device(store, _device())
    key.chmod(0o600)
    assert load_device(store).device_id == "worker_canary"
    with pytest.raises(StoreError, match="outside the store"):
        save_device(tmp_path / "s", _device(), key_path=tmp_path / "s" / "store.key")


def test_legacy_plaintext_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "device.json").write_text("{}")
    with pytest.raises(StoreError, match="unencrypted"):
        load_device(tmp_path)


def test_provisioned_devices_get_encrypted_stores(tmp_path: Path) -> None:
    (node,) = provision_synthetic(tmp_path, 1, seed=0, epsilon_budget=8.0, delta=1e-5)
    assert node.store_key == str(Path(node.device_dir) / KEY_FILE)
    assert stat.S_IMODE(Path(node.store_key).stat().st_mode) == 0o600
    assert not list(Path(node.data).glob("*.json")) and not list(Path(node.data).glob("*.npz"))
    assert load_node_device(node).device_id == node.device_id
