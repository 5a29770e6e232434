"""Layouts of the headerless trace files and the vectorized (polars) parse of their lines.

A line is split on commas and the fixed numeric fields are taken from both ends; in ``rel_*``
rows the snippet is the text in between, minus one pair of enclosing quotes.  Each line gets a
parse ``code`` (0 = valid, 1 = field count, 2+ = the first bad field).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from fedgaze.data.ifllm.context import _EPOCH_MAX_MS, _EPOCH_MIN_MS


@dataclass(frozen=True)
class _Layout:
    """Columns of a headerless trace file: x, y, [snippet], then ``tail`` numeric fields."""

    name: str
    tail: tuple[str, ...]
    has_snippet: bool

    @property
    def n_fields(self) -> int:
        """Comma-separated fields of a row whose snippet (if any) has no comma."""
        return 2 + int(self.has_snippet) + len(self.tail)

    def fields(self) -> tuple[str, ...]:
        """The numeric fields, in file order."""
        return ("x", "y", *self.tail)

    def index(self, name: str) -> int:
        """Position of a numeric field among the comma-split parts (negative: from the end)."""
        if name in ("x", "y"):
            return ("x", "y").index(name)
        return self.tail.index(name) - len(self.tail)

    def describe(self) -> str:
        """The column list, for messages."""
        names = ["x", "y"] + (["snippet"] if self.has_snippet else []) + list(self.tail)
        return ",".join(_FIELD_NAMES.get(n, n) for n in names)


_FIELD_NAMES = {"ci": "char_index", "pt": "page_timer_ms", "v": "validate", "e": "epoch_ms"}
_ABS = _Layout("abs", ("pt", "e"), has_snippet=False)
_REL7 = _Layout("rel7", ("ci", "pt", "v", "e"), has_snippet=True)
_REL6 = _Layout("rel6", ("ci", "pt", "e"), has_snippet=True)


_TYPES = {"ci": pl.Int64, "v": pl.Int64}  # everything else is Float64
_ABS_SCHEMA = {
    "fid": pl.Int64,
    "line": pl.Int64,
    "x": pl.Float64,
    "y": pl.Float64,
    "pt": pl.Float64,
    "e": pl.Float64,
}
_REL_SCHEMA = {
    "fid": pl.Int64,
    "line": pl.Int64,
    "x": pl.Float64,
    "y": pl.Float64,
    "ci": pl.Int64,
    "pt": pl.Float64,
    "v": pl.Int64,
    "e": pl.Float64,
    "snip": pl.String,
}


def _validity(name: str) -> pl.Expr:
    """Is the typed column ``name`` a valid value (nulls are not)?"""
    col = pl.col(name)
    checks = {
        "ci": col.is_between(-1, 2**31 - 1),
        "v": col.is_in([-1, 0, 1]),
        "e": col.is_between(_EPOCH_MIN_MS, _EPOCH_MAX_MS),
        "pt": col.is_finite() & (col >= 0),
    }
    return checks.get(name, col.is_finite()).fill_null(False)


@lru_cache(maxsize=8)
def _parse_plan(layout: _Layout, strip_e: bool) -> tuple[list[pl.Expr], ...]:
    """Expression stages over ``parts`` (a line split on commas): raw fields, typed fields and
    snippet, parse code; the result has the typed fields, snippet, ``n`` (fields), ``eq``
    (``epoch_ms`` is not a number, maybe quoted) and ``code`` (0 = valid, 1 = field count,
    2+ = field).

    The snippet is the third field minus one pair of enclosing quotes: right for the rows with
    ``n == layout.n_fields``, ``_parse_lines`` redoes the others.  ``epoch_ms`` is stripped of
    quotes only with ``strip_e`` (rarely needed: ``_parse_lines`` reparses the rows with
    ``eq`` that way; stripping a field without quotes changes nothing).
    """
    parts = pl.col("parts")
    fields = layout.fields()
    raw = [parts.list.len().alias("n")]
    raw += [parts.list.get(layout.index(f), null_on_oob=True).alias(f) for f in fields]
    if layout.has_snippet:
        raw.append(parts.list.get(2, null_on_oob=True).alias("snip"))
    typed = []
    if layout.has_snippet:
        typed.append(_strip_one_pair(pl.col("snip")).alias("snip"))
    for f in fields:
        text = pl.col(f).str.strip_chars('"') if f == "e" and strip_e else pl.col(f)
        value = text.cast(_TYPES.get(f, pl.Float64), strict=False)
        typed.append(
            pl.when(pl.col(f) == "").then(-1).otherwise(value).alias(f)
            if f == "ci"
            else value.alias(f)
        )
    n = pl.col("n")
    count_ok = (n >= layout.n_fields) if layout.has_snippet else (n == layout.n_fields)
    failed = [~count_ok, *[~_validity(f) for f in fields]]
    first = pl.min_horizontal(pl.when(b).then(i + 1).otherwise(99) for i, b in enumerate(failed))
    code = [
        pl.when(first == 99).then(0).otherwise(first).cast(pl.Int8).alias("code"),
        pl.col("e").is_null().alias("eq"),
    ]
    keep = ["code", *fields, *(["snip"] if layout.has_snippet else []), "n", "eq"]
    return raw, typed, code, [pl.col(c) for c in keep]


def _strip_one_pair(text: pl.Expr) -> pl.Expr:
    """One pair of enclosing double quotes removed (values not enclosed are kept)."""
    quoted = text.str.starts_with('"') & text.str.ends_with('"') & (text.str.len_chars() >= 2)
    return pl.when(quoted).then(text.str.strip_prefix('"').str.strip_suffix('"')).otherwise(text)


def _run_plan(lines: pl.Series, layout: _Layout, strip_e: bool) -> pl.DataFrame:
    """``_parse_plan`` applied to ``lines``, as one query."""
    raw, typed, code, keep = _parse_plan(layout, strip_e)
    return (
        pl.DataFrame({"line": lines})
        .lazy()
        .select(pl.col("line").str.split(",").alias("parts"))
        .with_columns(raw)
        .with_columns(typed)
        .with_columns(code)
        .select(keep)
        .collect()
    )


def _parse_lines(lines: pl.Series, layout: _Layout) -> pl.DataFrame:
    """Vectorized parse: typed columns plus ``code`` (0 = valid, 1 = field count, 2+ = field).

    The snippet is the text between the two leading and the fixed trailing fields (commas
    included), minus one pair of enclosing quotes; ``epoch_ms`` may be quoted.
    """
    frame = _run_plan(lines, layout, strip_e=False)
    quoted = np.flatnonzero(frame["eq"].to_numpy())
    if len(quoted):  # maybe a stray quote around epoch_ms: those rows again, stripping it
        again = _run_plan(lines.gather(quoted), layout, strip_e=True)
        frame = frame.with_columns(frame[c].scatter(quoted, again[c]) for c in ("e", "code"))
    if layout.has_snippet:
        long = np.flatnonzero((frame["n"] > layout.n_fields).to_numpy())
        if len(long):  # snippets with commas: rejoin the middle fields
            middle = pl.col("line").str.split(",")
            middle = middle.list.slice(2, middle.list.len() - (layout.n_fields - 1))
            joined = (
                pl.DataFrame({"line": lines.gather(long)})
                .select(middle.list.join(",").alias("snip"))
                .select(_strip_one_pair(pl.col("snip")))
            )
            frame = frame.with_columns(frame["snip"].scatter(long, joined["snip"]))
    keep = ["code", *layout.fields()] + (["snip"] if layout.has_snippet else [])
    return frame.select(keep)


def _explain(line: str, code: int, layout: _Layout) -> str:
    """Human reason for a failed parse ``code`` of ``line``."""
    fields = line.split(",")
    if code == 1:
        need = f"{layout.n_fields}{'+' if layout.has_snippet else ''}"
        return (
            f"bad row: expected {need} comma-separated fields ({layout.describe()}), "
            f"found {len(fields)}: {line[:60]!r}"
        )
    name = layout.fields()[code - 2]
    what = {
        "ci": "an integer >= -1 or empty",
        "v": "0, 1 or -1",
        "e": "a plausible epoch in ms",
        "pt": "a non-negative number",
    }.get(name, "a number")
    return f"bad row: {_FIELD_NAMES.get(name, name)} {fields[layout.index(name)]!r} is not {what}"
