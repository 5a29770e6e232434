"""The message contract between the fedgaze ServerApp and ClientApp (one place, both sides).

Train request:  ``arrays`` (global model), ``config`` (a :class:`~fedgaze.federation.settings.
                RoundPlan`); in a text model run whose devices infer labels,
                ``behaviour-arrays`` (the behaviour model they infer them with).
Train reply:    ``arrays`` (the device's new local model, when it trained), ``metrics``
                (:class:`ReplyMetrics`): the round it answers (``server-round``, checked against
                the round asked), the example count, the DP-SGD parameters of this round and the
                device's cumulative epsilon, plus the held-out evaluation of the *received* model;
                ``device`` (ConfigRecord: ``device-id`` and ``status``, a :class:`ReplyStatus`);
                ``dp-record`` (ConfigRecord, when it trained: ``line``, the device's signed
                ``dp-round`` ledger record of this round).
Evaluate reply: ``metrics`` with the held-out evaluation only; ``device``.
Labels request: ``arrays`` (the final global model), ``config`` (a :class:`~fedgaze.federation.
                settings.LabelPlan`); message type :data:`LABELS_MESSAGE_TYPE`.
Labels reply:   ``labels`` (ConfigRecord of parallel lists, :class:`LabelKey`: the service ids of
                each comparison, its noised bit and flip rate; nothing else about it),
                ``dp-record`` (the device's signed ``label-release`` record, which states the
                rows' digest), ``metrics`` (round, cumulative epsilon, delta), ``device``.
Paused reply:   to any request, while the person has paused the device
                (:mod:`fedgaze.client.device.pause`): status ``paused``, ``metrics`` with the
                round and zero examples, no arrays, no ``dp-record``; nothing was read, trained
                or charged, and the server counts the device as not having trained.
Only model weights and these declared numbers ever leave a device. The training loss is
deliberately not among them: it is computed on private training rows without noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues, MetricRecordValues
from pydantic import ValidationError

from fedgaze.labels.rows import ReleasedLabel

LABELS_ACTION = "labels"
"""The ClientApp's query action that releases preference labels."""
LABELS_MESSAGE_TYPE = f"query.{LABELS_ACTION}"
"""The Flower message type of a labels request."""


class Record(StrEnum):
    """The records of a message's content."""

    ARRAYS = "arrays"
    CONFIG = "config"
    METRICS = "metrics"
    DEVICE = "device"
    DP_RECORD = "dp-record"
    LABELS = "labels"
    BEHAVIOUR_ARRAYS = "behaviour-arrays"


class LabelKey(StrEnum):
    """The keys of a labels reply's ``labels`` record: parallel lists, one entry per row."""

    PROMPT_IDS = "prompt-ids"
    LEFT_IDS = "left-ids"
    RIGHT_IDS = "right-ids"
    RIGHT_PREFERRED = "right-preferred"
    FLIP_RATES = "flip-rates"


class DeviceKey(StrEnum):
    """The keys of a reply's ``device`` record."""

    DEVICE_ID = "device-id"
    STATUS = "status"


DP_RECORD_LINE = "line"
"""The key of the ``dp-record`` record: the signed ledger line."""


class Metric(StrEnum):
    """The keys of a reply's ``metrics`` record."""

    SERVER_ROUND = "server-round"
    NUM_EXAMPLES = "num-examples"
    EPSILON = "epsilon"
    DELTA = "delta"
    STEPS = "steps"
    SAMPLE_RATE = "sample-rate"
    NOISE_MULTIPLIER = "noise-multiplier"
    EVAL_EXAMPLES = "eval-examples"
    EVAL_LOSS = "eval-loss"
    EVAL_ACCURACY = "eval-accuracy"
    EVAL_ACCURACY_PERSONAL = "eval-accuracy-personal"


DP_EVENT_METRICS = (Metric.NOISE_MULTIPLIER, Metric.SAMPLE_RATE, Metric.STEPS)
"""The metrics that describe a round's DP-SGD charge (checked against its signed record)."""


