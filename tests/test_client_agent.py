"""The client agent: config, enrollment, supervision, status, pause and erasure.

Process tests start real processes (the agent, Flower's SuperLink and SuperNode, the capture
service) over 127.0.0.1; every wait is bounded and every child is stopped in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_helpers import (
    CANARIES,
    alive,
    enroll_device,
    operator_credentials,
    store_synthetic,
    wait_for,
)
from fedgaze.client.agent.config import (
    CaptureConfig,
    ConfigError,
    ReplayAnswers,
    SuperNodeConfig,
    load_config,
    parse_address,
    parse_config,
    render_config,
)
from fedgaze.client.agent.enroll import EnrollError, EnrollRequest, enroll
from fedgaze.client.agent.forget import erasure_order, forget_device
from fedgaze.client.agent.lock import AgentRunning, agent_lock, agent_running
from fedgaze.client.agent.status import client_status
from fedgaze.client.agent.supervisor import RestartPolicy, process_start_ticks, restart_delay
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.pause import set_paused
from fedgaze.client.device.private import public_entries, restrict_tree
from fedgaze.security.certs import CredentialPaths


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> CredentialPaths:
    return operator_credentials(tmp_path_factory)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- config ---------------------------------------------------------------------------------


def test_config_round_trips_and_names_the_file_and_key(tmp_path: Path, creds: CredentialPaths):
    done = enroll_device(tmp_path, creds)
    path, config = done.config_path, done.config
    assert load_config(path) == config
    assert _mode(path) == 0o600
    text = path.read_text()

    def error(new_text: str) -> str:
        with pytest.raises(ConfigError) as err:
            parse_config(new_text, path)
        return str(err.value)

    msg = error(text.replace("[capture]", "[capture]\ncolour = 1"))
    assert str(path) in msg and "capture.colour" in msg and "Extra inputs" in msg
    msg = error(text.replace("port = 8765", "port = 70000"))
    assert "capture.port" in msg
    msg = error(text.replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    assert "capture.host" in msg and "loopback" in msg
    msg = error(text.replace("epsilon_budget = 8.0", "epsilon_budget = -1"))
    assert "epsilon_budget" in msg
    msg = error(text.replace('server = "127.0.0.1:9092"', 'server = "no-port"'))
    assert "server" in msg and "HOST:PORT" in msg
    msg = error(text + '\n[capture.answers]\nbackend = "replay"\n')
    assert "capture.answers.file" in msg
    line = text.splitlines().index("delta = 1e-05") + 1
    msg = error(text.replace("delta = 1e-05", "delta = = 1"))
    assert str(path) in msg and f"line {line}," in msg
    with pytest.raises(ConfigError, match="enroll this device first"):
        load_config(tmp_path / "missing.toml")


def test_config_relative_paths_are_read_from_its_folder(tmp_path: Path) -> None:
    text = (
        'device_id = "d1"\ndevice_dir = "dev"\nserver = "[::1]:9092"\nca_file = "dev/ca.pem"\n'
        'auth_key = "~/k.key"\nepsilon_budget = 2.0\ndelta = 1e-6\n'
        '[capture.answers]\nbackend = "replay"\nfile = "answers.jsonl"\n'
    )
    config = parse_config(text, tmp_path / "c" / "client.toml")
    assert config.device_dir == tmp_path / "c" / "dev"
    assert config.auth_key == Path.home() / "k.key"
    assert isinstance(config.capture.answers, ReplayAnswers)
    assert config.capture.answers.file == tmp_path / "c" / "answers.jsonl"
    assert parse_config(render_config(config), tmp_path / "x.toml") == config
    assert config.node_settings().data == str(tmp_path / "c" / "dev" / "store")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("fl.example.org:9092", ("fl.example.org", 9092)), ("[::1]:1", ("::1", 1))],
)
def test_parse_address_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host", "host:0", "host:99999", "::1:80", ":80", "a b:1"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# --- enrollment -----------------------------------------------------------------------------


def test_enroll_makes_private_keys_and_refuses_to_overwrite(
    tmp_path: Path, creds: CredentialPaths
) -> None:
    done = enroll_device(tmp_path, creds)
    path, config = done.config_path, done.config
    layout = config.layout
    assert _mode(layout.root) == 0o700
    for key in (layout.store_key, layout.auth_key, layout.ledger_key):
        assert _mode(key) == 0o600, key
    assert public_entries(layout.root) == {}  # the public key and the CA copy too
    assert layout.auth_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert layout.auth_public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert layout.ca.read_bytes() == creds.ca_cert.read_bytes()
    assert client_status(config).data.queries == 0  # an empty, encrypted store
    with pytest.raises(EnrollError, match="already enrolled"):
        enroll_device(tmp_path, creds)
    keys = {p: p.read_bytes() for p in (layout.store_key, layout.ledger_key, layout.auth_key)}
    again = enroll(
        EnrollRequest(
            config_path=path,
            server="fl.example.org:443",
            ca_source=creds.ca_cert,
            device_dir=layout.root,
            epsilon_budget=4.0,
            delta=1e-6,
            force=True,
        )
    )
    assert again.reenrolled and again.config.device_id == config.device_id
    assert load_config(path).server == "fl.example.org:443"
    assert layout.store_key.read_bytes() == keys[layout.store_key]  # data stays readable
    assert layout.ledger_key.read_bytes() == keys[layout.ledger_key]  # spending stays on record
    assert layout.auth_key.read_bytes() != keys[layout.auth_key]  # a new SuperNode identity


def test_a_device_folder_is_made_private_without_following_links(tmp_path: Path) -> None:
    root, outside = tmp_path / "device", tmp_path / "outside.txt"
    (root / "flwr_home" / "apps").mkdir(parents=True)
    (root / "flwr_home" / "apps" / "app.toml").write_text("x")
    outside.write_text("not the device's")
    (root / "link").symlink_to(outside)
    for path in (root, root / "flwr_home", root / "flwr_home" / "apps"):
        path.chmod(0o755)
    (root / "flwr_home" / "apps" / "app.toml").chmod(0o644)
    outside.chmod(0o644)
    assert set(public_entries(root)) == {
        ".",
        "flwr_home",
        "flwr_home/apps",
        "flwr_home/apps/app.toml",
    }
    assert len(restrict_tree(root)) == 4 and public_entries(root) == {}
    assert _mode(root / "flwr_home") == 0o700 and _mode(outside) == 0o644
    assert restrict_tree(root) == []


def test_enroll_names_a_bad_ca_and_writes_nothing(tmp_path: Path, creds: CredentialPaths):
    def refused(ca: Path, match: str) -> None:
        with pytest.raises(EnrollError, match=match):
            enroll(
                EnrollRequest(
                    config_path=tmp_path / "c.toml",
                    server="127.0.0.1:9092",
                    ca_source=ca,
                    device_dir=tmp_path / "device",
                    epsilon_budget=8.0,
                    delta=1e-5,
                )
            )
        assert not (tmp_path / "device").exists() and not (tmp_path / "c.toml").exists()

    refused(tmp_path / "nope.pem", "nope.pem: CA certificate file not found")
    refused(creds.server_key, "server.key: not a PEM certificate")
    refused(creds.server_cert, "server.pem: a certificate that is not a CA")


# --- supervision of real processes ------------------------------------------------------------

AGENT = """
import json, sys
from pathlib import Path
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.agent.supervisor import AgentGaveUp, ChildSpec, RestartPolicy, run_agent
spec = json.loads(sys.argv[1])
children = [ChildSpec(name, tuple(argv)) for name, argv in spec["children"]]
try:
    sys.exit(run_agent(children, DeviceLayout(Path(spec["dir"])), RestartPolicy(**spec["policy"])))
