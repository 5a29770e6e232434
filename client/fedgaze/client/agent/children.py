"""The client agent's children, built from its config: SuperNode, warm trainer, capture service.

The SuperNode connects out to the operator's SuperLink with TLS verified against the
federation's CA and authenticates with the device's own key; its node config points at the
device's encrypted store and carries the device's own budget (:class:`NodeSettings`), and names
the warm trainer (:mod:`fedgaze.client.trainer_service`) that answers its messages with the
training stack already loaded. The capture service serves the local capture page on loopback
and writes into the same store; it is started only when the config names where answers come
from (``[capture.answers]``).
"""

from __future__ import annotations

import importlib.util
import sys

from fedgaze.client.agent.config import ClientConfig, OpenAIAnswers, ReplayAnswers
from fedgaze.client.agent.supervisor import ChildSpec
from fedgaze.client.trainer_channel import SERVICE_MODULE
from fedgaze.federation.flower import child_env, supernode_command

CAPTURE_MODULE = "fedgaze.client.capture.web"
SUPERNODE = "supernode"
CAPTURE = "capture"
TRAINER = "trainer"


def _answers_args(answers: ReplayAnswers | OpenAIAnswers) -> list[str]:
    if isinstance(answers, ReplayAnswers):
        return ["--replay", str(answers.file)]
    args = [
        "--openai-url",
        answers.base_url,
        "--openai-model",
        answers.model,
        "--openai-key-env",
        answers.api_key_env,
    ]
    return [*args, "--pointwise"] if answers.pointwise else args


def capture_argv(config: ClientConfig) -> list[str] | None:
    """The capture service's argv, or None when the config names no answer backend."""
    capture = config.capture
    if capture.answers is None:
        return None
    layout = config.layout
    argv = [
        sys.executable,
        "-m",
        CAPTURE_MODULE,
        "--device-dir",
        str(layout.root),
        "--store-dir",
        str(layout.store),
        "--store-key",
        str(layout.store_key),
        "--device-id",
        config.device_id,
        *_answers_args(capture.answers),
        "--host",
        capture.host,
        "--port",
        str(capture.port),
        "--ready-file",
        str(layout.capture_ready),
    ]
    if capture.grpc_port is not None:
        argv += ["--grpc-port", str(capture.grpc_port)]
    if capture.webgazer is not None:
        argv += ["--webgazer", str(capture.webgazer)]
    return argv


def supernode_argv(config: ClientConfig) -> list[str]:
    """The device's ``flower-supernode`` argv: TLS against the CA, the device's auth key."""
    return supernode_command(
        config.server,
        config.supernode.port,
        root_certificates=config.ca_file,
        auth_key=config.auth_key,
        node_config=config.node_settings().to_node_config_arg(),
        max_wait=config.supernode.reconnect_wait,
        max_retries=config.supernode.reconnect_retries,
    )


def check_ready(config: ClientConfig) -> None:
    """Raise ValueError naming the file when something the children need is missing."""
    for what, path in (("CA certificate", config.ca_file), ("SuperNode key", config.auth_key)):
        if not path.is_file():
            raise ValueError(f"{path}: {what} missing; enroll again (fedgaze client enroll)")
    for key, path in config.capture_files().items():
        if not path.is_file():
            raise ValueError(f"{path}: no such file (config key {key})")
    if config.capture.answers is not None and importlib.util.find_spec(CAPTURE_MODULE) is None:
        raise ValueError(f"[capture.answers] is set but {CAPTURE_MODULE} is not installed")


def trainer_argv(config: ClientConfig) -> list[str] | None:
    """The warm trainer's argv (serving this device only), or None where it cannot listen."""
    if not config.warm_trainer:
        return None
    layout = config.layout
    folder, device = str(layout.trainer), str(layout.root)
    return [sys.executable, "-m", SERVICE_MODULE, "--folder", folder, "--device-dir", device]


def agent_children(config: ClientConfig) -> list[ChildSpec]:
    """Every child of the agent of ``config``: the SuperNode, the warm trainer (unless the
    device folder's path is too long for its socket), the capture service if set."""
    check_ready(config)
    env = child_env(config.layout.flwr_home)
    specs = [ChildSpec(SUPERNODE, tuple(supernode_argv(config)), env)]
    trainer = trainer_argv(config)
    if trainer is not None:
        specs.append(ChildSpec(TRAINER, tuple(trainer), env))
    capture = capture_argv(config)
    if capture is not None:
        specs.append(ChildSpec(CAPTURE, tuple(capture), env))
    return specs
