"""server.toml validation, resume rules and the audit's round-order check (no processes)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fedgaze.audit.verify import audit_server_ledger
from fedgaze.cli.main import main as fedgaze_main
from fedgaze.federation.settings import SettingsError
from fedgaze.ledger.contract import SERVER_KEY_FILE, SERVER_LEDGER_FILE
from fedgaze.ledger.keys import load_or_create_signing_key
from fedgaze.ledger.records import SqliteLedger
from fedgaze.security.certs import provision_credentials
from fedgaze.server.config import load_server_config
from fedgaze.server.ledger import ResumeError, ledger_progress, resume_conflicts
from fedgaze.server.start import start_server

MINIMAL = """
run_dir = "run"
[tls]
enabled = false
[auth]
enabled = false
[federation]
rounds = 3
min_nodes = 2
[privacy]
noise_multiplier = 1.1
"""


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_server_config(_config(tmp_path, MINIMAL))
    assert config.run_dir == tmp_path / "run"
    settings = config.settings("key-1", resume=False)
    assert settings.noise_multiplier == 1.1 and settings.rounds == 3 and not settings.client_dp


def test_a_labels_section_asks_for_labels_and_leaves_room_in_the_budget(tmp_path: Path) -> None:
    off = load_server_config(_config(tmp_path, MINIMAL)).settings("k", resume=False)
    assert off.epsilon_label is None and off.label_plan() is None
    text = MINIMAL.replace("noise_multiplier = 1.1", "epsilon = 8.0") + (
        '[labels]\nenabled = true\nepsilon_label = 2.0\nsource = "implicit-only"\n'
    )
    config = load_server_config(_config(tmp_path, text))
    settings = config.settings("k", resume=False)
    plan = settings.label_plan()
    assert plan is not None and plan.epsilon_label == 2.0 and plan.label_source == "implicit-only"
    without = load_server_config(
        _config(tmp_path, MINIMAL.replace("noise_multiplier = 1.1", "epsilon = 8.0"))
    ).settings("k", resume=False)
    assert settings.noise_multiplier > without.noise_multiplier
    greedy = text.replace("epsilon_label = 2.0", "epsilon_label = 9.0")
    with pytest.raises(SettingsError, match="leaves no room"):
        load_server_config(_config(tmp_path, greedy)).settings("k", resume=False)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("rounds = 3", "rounds = 0"), "federation.rounds"),
        (("rounds = 3", "rounds = 3\nround = 4"), "federation.round"),
        (("noise_multiplier = 1.1", "noise_multiplier = -1"), "privacy.noise_multiplier"),
        (("noise_multiplier = 1.1", "epsilon = 8.0\nnoise_multiplier = 1.1"), "privacy"),
        (("[tls]\nenabled = false", "[tls]"), "tls"),
        (("[auth]\nenabled = false", "[auth]"), "auth.enabled needs tls.enabled"),
        (('run_dir = "run"', 'run_dir = "run"\nrun_dri = "x"'), "run_dri"),
        (("rounds = 3", "rounds = 3\n[labels]\nenabled = true\nepsilon_label = 0"), "labels"),
        (("rounds = 3", 'rounds = 3\n[labels]\nsource = "guess"'), "labels.source"),
    ],
)
def test_a_bad_key_or_value_names_the_key_and_the_file(
    tmp_path: Path, change: tuple[str, str], named: str
) -> None:
    path = _config(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(SettingsError) as err:
        load_server_config(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_not_toml_and_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_server_config(_config(tmp_path, "run_dir = "))
    with pytest.raises(SettingsError, match="no such config file"):
        load_server_config(tmp_path / "absent.toml")


def test_resume_allows_rounds_and_timeouts_but_not_the_privacy_plan(tmp_path: Path) -> None:
    config = load_server_config(_config(tmp_path, MINIMAL))
    original = config.settings("key-1", resume=False).model_dump()
    longer = config.settings("key-1", resume=True).model_copy(
        update={"rounds": 5, "round_timeout": 9.0}
    )
    assert resume_conflicts(original, longer) == []
    noisier = longer.model_copy(update={"noise_multiplier": 2.0, "run_key": "key-2"})
    problems = resume_conflicts(original, noisier)
    assert [p.split(":")[0] for p in problems] == ["noise-multiplier", "run-key"]


def _ledger(run_dir: Path, kinds: list[tuple[str, dict[str, object]]]) -> Path:
    key = load_or_create_signing_key(run_dir / SERVER_KEY_FILE)
    with SqliteLedger(run_dir / SERVER_LEDGER_FILE, key) as ledger:
        for kind, body in kinds:
            ledger.append(kind, body)
    return run_dir / SERVER_LEDGER_FILE


def _round(n: int) -> tuple[str, dict[str, object]]:
    return "server-round", {"round": n, "accepted": [], "refused": [], "central_dp": None}


START = ("run-start", {"settings": {"run_key": "k"}})


def test_audit_accepts_a_resumed_run_and_flags_lost_or_repeated_rounds(tmp_path: Path) -> None:
    good = tmp_path / "good"
    resume = ("run-resume", {"after_round": 1, "settings": {"run_key": "k"}})
    path = _ledger(good, [START, _round(1), resume, _round(2), _round(3)])
    audit = audit_server_ledger(path, pld=False)
    assert audit.problems == []
    assert audit.summary["rounds_committed"] == 3 and audit.summary["resumes"] == 1
    assert ledger_progress(good).last_round == 3

    repeated = _ledger(tmp_path / "repeated", [START, _round(1), _round(1)])
    assert any("round 1 follows round 1" in p for p in audit_server_ledger(repeated).problems)
    lost = _ledger(tmp_path / "lost", [START, _round(1), _round(3)])
    assert any("round 3 follows round 1" in p for p in audit_server_ledger(lost).problems)
    wrong = ("run-resume", {"after_round": 0, "settings": {"run_key": "k"}})
    bad_resume = _ledger(tmp_path / "bad", [START, _round(1), wrong, _round(2)])
    assert any("resumes run" in p for p in audit_server_ledger(bad_resume).problems)


def test_start_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path: Path) -> None:
    config = load_server_config(_config(tmp_path, MINIMAL))
    with pytest.raises(ResumeError, match="nothing to resume"):
        start_server(config, resume=True)
    _ledger(tmp_path / "run", [START, _round(1)])
    with pytest.raises(ResumeError, match="use --resume"):
        start_server(config, resume=False)


def test_missing_certificate_and_taken_port_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = provision_credentials(tmp_path / "certs", ["d0"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = MINIMAL.replace(
            "[tls]\nenabled = false",
            f'[superlink]\nfleet_address = "127.0.0.1:{port}"\n'
            f'[tls]\nca_cert = "{creds.ca_cert}"\nserver_cert = "{creds.server_cert}"\n'
            f'server_key = "{tmp_path / "absent.key"}"',
        )
        path = _config(tmp_path, text)
        assert fedgaze_main(["server", "start", "--config", str(path)]) == 2
        assert "absent.key: no such file" in capsys.readouterr().err
        path.write_text(text.replace(str(tmp_path / "absent.key"), str(creds.server_key)))
        assert fedgaze_main(["server", "start", "--config", str(path)]) == 2
        assert f"127.0.0.1:{port} is already in use" in capsys.readouterr().err


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "server.example.toml"
    config = load_server_config(example)
    assert config.tls.enabled and config.auth.enabled
    assert config.auth.device_keys_dir == example.parent / "certs" / "devices"
    assert config.federation.rounds == 20 and config.privacy.epsilon == 8.0


def test_a_secure_aggregation_section_turns_secagg_on_and_is_checked(tmp_path: Path) -> None:
    assert (
        load_server_config(_config(tmp_path, MINIMAL)).settings("k", False).secure_aggregation
        is None
    )
    text = MINIMAL.replace("min_nodes = 2", "min_nodes = 5") + (
        "[secure_aggregation]\nthreshold = 3\nclipping_range = 0.5\ntimeout = 30.0\n"
    )
    settings = load_server_config(_config(tmp_path, text)).settings("k", resume=False)
    secagg = settings.secure_aggregation
    assert secagg is not None and (secagg.threshold, secagg.clipping_range) == (3, 0.5)
    assert secagg.timeout == 30.0 and secagg.quantization_range == 2**22
    for bad, match in [
        (text.replace("min_nodes = 5", "min_nodes = 3"), "secure_aggregation.threshold 3 needs"),
        (text.replace("threshold = 3", "threshold = 1"), "secure_aggregation.threshold"),
        (text + "quantisation = 3\n", "secure_aggregation.quantisation"),
        (text + '[aggregation]\nrule = "median"\n', "fedavg"),
    ]:
        with pytest.raises(SettingsError, match=match):
            load_server_config(_config(tmp_path, bad)).settings("k", resume=False)
