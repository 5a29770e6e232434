"""Launch a real federation on this machine: SuperLink, one SuperNode per device, and the run.

The processes are Flower's own executables (``flower-superlink``, ``flower-supernode``,
``flwr run``) talking gRPC (Fleet API ``grpc-rere``) over loopback. The fedgaze ServerApp and
ClientApp are packaged as a minimal Flower app whose components point into the installed
``fedgaze`` package, so no dependency is installed at run time.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedgaze.federation.flower import (
    LOOPBACK,
    child_env,
    flower_executable,
    supernode_command,
)
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.processes import ProcessFailed, Supervisor, free_ports, log_tail, port_in_use
from fedgaze.security.certs import check_device_id, provision_credentials
from fedgaze.server.app import PROGRESS_FILE, RESULT_FILE

CONNECTION = "fedgaze"
CERTS_DIR = "certs"

EventHandler = Callable[[dict[str, Any]], None]


class FederationFailed(RuntimeError):
    """The federation did not complete; the message says where and quotes the relevant log."""


class ServerAppNotStarted(FederationFailed):
    """Flower ended the run before the fedgaze ServerApp wrote anything (it never ran)."""


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
    tls: bool = False
    node_auth: bool = False
    certs_dir: str | None = None


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
    """Start a SuperLink (database ``run_dir/superlink.db``) on ``addresses`` (default: free
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
    argv = superlink_command(addresses, run_dir / "superlink.db", creds, node_auth)
    proc = sup.start("superlink", argv, env)
    # The health service is plain gRPC even when the APIs use TLS (Flower's design).
    _wait_superlink(sup, addresses.health, local_endpoint(addresses.fleet), ready_within)
    host, port = local_endpoint(addresses.control)
    write_flower_config(
        Path(env["FLWR_HOME"]), f"{host}:{port}", creds.ca_cert if creds is not None else None
    )
    return proc, addresses, argv


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


class _ProgressTail:
    """Reads new complete lines of the ServerApp's progress file as they are appended (a
    resumed run's file already holds the earlier server's events: those are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except FileNotFoundError:
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
    secure: bool = True,
    fleet_address_for_nodes: Callable[[str], str] | None = None,
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
    """
    limits = limits or LaunchLimits()
    if len(nodes) < settings.min_nodes:
        raise FederationFailed(
            f"{len(nodes)} devices configured but the run needs at least {settings.min_nodes}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    flwr_home = run_dir / "flwr_home"
    env = child_env(flwr_home)
    t0 = time.monotonic()
    key_names = [_key_name(i, node.device_id) for i, node in enumerate(nodes)]
    # A fresh CA, SuperLink certificate and one authentication key pair per device.
    creds = provision_credentials(run_dir / CERTS_DIR, key_names) if secure else None
    with Supervisor(run_dir / "logs") as sup:
        superlink, addresses, superlink_argv = start_superlink(
            sup, run_dir, env, creds, limits.superlink_ready
        )
        registered: list[str] = []
        if creds is not None:
            registered = register_supernodes(
                sup, env, [creds.device_public_keys[k] for k in key_names]
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
        (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
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


def run_app(
    sup: Supervisor,
    run_dir: Path,
    settings: ServerSettings,
    env: dict[str, str],
    on_event: EventHandler | None,
    deadline: float,
    drain: float,
    on_started: Callable[[Supervisor], None] | None = None,
) -> dict[str, Any]:
    """Submit the fedgaze app with ``settings`` to the running SuperLink (``flwr run``),
    follow its progress until it is done (or ``deadline``, a ``time.monotonic()`` value), and
    return the ServerApp's result record."""
    write_flower_app(run_dir / "flower_app", settings)
    for attempt in (1, 2):
        tail = _ProgressTail(run_dir / PROGRESS_FILE)
        sup.start(
            "flwr-run",
            [flower_executable("flwr"), "run", str(run_dir / "flower_app"), CONNECTION, "--stream"],
            env,
        )
        if on_started is not None and attempt == 1:
            on_started(sup)
        try:
            _follow(sup, tail, on_event, deadline, env)
            break
        except ServerAppNotStarted:
            # Seen rarely with flwr 1.39: the SuperExec reports the ServerApp task failed
            # before it pulled its input. Nothing ran, so submitting again is safe.
            if attempt == 2:
                raise
            sup.stop("flwr-run")
    _drain(sup, drain)
    result_path = run_dir / RESULT_FILE
    try:
        return dict(json.loads(result_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FederationFailed(
            f"the ServerApp wrote no {result_path}; see {run_dir / 'logs'}"
        ) from None


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


def _run_status(sup: Supervisor, env: dict[str, str]) -> str | None:
    """The SuperLink's status of our run ("running", "finished:failed", ...), or None if unknown.

    Used only when ``flwr run --stream`` has ended early: its HTTP log stream can close while
    the run goes on, so its exit is no evidence that the run is over.
    """
    # The log is appended to when a run is submitted again: the last run started is ours.
    started = re.findall(r"started run (\d+)", sup.log_path("flwr-run").read_text(errors="replace"))
    if not started:
        return None
    try:
        proc = subprocess.run(
            [
                flower_executable("flwr"),
                "ls",
                CONNECTION,
                "--run-id",
                started[-1],
                "--format",
                "json",
            ],
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
    tail: _ProgressTail,
    on_event: EventHandler | None,
    deadline: float,
    env: dict[str, str],
    status_every: float = 5.0,
) -> None:
    seen = False

    def finished() -> bool:
        nonlocal seen
        for event in tail.poll():
            seen = True
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
                failure = FederationFailed if seen else ServerAppNotStarted
                raise failure(
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
