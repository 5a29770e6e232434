"""Planning a (worker, task) page: its queries, whether its folder says pairwise or pointwise,
and which trace files it has (missing ones reported)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedgaze.data.ifllm.batches import _Trace
from fedgaze.data.ifllm.context import BEHAVIOR_DIR, _Ctx, _Sink
from fedgaze.data.ifllm.files import _file_names, _resolve
from fedgaze.data.ifllm.folders import _folder_spec, _Group
from fedgaze.data.ifllm.tables import _QueryRow


@dataclass(eq=False)
class _Page:
    """One (worker, task) page: its queries in query_ID order and its trace files, if any."""

    task: int
    rows: list[_QueryRow]
    traced: bool = False  # a folder with rel files: the files say pairwise or pointwise
    pairwise: bool = False
    parts: list[_Sink | _Group] = field(default_factory=list)  # problems, in report order

    @property
    def groups(self) -> list[_Group]:
        """The modalities whose files are all present."""
        return [p for p in self.parts if isinstance(p, _Group)]


def _plan_page(ctx: _Ctx, worker: str, task: int, rows: list[_QueryRow]) -> _Page:
    """Which trace files a page has; missing ones are reported (in the page's parts)."""
    page = _Page(task=task, rows=rows)
    folder = ctx.base / BEHAVIOR_DIR / worker / str(task)
    if not folder.is_dir():
        return page
    files = _file_names(folder)
    spec = _folder_spec(folder, files)
    if spec is None:
        sink = _Sink(ctx.base)
        sink.add(folder, 0, "missing file: no rel_* trace files in this task folder; no samples")
        page.parts.append(sink)
        return page
    page.traced, page.pairwise = True, spec.pairwise
    for modality, stems in spec.files.items():
        paths = [_resolve(folder, s, files) for s in stems]
        found = [p for p in paths if p is not None]
        if len(found) < len(paths):
            sink = _Sink(ctx.base)
            for stem, path in zip(stems, paths, strict=True):
                if path is None:
                    sink.add(
                        folder / f"{stem}.csv.gz",
                        0,
                        f"missing file: no {stem}.csv(.gz), "
                        f"needed for {modality} samples; {modality} left empty",
                    )
            page.parts.append(sink)
            continue
        page.parts.append(
            _Group(
                modality=modality,
                files=tuple(_Trace(p, _Sink(ctx.base)) for p in found),
                joins=tuple(_Sink(ctx.base) for _ in found[1:]),
            )
        )
    return page
