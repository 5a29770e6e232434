"""Launch a real federation on this machine: SuperLink, one SuperNode per device, and the run.

The processes are Flower's own executables (``flower-superlink``, ``flower-supernode``,
``flwr run``) talking gRPC (Fleet API ``grpc-rere``) over loopback. The fedgaze ServerApp and
ClientApp are packaged as a minimal Flower app whose components point into the installed
``fedgaze`` package, so no dependency is installed at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.server.app import PROGRESS_FILE, RESULT_FILE
from fedgaze.server.processes import ProcessFailed, Supervisor, free_ports, log_tail, port_in_use

LOOPBACK = "127.0.0.1"
CONNECTION = "fedgaze"

EventHandler = Callable[[dict[str, Any]], None]


class FederationFailed(RuntimeError):
    """The federation did not complete; the message says where and quotes the relevant log."""


@dataclass(frozen=True)
class LaunchLimits:
    """Upper bounds on every wait, so that nothing the launcher does can hang."""

    superlink_ready: float = 60.0
    run_total: float = 1800.0
    drain: float = 3.0


@dataclass(frozen=True)
class FederationOutcome:
    """What a completed federation produced."""

    server_result: dict[str, Any]
    fleet_address: str
    wall_seconds: float
    superlink_pid: int
    supernode_pids: tuple[int, ...]


def _executable(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FederationFailed(f"{name} not found: is flwr installed in this environment?")
    return found


def _child_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # SuperLink and SuperNode start flower-superexec / flwr-clientapp by name: they must find
    # this environment's executables even when it was not activated.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_HOME=str(flwr_home),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_flower_app(app_dir: Path, settings: ServerSettings) -> None:
    """Write the Flower app (pyproject.toml only) whose run config carries ``settings``."""
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.to_run_config().items())
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "fedgaze-run"
version = "1.0.0"
description = "fedgaze federation run (components come from the installed fedgaze package)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedgaze"

[tool.flwr.app.components]
serverapp = "fedgaze.server.app:app"
clientapp = "fedgaze.client.app:app"

[tool.flwr.app.config]
{config}
""",
        encoding="utf-8",
    )