except AgentGaveUp as err:
    print(err, file=sys.stderr)
    sys.exit(1)
"""
# A child with a grandchild of its own: stopping the child must stop both.
SLEEPER = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('grandchild', g.pid, flush=True)\n"
    "time.sleep(600)",
]
CRASHER = [sys.executable, "-c", "import sys; print('boom-7f3a', flush=True); sys.exit(3)"]
FAST = {"first_delay": 0.2, "factor": 2.0, "max_crashes": 3, "window": 60.0, "grace": 5.0}


@pytest.fixture
def agents() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start agent processes; every one still running is killed (with its children) after."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(directory: Path, children: list[tuple[str, list[str]]], **policy: float):
        spec = {"dir": str(directory), "children": children, "policy": {**FAST, **policy}}
        proc = subprocess.Popen(
            [sys.executable, "-c", AGENT, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, directory))
        return proc

    yield start
    for proc, directory in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in _all_pids(directory):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _state(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / "agent_state.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _grandchildren(directory: Path) -> list[int]:
    log = directory / "logs" / "sleeper.log"
    text = log.read_text() if log.exists() else ""
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("grandchild")]


def _all_pids(directory: Path) -> list[int]:
    children = _state(directory).get("children", {})
    return [c["pid"] for c in children.values() if c.get("pid")] + _grandchildren(directory)


def _child_pid(directory: Path, name: str) -> int | None:
    child = _state(directory).get("children", {}).get(name, {})
    return child.get("pid") if _state(directory).get("state") == "running" else None


@pytest.mark.timeout(120)
def test_agent_restarts_a_killed_child_and_stops_the_tree_on_sigterm(tmp_path: Path, agents):
    layout = DeviceLayout(tmp_path / "dev")
    agent = agents(layout.root, [("sleeper", SLEEPER)])
    first = wait_for("the sleeper", lambda: _child_pid(layout.root, "sleeper"))
    wait_for("its grandchild", lambda: _grandchildren(layout.root))
    assert agent_running(layout)
    with pytest.raises(AgentRunning), agent_lock(layout):
        pass
    os.kill(first, signal.SIGKILL)
    second = wait_for(
        "the restarted sleeper",
        lambda: (p := _child_pid(layout.root, "sleeper")) not in (None, first) and p,
    )
    state = _state(layout.root)["children"]["sleeper"]
    assert state["restarts"] == 1 and state["last_exit"] == -signal.SIGKILL
    wait_for("the second grandchild", lambda: len(_grandchildren(layout.root)) == 2)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0, agent.stderr.read() if agent.stderr else ""
    assert _state(layout.root)["state"] == "stopped"
    assert not any(alive(p) for p in [first, second, *_grandchildren(layout.root)])
    assert not agent_running(layout)
    events = (layout.logs / "agent.log").read_text()
    assert "sleeper exited with code -9; restarting in 0.2 s" in events


@pytest.mark.timeout(120)
def test_agent_gives_up_on_a_crashing_child_with_its_log(tmp_path: Path, agents) -> None:
    directory = tmp_path / "dev"
    agent = agents(directory, [("sleeper", SLEEPER), ("crasher", CRASHER)])
    try:
        code = agent.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent did not give up on a child that always crashes")
    stderr = agent.stderr.read() if agent.stderr else ""
    assert code == 1, stderr
    assert "crasher exited 3 times within 60 s (last exit code 3)" in stderr
    assert "boom-7f3a" in stderr  # the child's own last log lines
    state = _state(directory)
    assert state["state"] == "failed" and state["children"]["crasher"]["restarts"] == 2
    wait_for("the sleeper's grandchild", lambda: _grandchildren(directory), limit=5)
    assert not any(alive(p) for p in _grandchildren(directory))


@pytest.mark.timeout(120)
def test_children_of_a_killed_agent_are_stopped_by_the_next(tmp_path: Path, agents) -> None:
    directory = tmp_path / "dev"
    first = agents(directory, [("sleeper", SLEEPER)])
    orphan = wait_for("the sleeper", lambda: _child_pid(directory, "sleeper"))
    start = process_start_ticks(orphan)
    first.kill()  # SIGKILL: no cleanup, the child lives on
    first.wait(10)
    assert alive(orphan)
    second = agents(directory, [("sleeper", SLEEPER)])
    wait_for("a new sleeper", lambda: _child_pid(directory, "sleeper") not in (None, orphan))
    wait_for("the orphan to be stopped", lambda: process_start_ticks(orphan) != start, limit=15)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0


def test_restart_delay_backs_off_and_gives_up() -> None:
    policy = RestartPolicy(first_delay=1.0, factor=2.0, max_delay=5.0, max_crashes=4, window=60)
    assert restart_delay([100.0], 100.0, policy) == 1.0
    assert restart_delay([99.0, 100.0], 100.0, policy) == 2.0
    assert restart_delay([98.0, 99.0, 100.0], 100.0, policy) == 4.0
    assert restart_delay([97.0, 98.0, 99.0, 100.0], 100.0, policy) is None
    # Crashes outside the window are forgotten.
    assert restart_delay([0.0, 1.0, 2.0, 100.0], 100.0, policy) == 1.0
    many = RestartPolicy(first_delay=1.0, max_delay=5.0, max_crashes=100)
    assert restart_delay([float(t) for t in range(10)], 9.0, many) == 5.0


# --- status, pause and erasure ----------------------------------------------------------------


def test_status_counts_the_store_and_shows_pause(tmp_path: Path, creds: CredentialPaths):
    config = enroll_device(tmp_path, creds).config
    queries = store_synthetic(config)
    st = client_status(config)
    assert st.data.queries == queries and st.data.labels == 8
    assert st.data.gaze_samples > 0 and st.data.mouse_samples > 0
    assert (st.rounds, st.epsilon, st.epsilon_remaining) == (0, 0.0, 8.0)
    assert not st.paused and not st.running and st.last_model is None and not st.problems
    set_paused(config.device_dir, True)
    assert client_status(config).paused
    config.layout.store_key.write_bytes(b"x" * 32)  # a wrong key: reported, not raised
    assert any("does not decrypt" in p for p in client_status(config).problems)


def test_erasure_order_puts_the_keys_first() -> None:
    keys = [Path("d/store.key"), Path("d/auth.key")]
    files = [Path("d/a"), Path("d/auth.key"), Path("d/store/x.enc"), Path("d/store.key")]
    assert erasure_order(keys, files) == [*keys, Path("d/a"), Path("d/store/x.enc")]


def test_forget_erases_every_trace(tmp_path: Path, creds: CredentialPaths) -> None:
    done = enroll_device(tmp_path, creds)
    path, config = done.config_path, done.config
    layout = config.layout
    store_synthetic(
        config, prompt=CANARIES[0], response_left=CANARIES[1], response_right=CANARIES[2]
    )
    # What a running device also leaves: a capture journal, logs, a nested folder, a link.
    (layout.root / "capture").mkdir()
    (layout.root / "capture" / "journal.bin").write_text(" ".join(CANARIES))
    (layout.logs).mkdir()
    (layout.logs / "capture.log").write_text(CANARIES[0])
    outside = tmp_path / "outside.txt"
    outside.write_text("not the device's")
    (layout.root / "link").symlink_to(outside)
    set_paused(layout.root, True)
    # Hard links outside the folder keep each file's inode: they show what erasure wrote there.
    peeks = {}
    for i, file in enumerate(
        [
            layout.store_key,
            layout.auth_key,
            layout.root / "capture" / "journal.bin",
            *layout.store.iterdir(),
        ]
    ):
        peeks[tmp_path / f"peek-{i}"] = file.stat().st_size
        os.link(file, tmp_path / f"peek-{i}")
    assert CANARIES[0].encode() in (tmp_path / "peek-2").read_bytes()  # the scan below can see
    with agent_lock(layout), pytest.raises(AgentRunning):
        forget_device(config, path)  # refused while an agent holds the lock
    assert layout.store_key.exists()
    report = forget_device(config, path)
    assert not layout.root.exists() and not path.exists()
    assert report.keys[0] == layout.store_key and report.files >= 10
    assert outside.read_text() == "not the device's"  # a link is removed, never followed
    for peek, size in peeks.items():  # overwritten with zeros in place, then unlinked
        assert peek.read_bytes() == bytes(size), peek
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p != outside]
    assert len(left) == len(peeks)
    for file in left:
        data = file.read_bytes()
        assert not any(c.encode() in data for c in CANARIES), file
    with pytest.raises(ConfigError, match="enroll this device first"):
        load_config(path)
    forget_device(config, path)  # again: nothing left, no error


# --- the whole agent against a real federation ------------------------------------------------


def _wait_result(run_dir: Path, sup: Any, limit: float = 180.0) -> dict[str, Any]:
    from fedgaze.federation.rundir import RunLayout

    path = RunLayout(run_dir).result

    def done() -> dict[str, Any] | None:
        sup.check_alive("superlink")
        return json.loads(path.read_text()) if path.exists() else None

    return dict(wait_for(f"{path}", done, limit=limit, every=0.5))


def _run_round(sup: Any, env: dict[str, str], run_dir: Path, run_key: str) -> dict[str, Any]:
    """One round of the fedgaze app on the SuperLink (as the operator's ``flwr run``)."""
    from fedgaze.federation.flower import flower_executable
    from fedgaze.server.submit import write_flower_app
    from fedgaze.server.superlink import CONNECTION
    from settings_factory import server_settings

    settings = server_settings(
        run_dir=str(run_dir),
        run_key=run_key,
        rounds=1,
        min_nodes=1,
        node_wait_timeout=60,
        round_timeout=90,
    )
    write_flower_app(run_dir / "app", settings)
    sup.start(
        f"run-{run_key}",
        [flower_executable("flwr"), "run", str(run_dir / "app"), CONNECTION, "--stream"],
        env,
    )
    return _wait_result(run_dir, sup)


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_enrolled_agent_trains_survives_crashes_pauses_and_stops(
    tmp_path: Path, creds: CredentialPaths
) -> None:
    from fedgaze.federation.flower import child_env, flower_executable
    from fedgaze.processes import Supervisor, free_ports
    from fedgaze.server.superlink import CONNECTION, start_superlink

    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"prompt": "p", "answers": ["a", "b"]}) + "\n")
    env = child_env(tmp_path / "operator_flwr_home")
    with Supervisor(tmp_path / "operator_logs") as sup:
        _, addresses, _ = start_superlink(sup, tmp_path, env, creds, 60.0)
        supernode_port, capture_port = free_ports(2)
        done = enroll_device(
            tmp_path,
            creds,
            server=addresses.fleet,
            supernode=SuperNodeConfig(port=supernode_port, reconnect_wait=60),
            capture=CaptureConfig(
                port=capture_port, answers=ReplayAnswers(backend="replay", file=answers)
            ),
        )
        config_path, config, layout = done.config_path, done.config, done.config.layout
        queries = store_synthetic(
            config, prompt=CANARIES[0], response_left=CANARIES[1], response_right=CANARIES[2]
        )
        # The operator registers the public key with the command enrollment printed.
        flwr, verb, sub, pub, connection = done.register_argv
        assert (flwr, verb, sub, pub, connection) == (
            "flwr",
            "supernode",
            "register",
            f"{config.device_id}.pub",
            CONNECTION,
        )
        shutil.copy(done.public_key_path, tmp_path / pub)  # the copy the operator received
        register = subprocess.run(
            [flower_executable(flwr), verb, sub, str(tmp_path / pub), connection],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert register.returncode == 0, register.stdout + register.stderr
        agent = sup.start(
            "agent",
            [sys.executable, "-m", "fedgaze.cli", "client", "start", "--config", str(config_path)],
        )

        def pids() -> dict[str, int] | None:
            sup.check_alive("agent")
            state = _state(layout.root)
            children = state.get("children", {})
            got = {n: c.get("pid") for n, c in children.items()}
            return got if len(got) == 3 and all(got.values()) else None

        first = wait_for("the agent's children", pids)
        wait_for("the capture page", lambda: pids() and client_status(config).capture_url)
        assert set(first) == {"supernode", "trainer", "capture"}
        for name in first:  # a crash of any child is repaired
            os.kill(first[name], signal.SIGKILL)
        wait_for(
            "every child restarted",
            lambda: (p := pids()) and all(p[n] != first[n] for n in p),
        )
        result = _wait_result_after(sup, env, tmp_path / "run1", "run-a")
        (device,) = result["devices"]
        assert device["device_id"] == config.device_id and device["status"] == "trained"
        st = client_status(config)
        assert st.running and st.rounds == 1 and 0 < st.epsilon < 8.0
        assert st.last_model is not None and st.last_model["round"] == 1
        assert st.last_model["run"] == "run-a"
        assert st.agent is not None
        assert {n: c["restarts"] for n, c in st.agent["children"].items()} == {
            "supernode": 1,
            "trainer": 1,
            "capture": 1,
        }
        # The restarted warm trainer answered the round's messages, not the ClientApp process.
        assert "trainer: train for " in (layout.logs / "trainer.log").read_text()
        # Paused: the device replies "paused" and is not charged.
        set_paused(layout.root, True)
        paused = _wait_result_after(sup, env, tmp_path / "run2", "run-b")
        assert [d["status"] for d in paused["devices"]] == ["paused"]
        final_eval = paused["evaluations"][-1]  # the evaluate message got "paused" too
        assert final_eval["eval_devices"] == 0 and not final_eval["failures"]
        st = client_status(config)
        assert st.rounds == 1 and st.paused
        assert st.last_model is not None and st.last_model["run"] == "run-a"
        os.kill(agent.pid, signal.SIGTERM)
        assert agent.wait(60) == 0, log_text(sup, "agent")
        assert not any(alive(p) for p in first.values())
        final = _state(layout.root)
        assert final["state"] == "stopped"
        assert not any(alive(c["pid"]) for c in final["children"].values() if c.get("pid"))
        assert not layout.capture_ready.exists()  # the capture service ended cleanly
        assert list(layout.trainer.iterdir()) == []  # the trainer took its socket and key
        assert client_status(config).data.queries == queries  # its commits kept the data
    made = {p.name for p in layout.root.iterdir()}
    assert {"flwr_home", "logs", "store", "last_model", "privacy_state.json"} <= made, made
    assert public_entries(layout.root) == {}  # everything the agent and its children made
    for log in layout.logs.iterdir():  # logs carry no prompt or answer text
        text = log.read_bytes()
        assert not any(c.encode() in text for c in CANARIES), log


def log_text(sup: Any, name: str) -> str:
    from fedgaze.processes import log_tail

    return log_tail(sup.log_path(name), 40)


def _wait_result_after(sup: Any, env: dict[str, str], run_dir: Path, key: str) -> dict[str, Any]:
    run_dir.mkdir()
    return _run_round(sup, env, run_dir, key)
