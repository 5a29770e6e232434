"""The message contract between the fedgaze ServerApp and ClientApp (one place, both sides).

Train request:  ``arrays`` (global model), ``config`` (a :class:`RoundPlan`).
Train reply:    ``arrays`` (the device's new local model, when it trained), ``metrics``: the
                example count, the DP-SGD parameters of this round and the device's cumulative
                epsilon, plus the held-out evaluation of the *received* model; ``device``
                (ConfigRecord: ``device-id`` and ``status``).
Evaluate reply: ``metrics`` with the held-out evaluation only; ``device``.
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


@dataclass(frozen=True)
class DeviceReport:
    """What one device said about one round, as parsed by the server."""

    node_id: int
    device_id: str
    status: str
    metrics: dict[str, float]

    @property
    def examples(self) -> int:
        """Examples the device trained or evaluated on this round."""
        return int(self.metrics.get(NUM_EXAMPLES, 0))


def reply_content(
    device_id: str, status: str, metrics: dict[str, float], arrays: Any | None = None
) -> RecordDict:
    """Build a reply RecordDict in the contract's shape."""
    content = RecordDict(
        {
            METRICS: MetricRecord(dict(metrics)),
            DEVICE: ConfigRecord({"device-id": device_id, "status": status}),
        }
    )
    if arrays is not None:
        content[ARRAYS] = arrays
    return content


def parse_report(msg: Message) -> DeviceReport:
    """Parse a reply into a :class:`DeviceReport`; raises ValueError when it breaks the contract."""
    content = msg.content
    if METRICS not in content.metric_records or DEVICE not in content.config_records:
        raise ValueError("reply lacks metrics or device records")
    device = content.config_records[DEVICE]
    metrics = {k: float(v) for k, v in content.metric_records[METRICS].items()}  # type: ignore[arg-type]
    return DeviceReport(
        node_id=msg.metadata.src_node_id,
        device_id=str(device["device-id"]),
        status=str(device["status"]),
        metrics=metrics,
    )
