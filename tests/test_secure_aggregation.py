"""Secure aggregation (SecAgg+): the server learns only the weighted sum of the updates.

Fast: what a device's reply becomes in the masked stage, and the settings that cannot go with
secure aggregation (refused naming why). Slow: ``fedgaze demo --secagg`` on real processes
(SuperLink, five SuperNodes, TLS and SuperNode authentication): every round's new model is the
old one plus the unmasked mean update, and equals plain FedAvg of the very updates the devices
computed (each replayed bit for bit from the device's recorded noise seed) within the stated
quantization error; the summary says so, and ``fedgaze audit verify`` passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.store_crypto import KEY_FILE
from fedgaze.client.local_rows import behaviour_rows
from fedgaze.federation.arrays import from_array_record, to_array_record
from fedgaze.federation.events import RoundDone
from fedgaze.federation.protocol import DeviceKey, Metric, Record, ReplyStatus
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.secure import (
    FITRES_ARRAYS,
    FITRES_EXAMPLES,
    STAGE_CONFIGS,
    SecureAggregation,
    secure_reply,
)
from fedgaze.federation.settings import NodeSettings, ServerSettings, SettingsError
from fedgaze.ledger.contract import RecordKind
from fedgaze.ledger.records import verify_sqlite
from fedgaze.local.cohort import provision_synthetic
from fedgaze.local.demo import FederationOptions
from fedgaze.model.store import load_model
from fedgaze.model.weights import ModelState
from fedgaze.privacy.dp_train import DPConfig, LocalResult, device_round_seed, train_local
from fedgaze.privacy.state import PrivacyState
from fedgaze.server.aggregate import fedavg
from fedgaze.server.rounds import SECURE_FEDAVG
from fedgaze.server.secure_round import _StageGrid
from flaky_grid import FlakyGrid
from settings_factory import server_settings
from wire_proxy import RecordingProxy, launch_recorded

GLOBAL = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}


def _reply(status: ReplyStatus, examples: int, arrays: dict[str, np.ndarray] | None) -> RecordDict:
    content = RecordDict(
        {
            Record.DEVICE.value: ConfigRecord(
                {DeviceKey.DEVICE_ID.value: "d1", DeviceKey.STATUS.value: status.value}
            ),
            Record.METRICS.value: MetricRecord({Metric.NUM_EXAMPLES.value: examples}),
        }
    )
    if arrays is not None:
        content[Record.ARRAYS.value] = to_array_record(arrays)
    return content


def test_a_trained_reply_becomes_its_update_and_weight_with_the_metadata_kept() -> None:
    trained = {k: v + 0.5 for k, v in GLOBAL.items()}
    out = secure_reply(_reply(ReplyStatus.TRAINED, 7, trained), to_array_record(GLOBAL))
    update = from_array_record(out.array_records[FITRES_ARRAYS])
    assert list(update) == list(GLOBAL)  # the global model's layer order, as the server expects
    assert all(np.allclose(update[k], 0.5) for k in GLOBAL)
    assert out.metric_records[FITRES_EXAMPLES]["num_examples"] == 7
    assert Record.ARRAYS not in out.array_records  # the weights themselves never leave
    assert out.config_records[Record.DEVICE][DeviceKey.STATUS] == ReplyStatus.TRAINED
    assert out.metric_records[Record.METRICS][Metric.NUM_EXAMPLES] == 7


@pytest.mark.parametrize(
    ("status", "examples", "arrays"),
    [(ReplyStatus.BUDGET_EXHAUSTED, 0, None), (ReplyStatus.NO_DATA, 0, None)],
)
def test_a_reply_that_did_not_train_adds_a_zero_update_of_weight_zero(
    status: ReplyStatus, examples: int, arrays: dict[str, np.ndarray] | None
) -> None:
    out = secure_reply(_reply(status, examples, arrays), to_array_record(GLOBAL))
    update = from_array_record(out.array_records[FITRES_ARRAYS])
    assert all(not update[k].any() and update[k].shape == GLOBAL[k].shape for k in GLOBAL)
    assert out.metric_records[FITRES_EXAMPLES]["num_examples"] == 0


def test_the_error_bound_grows_with_devices_and_shrinks_with_weight() -> None:
    params = SecureAggregation(threshold=2)
    assert params.level() == pytest.approx(2 / 2**22)
    small = params.mean_error([10, 10, 10], largest=1.0)
    assert small < params.mean_error([10, 10, 10, 10, 10, 1], largest=1.0) * 1.5
    assert params.mean_error([100, 100, 100], largest=1.0) < small
    assert params.mean_error([0, 0], largest=1.0) == float("inf")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"aggregation": "median"}, "fedavg"),
        ({"client_dp_epsilon": 4.0}, "client-level DP"),
        ({"nodes": 3, "secagg_threshold": 3}, "more than 3 devices"),
    ],
)
def test_what_cannot_go_with_secure_aggregation_is_refused(
    tmp_path: Path, fields: dict[str, object], match: str
) -> None:
    opts = FederationOptions(**{"nodes": 5, "secagg": True, **fields})  # type: ignore[arg-type]
    with pytest.raises((ValueError, SettingsError), match=match):
        opts.settings(tmp_path, "run", opts.nodes)


def test_the_default_threshold_is_a_majority_of_a_round(tmp_path: Path) -> None:
    settings = FederationOptions(nodes=10, secagg=True).settings(tmp_path, "run", 10)
    assert settings.secure_aggregation is not None
    assert settings.secure_aggregation.threshold == 6
    again = ServerSettings.from_run_config(settings.to_run_config())  # through Flower's config
    assert again.secure_aggregation == settings.secure_aggregation


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(("stage", "resent"), [(Stage.SETUP, True), (Stage.SHARE_KEYS, False)])
def test_only_the_setup_stage_goes_again_to_a_device_that_comes_back(
    stage: str, resent: bool
) -> None:
    """After a SuperLink restart devices come back with backoff: the setup stage (nothing shared
    yet) is sent again; a later stage is not, and the device that missed it is named."""
    grid = FlakyGrid([1, 2, 3], flaky=2, drops=1, away_polls=3)
    stages = _StageGrid(grid, lambda replies: {}, poll=0.01)  # type: ignore[arg-type]
    content = RecordDict({STAGE_CONFIGS: ConfigRecord({Key.STAGE: stage})})
    sent = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in (1, 2, 3)]
    replies = stages.send_and_receive(sent, timeout=5.0)
    answered = sorted(r.metadata.src_node_id for r in replies if not r.has_error())
    assert answered == ([1, 2, 3] if resent else [1, 3])
    assert grid.pushed.count(2) == (2 if resent else 1)
    assert stages.failures == ([] if resent else [f"node 2: {stage}: Node Unavailable"])


def _node(run_dir: Path, device_id: str) -> NodeSettings:
    device_dir = run_dir / "devices" / device_id
    return NodeSettings(
        device_id=device_id,
        device_dir=str(device_dir),
        data=str(device_dir / "store"),
        store_key=str(device_dir / KEY_FILE),
        epsilon_budget=8.0,
        delta=1e-5,
    )


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(420)
def test_a_secure_demo_aggregates_exactly_what_plain_fedavg_would(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["demo", "--secagg", "--rounds", "2", "--epsilon", "8", "--run-dir", str(run_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "fedgaze.cli", *args], capture_output=True, text=True, timeout=360
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "secure aggregation (SecAgg+)" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["secure_aggregation"] is True and summary["tls"] and summary["node_auth"]
    assert summary["secure_aggregation_params"]["threshold"] == 3
    assert summary["rounds_completed"] == 2
    assert all(r["failures"] == [] and r["train_devices"] >= 3 for r in summary["rounds_log"])
    verify = subprocess.run(
        [sys.executable, "-m", "fedgaze.cli", "audit", "verify", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0 and "every record holds" in verify.stdout, verify.stdout
    records = verify_sqlite(RunLayout(run_dir).server_ledger).records
    (start,) = [r.body for r in records if r.kind == RecordKind.RUN_START]
    settings = ServerSettings(**start["settings"])
    params = settings.secure_aggregation
    assert params is not None
    rounds = [r.body for r in records if r.kind == RecordKind.SERVER_ROUND]
    assert [r["aggregation"] for r in rounds] == [SECURE_FEDAVG] * 2
    devices = sorted(p.name for p in (run_dir / "devices").iterdir())
    for rnd in (1, 2):
        trained = [_replayed(run_dir, settings, d, rnd)[0] for d in devices]
        updates = [(r.state, r.examples) for r in trained if r is not None]
        assert len(updates) == len(rounds[rnd - 1]["participants"]) >= 3
        moved = _secure_sum_is_fedavg(run_dir, rnd, updates, params)
        assert moved > 100 * params.mean_error([n for _, n in updates], 1.0)  # a real change


def _windows(arrays: dict[str, np.ndarray], dtype: type, width: int = 4) -> list[bytes]:
    """``width``-value windows of every layer's bytes as ``dtype`` (what a leak would show)."""
    out = []
    for layer in arrays.values():
        flat = np.ascontiguousarray(layer, dtype=dtype).ravel()
        out += [flat[i : i + width].tobytes() for i in range(0, max(1, len(flat) - width), width)]
    return [w for w in out if w.strip(b"\x00")]


