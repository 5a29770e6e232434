"""The whole server (``fedgaze server start``, its SuperLink and ServerApp) killed mid-run and
continued with ``--resume``: every round is committed exactly once, devices are charged once
per round, and every ledger verifies. Real processes, TLS and SuperNode authentication; with
plain rounds (two devices) and with secure aggregation (three devices, threshold 2)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedgaze.federation.flower import child_env, supernode_command
from fedgaze.federation.rundir import RunLayout
from fedgaze.ledger.contract import SERVER_LEDGER_FILE, RecordKind
from fedgaze.ledger.contract import device_ledger_path as ledger_path
from fedgaze.ledger.records import LedgerRecord, verify_jsonl, verify_sqlite
from fedgaze.local.cohort import provision_synthetic
from fedgaze.processes import Supervisor, descendants, free_ports, log_tail
from fedgaze.security.certs import CredentialPaths, provision_credentials
from fedgaze.server.ledger import ledger_progress

pytestmark = [pytest.mark.integration, pytest.mark.timeout(540)]

FEDGAZE = str(Path(sys.executable).with_name("fedgaze"))
ROUNDS = 3


def _events(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_config(
    path: Path, run_dir: Path, creds: CredentialPaths, ports: list[int], secure: bool
) -> None:
    names = sorted(creds.device_public_keys)
    keys = ", ".join(json.dumps(str(creds.device_public_keys[k])) for k in names)
    secagg = "\n[secure_aggregation]\nthreshold = 2\ntimeout = 60.0\n" if secure else ""
    path.write_text(
        f"""run_dir = {json.dumps(str(run_dir))}

[superlink]
fleet_address = "127.0.0.1:{ports[0]}"
control_address = "127.0.0.1:{ports[1]}"
health_address = "127.0.0.1:{ports[2]}"

[tls]
ca_cert = {json.dumps(str(creds.ca_cert))}
server_cert = {json.dumps(str(creds.server_cert))}
server_key = {json.dumps(str(creds.server_key))}

[auth]
device_keys = [{keys}]

[federation]
rounds = {ROUNDS}
min_nodes = {len(names)}
node_wait_timeout = 120
round_timeout = 45
run_timeout = 400

