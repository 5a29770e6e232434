"""``fedgaze client enroll|status|pause|resume|forget|service``, as a person types them.

Each test runs the real command line in-process with ``HOME`` pointed at a temporary folder, so
the default config and device locations are exercised; the agent's processes are tested in
``test_client_agent.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_helpers import operator_credentials, store_synthetic
from fedgaze.cli.main import main as fedgaze_main
from fedgaze.client.agent.config import load_config
from fedgaze.security.certs import CredentialPaths

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "fedgaze-client.service"


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> CredentialPaths:
    return operator_credentials(tmp_path_factory)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with no XDG overrides: the defaults land under it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = fedgaze_main(["client", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_enroll_prints_what_the_operator_registers(home: Path, creds, capsys) -> None:
    code, out, _ = run(
        capsys, "enroll", "--server", "fl.example.org:9092", "--ca", str(creds.ca_cert)
    )
    assert code == 0
    config_path = home / ".config" / "fedgaze" / "client.toml"
    config = load_config(config_path)
    assert config.device_dir == home / ".local" / "share" / "fedgaze" / "device"
    public = config.layout.auth_public.read_text().strip()
    assert public in out and str(config.layout.auth_public) in out
    assert f"flwr supernode register {config.device_id}.pub fedgaze" in out
    assert "ledger pseudonym: " in out and "will not capture" in out
    code, _, err = run(
        capsys, "enroll", "--server", "fl.example.org:9092", "--ca", str(creds.ca_cert)
    )
    assert code == 2 and "already enrolled" in err and str(config_path) in err
    replay = home / "answers.jsonl"
    code, _, err = run(
        capsys,
        "enroll",
        "--server",
        "h:1",
        "--ca",
        str(creds.ca_cert),
        "--force",
        "--replay",
        str(replay),
    )
    assert code == 2 and f"{replay}: no such file (for capture.answers.file)" in err
    replay.write_text('{"prompt": "p", "answers": ["a"]}\n')
    code, out, _ = run(
        capsys,
        "enroll",
        "--server",
        "fl.example.org:9092",
        "--ca",
        str(creds.ca_cert),
        "--force",
        "--replay",
        str(replay),
        "--connection",
        "prod",
    )
    assert code == 0 and "re-enrolled" in out
    assert f"flwr supernode register {config.device_id}.pub prod" in out
    again = load_config(config_path)
    assert again.device_id == config.device_id
    assert again.capture.answers is not None and again.layout.auth_public.read_text() != public


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--server", "fl.example.org", "--ca", "{ca}"], "server"),
        (["--server", "h:1", "--ca", "{missing}"], "missing.pem: CA certificate file not found"),
        (["--server", "h:1", "--ca", "{key}"], "server.key: not a PEM certificate"),
        (["--server", "h:1", "--ca", "{ca}", "--device-id", "../x"], "device id '../x'"),
        (["--server", "h:1", "--ca", "{ca}", "--openai-url", "http://x"], "--openai-model"),
    ],
)
def test_enroll_errors_name_the_input(home: Path, creds, capsys, args: list[str], named: str):
    values = {"ca": creds.ca_cert, "missing": home / "missing.pem", "key": creds.server_key}
    code, _, err = run(capsys, "enroll", *[a.format(**values) for a in args])
    assert code == 2 and named in err, err
    assert not (home / ".config" / "fedgaze" / "client.toml").exists()


def test_status_pause_resume_and_forget(home: Path, creds, capsys) -> None:
    config_file = home / "c.toml"
    device_dir = home / "dev"
    common = ["--config", str(config_file)]
    code, *_ = run(
        capsys,
        "enroll",
        "--server",
        "h:1",
        "--ca",
        str(creds.ca_cert),
        "--device-dir",
        str(device_dir),
        *common,
    )
    assert code == 0
    queries = store_synthetic(load_config(config_file))
    code, out, _ = run(capsys, "status", *common, "--json")
    st = json.loads(out)
    assert code == 0 and st["data"]["queries"] == queries and st["data"]["labels"] == 8
    assert (st["paused"], st["running"], st["rounds"], st["epsilon_remaining"]) == (
        False,
        False,
        0,
        8.0,
    )
    code, out, _ = run(capsys, "budget", *common)  # the enrolled device's folder by default
    assert code == 0 and "total: 0 rounds in 0 runs" in out
    assert run(capsys, "pause", *common)[0] == 0
    code, out, _ = run(capsys, "status", *common)
    assert code == 0 and "PAUSED" in out and f"{queries} queries" in out
    assert run(capsys, "resume", *common)[0] == 0
    assert json.loads(run(capsys, "status", *common, "--json")[1])["paused"] is False
    # A broken config names the file and the key.
    text = config_file.read_text()
    config_file.write_text(text.replace("epsilon_budget", "epsilon_budgt"))
    code, _, err = run(capsys, "status", *common)
    assert code == 2 and str(config_file) in err and "epsilon_budgt" in err
    config_file.write_text(text)
    # Forget asks for confirmation (pytest's stdin is not a terminal: --yes is needed).
    code, _, err = run(capsys, "forget", *common)
    assert code == 2 and "--yes" in err and device_dir.exists()
    code, out, _ = run(capsys, "forget", *common, "--yes")
    assert code == 0 and "erased device" in out
    assert not device_dir.exists() and not config_file.exists()
    code, _, err = run(capsys, "status", *common)
    assert code == 2 and "enroll this device first" in err


def test_service_prints_and_installs_the_unit(home: Path, capsys) -> None:
    code, out, _ = run(capsys, "service")
    assert code == 0 and out == UNIT.read_text()
    code, out, _ = run(capsys, "service", "--install")
    installed = home / ".config" / "systemd" / "user" / "fedgaze-client.service"
    assert code == 0 and installed.read_text() == UNIT.read_text()
    assert "systemctl --user enable --now fedgaze-client" in out


def _unit_keys(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current[key] = value
    return sections


def test_the_systemd_user_unit_is_valid(tmp_path: Path) -> None:
    unit = _unit_keys(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecStart"] == (
        "%h/.local/bin/fedgaze client start --config %h/.config/fedgaze/client.toml"
    )
    assert service["Restart"] == "on-failure" and service["NoNewPrivileges"] == "yes"
    assert service["KillMode"] == "control-group" and service["UMask"] == "0077"
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit's target
    assert "User" not in service  # it runs as the person
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: checked the keys only")
    # %h is the HOME of the user manager: give it a HOME with the real fedgaze executable.
    (tmp_path / ".local" / "bin").mkdir(parents=True)
    (tmp_path / ".local" / "bin" / "fedgaze").symlink_to(Path(sys.executable).with_name("fedgaze"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.run(
        [analyze, "verify", "--user", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    # systemd-analyze exits 0 on unknown keys and bad values but warns: no output is allowed.
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stderr
