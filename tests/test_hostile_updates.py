"""Hostile or broken device updates are refused with their reason; robust aggregation holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgaze.federation import protocol
from fedgaze.federation.arrays import to_array_record
from fedgaze.federation.results import DeviceView
from fedgaze.federation.settings import RoundPlan, ServerSettings, SettingsError
from fedgaze.ledger.keys import pseudonym, public_key_b64
from fedgaze.model.weights import ModelState
from fedgaze.server.admission import accept_updates
from fedgaze.server.aggregate import aggregate, coordinate_median, fedavg, trim_count, trimmed_mean
from fedgaze.server.ledger import RoundBook
from fedgaze.server.validate import update_norm, validate_update
from settings_factory import server_settings

W, B = "net.0.weight", "net.0.bias"


def _state(value: float = 0.0, seed: int | None = None) -> ModelState:
    rng = np.random.default_rng(seed)
    noise = (lambda *s: rng.normal(0, 0.1, s)) if seed is not None else (lambda *s: np.zeros(s))
    return {
        W: (np.full((4, 2), value) + noise(4, 2)).astype(np.float32),
        B: (np.full((4,), value) + noise(4)).astype(np.float32),
    }


def _check(update: ModelState, reported: int | None = 3, norm: float | None = None) -> str | None:
    return validate_update(
        update, _state(), server_round=3, reported_round=reported, max_update_norm=norm
    )


# --- validate_update -------------------------------------------------------------------------


def test_an_honest_update_is_valid() -> None:
    assert _check(_state(0.5, seed=1)) is None
    assert _check(_state(0.5, seed=1), norm=10.0) is None


def test_non_finite_values_are_named() -> None:
    bad = _state(seed=1)
    bad[W][0, :] = np.nan
    bad[W][1, 0] = np.nan
    assert _check(bad) == f"{W}: 3 NaN values"
    bad = _state(seed=1)
    bad[B][0] = np.inf
    bad[B][1] = -np.inf
    bad[B][2] = -np.inf
    assert _check(bad) == f"{B}: 1 +Inf value, 2 -Inf values"


def test_names_shapes_and_dtype() -> None:
    assert _check({W: _state()[W]}) == f"missing parameters: {B}"
    assert _check({**_state(), "x": np.zeros(1, np.float32)}) == "unexpected parameters: x"
    wrong = {**_state(), W: np.zeros((16, 166), np.float32)}
    assert _check(wrong) == f"{W}: shape (16, 166) != (4, 2)"
    assert _check({**_state(), B: np.zeros(4, np.float64)}) == f"{B}: dtype float64 != float32"


def test_stale_or_missing_round_id() -> None:
    assert _check(_state(), reported=2) == "reply is for round 2, the server asked round 3"
    assert _check(_state(), reported=None) == (
        "reply does not state its round (server asked round 3)"
    )


def test_norm_bound() -> None:
    big = _state(1e9)
    norm = update_norm(big, _state())
    assert norm == pytest.approx(1e9 * np.sqrt(12), rel=1e-6)
    reason = _check(big, norm=100.0)
    assert reason is not None and "exceeds the server's max-update-norm 100" in reason
    assert _check(big) is None  # no bound set: huge but finite passes validation


# --- robust aggregation ----------------------------------------------------------------------


def _scalars(*values: float) -> list[ModelState]:
    return [{"w": np.array([v], np.float32)} for v in values]


def test_trimmed_mean_hand_computed() -> None:
    # n=5, trim 0.1 -> ceil(0.5) = 1 dropped at each end: mean of the middle three.
    out = trimmed_mean(_scalars(1, 2, 3, 4, 100), 0.1)
    assert out["w"].tolist() == [3.0] and out["w"].dtype == np.float32
    # Coordinate-wise: each coordinate is sorted on its own.
    ups = [{"w": np.array([a, b], np.float32)} for a, b in [(1, 50), (9, 10), (5, -40), (2, 30)]]
    # n=4, trim 0.25 -> 1 each end: coord 0 keeps {2, 5} -> 3.5; coord 1 keeps {10, 30} -> 20.
    assert trimmed_mean(ups, 0.25)["w"].tolist() == [3.5, 20.0]
    assert trimmed_mean(_scalars(1, 2, 3, 4, 100), 0.0)["w"].tolist() == [22.0]
    assert [trim_count(n, 0.1) for n in (1, 2, 3, 5, 10, 11)] == [0, 0, 1, 1, 1, 2]
    assert trimmed_mean(_scalars(1, 3), 0.1)["w"].tolist() == [2.0]  # too few to trim
    with pytest.raises(ValueError):
        trim_count(5, 0.5)


def test_median_hand_computed() -> None:
    assert coordinate_median(_scalars(7, 1, 100, 3, 2))["w"].tolist() == [3.0]
    assert coordinate_median(_scalars(1, 2, 4, 100))["w"].tolist() == [3.0]
    ups = [{"w": np.array([a, b], np.float32)} for a, b in [(1, 50), (9, 10), (5, -40)]]
    assert coordinate_median(ups)["w"].tolist() == [5.0, 10.0]
    with pytest.raises(ValueError, match="names"):
        coordinate_median([{"w": np.zeros(1)}, {"v": np.zeros(1)}])


def test_robust_rules_stay_in_the_honest_range_where_fedavg_does_not() -> None:
    honest = [_state(v, seed=i) for i, v in enumerate([0.9, 1.0, 1.1, 1.2])]
    hostile = _state(1e6)  # huge but finite; no norm bound
    updates = [*honest, hostile]
    lo = {k: np.min([h[k] for h in honest], axis=0) for k in (W, B)}
    hi = {k: np.max([h[k] for h in honest], axis=0) for k in (W, B)}
    for out in (trimmed_mean(updates, 0.1), coordinate_median(updates)):
        for k in (W, B):
            assert np.all(out[k] >= lo[k]) and np.all(out[k] <= hi[k])
    avg = fedavg([(u, 10) for u in updates])
    assert np.all(avg[W] > 1e5)


# --- settings --------------------------------------------------------------------------------


def _settings(**kw: Any) -> ServerSettings:
    return server_settings(**{"rounds": 3, "seed": 0, **kw})


def test_settings_fields_and_the_refused_combination() -> None:
    s = _settings(aggregation="trimmed-mean", trim_fraction=0.2, max_update_norm=5.0)
    assert ServerSettings.from_run_config(s.to_run_config()) == s
    flat = {**_settings().to_run_config(), "aggregation": "mean"}
    with pytest.raises(SettingsError, match="aggregation"):
        ServerSettings.from_run_config(flat)
    with pytest.raises(ValueError, match="client-level DP"):
        _settings(aggregation="median", client_dp_noise_multiplier=1.0, client_dp_clip_norm=1.0)
    _settings(client_dp_noise_multiplier=1.0, client_dp_clip_norm=1.0, max_update_norm=3.0)
    with pytest.raises(ValueError):
        _settings(trim_fraction=0.5)


# --- the server's acceptance step ------------------------------------------------------------


@dataclass
class _Record:
    signer: str
    body: dict[str, Any] = field(default_factory=dict)


class _AdmittingLedger:
    """Stands in for ServerLedger: every signed record holds (the record checks are tested in
    tests/test_ledger.py); what remains is the server's check of the update itself."""

    def __init__(self) -> None:
        self.signers: dict[str, str] = {}

    def admit(
        self, report: protocol.DeviceReport, plan: RoundPlan, book: RoundBook, _: Any
    ) -> bool:
        signer = self.signers.setdefault(
            report.device_id, public_key_b64(Ed25519PrivateKey.generate())
        )
        book.accepted.append(_Record(signer, {"device": pseudonym(signer)}))  # type: ignore[arg-type]
        return True


