"""The device store keeps a device's data intact across a save/load and refuses corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgaze.client.device.store import StoreError, load_device, save_device
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, Device, Query, Samples


def _samples(n: int, offset: float) -> Samples:
    rng = np.random.default_rng(n)
    return Samples(
        t_ms=offset + np.arange(n) * 80.0,
        x=rng.normal(500, 100, n),
        y=np.where(np.arange(n) == 0, np.nan, rng.normal(400, 100, n)),
        side=rng.choice([SIDE_NONE, SIDE_LEFT, SIDE_RIGHT], n),
        char_index=rng.integers(-1, 200, n),
        validate=rng.choice([-1, 0, 1], n),
    )


def _device() -> Device:
    queries = (
        Query(
            1,
            3,
            True,
            'q, "one"',
            "left\nanswer",
            "right",
            2,
            None,
            None,
            1.7e12,
            _samples(30, 1.7e12),
            _samples(30, 1.7e12),
        ),
        Query(2, 3, True, "q2", "l", "r", None, None, None, None),
        Query(
            3,
            4,
            False,
            "q3",
            "only",
            None,
            1,
            4.0,
            None,
            1.8e12,
            _samples(5, 1.8e12),
            Samples.empty(),
        ),
    )
    return Device("worker_x", queries, {3: 71.0})


def test_roundtrip_is_exact(tmp_path: Path) -> None:
    device = _device()
    save_device(tmp_path / "store", device)
    back = load_device(tmp_path / "store")
    assert back.device_id == device.device_id and dict(back.calibration) == {3: 71.0}
    for a, b in zip(device.queries, back.queries, strict=True):
        assert (a.query_id, a.prompt, a.response_right, a.preference, a.shown_at_ms) == (
            b.query_id,
            b.prompt,
            b.response_right,
            b.preference,
            b.shown_at_ms,
        )
        for mod in ("gaze", "mouse"):
            for col in ("t_ms", "x", "y", "side", "char_index", "validate"):
                np.testing.assert_array_equal(
                    getattr(getattr(a, mod), col), getattr(getattr(b, mod), col)
                )
    assert [q.query_id for q in back.comparisons()] == [1]


def test_corrupt_or_missing_files_are_named(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(StoreError, match=r"device\.json\.enc"):
        load_device(store)
    save_device(store, _device())
    (blob,) = store.glob("samples-*.npz.enc")
    blob.write_bytes(b"\x00" * 10)
    with pytest.raises(StoreError, match=blob.name):
        load_device(store)
    blob.unlink()
    with pytest.raises(StoreError, match=rf"{blob.name}: missing"):
        load_device(store)
    save_device(store, _device())
    (store / "device.json.enc").write_text("{not json")
    with pytest.raises(StoreError, match=r"device\.json\.enc"):
        load_device(store)


def test_crash_between_blob_and_manifest_keeps_old_store(tmp_path: Path) -> None:
    """A new samples file without its manifest (a crash mid-save) leaves the old store intact."""
    store = tmp_path / "store"
    old = _device()
    save_device(store, old)
    (store / "samples-0123456789abcdef.npz.enc").write_bytes(b"half-written new samples")
    back = load_device(store)
    assert [q.query_id for q in back.queries] == [q.query_id for q in old.queries]
    save_device(store, Device("worker_x", old.queries[:1]))
    assert len(list(store.glob("samples-*.npz.enc"))) == 1
    assert len(load_device(store).queries) == 1


def test_saving_the_same_data_again_keeps_the_store_valid(tmp_path: Path) -> None:
    """Same samples -> same file name; a rewrite (fresh nonce) must not break the manifest."""
    store = tmp_path / "store"
    save_device(store, _device())
    (first,) = store.glob("samples-*.npz.enc")
    save_device(store, _device())
    (second,) = store.glob("samples-*.npz.enc")
    assert first.name == second.name
    assert len(load_device(store).queries) == 3