[privacy]
epsilon = 8.0
{secagg}""",
        encoding="utf-8",
    )


def _kill_server(run_dir: Path) -> None:
    """SIGKILL every process of the server at once, as a crash or power loss would."""
    pids = json.loads(RunLayout(run_dir).processes.read_text())["pids"]
    victims = {p for pid in pids for p in [pid, *descendants(pid)]}
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)


@pytest.fixture(params=[False, True], ids=["plain", "secure-aggregation"])
def devices(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Supervisor, Path, Path, Callable[[], None]]]:
    """The run's config and a way to start its devices (SuperNodes with TLS and their
    authentication keys), which keep running while the server is killed and restarted: two,
    or three with secure aggregation (whose rounds need more devices than the threshold)."""
    secure = bool(request.param)
    count = 3 if secure else 2
    run_dir = tmp_path / "run"
    creds = provision_credentials(tmp_path / "certs", [f"d{i}" for i in range(count)])
    config = tmp_path / "server.toml"
    ports = free_ports(3)
    _write_config(config, run_dir, creds, ports, secure)
    nodes = provision_synthetic(run_dir / "devices", count, seed=1, epsilon_budget=8.0, delta=1e-5)
    with Supervisor(tmp_path / "device_logs") as sup:

        def start_devices() -> None:
            env = child_env(tmp_path / "device_flwr_home")
            for i, (node, runtime_port) in enumerate(zip(nodes, free_ports(count), strict=True)):
                argv = supernode_command(
                    f"127.0.0.1:{ports[0]}",
                    runtime_port,
                    root_certificates=creds.ca_cert,
                    auth_key=creds.device_keys[f"d{i}"],
                    node_config=node.to_node_config_arg(),
                    max_wait=400,
                    max_retries=10_000,
                )
                sup.start(f"supernode-{i}", argv, env)

        yield sup, run_dir, config, start_devices


def _start(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [FEDGAZE, "server", "start", "--config", str(config), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_server_killed_mid_run_resumes_without_losing_or_repeating_a_round(
    devices: tuple[Supervisor, Path, Path, Callable[[], None]], tmp_path: Path
) -> None:
    sup, run_dir, config, start_devices = devices
    log = tmp_path / "server.log"
    server = _start(config, log)
    try:
        # Devices start once their keys are registered: Flower refuses (for good) a SuperNode
        # whose key it does not know yet.
        deadline = time.monotonic() + 120
        while not any(e.get("event") == "waiting" for e in _events(run_dir)):
            assert server.poll() is None, log_tail(log)
            assert time.monotonic() < deadline, "the ServerApp did not start\n" + log_tail(log)
            time.sleep(0.25)
        start_devices()
        deadline = time.monotonic() + 240
        while not any(e.get("event") == "round" for e in _events(run_dir)):
            assert server.poll() is None, log_tail(log)
            assert time.monotonic() < deadline, "round 1 did not finish in time\n" + log_tail(log)
            time.sleep(0.25)
        # Round 2 is now under way: devices are training on the model after round 1.
        time.sleep(2.0)
        _kill_server(run_dir)
        server.wait(timeout=20)
        before = ledger_progress(run_dir)
        assert 1 <= before.last_round < ROUNDS

        # A plain start refuses to overwrite the run; resume continues it.
        refused = subprocess.run(
            [FEDGAZE, "server", "start", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 2 and "--resume" in refused.stderr
        resumed = _start(config, log, "--resume")
        assert resumed.wait(timeout=360) == 0, log_tail(log, 60)
    finally:
        for proc in (server,):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if RunLayout(run_dir).processes.exists():
            _kill_server(run_dir)

    result = json.loads((run_dir / "server_result.json").read_text())
    assert [r["round"] for r in result["rounds_log"]] == [1, 2, 3]
    # Every round aggregated someone's update. After the restart a device may miss a round:
    # SuperNodes reconnect with a random backoff, and Flower 1.39 was seen to hold a
    # reconnected SuperNode's reply until its next message arrived.
    assert result["rounds_log"][0]["train_devices"] == len(list((run_dir / "devices").iterdir()))
    assert all(r["train_devices"] >= 1 for r in result["rounds_log"]), result["rounds_log"]

    server_ledger = verify_sqlite(run_dir / SERVER_LEDGER_FILE)
    assert server_ledger.ok, server_ledger.problems
    kinds = [r.kind for r in server_ledger.records]
    assert kinds == ["run-start"] + ["server-round"] * before.last_round + ["run-resume"] + [
        "server-round"
    ] * (ROUNDS - before.last_round)
    resume = next(r for r in server_ledger.records if r.kind == "run-resume")
    assert resume.body["after_round"] == before.last_round
    secure = server_ledger.records[0].body["settings"]["secure_aggregation"] is not None
    rules = {r.body["aggregation"] for r in server_ledger.records if r.kind == "server-round"}
    assert rules == {"secagg+-fedavg" if secure else "fedavg"}

    run_key = server_ledger.records[0].body["settings"]["run_key"]
    accepted = {
        line
        for r in server_ledger.records
        if r.kind == "server-round"
        for line in r.body["accepted"]
    }
    for device_dir in sorted((run_dir / "devices").iterdir()):
        report = verify_jsonl(ledger_path(device_dir))
        assert report.ok, report.problems
        charged = [r for r in report.records if r.kind == RecordKind.DP_ROUND]
        rounds = [r.body["round"] for r in charged]
        # At most one charge per round, the interrupted one included (a repeat is a replay).
        assert all(r.body["run_id"] == run_key for r in charged)
        assert rounds == sorted(set(rounds)) and set(rounds) <= {1, 2, 3}, rounds
        assert 1 in rounds
        # Every record the server aggregated is, byte for byte, one the device keeps.
        mine = {a for a in accepted if LedgerRecord.parse(a).signer == report.signer}
        assert mine and mine <= {r.line() for r in charged}
    assert len(accepted) == sum(r["train_devices"] for r in result["rounds_log"])

    audit = subprocess.run(
        [FEDGAZE, "audit", "verify", str(run_dir)], capture_output=True, text=True, timeout=180
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert sup.children, "the devices kept running throughout"