def _reply(device: str, node: int, update: Any, examples: int, rnd: int = 3) -> tuple[Any, Any]:
    charge = None if device == "no-dp-keys" else protocol.Charge(5, 0.1, 1.0)
    metrics = protocol.ReplyMetrics(rnd, examples, epsilon=1.0, charge=charge)
    trained = protocol.ReplyStatus.TRAINED
    content = protocol.reply_content(
        device, trained, metrics, to_array_record(update), dp_record="line"
    )
    msg = SimpleNamespace(content=content)  # all the server reads of the reply's Message
    report = protocol.DeviceReport(node, device, trained, metrics.metrics(), "line")
    return report, msg


def _hostile_round() -> tuple[list[Any], list[tuple[ModelState, int]]]:
    nan = _state(1.0, seed=10)
    nan[W][2, 1] = np.nan
    inf = _state(1.0, seed=11)
    inf[B][0] = np.inf
    honest = [(_state(1.0, seed=1), 30), (_state(1.2, seed=2), 10)]
    trained = [
        _reply("honest-a", 1, honest[0][0], 30),
        _reply("nan", 2, nan, 20),
        _reply("inf", 3, inf, 20),
        _reply("huge", 4, _state(1e9), 20),
        _reply("shape", 5, {W: np.zeros((16, 166), np.float32), B: _state()[B]}, 20),
        _reply("stale", 6, _state(1.0, seed=12), 20, rnd=2),
        _reply("no-dp-keys", 8, _state(1e9), 20),
        _reply("honest-b", 7, honest[1][0], 10),
    ]
    return trained, honest


@pytest.mark.parametrize("rule", ["fedavg", "trimmed-mean", "median"])
def test_hostile_updates_are_refused_and_excluded(rule: str) -> None:
    settings = _settings(max_update_norm=100.0, aggregation=rule)
    trained, honest = _hostile_round()
    book = RoundBook()
    devices: dict[str, DeviceView] = {}
    updates = accept_updates(
        trained,
        _state(),
        settings.plan(3),
        book,
        _AdmittingLedger(),  # type: ignore[arg-type]
        settings,
        devices,
    )
    reasons = {r.device_id: r.reason for r in book.refused}
    assert reasons == {
        "nan": f"update refused: {W}: 1 NaN value",
        "inf": f"update refused: {B}: 1 +Inf value",
        "huge": reasons["huge"],
        "shape": f"update refused: {W}: shape (16, 166) != (4, 2)",
        "stale": "update refused: reply is for round 2, the server asked round 3",
        "no-dp-keys": reasons["no-dp-keys"],
    }
    assert "exceeds the server's max-update-norm 100" in reasons["huge"]
    assert "exceeds the server's max-update-norm 100" in reasons["no-dp-keys"]
    assert all(r.device is not None for r in book.refused)  # pseudonym kept for the ledger
    assert len(book.accepted) == 2
    assert {d: v.status for d, v in devices.items() if v.status == "refused"} == {
        d: "refused" for d in reasons
    }
    assert [n for _, n in updates] == [30, 10]
    out = aggregate(updates, settings.aggregation, settings.trim_fraction)
    if rule == "fedavg":
        expected = fedavg(honest)
    elif rule == "trimmed-mean":
        expected = trimmed_mean([u for u, _ in honest], settings.trim_fraction)
    else:
        expected = coordinate_median([u for u, _ in honest])
    for k in (W, B):
        np.testing.assert_array_equal(out[k], expected[k])
