"""The capture contract: what a capture client (browser page, native gaze tracker) may send.

Every model here is a frozen, strict pydantic model that forbids unknown fields, so a typo
(``charIndex``) or a wrong type (``"12"`` for a number, ``true`` for an int) is a rejection
naming the field rather than a silently coerced value. Values are bounded to what a real
screen and clock can produce: times are epoch milliseconds between 2000 and 2100, coordinates
are finite CSS pixels with ``|v| <= 1e5`` (gaze may be negative or off screen).

A batch is a list of JSON-like objects, each with a ``"type"``:

- ``"gaze"`` or ``"mouse"``: a positional :class:`CaptureSample`
  (``query_id, t_ms, x, y, side, char_index, validate``);
- ``"scroll"``, ``"click"``, ``"select"``, ``"copy"``, ``"visibility"``: a :class:`CaptureEvent`
  (``query_id, t_ms, side, char_index, detail``), kept encrypted on the device but not used by
  the features.

:func:`parse_batch` validates each item on its own, so one bad item costs only itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    SIDE_LEFT,
    SIDE_NONE,
    SIDE_RIGHT,
    ServedIds,
)

__all__ = [
    "COORD_LIMIT",
    "DETAIL_MAX_CHARS",
    "EVENT_KINDS",
    "ID_MAX",
    "SAMPLE_TYPES",
    "SERVED_ID_MAX_CHARS",
    "SIDE_CODES",
    "TEXT_MAX_CHARS",
    "T_MAX_MS",
    "T_MIN_MS",
    "CaptureEvent",
    "CaptureSample",
    "EventKind",
    "Label",
    "Modality",
    "QueryMeta",
    "Rejection",
    "ServedId",
    "Side",
    "check_label",
    "parse_batch",
    "parse_item",
    "rejection_of",
]

T_MIN_MS = 946_684_800_000.0
"""Earliest accepted time: 2000-01-01T00:00:00Z in epoch milliseconds."""
T_MAX_MS = 4_102_444_800_000.0
"""Latest accepted time: 2100-01-01T00:00:00Z in epoch milliseconds."""
COORD_LIMIT = 1e5
"""Largest accepted ``|x|`` or ``|y|`` in CSS pixels (gaze estimates may fall off screen)."""
DETAIL_MAX_CHARS = 200
"""Longest :attr:`CaptureEvent.detail`; events describe, they do not carry content."""
TEXT_MAX_CHARS = 1_000_000
"""Longest prompt or response text accepted by :class:`QueryMeta`."""
ID_MAX = 2**63 - 1
"""Largest accepted ``query_id`` or ``task_id`` (they are stored as signed 64-bit integers)."""
SERVED_ID_MAX_CHARS = 200
"""Longest id of a prompt or answer given by the answering service (:class:`QueryMeta`)."""

Modality = Literal["gaze", "mouse"]
Side = Literal["left", "right", "none"]
EventKind = Literal["scroll", "click", "select", "copy", "visibility"]
SAMPLE_TYPES: tuple[str, ...] = get_args(Modality)
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
SIDE_CODES: Mapping[str, int] = {"none": SIDE_NONE, "left": SIDE_LEFT, "right": SIDE_RIGHT}
"""The schema's side code (``fedgaze.data.schema.SIDE_*``) of each side name."""

_EpochMs = Annotated[float, Field(ge=T_MIN_MS, le=T_MAX_MS)]
_Coord = Annotated[float, Field(ge=-COORD_LIMIT, le=COORD_LIMIT)]
_Text = Annotated[str, Field(max_length=TEXT_MAX_CHARS)]
_Likert = Annotated[float, Field(ge=1.0, le=5.0)]


def _check_served_id(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


ServedId = Annotated[str, Field(max_length=SERVED_ID_MAX_CHARS), AfterValidator(_check_served_id)]
"""An id the answering service gave a prompt or answer: 1 to 200 characters, not blank, no
control characters. Compared exactly (never trimmed)."""


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)


