"""The loader's public API: load every device or stream them one at a time, and plan a cohort
from the query table alone (workers, labelled comparisons and queries per worker)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fedgaze.data.ifllm.context import BEHAVIOR_DIR, QUERY_TABLE, _Ctx, _Sink
from fedgaze.data.ifllm.devices import _load_device
from fedgaze.data.ifllm.files import _check_root, table_path
from fedgaze.data.ifllm.tables import _QueryRow, _read_queries, _read_tasks
from fedgaze.data.schema import PREF_LEFT, PREF_RIGHT, Device, Problem


@dataclass(frozen=True)
class IfllmDataset:
    """The loaded data set: one device per worker, every unusable row, and load counters.

    ``devices`` are sorted by ``device_id``.  ``problems`` lists each row or file that could not
    be used (file relative to the root, 1-based line, 0 for a whole file, ``"category: detail"``
    reason).  ``stats`` holds counters such as ``samples_gaze``, ``samples_dropped_before_first``
    or ``evidence_contradicts_time`` (see :mod:`fedgaze.data.ifllm.attribution`); it is
    informational only.
    """

    devices: tuple[Device, ...]
    problems: tuple[Problem, ...]
    stats: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    def device(self, device_id: str) -> Device:
        """The device of one worker; KeyError naming it when it was not loaded."""
        for dev in self.devices:
            if dev.device_id == device_id:
                return dev
        raise KeyError(f"worker {device_id!r} is not in this IfllmDataset")

    def problem_counts(self) -> dict[str, int]:
        """How many problems of each category (the part of ``reason`` before the first ':')."""
        return dict(Counter(p.reason.split(":", 1)[0] for p in self.problems))


def list_workers(root: str | Path) -> list[str]:
    """Worker ids that appear in the query log, sorted: the devices ``load_ifllm`` can build.

    Only the query table is read, so this is cheap enough to plan a federated cohort.
    """
    base = _check_root(root)
    sink = _Sink(base)
    return sorted({q.user_id for q in _read_queries(base, sink)})


def labelled_comparison_counts(root: str | Path) -> dict[str, int]:
    """Labelled pairwise comparisons (two answers, preference 1 or 2) per worker in the log.

    Read from the query table alone (no traces), to plan which workers make useful devices.
    """
    base = _check_root(root)
    queries = _read_queries(base, _Sink(base))
    counts = dict.fromkeys(sorted({q.user_id for q in queries}), 0)
    for q in queries:
        if q.response_2 and q.preference in (PREF_LEFT, PREF_RIGHT):
            counts[q.user_id] += 1
    return counts


def load_ifllm(root: str | Path, workers: Sequence[str] | None = None) -> IfllmDataset:
    """Load IFLLM into the project schema, for all workers or only the listed ones.

    Each device reads the two tables once and then only its own trace folders, so loading a
    single worker is cheap (what a federated client does).  Raises FileNotFoundError when the
    root or a required table is missing, ValueError when a table lacks required columns or is
    not CSV, and KeyError naming workers that are not in the query log.  Everything else that
    is wrong with the data becomes a Problem and is skipped.  Holds every device in memory; see
    :func:`iter_devices` to process one device at a time.
    """
    loader = _Loader(root, workers)
    stats: Counter[str] = Counter()
    devices: list[Device] = []
    problems = list(loader.problems)
    for device, found in loader.devices(stats):
        devices.append(device)
        problems += found
    return IfllmDataset(devices=tuple(devices), problems=tuple(problems), stats=dict(stats))


def iter_devices(
    root: str | Path,
    workers: Sequence[str] | None = None,
    *,
    stats: Counter[str] | None = None,
) -> DeviceStream:
    """Load IFLLM one device at a time: ``(device, its problems)`` per worker, sorted by id.

    The same devices, problems and counters as :func:`load_ifllm` (which is built on it), but
    each device is built only when the iterator reaches it and nothing of it is kept afterwards,
    so peak memory is bounded by the largest device rather than the data set.  The two tables
    are read once, when this function is called: the errors :func:`load_ifllm` raises (missing
    root or table, bad header, unknown ``workers``) are raised here, before the first device.
    The problems of the tables themselves (and of a missing ``user_behavior`` folder) belong to
    no device: they are the returned stream's ``table_problems`` (``load_ifllm`` lists them
    first).  Pass a ``Counter`` as ``stats`` to receive the load counters (``samples_gaze``,
    ``samples_mouse``, ... as in :attr:`IfllmDataset.stats`) as devices are built.
    """
    loader = _Loader(root, workers)
    return DeviceStream(loader.devices(Counter() if stats is None else stats), loader.problems)


class DeviceStream(Iterator[tuple[Device, list[Problem]]]):
    """The iterator :func:`iter_devices` returns: ``(device, its problems)`` pairs, plus the
    ``table_problems`` found while reading the two tables (known before the first device)."""

    def __init__(
        self, devices: Iterator[tuple[Device, list[Problem]]], table_problems: Sequence[Problem]
    ) -> None:
        self._devices = devices
        self.table_problems: tuple[Problem, ...] = tuple(table_problems)

    def __iter__(self) -> DeviceStream:
        return self

    def __next__(self) -> tuple[Device, list[Problem]]:
        return next(self._devices)


def query_counts(root: str | Path) -> dict[str, int]:
    """Queries (pairwise and pointwise) per worker in the log, from the query table alone.

    With :func:`labelled_comparison_counts`, what planning a split of the workers needs: the
    cost of loading a device grows with its queries (pages of traces).
    """
    base = _check_root(root)
    return dict(sorted(Counter(q.user_id for q in _read_queries(base, _Sink(base))).items()))


class _Loader:
    """The tables of one root, read once, and the devices of the chosen workers on demand."""

    def __init__(self, root: str | Path, workers: Sequence[str] | None) -> None:
        base = _check_root(root)
        sink = _Sink(base)
        queries = _read_queries(base, sink)
        self.tasks = _read_tasks(base, sink)
        known = sorted({q.user_id for q in queries})
        chosen = known if workers is None else sorted(set(workers))
        unknown = [w for w in chosen if w not in set(known)]
        if unknown:
            raise KeyError(
                f"unknown worker(s) {unknown} (not in {table_path(base, QUERY_TABLE)}); "
                f"{len(known)} workers are known, e.g. {known[:3]}"
            )
        behavior = base / BEHAVIOR_DIR
        if not behavior.is_dir():
            sink.add(behavior, 0, "missing folder: no traces for any worker")
        self.base = base
        self.query_path = table_path(base, QUERY_TABLE)
        self.problems: list[Problem] = sink.problems
        self.workers = chosen
        self.rows: dict[str, list[_QueryRow]] = {w: [] for w in chosen}
        for q in queries:
            if q.user_id in self.rows:
                self.rows[q.user_id].append(q)

    def devices(self, stats: Counter[str]) -> Iterator[tuple[Device, list[Problem]]]:
        """Build each chosen worker's device in turn, adding to ``stats``."""
        for worker in self.workers:
            sink = _Sink(self.base)
            ctx = _Ctx(base=self.base, query_path=self.query_path, sink=sink, stats=stats)
            device = _load_device(ctx, worker, self.rows[worker], self.tasks)
            yield device, sink.problems
