"""TLS certificates and SuperNode authentication keys for a federation, made with ``cryptography``.

Layout written by :func:`write_credentials` (``fedgaze certs`` and every local federation):

================================  ===========================================================
``ca.pem``                        self-signed CA certificate (EC P-384, CA:TRUE, pathlen 0)
``ca.key``                        the CA's private key (mode 0600)
``server.pem``                    SuperLink certificate signed by the CA, with SANs
``server.key``                    the SuperLink's private key (mode 0600)
``devices/<id>.key``              a device's SuperNode auth key, OpenSSH private format (0600)
``devices/<id>.pub``              its public key, OpenSSH format (``ecdsa-sha2-nistp384 ...``)
``authorized_supernodes.csv``     every provisioned device's public key, one line each
================================  ===========================================================

Flower 1.39 SuperNode authentication uses NIST EC keys in OpenSSH format: the SuperNode
loads its private key with ``--auth-supernode-private-key``; the SuperLink runs with
``--enable-supernode-auth`` and accepts only public keys registered through its Control API
(``flwr supernode register devices/<id>.pub``). The CSV lists the same keys for operators.

Key generation and certificate building are pure functions returning bytes; only
:func:`write_credentials` touches the file system.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1
DEFAULT_SERVER_NAMES: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
VALID_DAYS = 365
AUTHORIZED_FILE = "authorized_supernodes.csv"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class KeyPair:
    """A private key (PEM or OpenSSH bytes) and its public counterpart."""

    private: bytes
    public: bytes


@dataclass(frozen=True)
class CertifiedKey:
    """A PEM certificate and its PEM (PKCS#8) private key."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class Credentials:
    """Everything one federation needs: CA, SuperLink certificate, device key pairs."""

    ca: CertifiedKey
    server: CertifiedKey
    devices: dict[str, KeyPair]


@dataclass(frozen=True)
class CredentialPaths:
    """Where :func:`write_credentials` put each file."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    device_keys: dict[str, Path]
    device_public_keys: dict[str, Path]
    authorized: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    """A certificate builder with a random serial, valid from 5 minutes ago for ``days``."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Key usage of a CA (signs certificates and CRLs) or of a TLS server (ECDHE, signatures)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(common_name: str = "fedgaze federation CA", days: int = VALID_DAYS) -> CertifiedKey:
    """A self-signed CA certificate (basicConstraints CA:TRUE, pathlen 0) and its key."""
    key = ec.generate_private_key(CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_server_cert(
    ca: CertifiedKey, names: Sequence[str] = DEFAULT_SERVER_NAMES, days: int = VALID_DAYS
) -> CertifiedKey:
    """A TLS server certificate signed by ``ca`` whose SANs are ``names`` (IPs or DNS names)."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the CA key is not an EC key")
    key = ec.generate_private_key(CURVE())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def make_device_keys() -> KeyPair:
    """A SuperNode authentication key pair as Flower 1.39 loads it (EC, OpenSSH format)."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, public + b"\n")


def check_device_id(device_id: str) -> str:
    """``device_id`` if it is safe as a file name, else ValueError."""
    if not _DEVICE_ID.fullmatch(device_id) or device_id in {".", ".."}:
        raise ValueError(f"device id {device_id!r} must match {_DEVICE_ID.pattern}")
    return device_id


def make_credentials(
    device_ids: Sequence[str], server_names: Sequence[str] = DEFAULT_SERVER_NAMES
) -> Credentials:
    """A fresh CA, a SuperLink certificate for ``server_names`` and one key pair per device."""
    ids = [check_device_id(d) for d in device_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("device ids must be distinct")
    ca = make_ca()
    return Credentials(
        ca=ca,
        server=make_server_cert(ca, server_names),
        devices={d: make_device_keys() for d in ids},
    )


def authorized_csv(devices: dict[str, KeyPair]) -> bytes:
    """Every device's OpenSSH public key, one per line (``<key> <device id>``)."""
    lines = []
    for device_id, pair in devices.items():
        algo, blob = pair.public.split()[:2]
        lines.append(b"%s %s %s\n" % (algo, blob, device_id.encode()))
    return b"".join(lines)


def verify_server_cert(ca_pem: bytes, server_pem: bytes, name: str) -> None:
    """Raise if ``server_pem`` is not a valid server certificate for ``name`` under the CA."""
    from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(server_pem)
    subject: DNSName | IPAddress
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
    verifier.verify(leaf, [])


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start and move it into place atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public(path: Path, data: bytes) -> None:
    from fedgaze.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)
    os.chmod(path, 0o644)


def write_credentials(creds: Credentials, directory: Path) -> CredentialPaths:
    """Write ``creds`` under ``directory`` (private keys 0600) and say where each file is."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = CredentialPaths(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        device_keys={d: directory / "devices" / f"{d}.key" for d in creds.devices},
        device_public_keys={d: directory / "devices" / f"{d}.pub" for d in creds.devices},
        authorized=directory / AUTHORIZED_FILE,
    )
    _write_public(paths.ca_cert, creds.ca.cert)
    _write_private(paths.ca_key, creds.ca.key)
    _write_public(paths.server_cert, creds.server.cert)
    _write_private(paths.server_key, creds.server.key)
    for device_id, pair in creds.devices.items():
        _write_private(paths.device_keys[device_id], pair.private)
        _write_public(paths.device_public_keys[device_id], pair.public)
    _write_public(paths.authorized, authorized_csv(creds.devices))
    return paths


def provision_credentials(
    directory: Path,
    device_ids: Sequence[str],
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
) -> CredentialPaths:
    """Make and write a fresh CA, SuperLink certificate and device keys under ``directory``."""
    return write_credentials(make_credentials(device_ids, server_names), directory)
