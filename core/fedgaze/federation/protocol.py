"""The message contract between the fedgaze ServerApp and ClientApp (one place, both sides).

Train request:  ``arrays`` (global model), ``config`` (a :class:`RoundPlan`).
Train reply:    ``arrays`` (the device's new local model, when it trained), ``metrics``: the
                round it answers (``server-round``, checked against the round asked), the
                example count, the DP-SGD parameters of this round and the device's cumulative
                epsilon, plus the held-out evaluation of the *received* model; ``device``
                (ConfigRecord: ``device-id`` and ``status``); ``dp-record`` (ConfigRecord, when it
                trained: ``line``, the device's signed ``dp-round`` ledger record of this round).
Evaluate reply: ``metrics`` with the held-out evaluation only; ``device``.
Paused reply:   to either request, while the person has paused the device
                (:mod:`fedgaze.client.device.pause`): status ``paused``, ``metrics`` with the round
                and zero examples, no arrays, no ``dp-record``; nothing was read, trained or
                charged, and the server counts the device as not having trained.
Only model weights and these declared numbers ever leave a device. The training loss is
deliberately not among them: it is computed on private training rows without noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DEVICE = "device"
DP_RECORD = "dp-record"
DP_RECORD_LINE = "line"

SERVER_ROUND = "server-round"
NUM_EXAMPLES = "num-examples"
EVAL_EXAMPLES = "eval-examples"
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"
EVAL_ACCURACY_PERSONAL = "eval-accuracy-personal"
DP_EVENT_KEYS = ("noise-multiplier", "sample-rate", "steps")

STATUS_TRAINED = "trained"
STATUS_EXHAUSTED = "budget-exhausted"
STATUS_NO_DATA = "no-data"
STATUS_ALREADY_CHARGED = "round-already-charged"
STATUS_EVALUATED = "evaluated"
STATUS_PAUSED = "paused"


@dataclass(frozen=True)
class DeviceReport:
    """What one device said about one round, as parsed by the server."""

    node_id: int
    device_id: str
    status: str
    metrics: dict[str, float]
    dp_record: str | None = None

    @property
    def examples(self) -> int:
        """Examples the device trained or evaluated on this round."""
        return int(self.metrics.get(NUM_EXAMPLES, 0))


def reply_content(
    device_id: str,
    status: str,
    metrics: dict[str, float],
    arrays: Any | None = None,
    dp_record: str | None = None,
) -> RecordDict:
    """Build a reply RecordDict in the contract's shape (``dp_record``: a signed ledger line)."""
    content = RecordDict(
        {
            METRICS: MetricRecord(dict(metrics)),
            DEVICE: ConfigRecord({"device-id": device_id, "status": status}),
        }
    )
    if arrays is not None:
        content[ARRAYS] = arrays
    if dp_record is not None:
        content[DP_RECORD] = ConfigRecord({DP_RECORD_LINE: dp_record})
    return content


def parse_report(msg: Message) -> DeviceReport:
    """Parse a reply into a :class:`DeviceReport`; raises ValueError when it breaks the contract."""
    content = msg.content
    if METRICS not in content.metric_records or DEVICE not in content.config_records:
        raise ValueError("reply lacks metrics or device records")
    device = content.config_records[DEVICE]
    metrics = {k: float(v) for k, v in content.metric_records[METRICS].items()}  # type: ignore[arg-type]
    dp_record = None
    if DP_RECORD in content.config_records:
        line = content.config_records[DP_RECORD].get(DP_RECORD_LINE)
        if not isinstance(line, str):
            raise ValueError(f"{DP_RECORD} record lacks a string {DP_RECORD_LINE!r}")
        dp_record = line
    return DeviceReport(
        node_id=msg.metadata.src_node_id,
        device_id=str(device["device-id"]),
        status=str(device["status"]),
        metrics=metrics,
        dp_record=dp_record,
    )