class ReplyStatus(StrEnum):
    """What a device did with a message."""

    TRAINED = "trained"
    """Trained this round (or replayed an already charged round)."""
    BUDGET_EXHAUSTED = "budget-exhausted"
    """This round would exceed the device's budget; refused before training."""
    NO_DATA = "no-data"
    """No training comparisons on the device."""
    ROUND_ALREADY_CHARGED = "round-already-charged"
    """The same ``(run-key, round)`` was already charged with different inputs."""
    EVALUATED = "evaluated"
    """Reply to an evaluate message."""
    PAUSED = "paused"
    """The person paused the device: nothing was read, trained or charged."""
    RELEASED = "released"
    """Reply to a labels message: the device released its preference labels."""


def _present(*pairs: tuple[Metric, float | None]) -> dict[str, float]:
    """Metric record entries of ``pairs``, leaving out absent values."""
    return {metric.value: value for metric, value in pairs if value is not None}


@dataclass(frozen=True)
class HeldOut:
    """A device's held-out evaluation of the model it received (later comparisons, no noise).

    ``loss`` and ``accuracy`` are absent when the device holds no held-out comparison;
    ``accuracy_personal`` is with the device's personal head added.
    """

    examples: int
    loss: float | None = None
    accuracy: float | None = None
    accuracy_personal: float | None = None

    def metrics(self) -> dict[str, float]:
        """As reply metrics (absent values left out)."""
        return _present(
            (Metric.EVAL_EXAMPLES, self.examples),
            (Metric.EVAL_LOSS, self.loss),
            (Metric.EVAL_ACCURACY, self.accuracy),
            (Metric.EVAL_ACCURACY_PERSONAL, self.accuracy_personal),
        )


@dataclass(frozen=True)
class Charge:
    """The DP-SGD parameters a device trained this round with (its signed record says the same)."""

    steps: int
    sample_rate: float
    noise_multiplier: float

    def metrics(self) -> dict[str, float]:
        """As reply metrics."""
        return _present(
            (Metric.STEPS, self.steps),
            (Metric.SAMPLE_RATE, self.sample_rate),
            (Metric.NOISE_MULTIPLIER, self.noise_multiplier),
        )


@dataclass(frozen=True)
class ReplyMetrics:
    """Everything a device declares in a reply's ``metrics`` record.

    ``epsilon`` is the device's cumulative epsilon at ``delta`` (absent in evaluate and paused
    replies); ``charge`` is present when it trained.
    """

    server_round: int | None = None
    examples: int | None = None
    epsilon: float | None = None
    delta: float | None = None
    charge: Charge | None = None
    held_out: HeldOut | None = None

    def metrics(self) -> dict[str, float]:
        """The flat ``metrics`` record (absent values left out)."""
        out = _present(
            (Metric.SERVER_ROUND, self.server_round),
            (Metric.NUM_EXAMPLES, self.examples),
            (Metric.EPSILON, self.epsilon),
            (Metric.DELTA, self.delta),
        )
        if self.charge is not None:
            out.update(self.charge.metrics())
        if self.held_out is not None:
            out.update(self.held_out.metrics())
        return out


@dataclass(frozen=True)
class DeviceReport:
    """What one device said about one round, as parsed by the server.

    ``metrics`` is the raw record: a device controls everything in its reply, so the server reads
    each value through the accessors below (a missing value is None, never an error).
    """

    node_id: int
    device_id: str
    status: ReplyStatus
    metrics: Mapping[str, float]
    dp_record: str | None = None

    def get(self, metric: Metric) -> float | None:
        """The reply's value of ``metric`` (None when absent)."""
        return self.metrics.get(metric)

    @property
    def examples(self) -> int:
        """Examples the device trained on this round (0 when absent)."""
        return int(self.metrics.get(Metric.NUM_EXAMPLES, 0))

    @property
    def trained(self) -> bool:
        """True when the device says it trained on at least one example."""
        return self.status == ReplyStatus.TRAINED and self.examples > 0

    @property
    def eval_examples(self) -> int:
        """Held-out examples the received model was scored on (0 when absent)."""
        return int(self.metrics.get(Metric.EVAL_EXAMPLES, 0))


