"""Provisioning the devices of a local federation: one device directory per person.

For the synthetic cohort each device's generated data is written into its own device store,
encrypted under a key file of its own (``store.key`` in the device directory, mode 0600);
for IFLLM each device reads only its own worker's files from the IFLLM folder. Either way a
device directory also receives its privacy state as it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgaze.client.device.store import save_device
from fedgaze.client.device.store_crypto import KEY_FILE
from fedgaze.data.ifllm import labelled_comparison_counts
from fedgaze.data.synthetic import generate_cohort
from fedgaze.federation.settings import NodeSettings


def provision_synthetic(
    devices_dir: Path,
    n_devices: int,
    seed: int,
    epsilon_budget: float,
    delta: float,
    served_log: Path | None = None,
) -> list[NodeSettings]:
    """Generate ``n_devices`` synthetic people and give each a device store of its own; with
    ``served_log``, also write the log of the prompts and answers they were served."""
    nodes = []
    cohort = generate_cohort(n_devices, seed=seed)
    if served_log is not None:
        from fedgaze.labels.served import write_served_log

        write_served_log(served_log, cohort)
    for device in cohort:
        device_dir = devices_dir / device.device_id
        key_path = device_dir / KEY_FILE
        save_device(device_dir / "store", device, key_path=key_path)
        nodes.append(
            NodeSettings(
                device_id=device.device_id,
                device_dir=str(device_dir),
                data=str(device_dir / "store"),
                data_format="store",
                store_key=str(key_path),
                epsilon_budget=epsilon_budget,
                delta=delta,
            )
        )
    return nodes


def select_workers(root: Path, requested: Sequence[str] | None, cap: int | None) -> list[str]:
    """The IFLLM workers to run as devices.

    Requested workers are checked to exist and kept in the given order. Otherwise the workers
    with labelled comparisons are taken, most comparisons first, up to ``cap``: with one
    SuperNode process per device, a machine runs the devices that can contribute.
    """
    counts = labelled_comparison_counts(root)
    if requested:
        unknown = sorted(set(requested) - set(counts))
        if unknown:
            raise ValueError(f"unknown workers in {root}: {', '.join(unknown)}")
        chosen = list(dict.fromkeys(requested))
    else:
        chosen = sorted((w for w, n in counts.items() if n > 0), key=lambda w: (-counts[w], w))
    return chosen[:cap] if cap is not None else chosen


def provision_ifllm(
    devices_dir: Path,
    root: Path,
    workers: Sequence[str],
    epsilon_budget: float,
    delta: float,
) -> list[NodeSettings]:
    """One device per IFLLM worker, each reading only its own worker's data from ``root``."""
    return [
        NodeSettings(
            device_id=worker,
            device_dir=str(devices_dir / worker),
            data=str(root.resolve()),
            data_format="ifllm",
            worker=worker,
            epsilon_budget=epsilon_budget,
            delta=delta,
        )
        for worker in workers
    ]
