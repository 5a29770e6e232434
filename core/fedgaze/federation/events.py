"""The ServerApp's progress events: typed records, one JSON line each in ``progress.jsonl``.

The ServerApp appends one fsynced line per event (:mod:`fedgaze.server.progress`); the process
that started it follows the file (:mod:`fedgaze.server.submit`) and shows progress, and
``fedgaze server status`` reads it after the fact. A line is ``{"event": KIND, "time": EPOCH_S,
...}`` with the event's fields (an evaluation's or a round log's fields inline).
"""

from __future__ import annotations

import time as clock
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fedgaze.federation.results import Evaluation, JsonDict, RoundLog


class EventKind(StrEnum):
    """What happened."""

    WAITING = "waiting"
    STARTED = "started"
    EVALUATION = "evaluation"
    ROUND = "round"
    LABELS = "labels"
    DONE = "done"
    FAILED = "failed"


def _now() -> float:
    return clock.time()


@dataclass(frozen=True)
class Waiting:
    """The ServerApp waits for ``min_nodes`` devices to connect."""

    min_nodes: int
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Started:
    """``nodes`` devices connected; ``rounds`` will run (``resumed_after``: a resumed run's last
    committed round)."""

    nodes: int
    rounds: int
    resumed_after: int | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Evaluated:
    """The devices' held-out evaluation of a model."""

    evaluation: Evaluation
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class DeviceEpsilon:
    """A device's cumulative epsilon and status after a round, as the server saw them."""

    device_id: str
    epsilon: float
    status: str


@dataclass(frozen=True)
class RoundDone:
    """A committed round, with every device's epsilon so far."""

    log: RoundLog
    devices: tuple[DeviceEpsilon, ...] = ()
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Labelled:
    """The labels round is committed: ``released_devices`` released labels the server
    accepted, ``stored`` new rows went into the label store (``already`` were stored before)."""

    released_devices: int
    stored: int
    already: int
    refused: int
    failures: int
    devices: tuple[DeviceEpsilon, ...] = ()
    """Every device's epsilon after its release, as the server saw it."""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Done:
    """The run finished: the final model and result are written."""

    rounds_completed: int
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Failed:
    """The ServerApp stopped with ``error``."""

    error: str
    time: float = field(default_factory=_now)


ProgressEvent = Waiting | Started | Evaluated | RoundDone | Labelled | Done | Failed


def _device_list(devices: tuple[DeviceEpsilon, ...]) -> list[JsonDict]:
    return [{"device_id": d.device_id, "epsilon": d.epsilon, "status": d.status} for d in devices]


def _parse_devices(data: Mapping[str, Any]) -> tuple[DeviceEpsilon, ...]:
    return tuple(
        DeviceEpsilon(str(d["device_id"]), float(d["epsilon"]), str(d["status"]))
        for d in data.get("devices") or ()
    )


def event_json(event: ProgressEvent) -> JsonDict:
    """The progress-file line of ``event``."""
    if isinstance(event, Waiting):
        return {"event": EventKind.WAITING, "time": event.time, "min_nodes": event.min_nodes}
    if isinstance(event, Started):
        return {
            "event": EventKind.STARTED,
            "time": event.time,
            "nodes": event.nodes,
            "rounds": event.rounds,
            "resumed_after": event.resumed_after,
        }
    if isinstance(event, Evaluated):
        return {"event": EventKind.EVALUATION, "time": event.time, **event.evaluation.to_json()}
    if isinstance(event, RoundDone):
        return {
            "event": EventKind.ROUND,
            "time": event.time,
            **event.log.to_json(),
            "devices": _device_list(event.devices),
        }
    if isinstance(event, Labelled):
        return {
            "event": EventKind.LABELS,
            "time": event.time,
            "released_devices": event.released_devices,
            "stored": event.stored,
            "already": event.already,
            "refused": event.refused,
            "failures": event.failures,
            "devices": _device_list(event.devices),
        }
    if isinstance(event, Done):
        return {
            "event": EventKind.DONE,
            "time": event.time,
            "rounds_completed": event.rounds_completed,
        }
    return {"event": EventKind.FAILED, "time": event.time, "error": event.error}


def parse_event(data: Mapping[str, Any]) -> ProgressEvent:
    """The event of a progress-file line; ValueError for a line that is no known event.

    Lenient where a reader can be: a count a line leaves out is 0 (lines written by another
    fedgaze version stay readable); a round or evaluation must name its round.
    """
    try:
        kind = EventKind(str(data.get("event")))
        at = float(data.get("time", 0.0))
        if kind == EventKind.WAITING:
            return Waiting(int(data.get("min_nodes", 0)), at)
        if kind == EventKind.STARTED:
            after = data.get("resumed_after")
            nodes = int(data.get("nodes", 0))
            return Started(nodes, int(data["rounds"]), None if after is None else int(after), at)
        if kind == EventKind.EVALUATION:
            return Evaluated(Evaluation.from_json(data), at)
        if kind == EventKind.ROUND:
            return RoundDone(RoundLog.from_json(data), _parse_devices(data), at)
        if kind == EventKind.LABELS:
            n = [int(data.get(k, 0)) for k in ("released_devices", "stored", "already", "refused")]
            failures = int(data.get("failures", 0))
            return Labelled(n[0], n[1], n[2], n[3], failures, _parse_devices(data), at)
        if kind == EventKind.DONE:
            return Done(int(data.get("rounds_completed", 0)), at)
        return Failed(str(data.get("error")), at)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"not a progress event ({type(err).__name__}: {err}): {dict(data)}"
        ) from None
