"""Planning a run: from what a person or an operator chose to the ServerApp's settings.

``fedgaze demo`` / ``fedgaze train --mode federated`` and an operator's ``server.toml`` choose
the same things; this is where their noise multipliers are calibrated, so both plan a run the
same way: the device noise multiplier so that the largest spender fits every round into the
device budget (:func:`fedgaze.privacy.accounting.calibrate_noise_multiplier`), and, when
client-level DP is asked for, the aggregate's noise multiplier so that every person's epsilon
over all rounds is the target (:func:`fedgaze.privacy.central.calibrate_central_noise`).
"""

from __future__ import annotations

from typing import Any

from fedgaze import defaults
from fedgaze.federation.settings import ServerSettings, SettingsError
from fedgaze.privacy.accounting import calibrate_noise_multiplier
from fedgaze.privacy.central import calibrate_central_noise


def plan_settings(
    *,
    epsilon: float | None,
    client_dp_epsilon: float | None = None,
    client_dp_clip_norm: float = defaults.CLIENT_DP_CLIP_NORM,
    **fields: Any,
) -> ServerSettings:
    """The :class:`ServerSettings` of ``fields`` with every noise multiplier planned.

    ``fields`` are ServerSettings fields. Without a ``noise_multiplier`` among them, the device
    noise is calibrated to ``epsilon`` per device over ``fields["rounds"]`` rounds at
    ``fields["delta"]`` (default :data:`fedgaze.defaults.DELTA`), leaving room for the label
    release when ``fields["epsilon_label"]`` asks for one. ``client_dp_epsilon`` turns on
    client-level DP, calibrated to that epsilon per person at ``client_dp_delta``, with updates
    clipped to ``client_dp_clip_norm``. Inconsistent settings raise :class:`SettingsError`.
    """
    rounds = int(fields["rounds"])
    local_epochs = int(fields.get("local_epochs", defaults.LOCAL_EPOCHS))
    delta = float(fields.pop("delta", defaults.DELTA))
    if fields.get("noise_multiplier") is None:
        if epsilon is None:
            raise SettingsError("set a device epsilon or a noise multiplier")
        try:
            fields["noise_multiplier"] = calibrate_noise_multiplier(
                epsilon,
                rounds=rounds,
                local_epochs=local_epochs,
                delta=delta,
                label_epsilon=fields.get("epsilon_label"),
            )
        except ValueError as err:
            raise SettingsError(str(err)) from None
    if client_dp_epsilon is not None:
        client_delta = float(fields.get("client_dp_delta", defaults.DELTA))
        fields["client_dp_noise_multiplier"] = calibrate_central_noise(
            client_dp_epsilon,
            sample_rate=float(fields.get("fraction", 1.0)),
            rounds=rounds,
            delta=client_delta,
        )
        fields["client_dp_clip_norm"] = client_dp_clip_norm
    try:
        return ServerSettings(**fields)
    except ValueError as err:
        raise SettingsError(f"inconsistent settings: {err}") from None