def write_flower_config(flwr_home: Path, control_address: str) -> None:
    """Write the ``flwr`` CLI's config naming our SuperLink connection."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{control_address}"\ninsecure = true\n',
        encoding="utf-8",
    )


def _healthy(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_superlink(sup: Supervisor, health: str, fleet_port: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sup.check_alive("superlink")
        if _healthy(health) and port_in_use(LOOPBACK, fleet_port):
            return
        time.sleep(0.25)
    raise ProcessFailed(
        f"SuperLink not healthy after {limit:.0f} s:\n{log_tail(sup.log_path('superlink'))}"
    )


class _ProgressTail:
    """Reads new complete lines of the ServerApp's progress file as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def launch_federation(
    run_dir: Path,
    settings: ServerSettings,
    nodes: Sequence[NodeSettings],
    on_event: EventHandler | None = None,
    limits: LaunchLimits | None = None,
    on_started: Callable[[Supervisor], None] | None = None,
) -> FederationOutcome:
    """Start SuperLink, one SuperNode per node, run the fedgaze app, and wait for its end.

    Every child is stopped before this returns or raises. ``on_event`` receives each progress
    event of the ServerApp; ``on_started`` gets the supervisor once all processes are up (fault
    tests use it to kill a SuperNode).
    """
    limits = limits or LaunchLimits()
    if len(nodes) < settings.min_nodes:
        raise FederationFailed(
            f"{len(nodes)} devices configured but the run needs at least {settings.min_nodes}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    flwr_home = run_dir / "flwr_home"
    env = _child_env(flwr_home)
    t0 = time.monotonic()
    with Supervisor(run_dir / "logs") as sup:
        fleet_port, control_port, health_port, *node_ports = free_ports(3 + len(nodes))
        fleet = f"{LOOPBACK}:{fleet_port}"
        superlink = sup.start(
            "superlink",
            [
                _executable("flower-superlink"),
                "--insecure",
                "--fleet-api-type",
                "grpc-rere",
                "--fleet-api-address",
                fleet,
                "--host",
                LOOPBACK,
                "--port",
                str(control_port),
                "--health-server-address",
                f"{LOOPBACK}:{health_port}",
                "--database",
                str(run_dir / "superlink.db"),
                "--disable-runtime-dependency-installation",
            ],
            env,
        )
        _wait_superlink(sup, f"{LOOPBACK}:{health_port}", fleet_port, limits.superlink_ready)
        supernodes = []
        for i, node in enumerate(nodes):
            Path(node.device_dir).mkdir(parents=True, exist_ok=True)
            supernodes.append(
                sup.start(
                    f"supernode-{i:03d}",
                    [
                        _executable("flower-supernode"),
                        "--insecure",
                        "--grpc-rere",
                        "--superlink",
                        fleet,
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(node_ports[i]),
                        "--max-retries",
                        "10",
                        "--max-wait-time",
                        str(limits.superlink_ready),
                        "--node-config",
                        node.to_node_config_arg(),
                    ],
                    env,
                )
            )
        write_flower_app(run_dir / "flower_app", settings)
        write_flower_config(flwr_home, f"{LOOPBACK}:{control_port}")
        (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
        sup.start(
            "flwr-run",
            [_executable("flwr"), "run", str(run_dir / "flower_app"), CONNECTION, "--stream"],
            env,
        )
        if on_started is not None:
            on_started(sup)
        _follow(sup, run_dir, on_event, t0 + limits.run_total, env)
        _drain(sup, limits.drain)
    result_path = run_dir / RESULT_FILE
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FederationFailed(
            f"the ServerApp wrote no {result_path}; see {run_dir / 'logs'}"
        ) from None
    return FederationOutcome(
        server_result=result,
        fleet_address=fleet,
        wall_seconds=time.monotonic() - t0,
        superlink_pid=superlink.pid,
        supernode_pids=tuple(p.pid for p in supernodes),
    )


def _run_status(sup: Supervisor, env: dict[str, str]) -> str | None:
    """The SuperLink's status of our run ("running", "finished:failed", ...), or None if unknown.

    Used only when ``flwr run --stream`` has ended early: its HTTP log stream can close while
    the run goes on, so its exit is no evidence that the run is over.
    """
    match = re.search(r"started run (\d+)", sup.log_path("flwr-run").read_text(errors="replace"))
    if match is None:
        return None
    try:
        proc = subprocess.run(
            [_executable("flwr"), "ls", CONNECTION, "--run-id", match[1], "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        runs = json.loads(proc.stdout)["runs"]
    except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, TypeError):
        return None
    return str(runs[0]["status"]) if runs else None


def _follow(
    sup: Supervisor,
    run_dir: Path,
    on_event: EventHandler | None,
    deadline: float,
    env: dict[str, str],
    status_every: float = 5.0,
) -> None:
    tail = _ProgressTail(run_dir / PROGRESS_FILE)

    def finished() -> bool:
        for event in tail.poll():
            if on_event is not None:
                on_event(event)
            if event["event"] == "failed":
                raise FederationFailed(f"the ServerApp failed: {event.get('error')}")
            if event["event"] == "done":
                return True
        return False

    next_status = 0.0
    while not finished():
        sup.check_alive("superlink")
        if sup.children["flwr-run"].poll() is not None and time.monotonic() >= next_status:
            next_status = time.monotonic() + status_every
            status = _run_status(sup, env)
            if status is not None and status.startswith("finished") and not finished():
                raise FederationFailed(
                    f"the run ended ({status}) before the ServerApp finished; flwr run said:\n"
                    f"{log_tail(sup.log_path('flwr-run'))}"
                )
            if status is not None and status.startswith("finished"):
                return
        if time.monotonic() > deadline:
            raise FederationFailed("the run exceeded its time limit and was stopped")
        time.sleep(0.2)


def _drain(sup: Supervisor, limit: float) -> None:
    """Give ``flwr run`` a bounded moment to see the run finish before children are stopped."""
    with contextlib.suppress(Exception):
        sup.children["flwr-run"].wait(timeout=limit)
