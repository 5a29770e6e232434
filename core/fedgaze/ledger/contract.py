"""What the ledgers hold, defined once for the devices that write them, the server and auditors.

Two kinds of ledger (:mod:`fedgaze.ledger.records` is their record format and storage):

- a device's ``ledger.jsonl`` signed with its ``device_key.pem``: one ``dp-round`` record per
  charge, with exactly :data:`DP_ROUND_FIELDS`, and one ``label-release`` record per labels
  message it answered, with exactly :data:`LABEL_RELEASE_FIELDS` (:mod:`fedgaze.ledger.device`
  writes them);
- the server's ``server_ledger.db`` signed with ``server_key.pem``: ``run-start``,
  ``run-resume``, one ``server-round`` record per committed round and one ``labels-round``
  record per labels round (:mod:`fedgaze.server.ledger` writes them).

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
    LABEL_RELEASE = "label-release"
    """A device's randomized-response release of preference labels for one ``(run_id, round)``."""
    LABELS_ROUND = "labels-round"
    """The server's labels round: the accepted ``label-release`` records, refusals, failures."""


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

LABEL_RELEASE_FIELDS = (
    "run_id",
    "round",
    "device",
    "epsilon_label",
    "flip_rate",
    "source",
    "released",
    "resent",
    "rows",
    "rows_sha256",
    "after_charges",
    "delta",
    "accountant",
    "epsilon",
    "epsilon_budget",
    "versions",
    "time",
)
"""What a ``label-release`` body holds: ``released`` comparisons charged now, ``resent`` ones
released earlier and sent again (free), ``rows`` = both, whose canonical digest is
``rows_sha256``; ``epsilon`` is the device's cumulative epsilon with this release."""

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
