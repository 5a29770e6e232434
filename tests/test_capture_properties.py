"""Property tests of the capture contract: any batch a client may send, however malformed,
is split into valid items and named rejections; nothing valid is lost and nothing raises."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fedgaze.client.capture.samples import (
    COORD_LIMIT,
    T_MAX_MS,
    T_MIN_MS,
    CaptureEvent,
    CaptureSample,
    parse_batch,
)

FIELDS = ("type", "query_id", "t_ms", "x", "y", "side", "char_index", "validate", "detail")

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

valid_sample = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["gaze", "mouse"]),
        "query_id": st.integers(min_value=0, max_value=2**40),
        "t_ms": st.floats(min_value=T_MIN_MS, max_value=T_MAX_MS),
        "x": st.floats(min_value=-COORD_LIMIT, max_value=COORD_LIMIT),
        "y": st.floats(min_value=-COORD_LIMIT, max_value=COORD_LIMIT),
        "side": st.sampled_from(["left", "right", "none"]),
        "char_index": st.integers(min_value=-1, max_value=10_000),
        "validate": st.sampled_from([-1, 0, 1]),
    }
)


@st.composite
def damaged(draw: st.DrawFn) -> dict[str, Any]:
    """A valid sample with one field replaced by junk, removed, or an unknown field added."""
    item: dict[str, Any] = dict(draw(valid_sample))
    how = draw(st.sampled_from(["replace", "drop", "extra"]))
    if how == "extra":
        item[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in FIELDS))] = 1
    else:
        key = draw(st.sampled_from(sorted(item)))
        if how == "drop":
            item.pop(key)
        else:
            item[key] = draw(junk)
    return item


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(valid_sample, damaged(), junk), max_size=25))
def test_every_item_is_either_kept_or_rejected_with_its_index(items: list[Any]) -> None:
    valid, rejected = parse_batch(items)
    assert len(valid) + len(rejected) == len(items)
    assert [r.index for r in rejected] == sorted({r.index for r in rejected})
    assert all(0 <= r.index < len(items) and r.field and r.reason for r in rejected)
    for out in valid:
        assert isinstance(out, CaptureSample | CaptureEvent)
        assert T_MIN_MS <= out.t_ms <= T_MAX_MS
        if isinstance(out, CaptureSample):
            assert math.isfinite(out.x) and math.isfinite(out.y)
            assert abs(out.x) <= COORD_LIMIT and abs(out.y) <= COORD_LIMIT


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_sample, min_size=1, max_size=10), st.lists(damaged(), max_size=10))
def test_valid_items_survive_any_bad_neighbours(good: list[Any], bad: list[Any]) -> None:
    valid_alone, _ = parse_batch(good)
    assert len(valid_alone) == len(good)
    valid, rejected = parse_batch([*good, *bad])
    assert valid[: len(good)] == valid_alone
    assert all(r.index >= len(good) for r in rejected)
