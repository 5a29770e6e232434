"""Helpers of the client agent tests: enrolled devices, synthetic data, bounded waits."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fedgaze.client.agent.config import ClientConfig
from fedgaze.client.agent.enroll import Enrollment, EnrollRequest, enroll
from fedgaze.client.agent.supervisor import process_start_ticks
from fedgaze.client.device.store import save_device
from fedgaze.data.synthetic import generate_cohort
from fedgaze.security.certs import CredentialPaths, provision_credentials

WAIT = 60.0
CANARIES = ("CANARY-prompt-5c1e", "CANARY-left-9d2b", "CANARY-right-0a7f")
"""Strings planted as prompts and answers: they must never show up where they should not."""


def wait_for(what: str, check: Callable[[], Any], limit: float = WAIT, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {limit:.0f} s waiting for {what}")


def alive(pid: int | None) -> bool:
    """True while process ``pid`` exists and has not exited (a zombie has)."""
    return pid is not None and process_start_ticks(pid) is not None


def operator_credentials(factory: pytest.TempPathFactory) -> CredentialPaths:
    """A federation's CA and SuperLink certificate for 127.0.0.1 (``fedgaze certs``)."""
    return provision_credentials(factory.mktemp("operator") / "certs", ["unused"])


def enroll_device(
    tmp_path: Path, creds: CredentialPaths, server: str = "127.0.0.1:9092", **kwargs: Any
) -> Enrollment:
    """Enroll a device under ``tmp_path`` (config ``config/client.toml``, folder ``device``)."""
    return enroll(
        EnrollRequest(
            config_path=tmp_path / "config" / "client.toml",
            server=server,
            ca_source=creds.ca_cert,
            device_dir=tmp_path / "device",
            epsilon_budget=8.0,
            delta=1e-5,
            **kwargs,
        )
    )


def store_synthetic(config: ClientConfig, comparisons: int = 8, **fields: str) -> int:
    """Put a synthetic person's data (text fields replaced by ``fields``) into the device store;
    returns its number of queries."""
    (device,) = generate_cohort(1, seed=7, comparisons_per_device=comparisons)
    queries = tuple(
        dataclasses.replace(
            q, **{k: v for k, v in fields.items() if q.pairwise or k != "response_right"}
        )
        for q in device.queries
    )
    device = dataclasses.replace(device, device_id=config.device_id, queries=queries)
    save_device(config.layout.store, device, key_path=config.layout.store_key)
    return len(queries)


@contextmanager
def capture_service(config: ClientConfig, replay: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """The capture service of an enrolled device as its own process (as the agent starts it);
    yields its ready file's content, then stops it with SIGTERM and checks it exited 0."""
    layout = config.layout
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgaze.client.capture.web", "--device-dir", str(layout.root),
         "--store-dir", str(layout.store), "--store-key", str(layout.store_key),
         "--replay", str(replay), "--ready-file", str(layout.capture_ready), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for("the ready file", lambda: layout.capture_ready.exists() or proc.poll())
        assert proc.poll() is None, proc.communicate(timeout=10)[1]
        yield dict(json.loads(layout.capture_ready.read_text()))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert not layout.capture_ready.exists()
