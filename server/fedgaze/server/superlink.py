"""The SuperLink of a federation: its command line, start-up and health, device registration.

The SuperLink is Flower's own ``flower-superlink``: Fleet API ``grpc-rere`` (devices connect
here), Control API (the ``flwr`` CLI) and a plain-gRPC health service. With TLS files it serves
every API over TLS and, with SuperNode authentication, admits only registered device keys
(the Control API's ``RegisterNode``, which ``flwr supernode register`` calls: the only way to
admit a key in flwr 1.39).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.control_pb2 import RegisterNodeRequest
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve
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
    addresses: SuperLinkAddresses,
    root_certificates: Path | None,
    public_keys: Sequence[Path],
    existing_ok: bool = False,
) -> list[str]:
    """Register each public key with the SuperLink at ``addresses`` (its Control API verified
    against ``root_certificates``; plain HTTP without).

    This is the ``RegisterNode`` call of ``flwr supernode register``, through Flower's own
    Control API client and key encoding, made from this process: one CLI process per key cost
    about 1.2 s of CPU each. Returns the node ids the SuperLink assigned; raises
    :class:`FederationFailed` naming the key and the SuperLink's answer when one fails. With
    ``existing_ok`` a key the SuperLink's database already holds (a restarted SuperLink) counts
    as registered, with the id ``"registered earlier"``.
    """
    encoded_keys = [_public_key_bytes(key) for key in public_keys]
    host, port = local_endpoint(addresses.control)
    client = ControlHttpClient.from_server_address(
        f"{host}:{port}",
        insecure=root_certificates is None,
        root_certificates=root_certificates.read_bytes() if root_certificates is not None else None,
        interceptors=[],
    )
    node_ids = []
    try:
        for key, encoded in zip(public_keys, encoded_keys, strict=True):
            try:
                reply = client.RegisterNode(RegisterNodeRequest(public_key=encoded))
            except httpx.HTTPStatusError as err:
                answer = err.response.text.strip()
                if existing_ok and "Public key already in use" in answer:
                    node_ids.append("registered earlier")
                    continue
                raise FederationFailed(
                    f"registering SuperNode key {key} failed: HTTP "
                    f"{err.response.status_code} {answer}"
                ) from err
            except httpx.HTTPError as err:
                raise FederationFailed(
                    f"registering SuperNode key {key}: the SuperLink's Control API at "
                    f"{host}:{port} did not answer ({err})"
                ) from err
            if not reply.node_id:
                raise FederationFailed(f"the SuperLink did not register SuperNode key {key}")
            node_ids.append(str(reply.node_id))
    finally:
        client.close()
    return node_ids


def _public_key_bytes(path: Path) -> bytes:
    """A device's OpenSSH public key as the Control API takes it (Flower's encoding), checked as
    ``flwr supernode register`` checks it: an EC key on a NIST curve."""
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as err:
        raise FederationFailed(f"SuperNode key {path}: not an OpenSSH public key ({err})") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or not uses_nist_ec_curve(key):
        raise FederationFailed(f"SuperNode key {path}: not an EC public key on a NIST curve")
    return public_key_to_bytes(key)


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
