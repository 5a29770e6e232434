"""The warm trainer: a real trainer process answers a device's messages for its ClientApps.

A real ``python -m fedgaze.client.trainer_service`` process serves one synthetic device; the
ClientApp's own entry (``fedgaze.client.app.answer``) hands it train and evaluate messages built
as the ServerApp builds them. Also: the channel refuses a caller without the key and a device
the trainer does not serve; a dead trainer's stale socket sends the ClientApp back to answering
itself; the trainer's folder is private; and new captures reach a trainer that keeps data warm.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict

from fedgaze.client.app import answer
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.store import load_device, save_device
from fedgaze.client.local_rows import behaviour_rows
from fedgaze.client.trainer_channel import (
    SERVICE_MODULE,
    TrainerFailed,
    TrainerFolder,
    TrainerUnavailable,
    call_trainer,
)
from fedgaze.federation.arrays import from_array_record
from fedgaze.federation.protocol import Record, ReplyStatus, parse_report
from fedgaze.federation.settings import NodeSettings
from fedgaze.local.simulate import device_node
from fedgaze.server.exchange import round_messages
from settings_factory import server_settings

START_TIMEOUT = 60.0
pytestmark = pytest.mark.usefixtures("task_identity")


def _start(folder: Path, device_dir: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", SERVICE_MODULE, "--folder", str(folder)]
    proc = subprocess.Popen([*argv, "--device-dir", device_dir], stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_TIMEOUT
    while not (folder / "trainer.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"trainer did not listen: {proc.communicate()[1].decode()}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture
def device(tmp_path: Path) -> NodeSettings:
    return device_node(0, {"run_dir": str(tmp_path), "seed": 11, "epsilon": 8.0, "delta": 1e-5})


@pytest.fixture
def folder() -> Iterator[Path]:
    # Unix socket paths are short: a pytest tmp_path can be too long for one.
    base = Path(tempfile.mkdtemp(prefix="fgt-"))
    yield base / "trainer"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def trainer(device: NodeSettings, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start(folder, device.device_dir)
    yield proc
    _stop(proc)


def _message(kind: str, server_round: int = 1) -> Message:
    from fedgaze.model.factory import initial_state

    settings = server_settings(run_key="warm", rounds=2)
    state = initial_state(settings.hidden, settings.seed)
    (msg,) = round_messages([7], state, settings.plan(server_round), kind, server_round)
    return msg


def _context(node: NodeSettings) -> Context:
    return Context(
        run_id=1, node_id=7, node_config=node.to_node_config(), state=RecordDict(), run_config={}
    )


@pytest.mark.integration
def test_the_trainer_answers_train_and_evaluate_with_the_clientapp_contract(
    device: NodeSettings, folder: Path, trainer: subprocess.Popen[bytes]
) -> None:
    node = device.model_copy(update={"trainer": str(folder)})
    reply = answer(_message(MessageType.TRAIN), _context(node))
    report = parse_report(reply)
    assert report.status is ReplyStatus.TRAINED and report.examples > 0
    assert report.dp_record is not None and '"dp-round"' in report.dp_record
    layout = DeviceLayout(Path(device.device_dir))
    assert layout.privacy_state.is_file() and layout.personal_head.is_file()
    # The same round again (a retried message): the device replays its saved round, no new
    # charge and the same weights.
    retried = answer(_message(MessageType.TRAIN), _context(node))
    again = parse_report(retried)
    assert again.status is ReplyStatus.TRAINED and again.metrics == report.metrics
    first, second = (
        from_array_record(m.content.array_records[Record.ARRAYS]) for m in (reply, retried)
    )
    assert all(np.array_equal(first[k], second[k]) for k in first)
    evaluated = parse_report(answer(_message(MessageType.EVALUATE), _context(node)))
    assert evaluated.status is ReplyStatus.EVALUATED and evaluated.eval_examples > 0
    assert trainer.poll() is None


@pytest.mark.integration
def test_the_channel_refuses_a_caller_without_the_key_and_goes_on(
    device: NodeSettings, folder: Path, trainer: subprocess.Popen[bytes]
) -> None:
    with pytest.raises(AuthenticationError):
        Client(str(folder / "trainer.sock"), family="AF_UNIX", authkey=b"x" * 32)
    node = device.model_copy(update={"trainer": str(folder)})
    report = parse_report(answer(_message(MessageType.EVALUATE), _context(node)))
    assert report.status is ReplyStatus.EVALUATED


@pytest.mark.integration
def test_a_device_the_trainer_does_not_serve_is_refused(
    device: NodeSettings, folder: Path, trainer: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    other = device_node(1, {"run_dir": str(tmp_path), "seed": 11, "epsilon": 8.0, "delta": 1e-5})
    with pytest.raises(TrainerFailed, match="does not serve"):
        call_trainer(
            TrainerFolder(folder),
            MessageType.EVALUATE,
            other.to_node_config(),
            _message(MessageType.EVALUATE).content,
        )
    assert not (Path(other.device_dir) / "last_model").exists()


@pytest.mark.integration
def test_the_trainer_folder_is_private_and_cleaned_up(device: NodeSettings, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torn = folder / ".trainer.key.k1ll3d.tmp"  # what a trainer killed mid-write leaves
    torn.write_bytes(b"half")
    proc = _start(folder, device.device_dir)
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for name in ("trainer.sock", "trainer.key"):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        assert len((folder / "trainer.key").read_bytes()) == 32
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert not (folder / "trainer.sock").exists() and not (folder / "trainer.key").exists()
    assert list(folder.iterdir()) == []


@pytest.mark.integration
def test_a_dead_trainer_sends_the_clientapp_back_to_answering_itself(
    device: NodeSettings, folder: Path
) -> None:
    proc = _start(folder, device.device_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _stop(proc)
    assert (folder / "trainer.sock").exists()  # stale: nobody listens
    where = TrainerFolder(folder)
    with pytest.raises(TrainerUnavailable):
        call_trainer(where, MessageType.EVALUATE, device.to_node_config(), RecordDict())
    node = device.model_copy(update={"trainer": str(folder)})
    report = parse_report(answer(_message(MessageType.TRAIN), _context(node)))
    assert report.status is ReplyStatus.TRAINED


def test_a_socket_path_too_long_is_refused_before_listening(tmp_path: Path) -> None:
    folder = tmp_path / ("x" * 120)
    assert not TrainerFolder(folder).fits()
    proc = subprocess.run(
        [sys.executable, "-m", SERVICE_MODULE, "--folder", str(folder), "--device-dir", "d"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "longer than" in proc.stderr


def test_warm_rows_see_new_captures(device: NodeSettings) -> None:
    before = behaviour_rows(device, 0.25)
    assert behaviour_rows(device, 0.25) is before  # cached while the store is unchanged
    stored = load_device(device.data, key_path=device.store_key)
    last = max(i for i, q in enumerate(stored.queries) if q.is_labelled_comparison)
    fewer = dataclasses.replace(stored, queries=stored.queries[:last])
    save_device(device.data, fewer, key_path=device.store_key)
    after = behaviour_rows(device, 0.25)
    assert len(after.train_y) + len(after.test_y) == len(before.train_y) + len(before.test_y) - 1