def _secure_sum_is_fedavg(
    run_dir: Path, rnd: int, updates: list[tuple[ModelState, int]], params: SecureAggregation
) -> float:
    """Assert that the model after round ``rnd`` is plain FedAvg of ``updates`` (from the
    model before it) within the quantization bound; return how far the round moved it."""
    before = load_model(RunLayout(run_dir).checkpoint(rnd - 1)).state
    after = load_model(RunLayout(run_dir).checkpoint(rnd)).state
    plain = fedavg(updates)
    largest = max(float(np.max(np.abs(u[k] - before[k]))) for u, _ in updates for k in u)
    bound = params.mean_error([n for _, n in updates], largest)
    gap = max(float(np.max(np.abs(after[k] - plain[k]))) for k in plain)
    assert gap <= bound + 1e-6, (rnd, gap, bound)  # plus float32 rounding of the sum's add
    return max(float(np.max(np.abs(after[k] - before[k]))) for k in plain)


def _replayed(
    run_dir: Path, settings: ServerSettings, device_id: str, rnd: int
) -> tuple[LocalResult | None, PrivacyState]:
    """Device ``device_id``'s training of round ``rnd``, replayed bit for bit from its recorded
    noise seed (None when it did not train that round), and its accountant history."""
    node = _node(run_dir, device_id)
    privacy = PrivacyState.load(DeviceLayout(Path(node.device_dir)).privacy_state)
    if privacy.find(settings.run_key, rnd) is None:
        return None, privacy
    before = load_model(RunLayout(run_dir).checkpoint(rnd - 1)).state
    rows = behaviour_rows(node, settings.holdout)
    result = train_local(
        before,
        rows.train_X,
        rows.train_y,
        DPConfig.for_device(settings.plan(rnd), node.budget),
        privacy,
        run_id=settings.run_key,
        round=rnd,
        seed=device_round_seed(settings.seed, rnd, device_id),
    )
    assert result.replayed
    return result, privacy


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_dropouts_leave_the_survivors_sum_and_the_wire_carries_no_update(tmp_path: Path) -> None:
    """Five devices, threshold 3, each behind its own recording proxy (TLS off, to read it).
    Round 1: device 0 dies before it gets the training stage (so before sending), device 1
    right after sending its masked update (before unmasking): the sum is the other four's.
    Round 2: device 2 dies in the key stage: two devices are left, fewer than t, so the round
    halts with the model kept and nobody charged; round 3 halts too. No device's weights or
    update appear in anything it sent."""
    run_dir = tmp_path / "run"
    nodes = provision_synthetic(run_dir / "devices", 5, 4, 20.0, 1e-5)
    params = SecureAggregation(threshold=3, timeout=15.0)
    settings = server_settings(
        run_dir=str(run_dir),
        run_key=f"secagg-{uuid.uuid4().hex[:8]}",
        rounds=3,
        min_nodes=5,
        node_wait_timeout=120,
        round_timeout=30,
        hidden=16,
        noise_multiplier=1.5,
        seed=4,
        secure_aggregation=params,
    )
    proxies: list[RecordingProxy] = []

    def third_device_dies_in_round_2(event: object) -> None:
        if isinstance(event, RoundDone) and event.log.round == 1:
            proxies[2].cut_at = b"share_keys"

    cuts = [b"collect_masked_vectors", b"unmask"]
    outcome = launch_recorded(
        run_dir, settings, nodes, proxies, cuts, on_event=third_device_dies_in_round_2
    )
    result = outcome.server_result
    ids = [n.device_id for n in nodes]
    logs = result.rounds_log
    assert [p.cut.is_set() for p in proxies] == [True, True, True, False, False]
    # Round 1: four masked updates in the sum, device 1's included.
    assert logs[0].train_devices == 4, logs[0]
    assert any("collect_masked_vectors" in f for f in logs[0].failures), logs[0].failures
    assert any("unmask" in f for f in logs[0].failures), logs[0].failures
    first = {d: _replayed(run_dir, settings, d, 1)[0] for d in ids}
    assert first[ids[0]] is None and all(first[d] is not None for d in ids[1:])
    _secure_sum_is_fedavg(run_dir, 1, [(r.state, r.examples) for r in first.values() if r], params)
    before = load_model(RunLayout(run_dir).checkpoint(0)).state
    after = load_model(RunLayout(run_dir).checkpoint(1)).state
    # Rounds 2 and 3: too few devices left; the model stays, nobody is charged.
    for log in logs[1:]:
        assert log.train_devices == 0 and any("aggregation halted" in f for f in log.failures), log
    final = load_model(RunLayout(run_dir).checkpoint(3)).state
    assert all(np.array_equal(final[k], after[k]) for k in after)
    for device_id in ids:
        privacy = _replayed(run_dir, settings, device_id, 1)[1]
        charged = [(e.run_id, e.round) for e in privacy.events]
        assert charged == ([] if device_id == ids[0] else [(settings.run_key, 1)]), charged
    # The wire: the global model the server sent to every device that reached the training
    # stage is readable (the search works) ...
    assert all(any(w in p.received for w in _windows(before, np.float32)) for p in proxies[1:])
    # ... but no device sent its trained weights or its update, in any float encoding.
    for proxy, device_id in zip(proxies, ids, strict=True):
        trained = first[device_id]
        if trained is None:
            continue
        update = {k: trained.state[k].astype(np.float64) - before[k] for k in before}
        needles = _windows(trained.state, np.float32) + _windows(update, np.float64)
        needles += _windows(update, np.float32)
        assert b"masked_params" in proxy.sent  # its masked update went out
        assert not [w for w in needles if w in proxy.sent], device_id
    verify = subprocess.run(
        [sys.executable, "-m", "fedgaze.cli", "audit", "verify", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0 and "every record holds" in verify.stdout, verify.stdout
