"""Secure aggregation (SecAgg+): the contract between the server's rounds and a device's reply.

With secure aggregation on, a train round runs Flower's SecAgg+ protocol (its
``SecAggPlusWorkflow`` on the server, its ``secaggplus_mod`` on the device; no cryptography is
written here). Every stage is a ``train`` message; the device trains in the third one
(``collect_masked_vectors``) exactly as in a plain round, and its reply is then reshaped by
:func:`secure_reply` into what Flower's mod masks and sends:

- the **update**: the trained weights minus the global model the message carried, one array per
  layer in the global model's order (only this is masked; the server learns only the sum);
- the **weight** ``n``: the examples the device trained on (0 when it did not train), which
  the mod scales the update by (``n / max_weight``) before quantizing, so the unmasked sum
  divided by the sum of weights is FedAvg of the updates;
- everything else of the reply (device id, status, metrics, the signed ``dp-record``) as in a
  plain round: it is metadata, sent in the clear, admitted by the server as before.

Quantization (Flower's): each coordinate of ``(n / max_weight) * update`` is clipped to
``[-clipping_range, clipping_range]`` on the device, then stochastically rounded to one of
``quantization_range`` levels, so each device adds less than one level,
``2 * clipping_range / quantization_range``, of error to the weighted sum per coordinate
(:meth:`SecureAggregation.mean_error` bounds the error of the mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from pydantic import BaseModel, ConfigDict, Field

from fedgaze.federation.arrays import from_array_record
from fedgaze.federation.protocol import DeviceKey, Metric, Record, ReplyStatus

STAGE_CONFIGS = RECORD_KEY_CONFIGS
"""The record Flower's SecAgg+ workflow adds to each of its messages."""
FITRES_ARRAYS = "fitres.parameters"
FITRES_EXAMPLES = "fitres.num_examples"
FITRES_METRICS = "fitres.metrics"
FITRES_STATUS = "fitres.status"
"""The reply records Flower's mod reads (its legacy ``FitRes`` layout)."""


class SecureAggregation(BaseModel):
    """SecAgg+ parameters of a run (the ``[secure_aggregation]`` section of server.toml).

    - ``threshold`` t: the sum is recovered only while at least t of a round's devices are
      still in the protocol; fewer than t devices (or a coalition of fewer than t with the
      server) learn nothing about one device's update. A round needs more than t devices.
    - ``clipping_range``, ``quantization_range``, ``modulus_range``: Flower's quantization
      (see the module's docstring) and the ring the masked vectors live in.
    - ``max_weight``: a device's weight is ``examples / max_weight``, capped at 1 by Flower (a
      device with more examples counts as ``max_weight``). The defaults fit devices of up to
      256 comparisons whose update moves no weight by more than 1: the quantization error of
      the mean is then about ``k * level / W`` (``W`` the sum of weights), e.g. 1.4e-5 per
      coordinate for the demo's four devices of 35 comparisons in all.
    - ``timeout``: seconds each of the four stages waits for replies; a device that has not
      replied by then counts as dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: int = Field(ge=2)
    clipping_range: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    quantization_range: int = Field(default=2**22, ge=2)
    modulus_range: int = Field(default=2**32, ge=2)
    max_weight: float = Field(default=256.0, gt=0, allow_inf_nan=False)
    timeout: float = Field(default=120.0, gt=0, allow_inf_nan=False)

    def level(self) -> float:
        """One quantization level, ``2 * clipping_range / quantization_range``: stochastic
        rounding adds less than this to each coordinate of a device's weighted update."""
        return 2 * self.clipping_range / self.quantization_range

    def mean_error(self, examples: Sequence[int], largest: float) -> float:
        """A bound on each coordinate's error of the unmasked mean of updates of at most
        ``largest`` in absolute value from devices with these ``examples`` counts (none
        clipped, i.e. ``largest * n / max_weight <= clipping_range``), against exact FedAvg.

        Flower quantizes each weight ``r = n / max_weight`` to ``a = round(r Q) / Q`` (Q the
        quantization range, so ``|a - r| <= 1 / 2Q``) and divides the sum by ``W = sum(a)``
        exactly. Per coordinate, k devices' rounding adds less than ``k * level / W``, and
        weighting by ``a`` instead of ``r`` moves the mean by at most ``largest * k / (Q W)``.
        """
        q = self.quantization_range
        total = sum(round(min(n / self.max_weight, 1.0) * q) / q for n in examples)
        if total <= 0:
            return math.inf
        k = len(examples)
        return k * self.level() / total + largest * k / (q * total)


def is_stage(msg: Message) -> bool:
    """True for a message of Flower's SecAgg+ protocol (each of its four stages carries its
    configs record)."""
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and msg.has_content()
        and STAGE_CONFIGS in msg.content.config_records
    )


def secure_reply(reply: RecordDict, sent: ArrayRecord) -> RecordDict:
    """The reply of a device that trained in SecAgg+'s ``collect_masked_vectors`` stage, in the
    layout Flower's mod masks: the update (trained weights minus ``sent``, the global model the
    message carried) and its weight; the plain reply's other records kept. A reply that did not
    train sends a zero update of weight 0, so the device still takes part in the masking."""
    out = RecordDict()
    for name, record in reply.items():
        if name != Record.ARRAYS:
            out[name] = record
    reference = from_array_record(sent)
    status = reply.config_records[Record.DEVICE][DeviceKey.STATUS]
    trained = reply.array_records.get(Record.ARRAYS)
    examples = int(reply.metric_records[Record.METRICS].get(Metric.NUM_EXAMPLES, 0))  # type: ignore[arg-type]
    if status != ReplyStatus.TRAINED or trained is None or examples <= 0:
        update = {k: np.zeros_like(v) for k, v in reference.items()}
        examples = 0
    else:
        weights = from_array_record(trained)
        update = {k: weights[k].astype(np.float64) - v for k, v in reference.items()}
    out.array_records[FITRES_ARRAYS] = ArrayRecord({k: Array(v) for k, v in update.items()})
    out.metric_records[FITRES_EXAMPLES] = MetricRecord({"num_examples": examples})
    out.config_records[FITRES_METRICS] = ConfigRecord({})
    out.config_records[FITRES_STATUS] = ConfigRecord({"code": 0, "message": "trained"})
    return out
