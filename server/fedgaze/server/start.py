"""``fedgaze server start``: the operator's federation server, from a ``server.toml``.

Starts the SuperLink on the configured addresses (TLS and SuperNode authentication unless the
config turns them off), registers the enrolled devices' public keys, submits the fedgaze app
and follows it to the end. Devices run on their own machines (``fedgaze client start``) and
connect to the Fleet address.

A server that was killed (crash, power loss, SIGKILL) is continued with ``--resume``: the
SuperLink restarts on the same database (device registrations survive, SuperNodes reconnect
on their own), the earlier Flower run is stopped, and the ServerApp continues after the last
round its signed ledger committed, from that round's checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedgaze.atomic import write_json_atomic
from fedgaze.federation.flower import child_env, flower_executable
from fedgaze.federation.results import ServerResult
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import SettingsError
from fedgaze.processes import Supervisor
from fedgaze.server.config import ServerConfig, new_run_key
from fedgaze.server.ledger import LedgerProgress, ResumeError, check_start, ledger_progress
from fedgaze.server.submit import EventHandler, run_app
from fedgaze.server.superlink import (
    CONNECTION,
    FederationFailed,
    SuperLinkAddresses,
    TLSFiles,
    register_supernodes,
    start_superlink,
)


@dataclass(frozen=True)
class ServerRun:
    """What ``fedgaze server start`` did."""

    result: ServerResult
    run_key: str
    resumed_after: int | None
    tls: bool
    node_auth: bool
    registered: tuple[str, ...]
    wall_seconds: float


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_processes(run_dir: Path) -> list[int]:
    """Recorded server pids of ``run_dir`` that are still alive (another server may run)."""
    try:
        recorded = json.loads(RunLayout(run_dir).processes.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    pids = [int(p) for p in recorded.get("pids", []) if isinstance(p, int)]
    return [p for p in pids if p != os.getpid() and _alive(p)]


def _check_files(config: ServerConfig) -> list[Path]:
    """The device keys to register; every configured file must exist (named when not)."""
    files = [f for f in (config.tls.ca_cert, config.tls.server_cert, config.tls.server_key) if f]
    keys = config.device_key_files() if config.auth.enabled else []
    for file in [*files, *keys]:
        if not file.is_file():
            raise SettingsError(f"{file}: no such file (named in the server config)")
    if config.auth.device_keys_dir is not None and not config.auth.device_keys_dir.is_dir():
        raise SettingsError(f"{config.auth.device_keys_dir}: auth.device_keys_dir is no folder")
    return keys


def _stop_earlier_runs(env: dict[str, str]) -> list[str]:
    """Stop every run the restarted SuperLink still lists as pending or running: its
    ServerApp died with the old server, and devices should not work for it any more."""
    flwr = flower_executable("flwr")
    try:
        listed = subprocess.run(
            [flwr, "ls", CONNECTION, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        runs = json.loads(listed.stdout).get("runs", [])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, AttributeError):
        return []
    stopped = []
    for run in runs:
        status = str(run.get("status", ""))
        if status.startswith(("running", "pending", "starting")):
            subprocess.run(
                [flwr, "stop", str(run["run-id"]), CONNECTION],
                capture_output=True,
                timeout=60,
                env=env,
                check=False,
            )
            stopped.append(str(run["run-id"]))
    return stopped


def _run_key(config: ServerConfig, recorded: LedgerProgress, resume: bool) -> str:
    """The run key: the recorded run's when resuming, else the config's or a new one."""
    if resume and recorded.settings is not None:
        return str(recorded.settings["run_key"])
    return config.run_key or new_run_key(config.run_dir.resolve())


def start_server(
    config: ServerConfig,
    *,
    resume: bool = False,
    on_event: EventHandler | None = None,
    on_started: Callable[[Supervisor], None] | None = None,
) -> ServerRun:
    """Run (or with ``resume`` continue) the federation of ``config`` to its end.

    Everything that can be checked before a process starts is checked first: the config's
    files, the run directory's ledger (a new run never overwrites one; a resumed one must keep
    the settings that shape the model and the privacy charge), and leftovers of an earlier
    server. Raises :class:`ResumeError`, :class:`SettingsError` or
    :class:`~fedgaze.local.launcher.FederationFailed` with the reason.
    """
    t0 = time.monotonic()
    run_dir = config.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = _check_files(config)
    recorded = ledger_progress(run_dir)
    run_key = _run_key(config, recorded, resume)
    settings = config.settings(run_key, resume).model_copy(update={"run_dir": str(run_dir)})
    check_start(run_dir, recorded, settings)
    if resume and RunLayout(run_dir).result.exists() and recorded.last_round >= settings.rounds:
        raise ResumeError(f"run {run_key!r} in {run_dir} is already complete")
    resumed_after = recorded.last_round if resume else None
    stale = stale_processes(run_dir)
    if stale:
        raise FederationFailed(
            f"processes of an earlier server of {run_dir} are still running (pids "
            f"{', '.join(map(str, stale))}); stop them before starting again"
        )
    tls = (
        TLSFiles(config.tls.ca_cert, config.tls.server_cert, config.tls.server_key)
        if config.tls.enabled
        and config.tls.ca_cert
        and config.tls.server_cert
        and config.tls.server_key
        else None
    )
    layout = RunLayout(run_dir)
    env = child_env(layout.flwr_home)
    addresses = SuperLinkAddresses(
        fleet=config.superlink.fleet_address,
        control=config.superlink.control_address,
        health=config.superlink.health_address,
    )
    with Supervisor(layout.logs) as sup:
        superlink, addresses, argv = start_superlink(
            sup,
            run_dir,
            env,
            tls,
            config.superlink.ready_timeout,
            addresses=addresses,
            node_auth=config.auth.enabled,
        )
        # Pids of this server, removed on a clean stop: a stale record tells ``--resume``
        # that an earlier server may still hold the ports and database.
        write_json_atomic(layout.processes, {"pids": [os.getpid(), superlink.pid]})
        registered = (
            register_supernodes(
                addresses, tls.ca_cert if tls is not None else None, keys, existing_ok=True
            )
            if keys
            else []
        )
        if resume:
            _stop_earlier_runs(env)
        result = run_app(
            sup,
            run_dir,
            settings,
            env,
            on_event,
            t0 + config.federation.run_timeout,
            3.0,
            on_started,
        )
    layout.processes.unlink(missing_ok=True)
    return ServerRun(
        result=result,
        run_key=run_key,
        resumed_after=resumed_after,
        tls=tls is not None,
        node_auth="--enable-supernode-auth" in argv,
        registered=tuple(registered),
        wall_seconds=time.monotonic() - t0,
    )
