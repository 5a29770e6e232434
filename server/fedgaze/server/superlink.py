"""The SuperLink of a federation: its command line, start-up and health, device registration.

The SuperLink is Flower's own ``flower-superlink``: Fleet API ``grpc-rere`` (devices connect
here), Control API (the ``flwr`` CLI) and a plain-gRPC health service. With TLS files it serves
every API over TLS and, with SuperNode authentication, admits only registered device keys
(``flwr supernode register``, the only way to admit a key in flwr 1.39).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedgaze.federation.flower import LOOPBACK, flower_executable
from fedgaze.federation.rundir import RunLayout
from fedgaze.processes import ProcessFailed, Supervisor, free_ports, log_tail, port_in_use

CONNECTION = "fedgaze"


class FederationFailed(RuntimeError):
    """The federation did not complete; the message says where and quotes the relevant log."""


class ServerTLSFiles(Protocol):
    """The files a SuperLink serves TLS with (``CredentialPaths`` or an operator's own)."""

    @property
    def ca_cert(self) -> Path: ...

    @property
    def server_cert(self) -> Path: ...

    @property
    def server_key(self) -> Path: ...


@dataclass(frozen=True)
class TLSFiles:
    """An operator's certificate files (see :class:`ServerTLSFiles`)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class SuperLinkAddresses:
    """Where a started SuperLink listens (all on loopback)."""

    fleet: str
    control: str
    health: str


def superlink_command(
    addresses: SuperLinkAddresses,
    database: Path,
    creds: ServerTLSFiles | None,
    node_auth: bool = True,
) -> list[str]:
    """``flower-superlink`` argv: TLS with ``creds`` (and SuperNode auth unless ``node_auth``
    is False), else ``--insecure``."""
    host, port = addresses.control.rsplit(":", 1)
    security = (
        [
            "--ssl-certfile",
            str(creds.server_cert),
            "--ssl-keyfile",
            str(creds.server_key),
            "--ssl-ca-certfile",
            str(creds.ca_cert),
            *(["--enable-supernode-auth"] if node_auth else []),
        ]
        if creds is not None
        else ["--insecure"]
    )
    return [
        flower_executable("flower-superlink"),
        *security,
        "--fleet-api-type",
        "grpc-rere",
        "--fleet-api-address",
        addresses.fleet,
        "--host",
        host,
        "--port",
        port,
        "--health-server-address",
        addresses.health,
        "--database",
        str(database),
        "--disable-runtime-dependency-installation",
    ]


def local_endpoint(address: str) -> tuple[str, int]:
    """``(host, port)`` at which this machine reaches a listening ``address`` (a wildcard
    host such as ``0.0.0.0`` is reached on loopback)."""
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    return (LOOPBACK if host in ("0.0.0.0", "::", "") else host), int(port)


def start_superlink(
    sup: Supervisor,
    run_dir: Path,
    env: dict[str, str],
    creds: ServerTLSFiles | None,
    ready_within: float,
    addresses: SuperLinkAddresses | None = None,
    node_auth: bool = True,
) -> tuple[subprocess.Popen[bytes], SuperLinkAddresses, list[str]]:
    """Start a SuperLink (database ``superlink.db`` in ``run_dir``) on ``addresses`` (default: free
    loopback ports), wait until it is healthy, and write the ``flwr`` CLI config
    (``FLWR_HOME`` from ``env``) that reaches its Control API.

    A port of ``addresses`` that is already taken is a :class:`FederationFailed` naming it:
    Flower's SuperLink may exit 0 on a taken port, which would look like a clean stop.
    """
    if addresses is None:
        fleet_port, control_port, health_port = free_ports(3)
        addresses = SuperLinkAddresses(
            fleet=f"{LOOPBACK}:{fleet_port}",
            control=f"{LOOPBACK}:{control_port}",
            health=f"{LOOPBACK}:{health_port}",
        )
    for what, address in (
        ("fleet", addresses.fleet),
        ("control", addresses.control),
        ("health", addresses.health),
    ):
        if port_in_use(*local_endpoint(address)):
            raise FederationFailed(f"the SuperLink's {what} address {address} is already in use")
    argv = superlink_command(addresses, RunLayout(run_dir).superlink_db, creds, node_auth)
    proc = sup.start("superlink", argv, env)
    # The health service is plain gRPC even when the APIs use TLS (Flower's design).
    _wait_superlink(sup, addresses.health, local_endpoint(addresses.fleet), ready_within)
    host, port = local_endpoint(addresses.control)
    write_flower_config(
        Path(env["FLWR_HOME"]), f"{host}:{port}", creds.ca_cert if creds is not None else None
    )
    return proc, addresses, argv


def write_flower_config(
    flwr_home: Path, control_address: str, root_certificates: Path | None = None
) -> None:
    """Write the ``flwr`` CLI's config naming our SuperLink connection.

    With ``root_certificates`` (the federation's CA) the CLI reaches the SuperLink's Control
    API over HTTPS and verifies its certificate; without, it talks plain HTTP (``--insecure``).
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    tls = (
        f"root-certificates = {json.dumps(str(root_certificates))}\n"
        if root_certificates is not None
        else "insecure = true\n"
    )
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{control_address}"\n{tls}',
        encoding="utf-8",
    )


def register_supernodes(
    sup: Supervisor,
    env: dict[str, str],
    public_keys: Sequence[Path],
    limit: float = 60.0,
    existing_ok: bool = False,
) -> list[str]:
    """Register each public key with the SuperLink (``flwr supernode register``), in parallel.

    Returns the node ids the SuperLink assigned; raises :class:`FederationFailed` with the
    CLI's output when any registration fails or exceeds ``limit`` seconds. With
    ``existing_ok`` a key the SuperLink's database already holds (a restarted SuperLink) counts
    as registered, with the id ``"registered earlier"``.
    """
    names = []
    for i, key in enumerate(public_keys):
        name = f"register-{i:03d}"
        sup.start(
            name, [flower_executable("flwr"), "supernode", "register", str(key), CONNECTION], env
        )
        names.append(name)
    deadline = time.monotonic() + limit
    node_ids = []
    for name in names:
        proc = sup.children[name]
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        log = sup.log_path(name).read_text(encoding="utf-8", errors="replace")
        sup.stop(name)
        match = re.search(r"SuperNode (\d+) registered", log)
        if existing_ok and code != 0 and "Public key already in use" in log:
            node_ids.append("registered earlier")
            continue
        if code != 0 or match is None:
            raise FederationFailed(
                f"registering a SuperNode key failed ({name}, exit {code}):\n"
                f"{log_tail(sup.log_path(name))}"
            )
        node_ids.append(match[1])
    return node_ids


def _healthy(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_superlink(sup: Supervisor, health: str, fleet: tuple[str, int], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sup.check_alive("superlink")
        if _healthy(health) and port_in_use(*fleet):
            return
        time.sleep(0.25)
    raise ProcessFailed(
        f"SuperLink not healthy after {limit:.0f} s:\n{log_tail(sup.log_path('superlink'))}"
    )
