"""The operator's ``server.toml``: everything ``fedgaze server start`` needs, validated.

A wrong key or value fails before anything starts, naming the file and the dotted key
(``server.toml: federation.rounds: Input should be greater than or equal to 1``). Relative paths
are taken relative to the config file's folder, so a config and its certificates can move
together. See ``docs/operator-guide.md`` ("Server configuration reference") for every key.
"""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedgaze import defaults
from fedgaze.federation.secure import SecureAggregation
from fedgaze.federation.settings import Aggregation, ServerSettings, SettingsError
from fedgaze.labels.rows import LabelSource
from fedgaze.model.kind import ModelKind, TextLabels
from fedgaze.privacy.params import DPSGDParams


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SuperLinkSection(_Section):
    """Where the SuperLink listens. Devices connect to ``fleet_address`` (gRPC, TLS); the
    Control API (``flwr`` CLI) and the health service are meant for this machine only."""

    fleet_address: str = "0.0.0.0:9092"
    control_address: str = "127.0.0.1:9093"
    health_address: str = "127.0.0.1:9094"
    ready_timeout: float = Field(default=defaults.SUPERLINK_READY_TIMEOUT, gt=0, le=3600)
    """Seconds to wait for the SuperLink to report healthy before giving up."""


class TLSSection(_Section):
    """TLS of the Fleet and Control APIs (``fedgaze certs`` makes these files)."""

    enabled: bool = True
    ca_cert: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TLSSection:
        missing = [
            name
            for name in ("ca_cert", "server_cert", "server_key")
            if self.enabled and getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"TLS is enabled but {', '.join(missing)} is not set")
        return self


class AuthSection(_Section):
    """SuperNode authentication: only the listed devices' public keys may connect."""

    enabled: bool = True
    device_keys: tuple[Path, ...] = ()
    """Public key files (OpenSSH EC, as ``fedgaze client enroll`` prints) registered at start."""
    device_keys_dir: Path | None = None
    """A folder whose ``*.pub`` files are registered too (one per enrolled device)."""


class FederationSection(_Section):
    """The rounds, and how long to wait for devices."""

    rounds: int = Field(ge=1, le=10_000)
    min_nodes: int = Field(ge=1)
    node_wait_timeout: float = Field(default=defaults.SERVER_NODE_WAIT_TIMEOUT, gt=0)
    round_timeout: float = Field(default=defaults.SERVER_ROUND_TIMEOUT, gt=0)
    run_timeout: float = Field(default=defaults.SERVER_RUN_TIMEOUT, gt=0)
    """Upper bound on the whole run (seconds); the server stops it past this."""
    hidden: int = Field(default=defaults.HIDDEN, ge=0, le=1024)
    holdout: float = Field(default=defaults.HOLDOUT, ge=0, lt=1)
    seed: int = defaults.SEED


class PrivacySection(DPSGDParams):
    """Device-level DP-SGD (every device enforces its own budget; this plans the noise): the
    DP-SGD hyperparameters, and either a target epsilon or the noise multiplier itself."""

    epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Target epsilon per device for the whole run: the noise multiplier is calibrated so the
    largest spender fits every round into it. Exactly one of this and noise_multiplier."""
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # type: ignore[assignment]
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    max_device_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Server policy: refuse updates whose signed record states a larger cumulative epsilon."""

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacySection:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("set exactly one of epsilon and noise_multiplier")
        return self


class ClientDPSection(_Section):
    """Client-level DP of the aggregate (off unless ``epsilon`` is set)."""

    epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    clip_norm: float = Field(default=defaults.CLIENT_DP_CLIP_NORM, gt=0)
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)


class AggregationSection(_Section):
    """How accepted updates are combined and which are refused."""

    rule: Aggregation = defaults.AGGREGATION
    trim_fraction: float = Field(default=defaults.TRIM_FRACTION, ge=0, lt=0.5)
    max_update_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class LabelsSection(_Section):
    """The labels round after the last training round (off unless ``enabled``)."""

    enabled: bool = False
    epsilon_label: float = Field(default=defaults.EPSILON_LABEL, gt=0, le=50, allow_inf_nan=False)
    source: LabelSource = defaults.LABEL_SOURCE


class ModelSection(_Section):
    """Which model the run trains: the behaviour model, or the text reward model."""

    kind: ModelKind = "behaviour"
    text_labels: TextLabels = defaults.TEXT_LABELS
    encoder: str = Field(default=defaults.TEXT_ENCODER, min_length=1)
    behaviour_model: Path | None = None
    """Text runs: the behaviour model directory the devices infer labels with."""


