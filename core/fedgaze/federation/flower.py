"""Flower's executables as fedgaze runs them, shared by the server and the device agent.

Kept free of the server's code (and of torch) so the always-on client agent stays small.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"


class FlowerNotFound(RuntimeError):
    """A Flower executable is not installed in this environment."""


def flower_executable(name: str) -> str:
    """The path of Flower executable ``name`` in this environment (beside this Python)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FlowerNotFound(f"{name} not found: is flwr installed in this environment?")
    return found


def child_env(flwr_home: Path) -> dict[str, str]:
    """The environment of Flower child processes: this venv first on PATH, no telemetry,
    ``FLWR_HOME`` for the CLI config, one math thread each."""
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


def supernode_command(
    fleet: str,
    runtime_port: int,
    *,
    root_certificates: Path | None,
    auth_key: Path | None,
    node_config: str | None = None,
    max_wait: float = 60.0,
    max_retries: int = 10,
) -> list[str]:
    """``flower-supernode`` argv: verify the SuperLink with ``root_certificates`` (the CA) and
    authenticate with ``auth_key``; ``--insecure`` when no CA is given."""
    argv = [flower_executable("flower-supernode"), "--grpc-rere"]
    argv += (
        ["--insecure"]
        if root_certificates is None
        else ["--root-certificates", str(root_certificates)]
    )
    if auth_key is not None:
        argv += ["--auth-supernode-private-key", str(auth_key)]
    argv += [
        "--superlink",
        fleet,
        "--host",
        LOOPBACK,
        "--port",
        str(runtime_port),
        "--max-retries",
        str(max_retries),
        "--max-wait-time",
        str(max_wait),
    ]
    if node_config is not None:
        argv += ["--node-config", node_config]
    return argv
