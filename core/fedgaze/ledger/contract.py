"""What the ledgers hold, defined once for the devices that write them, the server and auditors.

Two kinds of ledger (:mod:`fedgaze.ledger.records` is their record format and storage):

- a device's ``ledger.jsonl`` signed with its ``device_key.pem``: one ``dp-round`` record per
  charge (:mod:`fedgaze.ledger.device` writes them), with exactly :data:`DP_ROUND_FIELDS`;
- the server's ``server_ledger.db`` signed with ``server_key.pem``: ``run-start``,
  ``run-resume`` and one ``server-round`` record per committed round
  (:mod:`fedgaze.server.ledger` writes them).

Nothing here imports an accountant or a training stack: the server, the auditor and the device
agent read these names without paying for them.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DEVICE_LEDGER_FILE = "ledger.jsonl"
DEVICE_KEY_FILE = "device_key.pem"
SERVER_LEDGER_FILE = "server_ledger.db"
SERVER_KEY_FILE = "server_key.pem"


class RecordKind(StrEnum):
    """The ``kind`` of every ledger record fedgaze writes."""

    DP_ROUND = "dp-round"
    """A device's charge for one ``(run_id, round)``: the DP-SGD parameters and its epsilon."""
    RUN_START = "run-start"
    """The server's record of a run's settings and software versions."""
    RUN_RESUME = "run-resume"
    """A restarted server continuing the run after its last committed round."""
    SERVER_ROUND = "server-round"
    """A committed round: accepted device records, refusals, failures, the aggregation."""


DP_ROUND_FIELDS = (
    "run_id",
    "round",
    "device",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "max_grad_norm",
    "delta",
    "accountant",
    "epsilon",
    "epsilon_budget",
    "versions",
    "time",
)
"""What a ``dp-round`` body holds; the secret noise seed and the data digests never among them."""

SECRET_FIELDS = ("noise_seed", "input_digest", "output_digest")
"""Privacy-state fields kept on the device only: a ledger record holding one is a leak."""


def device_ledger_path(device_dir: str | Path) -> Path:
    """The signed ledger of the device folder ``device_dir``."""
    return Path(device_dir) / DEVICE_LEDGER_FILE


def device_key_path(device_dir: str | Path) -> Path:
    """The Ed25519 key that signs the ledger of the device folder ``device_dir``."""
    return Path(device_dir) / DEVICE_KEY_FILE


@lru_cache(maxsize=1)
def software_versions() -> dict[str, str | None]:
    """Installed versions of the code that computed a charge (None when not installed)."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "fedgaze": version("fedgaze"),
        "opacus": version("opacus"),
        "torch": version("torch"),
        "dp_accounting": version("dp-accounting"),
    }
