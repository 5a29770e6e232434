"""Trace folders: the files of a pairwise or a pointwise page, which kind a folder is, and one
modality's files (abs plus rel) as a group to align."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from fedgaze.data.ifllm.batches import _Trace
from fedgaze.data.ifllm.context import _Sink
from fedgaze.data.ifllm.files import _resolve
from fedgaze.data.schema import Problem


@dataclass(frozen=True)
class _FolderSpec:
    """File stems of a folder kind: modality -> (abs stem, left rel stem[, right rel stem])."""

    pairwise: bool
    files: Mapping[str, tuple[str, ...]]


_PAIRWISE = _FolderSpec(
    True,
    {
        "gaze": ("abs_gaze", "rel_gaze_one", "rel_gaze_two"),
        "mouse": ("abs_mouse", "rel_mouse_left", "rel_mouse_right"),
    },
)
_POINTWISE = _FolderSpec(
    False,
    {
        "gaze": ("abs_gaze", "rel_gaze"),
        "mouse": ("abs_mouse", "rel_mouse"),
    },
)


def _folder_spec(folder: Path, files: Set[str] | None = None) -> _FolderSpec | None:
    """Which kind of page the files present say this is (None when there are no rel files)."""

    def present(spec: _FolderSpec) -> int:
        return sum(
            _resolve(folder, s, files) is not None for f in spec.files.values() for s in f[1:]
        )

    pair, point = present(_PAIRWISE), present(_POINTWISE)
    if pair == point == 0:
        return None
    return _PAIRWISE if pair >= point else _POINTWISE


@dataclass(eq=False)
class _Group:
    """One modality of one page: its files (abs, left or only rel[, right rel]), the problems
    of aligning each rel file with the abs one, and where its aligned rows ended up."""

    modality: str
    files: tuple[_Trace, ...]
    joins: tuple[_Sink, ...]
    dropped: int = 0  # exact duplicate abs rows
    rows: slice = field(default_factory=lambda: slice(0, 0))

    def problems(self) -> Iterator[Problem]:
        """Its problems in the order a file-by-file load reports them."""
        yield from self.files[0].sink.problems
        for rel, join in zip(self.files[1:], self.joins, strict=True):
            yield from rel.sink.problems
            yield from join.problems
