"""The client agent's configuration: one TOML file, validated by :class:`ClientConfig`.

Default location ``$XDG_CONFIG_HOME/fedgaze/client.toml`` (``~/.config/fedgaze/client.toml``);
every command takes ``--config FILE`` instead. ``fedgaze client enroll`` writes it; a person or
an operator may edit it. A wrong key or value fails with the file and the key named, a TOML
syntax error with the file, line and column. Relative paths are read relative to the file's
folder, ``~`` is expanded. Example::

    device_id = "device-3f9c2a1b"
    device_dir = "/home/ana/.local/share/fedgaze/device"
    server = "fl.example.org:9092"          # the SuperLink's Fleet API, host:port
    ca_file = "/home/ana/.local/share/fedgaze/device/ca.pem"
    auth_key = "/home/ana/.local/share/fedgaze/device/supernode_auth.key"
    epsilon_budget = 8.0
    delta = 1e-05

    [supernode]
    port = 9094                              # its local runtime API (loopback)
    reconnect_wait = 600.0                   # seconds it retries an unreachable server

    [capture]
    host = "127.0.0.1"
    port = 8765
    # grpc_port = 8766
    # webgazer = "/path/to/webgazer.js"

    [capture.answers]                        # no such table: the agent runs no capture
    backend = "replay"
    file = "/home/ana/answers.jsonl"
    # backend = "openai", base_url = "http://127.0.0.1:8000/v1", model = "m",
    # api_key_env = "OPENAI_API_KEY"
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedgaze.atomic import write_bytes_atomic
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.trainer_channel import TrainerFolder
from fedgaze.federation.settings import NodeSettings
from fedgaze.security.certs import check_device_id

CONFIG_NAME = "client.toml"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_SUPERNODE_PORT = 9094
DEFAULT_CAPTURE_PORT = 8765


class ConfigError(ValueError):
    """The client config is missing or invalid; the message names the file and the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Port = Annotated[int, Field(ge=1, le=65535)]


def parse_address(text: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``; ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, [{host}]:{port}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not in 1..65535")
    if not host or any(c.isspace() or c in "/\"'\\" for c in host):
        raise ValueError(f"bad host in {text!r}")
    return host, int(port)


class ReplayAnswers(_Frozen):
    """Answers replayed from a JSONL file (studies with fixed material, tests)."""

    backend: Literal["replay"]
    file: Path


class OpenAIAnswers(_Frozen):
    """Answers from an OpenAI-compatible server; the API key is read from an env variable."""

    backend: Literal["openai"]
    base_url: str = Field(pattern=r"^https?://\S+$")
    model: str = Field(min_length=1)
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    pointwise: bool = False
    """One answer per prompt instead of two side by side."""


class CaptureConfig(_Frozen):
    """The local capture service: loopback only, its ports, and where answers come from."""

    host: str = "127.0.0.1"
    port: Port = DEFAULT_CAPTURE_PORT
    grpc_port: Port | None = None
    webgazer: Path | None = None
    answers: ReplayAnswers | OpenAIAnswers | None = Field(default=None, discriminator="backend")

    @field_validator("host")
    @classmethod
    def _loopback(cls, host: str) -> str:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"the capture service records raw gaze and listens on loopback only "
                f"({', '.join(LOOPBACK_HOSTS)}), not {host!r}"
            )
        return host


class SuperNodeConfig(_Frozen):
    """The device's Flower SuperNode: local runtime port and how long it retries the server."""

    port: Port = DEFAULT_SUPERNODE_PORT
    reconnect_wait: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    reconnect_retries: int = Field(default=100_000, ge=1)


