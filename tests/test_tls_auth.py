"""TLS and SuperNode authentication: certificates, and real Flower processes over loopback."""

from __future__ import annotations

import io
import ipaddress
import json
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import VerificationError
from rich.console import Console

from fedgaze.cli.federation import _federation_options
from fedgaze.cli.main import build_parser
from fedgaze.cli.main import main as fedgaze_main
from fedgaze.federation.flower import child_env, flower_executable, supernode_command
from fedgaze.local.launcher import _uses_node_auth, _uses_tls
from fedgaze.processes import Supervisor, free_ports, log_tail
from fedgaze.security.certs import (
    CredentialPaths,
    make_ca,
    make_server_cert,
    provision_credentials,
    verify_server_cert,
)
from fedgaze.server.superlink import (
    CONNECTION,
    FederationFailed,
    SuperLinkAddresses,
    register_supernodes,
    start_superlink,
    superlink_command,
)

JOIN_LIMIT = 30.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- certificates -------------------------------------------------------------------------


def test_certs_command_writes_verifiable_chain_and_private_keys(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert fedgaze_main(["certs", "--out", str(out), "--device-ids", "alice,bob"]) == 0
    ca, server = (out / "ca.pem").read_bytes(), (out / "server.pem").read_bytes()
    for name in ("127.0.0.1", "::1", "localhost"):
        verify_server_cert(ca, server, name)  # raises if the chain or the name is wrong
    with pytest.raises(VerificationError):
        verify_server_cert(ca, server, "example.org")
    ca_cert = x509.load_pem_x509_certificate(ca)
    basic = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    san = (
        x509.load_pem_x509_certificate(server)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for key in ("ca.key", "server.key", "devices/alice.key", "devices/bob.key"):
        assert _mode(out / key) == 0o600, key
    for device in ("alice", "bob"):
        pub = (out / "devices" / f"{device}.pub").read_text()
        assert pub.startswith("ecdsa-sha2-nistp384 ")
        assert (
            (out / "devices" / f"{device}.key")
            .read_text()
            .startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        )
    rows = (out / "authorized_supernodes.csv").read_text().splitlines()
    assert [r.split()[-1] for r in rows] == ["alice", "bob"]
    # Refuses to overwrite existing credentials.
    assert fedgaze_main(["certs", "--out", str(out), "--devices", "1"]) == 2


def test_server_cert_of_another_ca_does_not_verify() -> None:
    ca, other = make_ca(), make_ca()
    server = make_server_cert(other, ["127.0.0.1", "fed.example"])
    verify_server_cert(other.cert, server.cert, "fed.example")
    with pytest.raises(VerificationError):
        verify_server_cert(ca.cert, server.cert, "127.0.0.1")


# --- --insecure plumbing -----------------------------------------------------------------


def test_security_flags_follow_the_launched_commands(tmp_path: Path) -> None:
    creds = provision_credentials(tmp_path / "c", ["a"])
    addresses = SuperLinkAddresses("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    secure = superlink_command(addresses, tmp_path / "db", creds)
    node = supernode_command(
        addresses.fleet, 4, root_certificates=creds.ca_cert, auth_key=creds.device_keys["a"]
    )
    assert _uses_tls(secure, [node]) and _uses_node_auth(secure, [node], ["1"])
    assert not _uses_node_auth(secure, [node], [])  # a key that was never registered
    plain = superlink_command(addresses, tmp_path / "db", None)
    plain_node = supernode_command(addresses.fleet, 4, root_certificates=None, auth_key=None)
    assert "--insecure" in plain and "--insecure" in plain_node
    assert not _uses_tls(plain, [plain_node]) and not _uses_node_auth(plain, [plain_node], [])


@pytest.mark.parametrize(
    "command",
    [pytest.param("demo", marks=pytest.mark.slow), pytest.param("train", marks=pytest.mark.slow)],
)
def test_insecure_flag_reaches_the_launcher_with_a_warning(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedgaze.local.demo as demo

    argv = [command, "--run-dir", str(tmp_path / command)]
    if command == "train":
        argv += ["--data", str(tmp_path), "--out", str(tmp_path / "m"), "--mode", "federated"]
    assert _federation_options(build_parser().parse_args([*argv, "--insecure"])).insecure
    assert not _federation_options(build_parser().parse_args(argv)).insecure

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_launch(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(demo, "launch_federation", fake_launch)
    out = io.StringIO()
    with pytest.raises(Stop):
        demo.run_local_federation(
            demo.FederationOptions(nodes=2, rounds=1, run_dir=tmp_path / "r", insecure=True),
            Console(file=out, width=300, force_terminal=True),
        )
    assert seen["secure"] is False
    text = out.getvalue()
    assert "WARNING: --insecure" in text and "\x1b[1;31m" in text  # bold red


# --- real processes ----------------------------------------------------------------------


@dataclass
class Link:
    sup: Supervisor
    env: dict[str, str]
    creds: CredentialPaths
    addresses: SuperLinkAddresses
    run_dir: Path


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    """A SuperLink with TLS and SuperNode auth where only device ``a`` is registered."""
    run_dir = tmp_path_factory.mktemp("link")
    creds = provision_credentials(run_dir / "certs", ["a", "b"])
    env = child_env(run_dir / "flwr_home")
    with Supervisor(run_dir / "logs") as sup:
        _, addresses, _ = start_superlink(sup, run_dir, env, creds, 60.0)
        register_supernodes(addresses, creds.ca_cert, [creds.device_public_keys["a"]])
        yield Link(sup, env, creds, addresses, run_dir)


def _wait_exit(proc: subprocess.Popen[bytes], limit: float) -> int | None:
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        return None


def _nodes(link: Link) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [flower_executable("flwr"), "supernode", "ls", CONNECTION, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=link.env,
        check=True,
    )
    return list(json.loads(proc.stdout[proc.stdout.index("{") :])["nodes"])


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_unregistered_device_is_refused(link: Link) -> None:
    (port,) = free_ports(1)
    argv = supernode_command(
        link.addresses.fleet,
        port,
        root_certificates=link.creds.ca_cert,
        auth_key=link.creds.device_keys["b"],  # never registered
        max_wait=JOIN_LIMIT,
        max_retries=2,
    )
    proc = link.sup.start("supernode-unregistered", argv, link.env)
    code = _wait_exit(proc, JOIN_LIMIT)
    node_log = log_tail(link.sup.log_path("supernode-unregistered"), 60)
    assert code is not None and code != 0, f"unregistered SuperNode kept running:\n{node_log}"
    assert "Failed to activate SuperNode" in node_log
    superlink_log = link.sup.log_path("superlink").read_text(errors="replace")
    assert "No SuperNode found with the given public key" in superlink_log
    # Only the registered device is known, and it never came online.
    nodes = _nodes(link)
    assert len(nodes) == 1 and nodes[0]["status"] != "online"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_registration_that_fails_names_the_key_and_why(link: Link, tmp_path: Path) -> None:
    known = link.creds.device_public_keys["a"]
    with pytest.raises(FederationFailed, match=r"a\.pub failed: HTTP 412 .*already in use"):
        register_supernodes(link.addresses, link.creds.ca_cert, [known])
    # A restarted server registers its keys again: a key the SuperLink holds counts.
    assert register_supernodes(link.addresses, link.creds.ca_cert, [known], existing_ok=True) == [
        "registered earlier"
    ]
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("ssh-rsa not-a-key\n")
    with pytest.raises(FederationFailed, match=r"bogus\.pub"):
        register_supernodes(link.addresses, link.creds.ca_cert, [bogus])
    stranger = provision_credentials(tmp_path / "other", ["x"])
    with pytest.raises(FederationFailed, match="did not answer"):
        register_supernodes(link.addresses, stranger.ca_cert, [known])
    assert len(_nodes(link)) == 1  # nothing was added


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_supernode_with_the_wrong_ca_cannot_connect(link: Link, tmp_path: Path) -> None:
    stranger = provision_credentials(tmp_path / "other", ["x"])
    (port,) = free_ports(1)
    argv = supernode_command(
        link.addresses.fleet,
        port,
        root_certificates=stranger.ca_cert,  # does not sign the SuperLink's certificate
        auth_key=link.creds.device_keys["a"],  # a registered key: only TLS can stop it
        max_wait=10.0,
        max_retries=2,
    )
    t0 = time.monotonic()
    proc = link.sup.start("supernode-wrong-ca", argv, link.env)
    code = _wait_exit(proc, JOIN_LIMIT)
    node_log = log_tail(link.sup.log_path("supernode-wrong-ca"), 60)
    assert code is not None and code != 0, f"SuperNode with a foreign CA kept running:\n{node_log}"
    assert time.monotonic() - t0 < JOIN_LIMIT
    assert all(n["status"] != "online" for n in _nodes(link)), node_log


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_federation_runs_with_tls_and_node_auth_by_default(tmp_path: Path) -> None:
    from fedgaze.local.demo import FederationOptions, run_local_federation

    run_dir = tmp_path / "run"
    summary = run_local_federation(
        FederationOptions(nodes=2, rounds=1, run_dir=run_dir, seed=3),
        Console(file=io.StringIO(), width=200),
    ).to_json()
    assert summary["rounds_completed"] == 1
    assert summary["tls"] is True and summary["node_auth"] is True
    assert _mode(run_dir / "certs" / "server.key") == 0o600
    assert len(list((run_dir / "certs" / "devices").glob("*.pub"))) == 2
    superlink_log = (run_dir / "logs" / "superlink.log").read_text(errors="replace")
    assert "Uvicorn running on https://" in superlink_log
    assert "register-node" in superlink_log
    config = (run_dir / "flwr_home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_revoked_device_is_refused(tmp_path: Path) -> None:
    """A key that was registered and then unregistered (revoked) can no longer join."""
    creds = provision_credentials(tmp_path / "certs", ["c"])
    env = child_env(tmp_path / "flwr_home")
    with Supervisor(tmp_path / "logs") as sup:
        _, addresses, _ = start_superlink(sup, tmp_path, env, creds, 60.0)
        (node_id,) = register_supernodes(addresses, creds.ca_cert, [creds.device_public_keys["c"]])
        revoke = subprocess.run(
            [flower_executable("flwr"), "supernode", "unregister", node_id, CONNECTION],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert revoke.returncode == 0, revoke.stdout + revoke.stderr
        (port,) = free_ports(1)
        argv = supernode_command(
            addresses.fleet,
            port,
            root_certificates=creds.ca_cert,
            auth_key=creds.device_keys["c"],
            max_wait=JOIN_LIMIT,
            max_retries=2,
        )
        proc = sup.start("supernode-revoked", argv, env)
        code = _wait_exit(proc, JOIN_LIMIT)
        node_log = log_tail(sup.log_path("supernode-revoked"), 60)
        assert code is not None and code != 0, f"revoked SuperNode kept running:\n{node_log}"
        assert "Failed to activate SuperNode" in node_log
