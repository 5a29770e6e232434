"""Evidence for or against a sample belonging to a query: its snippet found (or not) in that
side's response, its char_index within (or past) the response's length.

The rules that use it are in :mod:`fedgaze.data.ifllm.attribution` (rule 2 there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from fedgaze.data.ifllm.context import _MIN_SNIPPET, I64, Bool
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT


def _utf16_len(text: str | None) -> int:
    """Length as the browser counts caret offsets (UTF-16 code units); -1 for no text."""
    return -1 if text is None else len(text.encode("utf-16-le")) // 2


def _lengths(left: Sequence[str], right: Sequence[str | None]) -> I64:
    """lens[j, side]: UTF-16 length of query j's response on that side (-1: none)."""
    lens = np.full((len(left), 3), -1, dtype=np.int64)
    lens[:, SIDE_LEFT] = [_utf16_len(t) for t in left]
    lens[:, SIDE_RIGHT] = [_utf16_len(t) for t in right]
    return lens


@dataclass(frozen=True)
class _Evidence:
    """Per sample x query: does its snippet/char_index support or contradict that query?"""

    support: Bool
    against: Bool
    has: Bool  # the sample carries any evidence at all

    @classmethod
    def build(
        cls,
        side: npt.NDArray[np.int8],
        ci: npt.NDArray[np.int32],
        usable: Bool,
        found: Bool,
        left: Sequence[str],
        right: Sequence[str | None],
    ) -> _Evidence:
        """Evidence from each sample's side, char_index and (``usable``) snippet, ``found[i, j]``
        when sample i's snippet occurs in query j's response on its side."""
        lens = _lengths(left, right)
        on_panel = side != SIDE_NONE
        char_bad = (on_panel & (ci >= 0))[:, None] & (ci[:, None] > lens[:, side].T)
        against = (usable[:, None] & ~found) | char_bad
        support = usable[:, None] & found & ~char_bad
        has = usable | (on_panel & (ci >= 0))
        return cls(support=support, against=against, has=has)


def _usable(side: npt.NDArray[np.int8], snip: pl.Series) -> Bool:
    """Samples whose snippet can be evidence: on a panel, at least ``_MIN_SNIPPET`` characters."""
    return (side != SIDE_NONE) & (snip.str.len_chars() >= _MIN_SNIPPET).to_numpy()


def _snippet_found(
    side: npt.NDArray[np.int8],
    snip: pl.Series,
    page: I64,
    texts: Sequence[Sequence[tuple[str, str | None]]],
    rows: I64,
    queries: I64,
) -> Bool:
    """For each (sample row, query index) pair: does the row's snippet occur in that query's
    response on the row's side?

    ``page`` is each row's page, ``texts[p]`` the (left, right) responses of page p's queries.
    Each distinct (page, side, snippet, query) is searched for once.
    """
    if not len(rows):
        return np.zeros(0, dtype=bool)
    pairs = pl.DataFrame(
        {
            "p": page[rows],
            "side": side[rows],
            "snip": snip.gather(rows),
            "j": queries,
        }
    )
    responses = pl.DataFrame(
        {
            "p": [p for p, page_texts in enumerate(texts) for _ in page_texts],
            "j": [j for page_texts in texts for j in range(len(page_texts))],
            "lt": [lt for page_texts in texts for lt, _ in page_texts],
            "rt": [rt or "" for page_texts in texts for _, rt in page_texts],
        },
        schema={"p": pl.Int64, "j": pl.Int64, "lt": pl.String, "rt": pl.String},
    )
    text = pl.when(pl.col("side") == SIDE_LEFT).then(pl.col("lt")).otherwise(pl.col("rt"))
    hits = (
        pairs.with_row_index("k")
        .group_by("p", "side", "snip", "j")
        .agg("k")
        .join(responses, on=["p", "j"])
        .filter(text.str.contains(pl.col("snip"), literal=True))
        .select(pl.col("k").explode())
    )
    out = np.zeros(len(rows), dtype=bool)
    out[hits.to_series().to_numpy()] = True
    return out