class ServerConfig(_Section):
    """A whole ``server.toml``."""

    run_dir: Path
    """The run's durable state: server ledger, checkpoints, SuperLink database, logs."""
    run_key: str | None = Field(default=None, min_length=1)
    """The run's name in every device's ledger (default: made up at the first start)."""
    superlink: SuperLinkSection = SuperLinkSection()
    tls: TLSSection
    """Required: the certificate files, or an explicit ``enabled = false``."""
    auth: AuthSection = AuthSection()
    federation: FederationSection
    privacy: PrivacySection
    client_dp: ClientDPSection = ClientDPSection()
    aggregation: AggregationSection = AggregationSection()
    labels: LabelsSection = LabelsSection()
    model: ModelSection = ModelSection()
    secure_aggregation: SecureAggregation | None = None
    """Present: train rounds run SecAgg+ with these parameters (see
    :class:`~fedgaze.federation.secure.SecureAggregation`); absent: plain rounds."""

    @model_validator(mode="after")
    def _secure_aggregation_has_devices(self) -> ServerConfig:
        secagg = self.secure_aggregation
        if secagg is not None and self.federation.min_nodes <= secagg.threshold:
            raise ValueError(
                f"secure_aggregation.threshold {secagg.threshold} needs federation.min_nodes "
                f"above it (now {self.federation.min_nodes})"
            )
        return self

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> ServerConfig:
        if self.auth.enabled and not self.tls.enabled:
            raise ValueError(
                "auth.enabled needs tls.enabled: Flower authenticates SuperNodes only over TLS"
            )
        return self

    def device_key_files(self) -> list[Path]:
        """Every public key file to register: the listed ones, then the folder's ``*.pub``."""
        files = list(self.auth.device_keys)
        if self.auth.device_keys_dir is not None:
            files += sorted(self.auth.device_keys_dir.glob("*.pub"))
        return files

    def settings(self, run_key: str, resume: bool) -> ServerSettings:
        """The ServerApp's settings for this config (noise multipliers calibrated here)."""
        from fedgaze.federation.planning import plan_settings

        dp, cdp, agg = self.privacy, self.client_dp, self.aggregation
        return plan_settings(
            epsilon=dp.epsilon,
            client_dp_epsilon=cdp.epsilon,
            client_dp_clip_norm=cdp.clip_norm,
            client_dp_delta=cdp.delta,
            run_dir=str(self.run_dir),
            run_key=run_key,
            resume=resume,
            aggregation=agg.rule,
            trim_fraction=agg.trim_fraction,
            max_update_norm=agg.max_update_norm,
            epsilon_label=self.labels.epsilon_label if self.labels.enabled else None,
            label_source=self.labels.source,
            model_kind=self.model.kind,
            text_labels=self.model.text_labels,
            encoder=self.model.encoder,
            behaviour_model=(
                None if self.model.behaviour_model is None else str(self.model.behaviour_model)
            ),
            secure_aggregation=self.secure_aggregation,
            **self.federation.model_dump(exclude={"run_timeout"}),
            **dp.model_dump(exclude={"epsilon"}),
        )


def new_run_key(run_dir: Path) -> str:
    """A fresh run key: the run folder's name and a random suffix."""
    return f"{run_dir.name}-{uuid.uuid4().hex[:8]}"


_PATH_KEYS = {
    ("run_dir",),
    ("tls", "ca_cert"),
    ("tls", "server_cert"),
    ("tls", "server_key"),
    ("auth", "device_keys_dir"),
    ("model", "behaviour_model"),
}


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in ``data`` taken relative to ``base`` (the config file's folder)."""

    def resolve(value: Any) -> Any:
        return str(base / value) if isinstance(value, str) and value else value

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for path in _PATH_KEYS:
        holder = out if len(path) == 1 else out.get(path[0])
        if isinstance(holder, dict) and path[-1] in holder:
            holder[path[-1]] = resolve(holder[path[-1]])
    auth = out.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("device_keys"), list):
        auth["device_keys"] = [resolve(v) for v in auth["device_keys"]]
    return out


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and validate ``path``; :class:`SettingsError` names the file and the bad key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{file}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{file}: cannot read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{file}: not valid TOML ({err})") from None
    try:
        return ServerConfig.model_validate(_resolve_paths(data, file.resolve().parent))
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise SettingsError(f"{file}: {details}") from None
