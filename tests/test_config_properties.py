"""Property-based tests: every wrong key or value in a flat config is named in the error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgaze.federation.settings import RoundPlan, SettingsError

GOOD = {
    "run-key": "r1",
    "noise-multiplier": 1.1,
    "max-grad-norm": 1.0,
    "batch-size": 8,
    "local-epochs": 1,
    "lr": 0.05,
    "holdout": 0.25,
    "seed": 0,
    "server-round": 1,
}
KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=3, max_size=20).filter(
    lambda k: k.replace("-", "_") not in RoundPlan.model_fields and k.strip("-") == k
)


def test_good_config_parses() -> None:
    assert RoundPlan.from_config(GOOD).server_round == 1
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(SettingsError, match="holdout"):
            RoundPlan.from_config({**GOOD, "holdout": bad})


@settings(max_examples=50, deadline=None)
@given(key=KEY, value=st.one_of(st.integers(), st.text(max_size=5), st.floats()))
def test_unknown_key_is_named(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as err:
        RoundPlan.from_config({**GOOD, key: value})
    assert key in str(err.value)


@settings(max_examples=50, deadline=None)
@given(
    key=st.sampled_from(["noise-multiplier", "batch-size", "server-round", "lr"]),
    value=st.one_of(
        st.floats(max_value=0.0),
        st.integers(max_value=0),
        st.text(alphabet="xyz", min_size=1, max_size=4),
        st.just(float("nan")),
    ),
)
def test_bad_value_is_named(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as err:
        RoundPlan.from_config({**GOOD, key: value})
    assert key in str(err.value)
