"""Property tests of the capture contract: any batch a client may send, however malformed,
is split into valid items and named rejections; nothing valid is lost and nothing raises. Any
service ids on a query's metadata either form its ``served`` ids or are refused naming one."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedgaze.client.capture.samples import (
    COORD_LIMIT,
    SERVED_ID_MAX_CHARS,
    T_MAX_MS,
    T_MIN_MS,
    CaptureEvent,
    CaptureSample,
    QueryMeta,
    parse_batch,
    rejection_of,
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


ID_FIELDS = ("prompt_id", "response_left_id", "response_right_id")
good_id = st.from_regex(r"[A-Za-z0-9:/_.-]{1,24}", fullmatch=True)
bad_id = st.one_of(
    st.sampled_from(["", " ", "\t", "a\nb", "x" * (SERVED_ID_MAX_CHARS + 1)]),
    st.text(min_size=1, max_size=SERVED_ID_MAX_CHARS + 5),
    junk,
)


@st.composite
def service_ids(draw: st.DrawFn) -> tuple[bool, dict[str, Any], bool]:
    """``(pairwise, ids, intact)``: a query's usable ids (none, or a full set), then maybe
    damaged: one id replaced or dropped, or a right id added to a pointwise query."""
    pairwise = draw(st.booleans())
    ids: dict[str, Any] = {}
    if draw(st.integers(0, 4)):  # mostly a full set
        names = ID_FIELDS if pairwise else ID_FIELDS[:2]
        values = draw(st.lists(good_id, min_size=len(names), max_size=len(names), unique=True))
        ids = dict(zip(names, values, strict=True))
    how = draw(st.sampled_from(["intact", "intact", "replace", "drop", "right"]))
    if how == "replace":
        ids[draw(st.sampled_from(ID_FIELDS))] = draw(bad_id)
    elif how == "drop" and ids:
        ids.pop(draw(st.sampled_from(sorted(ids))))
    elif how == "right":
        ids["response_right_id"] = draw(good_id)
    return pairwise, ids, how == "intact"


@settings(max_examples=300, deadline=None)
@given(service_ids())
def test_service_ids_are_either_served_or_refused_naming_an_id(
    case: tuple[bool, dict[str, Any], bool],
) -> None:
    pairwise, ids, intact = case
    fields = {
        "query_id": 1,
        "task_id": 2,
        "pairwise": pairwise,
        "prompt": "p",
        "response_left": "l",
        "response_right": "r" if pairwise else None,
        "shown_at_ms": None,
        **ids,
    }
    try:
        meta = QueryMeta.model_validate(fields)
    except ValidationError as err:
        assert not intact, ids
        assert rejection_of(0, err).field in ID_FIELDS
        return
    given_ids = {k: v for k, v in ids.items() if v is not None}
    if meta.served is None:
        assert not given_ids
        return
    assert {k: getattr(meta.served, k) for k in given_ids} == given_ids
    assert meta.served.response_left_id != meta.served.response_right_id
    assert (meta.served.response_right_id is not None) == pairwise
    assert all(v.strip() and len(v) <= SERVED_ID_MAX_CHARS for v in given_ids.values())