class QueryMeta(_Contract):
    """One query as it appeared on screen: sent once (``begin_query``) before its samples.

    ``pairwise`` queries show two answers (``response_right`` is required); pointwise queries
    show one (``response_right`` must be None). ``shown_at_ms`` is when the answers appeared
    (epoch ms), None when unknown. The texts are stored encrypted and never logged.

    ``prompt_id``, ``response_left_id`` and ``response_right_id`` are the ids the answering
    service (the LLM service) gave the prompt and each answer (:data:`ServedId`), so that the
    comparison can be identified outside the device; all None when the service gave none. With
    a ``prompt_id``, ``response_left_id`` is required, and ``response_right_id`` too for a
    pairwise query; a pointwise query has no ``response_right_id``; the two answer ids differ.
    Records written before these fields existed load with all three None.
    """

    query_id: int = Field(ge=0, le=ID_MAX)
    task_id: int = Field(ge=0, le=ID_MAX)
    pairwise: bool
    prompt: _Text
    response_left: _Text
    response_right: _Text | None
    shown_at_ms: _EpochMs | None
    prompt_id: ServedId | None = None
    response_left_id: ServedId | None = None
    response_right_id: ServedId | None = None

    @model_validator(mode="after")
    def _right_matches_pairwise(self) -> QueryMeta:
        if self.pairwise and self.response_right is None:
            raise ValueError("response_right: a pairwise query needs a right answer")
        if not self.pairwise and self.response_right is not None:
            raise ValueError("response_right: a pointwise query has no right answer")
        problem = _served_ids_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def served(self) -> ServedIds | None:
        """The answering service's ids of this query, None when it gave none."""
        if self.prompt_id is None or self.response_left_id is None:
            return None
        return ServedIds(self.prompt_id, self.response_left_id, self.response_right_id)


def _served_ids_problem(meta: QueryMeta) -> str | None:
    """Why ``meta``'s service ids do not fit together (``"field: reason"``), None when they do."""
    left, right = meta.response_left_id, meta.response_right_id
    if right is not None and not meta.pairwise:
        return "response_right_id: a pointwise query has no right answer"
    if meta.prompt_id is None:
        if left is not None or right is not None:
            return "prompt_id: required when answer ids are given"
        return None
    if left is None:
        return "response_left_id: required when prompt_id is given"
    if meta.pairwise and right is None:
        return "response_right_id: a pairwise query with a prompt_id needs it"
    if left == right:
        return "response_right_id: must differ from response_left_id"
    return None


class Label(_Contract):
    """The person's explicit judgement of a query; the latest label of a query wins.

    ``preference``: for pairwise queries ``PREF_TIE`` (0), ``PREF_LEFT`` (1) or ``PREF_RIGHT``
    (2); for pointwise queries 1 (better than the previous answer) or 0 (worse); None when not
    given. ``likert_left``/``likert_right`` are 1-5 ratings or None (``likert_right`` only for
    pairwise queries). Checked against the query's :class:`QueryMeta` when it is set.
    """

    query_id: int = Field(ge=0, le=ID_MAX)
    preference: int | None = Field(default=None, ge=0, le=2)
    likert_left: _Likert | None = None
    likert_right: _Likert | None = None


class CaptureSample(_Contract):
    """One gaze or mouse position while a query's answers were on screen.

    ``t_ms`` epoch milliseconds (device clock, UTC); ``x``/``y`` viewport CSS pixels;
    ``side`` the answer panel under the point; ``char_index`` the caret offset into that
    side's answer text, -1 when none; ``validate`` 1 when the webcam face box was good, 0 when
    not, -1 unknown (mouse, or trackers without the signal).
    """

    query_id: int = Field(ge=0, le=ID_MAX)
    modality: Modality
    t_ms: _EpochMs
    x: _Coord
    y: _Coord
    side: Side
    char_index: int = Field(ge=-1, le=2**31 - 1)
    # An int with bounds, not a Literal: a Literal would take ``true`` as 1.
    validate_: int = Field(default=-1, ge=-1, le=1, alias="validate")

    # ``validate`` on the wire and in the constructor; the attribute is ``validate_`` because
    # ``BaseModel.validate`` already exists.
    model_config = ConfigDict(populate_by_name=True)


