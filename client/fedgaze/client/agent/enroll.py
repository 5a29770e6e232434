"""``fedgaze client enroll``: make this device ready to join a federation, with keys of its own.

Enrollment creates the device folder (mode 0700) and in it: a copy of the federation's CA
certificate, the SuperNode authentication key pair (OpenSSH EC), the Ed25519 key that signs
the privacy ledger, the store key and an empty encrypted store, every one private to the person
(files 0600, folders 0700: :mod:`fedgaze.client.device.private`); it writes the client config
last, atomically, so a config exists only for a complete enrollment.
No private key ever leaves the device: the person sends the *public* SuperNode key to the
operator, who registers it (``flwr supernode register``); the ledger pseudonym printed with it
lets the person recognise their records in the server's ledger.

An existing enrollment is never overwritten silently: ``force`` re-enrolls (new SuperNode key,
new server and CA, new config) but keeps the data, the store key and the ledger key, so the
data stays readable and the spent budget stays on record. To start from nothing, run
``fedgaze client forget`` first.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from fedgaze.atomic import write_bytes_atomic
from fedgaze.client.agent.config import (
    CaptureConfig,
    ClientConfig,
    ConfigError,
    SuperNodeConfig,
    load_config,
    write_config,
)
from fedgaze.client.agent.lock import agent_running
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.private import restrict_tree
from fedgaze.client.device.store import MANIFEST, save_device
from fedgaze.client.device.store_crypto import create_store_key
from fedgaze.data.schema import Device
from fedgaze.ledger.keys import load_or_create_signing_key, pseudonym, public_key_b64
from fedgaze.security.certs import make_device_keys

DEFAULT_CONNECTION = "fedgaze"
"""The ``flwr`` CLI connection name of the operator's SuperLink (the one fedgaze's own
launcher writes); the operator may use another."""


class EnrollError(ValueError):
    """Enrollment was refused or its input is wrong; the message names the file or option."""


@dataclass(frozen=True)
class EnrollRequest:
    """What the person asks for: the federation, where to keep the device, and its budget."""

    config_path: Path
    server: str
    ca_source: Path
    device_dir: Path
    epsilon_budget: float
    delta: float
    device_id: str | None = None
    supernode: SuperNodeConfig = field(default_factory=SuperNodeConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    connection: str = DEFAULT_CONNECTION
    force: bool = False


@dataclass(frozen=True)
class Enrollment:
    """The result: the config written and what the operator must register."""

    config_path: Path
    config: ClientConfig
    public_key_path: Path
    public_key: str
    register_argv: tuple[str, ...]
    pseudonym: str
    reenrolled: bool

    @property
    def register_command(self) -> str:
        """The operator's command, for a copy of the public key saved as ``<device id>.pub``."""
        return " ".join(self.register_argv)


def read_ca(path: Path) -> bytes:
    """The PEM bytes of the CA certificate at ``path``; :class:`EnrollError` naming the file
    when it is missing, not a PEM certificate, or a certificate that may not sign others."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise EnrollError(f"{path}: CA certificate file not found") from None
    except IsADirectoryError:
        raise EnrollError(f"{path}: is a directory, not a CA certificate file") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise EnrollError(
            f"{path}: not a PEM certificate (expected '-----BEGIN CERTIFICATE-----'; the "
            "operator's ca.pem from 'fedgaze certs')"
        ) from None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return pem
    if not basic.ca:
        raise EnrollError(
            f"{path}: a certificate that is not a CA (basicConstraints CA:FALSE); pass the "
            "federation's CA certificate (ca.pem), not the server's"
        )
    return pem


def new_device_id() -> str:
    """A random device id: it names the device in every reply, so it says nothing about it."""
    return f"device-{secrets.token_hex(4)}"


def _config(request: EnrollRequest, device_id: str) -> ClientConfig:
    layout = DeviceLayout(request.device_dir.absolute())
    try:
        return ClientConfig(
            device_id=device_id,
            device_dir=layout.root,
            server=request.server,
            ca_file=layout.ca,
            auth_key=layout.auth_key,
            epsilon_budget=request.epsilon_budget,
            delta=request.delta,
            supernode=request.supernode,
            capture=request.capture,
        )
    except ValueError as err:  # pydantic's ValidationError names each field
        raise EnrollError(f"invalid enrollment: {err}") from None


def _earlier_id(request: EnrollRequest) -> str | None:
    """The device id of the enrollment ``force`` replaces, so a re-enrolled device keeps it."""
    if not request.force:
        return None
    try:
        return load_config(request.config_path).device_id
    except ConfigError:
        return None


def _check_not_enrolled(request: EnrollRequest, layout: DeviceLayout) -> bool:
    """True when an earlier enrollment is there (and ``force`` allows replacing it)."""
    if agent_running(layout):
        raise EnrollError(
            f"the agent of {layout.root} is running; stop it first "
            "(systemctl --user stop fedgaze-client)"
        )
    found = [p for p in (request.config_path, layout.auth_key) if p.exists()]
    if found and not request.force:
        raise EnrollError(
            f"already enrolled: {found[0]} exists. Re-enroll with --force (new SuperNode key, "
            "keeps data and budget), or erase this device with 'fedgaze client forget' first"
        )
    return bool(found)


def _write_private(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)  # its temporary file is created 0600
    os.chmod(path, 0o600)


def enroll(request: EnrollRequest) -> Enrollment:
    """Enroll this device as ``request`` says; see the module docstring for what is written.

    Everything is validated before the first write; the config is written last.
    """
    ca_pem = read_ca(request.ca_source)
    config = _config(request, request.device_id or _earlier_id(request) or new_device_id())
    for key, path in config.capture_files().items():
        if not path.is_file():
            raise EnrollError(f"{path}: no such file (for {key})")
    layout = config.layout
    reenrolled = _check_not_enrolled(request, layout)
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    restrict_tree(layout.root)
    _write_private(layout.ca, ca_pem)
    create_store_key(layout.store_key)  # keeps an existing key: its data stays readable
    if not (layout.store / MANIFEST).exists():
        save_device(
            layout.store, Device(device_id=config.device_id, queries=()), key_path=layout.store_key
        )
    ledger_key = load_or_create_signing_key(layout.ledger_key)
    pair = make_device_keys()
    _write_private(layout.auth_key, pair.private)
    _write_private(layout.auth_public, pair.public)
    restrict_tree(layout.root)  # the store and ledger files written above included
    try:
        write_config(request.config_path, config)
    except ConfigError as err:
        raise EnrollError(str(err)) from None
    return Enrollment(
        config_path=request.config_path,
        config=config,
        public_key_path=layout.auth_public,
        public_key=pair.public.decode("ascii").strip(),
        register_argv=(
            "flwr",
            "supernode",
            "register",
            f"{config.device_id}.pub",
            request.connection,
        ),
        pseudonym=pseudonym(public_key_b64(ledger_key)),
        reenrolled=reenrolled,
    )
