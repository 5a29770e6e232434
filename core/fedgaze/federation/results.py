"""What a run produced, as typed records: evaluations, the round log, the server's view of every
device, and the ServerApp's result (``server_result.json``).

The ServerApp builds them, its progress events carry them (:mod:`fedgaze.federation.events`),
its checkpoints store them, and the launcher, ``fedgaze demo`` and ``fedgaze server status``
read them back. ``to_json`` gives the file format; ``from_json`` reads it (a key a record does not
know is ignored, a missing optional one takes its default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedgaze.federation.protocol import DP_EVENT_METRICS

JsonDict = dict[str, Any]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Evaluation:
    """The example-weighted held-out evaluation of the model after ``round`` on the devices.

    ``accuracy``, ``accuracy_personal`` (with each device's personal head) and ``loss`` are None
    when no device scored it; ``failures`` is set on the final evaluation only.
    """

    round: int
    accuracy: float | None
    accuracy_personal: float | None
    loss: float | None
    eval_examples: int
    eval_devices: int
    failures: tuple[str, ...] | None = None

    def to_json(self) -> JsonDict:
        data = asdict(self)
        if self.failures is None:
            del data["failures"]
        else:
            data["failures"] = list(self.failures)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        failures = data.get("failures")
        return cls(
            round=int(data["round"]),
            accuracy=_opt_float(data.get("accuracy")),
            accuracy_personal=_opt_float(data.get("accuracy_personal")),
            loss=_opt_float(data.get("loss")),
            eval_examples=int(data.get("eval_examples", 0)),
            eval_devices=int(data.get("eval_devices", 0)),
            failures=None if failures is None else tuple(str(f) for f in failures),
        )


@dataclass(frozen=True)
class RefusedUpdate:
    """An update the server did not aggregate; ``device`` is the signer's pseudonym, when its
    record's signature held."""

    device_id: str
    device: str | None
    reason: str

    def to_json(self) -> JsonDict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefusedUpdate:
        device = data.get("device")
        return cls(
            str(data.get("device_id")),
            None if device is None else str(device),
            str(data.get("reason")),
        )


@dataclass(frozen=True)
class RoundLog:
    """One round as the server saw it: updates aggregated, replies, failures and refusals."""

    round: int
    train_devices: int
    train_examples: int
    replies: int
    failures: tuple[str, ...] = ()
    refused: tuple[RefusedUpdate, ...] = ()
    seconds: float = 0.0
    sampled: int | None = None
    """Devices sent the round's train message (client sampling; None in records before it)."""

    def to_json(self) -> JsonDict:
        return {
            "round": self.round,
            "sampled": self.sampled,
            "train_devices": self.train_devices,
            "train_examples": self.train_examples,
            "replies": self.replies,
            "failures": list(self.failures),
            "refused": [r.to_json() for r in self.refused],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundLog:
        return cls(
            round=int(data["round"]),
            train_devices=int(data.get("train_devices", 0)),
            train_examples=int(data.get("train_examples", 0)),
            replies=int(data.get("replies", 0)),
            failures=tuple(str(f) for f in data.get("failures") or ()),
            refused=tuple(RefusedUpdate.from_json(r) for r in data.get("refused") or ()),
            seconds=float(data.get("seconds", 0.0)),
            sampled=None if data.get("sampled") is None else int(data["sampled"]),
        )


@dataclass(frozen=True)
class ChargeSeen:
    """The DP-SGD parameters a device declared for a round it trained (as it sent them: a
    hostile reply may leave any out)."""

    round: int
    values: tuple[tuple[str, float], ...] = ()
    """``(metric, value)`` pairs among :data:`fedgaze.federation.protocol.DP_EVENT_METRICS`."""

    @classmethod
    def of(cls, rnd: int, metrics: Mapping[str, float]) -> ChargeSeen:
        return cls(rnd, tuple((str(k), metrics[k]) for k in DP_EVENT_METRICS if k in metrics))

    def to_json(self) -> JsonDict:
        return {"round": self.round, **dict(self.values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChargeSeen:
        return cls.of(int(data["round"]), {k: float(v) for k, v in data.items() if k != "round"})


@dataclass(frozen=True)
class DeviceView:
    """What the server has learned about one device's privacy spending (from its replies).

    ``status`` is the device's last :class:`~fedgaze.federation.protocol.ReplyStatus`, or
    ``refused`` when the server refused its update, or ``unknown`` before it replied.
    """

    device_id: str
    epsilon: float = 0.0
    delta: float = 0.0
    examples: int = 0
    rounds_participated: int = 0
    status: str = "unknown"
    events: tuple[ChargeSeen, ...] = ()

    def to_json(self) -> JsonDict:
        return {**asdict(self), "events": [e.to_json() for e in self.events]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceView:
        return cls(
            device_id=str(data["device_id"]),
            epsilon=float(data.get("epsilon", 0.0)),
            delta=float(data.get("delta", 0.0)),
            examples=int(data.get("examples", 0)),
            rounds_participated=int(data.get("rounds_participated", 0)),
            status=str(data.get("status", "unknown")),
            events=tuple(ChargeSeen.from_json(e) for e in data.get("events") or ()),
        )


@dataclass(frozen=True)
class ServerResult:
    """The ServerApp's record of a finished run (``server_result.json``)."""

    run_key: str
    rounds: int
    rounds_completed: int
    nodes: int
    ledger: str
    rounds_log: tuple[RoundLog, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    devices: tuple[DeviceView, ...] = ()

    def to_json(self) -> JsonDict:
        return {
            "run_key": self.run_key,
            "rounds": self.rounds,
            "rounds_completed": self.rounds_completed,
            "nodes": self.nodes,
            "ledger": self.ledger,
            "rounds_log": [r.to_json() for r in self.rounds_log],
            "evaluations": [e.to_json() for e in self.evaluations],
            "devices": [d.to_json() for d in self.devices],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerResult:
        return cls(
            run_key=str(data["run_key"]),
            rounds=int(data["rounds"]),
            rounds_completed=int(data["rounds_completed"]),
            nodes=int(data["nodes"]),
            ledger=str(data["ledger"]),
            rounds_log=tuple(RoundLog.from_json(r) for r in data.get("rounds_log") or ()),
            evaluations=tuple(Evaluation.from_json(e) for e in data.get("evaluations") or ()),
            devices=tuple(DeviceView.from_json(d) for d in data.get("devices") or ()),
        )

    def device(self, device_id: str) -> DeviceView | None:
        """The server's view of ``device_id`` (None: it never replied)."""
        return next((d for d in self.devices if d.device_id == device_id), None)