def reply_content(
    device_id: str,
    status: ReplyStatus,
    metrics: ReplyMetrics,
    arrays: ArrayRecord | None = None,
    dp_record: str | None = None,
) -> RecordDict:
    """Build a reply RecordDict in the contract's shape (``dp_record``: a signed ledger line;
    add a labels reply's rows with :func:`labels_record`)."""
    device: dict[str, ConfigRecordValues] = {
        DeviceKey.DEVICE_ID.value: device_id,
        DeviceKey.STATUS.value: status.value,
    }
    flat: dict[str, MetricRecordValues] = dict(metrics.metrics())
    content = RecordDict(
        {
            Record.METRICS.value: MetricRecord(flat),
            Record.DEVICE.value: ConfigRecord(device),
        }
    )
    if arrays is not None:
        content[Record.ARRAYS.value] = arrays
    if dp_record is not None:
        content[Record.DP_RECORD.value] = ConfigRecord({DP_RECORD_LINE: dp_record})
    return content


def parse_report(msg: Message) -> DeviceReport:
    """Parse a reply into a :class:`DeviceReport`; raises ValueError when it breaks the contract."""
    content = msg.content
    if Record.METRICS not in content.metric_records or Record.DEVICE not in content.config_records:
        raise ValueError("reply lacks metrics or device records")
    device = content.config_records[Record.DEVICE]
    metrics = {k: float(v) for k, v in content.metric_records[Record.METRICS].items()}  # type: ignore[arg-type]
    dp_record = None
    if Record.DP_RECORD in content.config_records:
        line = content.config_records[Record.DP_RECORD].get(DP_RECORD_LINE)
        if not isinstance(line, str):
            raise ValueError(f"{Record.DP_RECORD} record lacks a string {DP_RECORD_LINE!r}")
        dp_record = line
    try:
        status = ReplyStatus(str(device[DeviceKey.STATUS]))
    except ValueError:
        raise ValueError(f"unknown status {device[DeviceKey.STATUS]!r}") from None
    return DeviceReport(
        node_id=msg.metadata.src_node_id,
        device_id=str(device[DeviceKey.DEVICE_ID]),
        status=status,
        metrics=metrics,
        dp_record=dp_record,
    )


def labels_record(rows: tuple[ReleasedLabel, ...]) -> ConfigRecord:
    """The ``labels`` record of a labels reply."""
    return ConfigRecord(
        {
            LabelKey.PROMPT_IDS.value: [r.prompt_id for r in rows],
            LabelKey.LEFT_IDS.value: [r.left_id for r in rows],
            LabelKey.RIGHT_IDS.value: [r.right_id for r in rows],
            LabelKey.RIGHT_PREFERRED.value: [r.right_preferred for r in rows],
            LabelKey.FLIP_RATES.value: [r.flip_rate for r in rows],
        }
    )


def parse_label_rows(content: RecordDict) -> tuple[ReleasedLabel, ...]:
    """The rows of a labels reply's content; ValueError naming the key or row when it breaks
    the contract."""
    record = content.config_records.get(Record.LABELS)
    if record is None:
        raise ValueError(f"labels reply lacks its {Record.LABELS.value!r} record")
    columns = {}
    for key in LabelKey:
        value = record.get(key)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ValueError(f"labels record {key.value!r} is not a list")
        columns[key] = value
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"labels record lists differ in length: {sorted(lengths)}")
    rows: list[ReleasedLabel] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, values in enumerate(zip(*columns.values(), strict=True)):
        prompt, left, right, bit, rate = values
        try:
            rows.append(
                ReleasedLabel(
                    prompt_id=prompt,
                    left_id=left,
                    right_id=right,
                    right_preferred=bit,
                    flip_rate=rate,
                )
            )
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"labels row {i}: {first['loc'][0]}: {first['msg']}") from None
        comparison = rows[-1].key
        if comparison in seen:
            raise ValueError(
                f"labels row {i}: comparison {list(comparison)} repeats row {seen[comparison]}"
            )
        seen[comparison] = i
    return tuple(rows)
