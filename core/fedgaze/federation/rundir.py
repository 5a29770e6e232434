"""Where everything of a run lives inside its run directory (one place for all).

The ServerApp writes the progress, the result, checkpoints, the final model and the server
ledger; the process that starts the server (``fedgaze server start`` or the local launcher)
writes the logs, the Flower app and CLI home, certificates and the process record;
``fedgaze demo`` writes the summary and, on one machine, the devices' folders. ``fedgaze server
status``, ``fedgaze audit`` and the launcher read them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedgaze.ledger.contract import SERVER_KEY_FILE, SERVER_LEDGER_FILE


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of the run directory ``root``."""

    root: Path

    @property
    def progress(self) -> Path:
        """One fsynced JSON line per ServerApp event (:mod:`fedgaze.federation.events`)."""
        return self.root / "progress.jsonl"

    @property
    def result(self) -> Path:
        """The ServerApp's result record (:class:`fedgaze.federation.results.ServerResult`)."""
        return self.root / "server_result.json"

    @property
    def summary(self) -> Path:
        """``fedgaze demo``'s summary of the whole run."""
        return self.root / "summary.json"

    @property
    def model(self) -> Path:
        """The final global model (a model directory)."""
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        """Every round's committed model and progress."""
        return self.root / "checkpoints"

    def checkpoint(self, rnd: int) -> Path:
        """The model after round ``rnd`` (0: the initial model)."""
        return self.checkpoints / f"round_{rnd:03d}"

    @property
    def server_ledger(self) -> Path:
        """The server's signed ledger."""
        return self.root / SERVER_LEDGER_FILE

    @property
    def labels(self) -> Path:
        """The accepted preference-label releases (:mod:`fedgaze.labels.store`)."""
        return self.root / "labels.db"

    @property
    def canary_audit(self) -> Path:
        """The last empirical privacy audit recorded for the run (``audit canary --run-dir``)."""
        return self.root / "canary_audit.json"

    @property
    def served_log(self) -> Path:
        """A demo's log of the prompts and answers it served (``fedgaze alignment export``)."""
        return self.root / "served.jsonl"

    @property
    def server_key(self) -> Path:
        """The Ed25519 key that signs the server ledger (mode 0600)."""
        return self.root / SERVER_KEY_FILE

    @property
    def devices(self) -> Path:
        """The devices' folders of a local run, one per device id."""
        return self.root / "devices"

    @property
    def logs(self) -> Path:
        """The logs of every process the run started."""
        return self.root / "logs"

    @property
    def flwr_home(self) -> Path:
        """``FLWR_HOME`` of the server's Flower processes and CLI."""
        return self.root / "flwr_home"

    @property
    def flower_app(self) -> Path:
        """The generated Flower app that ``flwr run`` submits."""
        return self.root / "flower_app"

    @property
    def certs(self) -> Path:
        """A local run's fresh CA, SuperLink certificate and device keys."""
        return self.root / "certs"

    @property
    def superlink_db(self) -> Path:
        """The SuperLink's state (registered devices, runs, messages)."""
        return self.root / "superlink.db"

    @property
    def processes(self) -> Path:
        """Pids of a running server, removed on a clean stop."""
        return self.root / "server_processes.json"
