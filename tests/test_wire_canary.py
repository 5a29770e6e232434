"""Only model updates and declared metrics leave a device: proven on the wire.

Canary values are planted in one device's raw gaze and mouse samples and in its answer text.
A real federation runs with TLS off (so the bytes can be read) and every SuperNode reaches the
SuperLink through a recording TCP proxy. The test then searches everything the devices sent for
the canaries, as float64, float32 and decimal text, and for the text canary.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from pathlib import Path

import pytest

from fedgaze.client.device.store import load_device, save_device
from fedgaze.data.schema import Samples
from fedgaze.federation.settings import ServerSettings
from fedgaze.local.cohort import provision_synthetic
from wire_proxy import RecordingProxy, launch_recorded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

GAZE_X = 31337.4242
MOUSE_Y = 27182.8182
TEXT = "CANARYTEXT-9d2f41"


def _plant(node_data: str, key_path: str) -> int:
    """Put the canaries into every query of the stored device; returns the samples changed."""
    device = load_device(node_data, key_path=key_path)
    queries = []
    changed = 0
    for q in device.queries:
        gaze = Samples(
            t_ms=q.gaze.t_ms,
            x=[GAZE_X] * len(q.gaze),
            y=q.gaze.y,
            side=q.gaze.side,
            char_index=q.gaze.char_index,
            validate=q.gaze.validate,
        )
        mouse = Samples(
            t_ms=q.mouse.t_ms,
            x=q.mouse.x,
            y=[MOUSE_Y] * len(q.mouse),
            side=q.mouse.side,
            char_index=q.mouse.char_index,
            validate=q.mouse.validate,
        )
        changed += len(gaze) + len(mouse)
        queries.append(
            dataclasses.replace(
                q, gaze=gaze, mouse=mouse, response_left=f"{TEXT} {q.response_left}"
            )
        )
    save_device(node_data, dataclasses.replace(device, queries=tuple(queries)), key_path=key_path)
    return changed


def _needles() -> dict[str, bytes]:
    return {
        "gaze x float64": struct.pack("<d", GAZE_X),
        "gaze x float32": struct.pack("<f", GAZE_X),
        "gaze x text": str(GAZE_X).encode(),
        "mouse y float64": struct.pack("<d", MOUSE_Y),
        "mouse y float32": struct.pack("<f", MOUSE_Y),
        "mouse y text": str(MOUSE_Y).encode(),
        "answer text": TEXT.encode(),
        "answer text utf-16": TEXT.encode("utf-16-le"),
    }


def test_no_raw_sample_or_text_leaves_the_device(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nodes = provision_synthetic(run_dir / "devices", 3, 1, 20.0, 1e-5)
    assert all(n.store_key for n in nodes)
    planted = _plant(nodes[0].data, str(nodes[0].store_key))
    assert planted > 0
    settings = ServerSettings(
        run_dir=str(run_dir),
        run_key=f"wire-{uuid.uuid4().hex[:8]}",
        rounds=2,
        min_nodes=3,
        node_wait_timeout=120,
        round_timeout=120,
        hidden=16,
        noise_multiplier=1.5,
        max_grad_norm=1.0,
        batch_size=8,
        local_epochs=1,
        lr=0.05,
        holdout=0.25,
        seed=1,
    )
    proxies: list[RecordingProxy] = []
    outcome = launch_recorded(run_dir, settings, nodes, proxies)
    assert outcome.server_result.rounds_completed == 2
    assert proxies, "the SuperNodes did not go through the proxy"
    sent = b"".join(bytes(p.sent) for p in proxies)
    received = b"".join(bytes(p.received) for p in proxies)
    # The capture works: the devices' replies (weights, metrics, signed DP records) are there.
    assert len(sent) > 10_000 and b"dp-record" in sent and b"synth_000" in sent
    assert b"num-examples" in sent
    leaks = [name for name, needle in _needles().items() if needle in sent]
    assert not leaks, f"canaries found in what the devices sent: {leaks}"
    # Nor does the server ever see them (it could only echo what a device sent).
    assert not [name for name, needle in _needles().items() if needle in received]
