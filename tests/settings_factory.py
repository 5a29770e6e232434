"""A valid :class:`ServerSettings` for tests, with every field overridable by keyword."""

from __future__ import annotations

from typing import Any

from fedgaze.federation.settings import ServerSettings

DEFAULTS: dict[str, Any] = dict(
    run_dir="/tmp/x",
    run_key="k",
    rounds=2,
    min_nodes=2,
    node_wait_timeout=5,
    round_timeout=5,
    hidden=4,
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    batch_size=4,
    local_epochs=1,
    lr=0.1,
    holdout=0.25,
    seed=3,
)


def server_settings(**overrides: Any) -> ServerSettings:
    """Small, fast settings (hidden 4, 5 s waits); ``overrides`` replace any field."""
    return ServerSettings(**{**DEFAULTS, **overrides})