class CaptureEvent(_Contract):
    """A non-positional interaction (scroll, click, text selection, copy, tab visibility).

    Kept encrypted on the device for later analysis; not used by the features. ``detail`` is a
    short description (e.g. ``"hidden"``, ``"down"``), at most 200 characters, never content.
    """

    query_id: int = Field(ge=0, le=ID_MAX)
    kind: EventKind
    t_ms: _EpochMs
    side: Side = "none"
    char_index: int = Field(default=-1, ge=-1, le=2**31 - 1)
    detail: str = Field(default="", max_length=DETAIL_MAX_CHARS)


class Rejection(_Contract):
    """Why item ``index`` of a batch was not stored: the offending ``field`` and a ``reason``.

    ``field`` is a dotted path into the item (``"x"``, ``"type"``), or ``"item"`` when the
    item as a whole is unusable. The reason never quotes the rejected value.
    """

    index: int = Field(ge=0)
    field: str
    reason: str


def rejection_of(index: int, err: ValidationError) -> Rejection:
    """The :class:`Rejection` of item ``index`` that failed validation with ``err``: its first
    bad field and the reason, without the rejected value."""
    errors = err.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "item"
    msg = str(first["msg"])
    if loc == "item" and msg.startswith("Value error, ") and ":" in msg:
        # A model-level check names its field itself ("response_right: ...").
        loc, _, msg = msg.removeprefix("Value error, ").partition(": ")
    msg = msg.removeprefix("Value error, ")  # a field check's own reason ("must not be blank")
    extra = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return Rejection(index=index, field=loc, reason=f"{msg}{extra}")


def parse_item(index: int, item: Any) -> CaptureSample | CaptureEvent | Rejection:
    """Validate one batch item (see the module docstring); a :class:`Rejection` when invalid."""
    if not isinstance(item, Mapping):
        return Rejection(index=index, field="item", reason="expected an object")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in SAMPLE_TYPES + EVENT_KINDS:
        allowed = ", ".join(SAMPLE_TYPES + EVENT_KINDS)
        return Rejection(index=index, field="type", reason=f"must be one of: {allowed}")
    fields = {k: v for k, v in item.items() if k != "type"}
    try:
        if kind in SAMPLE_TYPES:
            if "modality" in fields:
                return Rejection(index=index, field="modality", reason="give it as 'type'")
            return CaptureSample.model_validate({**fields, "modality": kind})
        if "kind" in fields:
            return Rejection(index=index, field="kind", reason="give it as 'type'")
        return CaptureEvent.model_validate({**fields, "kind": kind})
    except ValidationError as err:
        return rejection_of(index, err)


def parse_batch(
    items: Sequence[Mapping[str, Any]],
) -> tuple[list[CaptureSample | CaptureEvent], list[Rejection]]:
    """Validate a batch item by item: ``(valid items in order, one Rejection per invalid item)``.

    Pure. Each :class:`Rejection` carries the item's index in ``items`` and the first bad
    field, so a client can fix and resend exactly the items that failed; the valid ones are
    returned regardless of the others.
    """
    valid: list[CaptureSample | CaptureEvent] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        out = parse_item(index, item)
        if isinstance(out, Rejection):
            rejected.append(out)
        else:
            valid.append(out)
    return valid, rejected


def check_label(label: Label, meta: QueryMeta) -> Rejection | None:
    """Whether ``label`` fits its query (pure): None when it does, else the field at fault."""
    allowed = (PREF_TIE, PREF_LEFT, PREF_RIGHT) if meta.pairwise else (0, 1)
    if label.preference is not None and label.preference not in allowed:
        kind = "pairwise" if meta.pairwise else "pointwise"
        return Rejection(
            index=0, field="preference", reason=f"a {kind} query takes one of {allowed}"
        )
    if label.likert_right is not None and not meta.pairwise:
        return Rejection(
            index=0, field="likert_right", reason="a pointwise query has no right answer"
        )
    return None
