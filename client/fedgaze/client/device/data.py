"""Where a device's own data comes from: its device store, or an IFLLM-format folder."""

from __future__ import annotations

from fedgaze.client.device.store import load_device
from fedgaze.data.schema import Device
from fedgaze.federation.settings import NodeSettings


def load_node_device(node: NodeSettings) -> Device:
    """Load the data of the device that ``node`` describes, from its own storage only.

    With ``data_format="ifllm"`` the device reads just its worker's rows and folders: the raw
    traces of other people are never loaded.
    """
    if node.data_format == "store":
        return load_device(node.data, key_path=node.store_key)
    if node.worker is None:
        raise ValueError(f"device {node.device_id}: data-format 'ifllm' needs a worker")
    # polars, only for a device that reads an IFLLM folder (a store-backed one never does).
    from fedgaze.data.ifllm import load_ifllm

    dataset = load_ifllm(node.data, workers=[node.worker])
    if not dataset.devices:
        return Device(device_id=node.device_id, queries=())
    return dataset.devices[0]
