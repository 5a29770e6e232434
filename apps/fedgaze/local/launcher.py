"""Launch a real federation on this machine: SuperLink, one SuperNode per device, and the run.

The processes are Flower's own executables (``flower-superlink``, ``flower-supernode``,
``flwr run``) talking gRPC (Fleet API ``grpc-rere``) over loopback: the SuperLink and the run
as a deployment's server starts them (:mod:`fedgaze.server.superlink`,
:mod:`fedgaze.server.submit`), and one SuperNode per provisioned device, as its client agent
would.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from fedgaze.client.trainer_channel import SERVICE_MODULE
from fedgaze.federation.flower import child_env, supernode_command
from fedgaze.federation.results import ServerResult
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.processes import Supervisor, free_ports
from fedgaze.security.certs import check_device_id, provision_credentials
from fedgaze.server.submit import EventHandler, run_app
from fedgaze.server.superlink import FederationFailed, register_supernodes, start_superlink


@dataclass(frozen=True)
class LaunchLimits:
    """Upper bounds on every wait, so that nothing the launcher does can hang."""

    superlink_ready: float = 60.0
    run_total: float = 1800.0
    drain: float = 3.0


@dataclass(frozen=True)
class FederationOutcome:
    """What a completed federation produced."""

    server_result: ServerResult
    fleet_address: str
    wall_seconds: float
    superlink_pid: int
    supernode_pids: tuple[int, ...]
    tls: bool = False
    node_auth: bool = False
    certs_dir: str | None = None


def launch_federation(
    run_dir: Path,
    settings: ServerSettings,
    nodes: Sequence[NodeSettings],
    on_event: EventHandler | None = None,
    limits: LaunchLimits | None = None,
    on_started: Callable[[Supervisor], None] | None = None,
    secure: bool = True,
    fleet_address_for_nodes: Callable[[str], str] | None = None,
    warm_trainer: bool = True,
) -> FederationOutcome:
    """Start SuperLink, one SuperNode per node, run the fedgaze app, and wait for its end.

    Every child is stopped before this returns or raises. ``on_event`` receives each progress
    event of the ServerApp; ``on_started`` gets the supervisor once all processes are up (fault
    tests use it to kill a SuperNode).

    ``secure`` (the default) provisions a fresh CA, SuperLink certificate and per-device keys
    under ``run_dir/certs``: every Fleet and Control API connection uses TLS verified against
    that CA, and the SuperLink admits only the provisioned devices' keys. ``secure=False``
    runs everything in plaintext with no SuperNode authentication.

    ``fleet_address_for_nodes`` maps the SuperLink's Fleet API address to the one SuperNodes
    are given (the wire test puts a recording proxy in between); default: the same address.

    ``warm_trainer`` (the default) starts one warm trainer for these devices
    (:mod:`fedgaze.client.trainer_service`, in a fresh private temporary folder) and names it in
    every node config: the per-message ClientApp processes hand it their messages instead of
    loading torch and Opacus each, and it answers one at a time, so however many devices share
    this machine, the CPU work of a round runs one message after another instead of all at once.
    """
    limits = limits or LaunchLimits()
    if len(nodes) < settings.min_nodes:
        raise FederationFailed(
            f"{len(nodes)} devices configured but the run needs at least {settings.min_nodes}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(run_dir)
    env = child_env(layout.flwr_home)
    t0 = time.monotonic()
    key_names = [_key_name(i, node.device_id) for i, node in enumerate(nodes)]
    # A fresh CA, SuperLink certificate and one authentication key pair per device.
    creds = provision_credentials(layout.certs, key_names) if secure else None
    with ExitStack() as stack, Supervisor(layout.logs) as sup:
        if warm_trainer:  # first: it loads torch and Opacus while the SuperLink starts
            nodes = _with_trainer(
                sup,
                nodes,
                env,
                Path(stack.enter_context(TemporaryDirectory(prefix="fedgaze-trainer-"))),
            )
        superlink, addresses, superlink_argv = start_superlink(
            sup, run_dir, env, creds, limits.superlink_ready
        )
        registered: list[str] = []
        if creds is not None:
            registered = register_supernodes(
                addresses, creds.ca_cert, [creds.device_public_keys[k] for k in key_names]
            )
        node_ports = free_ports(len(nodes))
        supernodes = []
        supernode_argvs = []
        for i, node in enumerate(nodes):
            Path(node.device_dir).mkdir(parents=True, exist_ok=True)
            argv = supernode_command(
                fleet_address_for_nodes(addresses.fleet)
                if fleet_address_for_nodes is not None
                else addresses.fleet,
                node_ports[i],
                root_certificates=creds.ca_cert if creds is not None else None,
                auth_key=creds.device_keys[key_names[i]] if creds is not None else None,
                node_config=node.to_node_config_arg(),
                max_wait=limits.superlink_ready,
            )
            supernode_argvs.append(argv)
            supernodes.append(sup.start(f"supernode-{i:03d}", argv, env))
        layout.progress.unlink(missing_ok=True)
        result = run_app(
            sup, run_dir, settings, env, on_event, t0 + limits.run_total, limits.drain, on_started
        )
    return FederationOutcome(
        server_result=result,
        fleet_address=addresses.fleet,
        wall_seconds=time.monotonic() - t0,
        superlink_pid=superlink.pid,
        supernode_pids=tuple(p.pid for p in supernodes),
        tls=_uses_tls(superlink_argv, supernode_argvs),
        node_auth=_uses_node_auth(superlink_argv, supernode_argvs, registered),
        certs_dir=str(creds.directory) if creds is not None else None,
    )


def _with_trainer(
    sup: Supervisor, nodes: Sequence[NodeSettings], env: dict[str, str], folder: Path
) -> list[NodeSettings]:
    argv = [sys.executable, "-m", SERVICE_MODULE, "--folder", str(folder)]
    for node in nodes:
        argv += ["--device-dir", node.device_dir]
    sup.start("trainer", argv, env)
    return [node.model_copy(update={"trainer": str(folder)}) for node in nodes]


def _key_name(index: int, device_id: str) -> str:
    """The file name of a device's key pair: its id where that is a safe file name."""
    try:
        return check_device_id(device_id)
    except ValueError:
        return f"device-{index:03d}"


def _uses_tls(superlink: Sequence[str], supernodes: Sequence[Sequence[str]]) -> bool:
    """True when the SuperLink served TLS and every SuperNode verified it against a CA."""
    return (
        "--insecure" not in superlink
        and "--ssl-certfile" in superlink
        and all("--insecure" not in a and "--root-certificates" in a for a in supernodes)
    )


def _uses_node_auth(
    superlink: Sequence[str], supernodes: Sequence[Sequence[str]], registered: Sequence[str]
) -> bool:
    """True when the SuperLink admitted only registered keys and every SuperNode had one."""
    return (
        "--enable-supernode-auth" in superlink
        and len(registered) == len(supernodes)
        and all("--auth-supernode-private-key" in a for a in supernodes)
    )
