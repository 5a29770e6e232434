"""Where everything of an enrolled device lives inside its device folder (one place for all).

Enrollment creates the folder, the agent and the ClientApp fill it, ``client status`` reads it
and ``client forget`` erases it. Names that other modules already own (the store key, the
ledger and its signing key, the pause marker) are taken from those modules, not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedgaze.client.device.pause import pause_path
from fedgaze.client.device.store_crypto import KEY_FILE
from fedgaze.ledger.contract import device_key_path, device_ledger_path

STORE_DIR = "store"
AUTH_KEY_FILE = "supernode_auth.key"
AUTH_PUBLIC_FILE = "supernode_auth.pub"
CA_FILE = "ca.pem"
LAST_MODEL_DIR = "last_model"
LOG_DIR = "logs"
STATE_FILE = "agent_state.json"
LOCK_FILE = "agent.lock"
FLWR_HOME_DIR = "flwr_home"
CAPTURE_READY_FILE = "capture_ready.json"
PRIVACY_STATE_FILE = "privacy_state.json"
PERSONAL_HEAD_FILE = "personal_head.json"
TRAINER_DIR = "trainer"


@dataclass(frozen=True)
class DeviceLayout:
    """The files and folders of the device folder ``root``."""

    root: Path

    @property
    def store(self) -> Path:
        """The encrypted device store (:mod:`fedgaze.client.device.store`)."""
        return self.root / STORE_DIR

    @property
    def store_key(self) -> Path:
        """The store's AES-256-GCM key (outside the store folder, mode 0600)."""
        return self.root / KEY_FILE

    @property
    def auth_key(self) -> Path:
        """The SuperNode authentication private key (OpenSSH EC, mode 0600)."""
        return self.root / AUTH_KEY_FILE

    @property
    def auth_public(self) -> Path:
        """The SuperNode authentication public key the operator registers."""
        return self.root / AUTH_PUBLIC_FILE

    @property
    def ca(self) -> Path:
        """The federation's CA certificate that the SuperLink's TLS certificate must chain to."""
        return self.root / CA_FILE

    @property
    def ledger_key(self) -> Path:
        """The Ed25519 key that signs the device's privacy ledger."""
        return device_key_path(self.root)

    @property
    def ledger(self) -> Path:
        """The signed, hash-chained privacy ledger."""
        return device_ledger_path(self.root)

    @property
    def privacy_state(self) -> Path:
        """The device's accountant history (:mod:`fedgaze.privacy.state`), with the secret
        noise seeds that let a retried round be replayed exactly."""
        return self.root / PRIVACY_STATE_FILE

    @property
    def personal_head(self) -> Path:
        """The device's personal head (:mod:`fedgaze.model.personal`); never sent anywhere."""
        return self.root / PERSONAL_HEAD_FILE

    @property
    def last_model(self) -> Path:
        """The last global model the device received (a model directory)."""
        return self.root / LAST_MODEL_DIR

    @property
    def logs(self) -> Path:
        """The agent's and its children's logs."""
        return self.root / LOG_DIR

    @property
    def state(self) -> Path:
        """The running agent's state file (pid, children, restarts)."""
        return self.root / STATE_FILE

    @property
    def lock(self) -> Path:
        """Held (``flock``) by the one agent running for this device."""
        return self.root / LOCK_FILE

    @property
    def flwr_home(self) -> Path:
        """``FLWR_HOME`` of the device's SuperNode (the Flower apps it received)."""
        return self.root / FLWR_HOME_DIR

    @property
    def capture_ready(self) -> Path:
        """Written by the running capture service: its URL, port, pid and token (0600)."""
        return self.root / CAPTURE_READY_FILE

    @property
    def trainer(self) -> Path:
        """The warm trainer's private folder: its socket and key while it runs."""
        return self.root / TRAINER_DIR

    @property
    def paused(self) -> Path:
        """The pause marker (:mod:`fedgaze.client.device.pause`)."""
        return pause_path(self.root)

    def secrets(self) -> tuple[Path, ...]:
        """Every key file, store key first: erasing the store key makes the store unreadable."""
        return (self.store_key, self.auth_key, self.ledger_key)