class ClientConfig(_Frozen):
    """Everything the client agent needs to know about this device and its federation."""

    device_id: str
    device_dir: Path
    server: str
    ca_file: Path
    auth_key: Path
    epsilon_budget: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1)
    supernode: SuperNodeConfig = SuperNodeConfig()
    capture: CaptureConfig = CaptureConfig()

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return check_device_id(value)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        parse_address(value)
        return value

    def capture_files(self) -> dict[str, Path]:
        """The files the capture service reads, by config key (the replay file, webgazer)."""
        files = {}
        if isinstance(self.capture.answers, ReplayAnswers):
            files["capture.answers.file"] = self.capture.answers.file
        if self.capture.webgazer is not None:
            files["capture.webgazer"] = self.capture.webgazer
        return files

    @property
    def layout(self) -> DeviceLayout:
        """The files of this device's folder."""
        return DeviceLayout(self.device_dir)

    def node_settings(self) -> NodeSettings:
        """The SuperNode's node config: the device's encrypted store and its own budget."""
        return NodeSettings(
            device_id=self.device_id,
            device_dir=str(self.device_dir),
            data=str(self.layout.store),
            data_format="store",
            store_key=str(self.layout.store_key),
            epsilon_budget=self.epsilon_budget,
            delta=self.delta,
            trainer=str(self.layout.trainer) if self.warm_trainer else None,
        )

    @property
    def warm_trainer(self) -> bool:
        """Whether the agent runs a warm trainer: only where its socket path fits."""
        return TrainerFolder(self.layout.trainer).fits()


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/fedgaze/client.toml``, by default ``~/.config/fedgaze/client.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fedgaze" / CONFIG_NAME


def default_device_dir() -> Path:
    """``$XDG_DATA_HOME/fedgaze/device``, by default ``~/.local/share/fedgaze/device``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fedgaze" / "device"


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        # A tagged union adds the tag to the location ("answers.replay.file"); drop it.
        loc = [str(p) for p in e["loc"] if p not in ("replay", "openai")]
        parts.append(f"{'.'.join(loc) or '(top level)'}: {e['msg']}")
    return "; ".join(parts)


def _resolve(value: Path | None, base: Path) -> Path | None:
    if value is None:
        return None
    path = value.expanduser()
    return path if path.is_absolute() else base / path


def _absolute(config: ClientConfig, base: Path) -> ClientConfig:
    """``config`` with every relative path read from ``base`` (pure)."""
    answers = config.capture.answers
    if isinstance(answers, ReplayAnswers):
        answers = answers.model_copy(update={"file": _resolve(answers.file, base)})
    capture = config.capture.model_copy(
        update={"webgazer": _resolve(config.capture.webgazer, base), "answers": answers}
    )
    return config.model_copy(
        update={
            "device_dir": _resolve(config.device_dir, base),
            "ca_file": _resolve(config.ca_file, base),
            "auth_key": _resolve(config.auth_key, base),
            "capture": capture,
        }
    )


def parse_config(text: str, source: Path) -> ClientConfig:
    """The config in TOML ``text`` read from ``source`` (for messages and relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML ({err})") from None
    try:
        config = ClientConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid client config: {_describe(err)}") from None
    return _absolute(config, source.absolute().parent)


def load_config(path: Path | None = None) -> ClientConfig:
    """Read and validate the config at ``path`` (default :func:`default_config_path`)."""
    source = path or default_config_path()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no client config; enroll this device first (fedgaze client enroll)"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not UTF-8 text ({err})") from None
    return parse_config(text, source)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write non-finite number {value} to TOML")
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _toml_table(data: dict[str, Any], prefix: str) -> list[str]:
    lines = [f"{k} = {_toml_scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}.{key}" if prefix else key
            lines += ["", f"[{name}]", *_toml_table(value, name)]
    return lines


def render_config(config: ClientConfig) -> str:
    """``config`` as TOML text (pure); checked to read back as the same config."""
    data = config.model_dump(mode="json", exclude_none=True)
    text = "# fedgaze client config (see docs/client-install.md)\n"
    text += "\n".join(_toml_table(data, "")) + "\n"
    if tomllib.loads(text) != data:  # a value TOML cannot carry as written
        raise ConfigError(f"the config does not survive TOML rendering: {data}")
    return text


def write_config(path: Path, config: ClientConfig) -> None:
    """Write ``config`` to ``path`` atomically, readable by its owner only (mode 0600)."""
    write_bytes_atomic(path, render_config(config).encode("utf-8"))
    os.chmod(path, 0o600)
