"""The local channel between a message's ClientApp process and the device's warm trainer.

Flower 1.39 runs every message in a fresh ``flwr-clientapp`` process; loading torch and Opacus
there costs seconds of CPU per message. A warm trainer (:mod:`fedgaze.client.trainer_service`)
is a long-lived process of the device's own user with that stack loaded: the ClientApp process
hands it the message's content and gets the reply's content back.

The trainer lives in a private folder (mode 0700) that holds its Unix socket and its key (a
fresh random 32 bytes per trainer start, file mode 0600). Both ends prove they hold the key
(``multiprocessing.connection``'s mutual HMAC challenge) before any byte of a message moves.
A request is two frames: a JSON header (protocol version, message type, the node config) and
the content as Flower's RecordDict protobuf; a reply is a JSON header (``ok`` or the error) and,
when ok, the reply content. Nothing is pickled. (Flower's serializers load on first use: the
agent imports this module for its folder names only.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.app import RecordDict

PROTOCOL = 1
SERVICE_MODULE = "fedgaze.client.trainer_service"
"""The trainer's module, run as ``python -m SERVICE_MODULE --folder DIR --device-dir D ...``."""
SOCKET = "trainer.sock"
KEY = "trainer.key"
KEY_BYTES = 32
REPLY_TIMEOUT = 900.0
"""Seconds a ClientApp waits for the trainer's reply (it answers one message at a time)."""
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class TrainerUnavailable(RuntimeError):
    """No trainer answers at the folder (not started, stopped, or a stale socket)."""


class TrainerFailed(RuntimeError):
    """The trainer took the message and could not answer it (the reason is its error)."""


@dataclass(frozen=True)
class TrainerFolder:
    """Where a warm trainer listens: ``<folder>/trainer.sock``, with ``<folder>/trainer.key``."""

    folder: Path

    @property
    def socket(self) -> Path:
        return self.folder / SOCKET

    @property
    def key(self) -> Path:
        return self.folder / KEY

    def fits(self) -> bool:
        """Whether the socket path is short enough for a Unix socket."""
        return len(str(self.socket).encode()) <= MAX_SOCKET_PATH

    def check(self) -> None:
        """Raise ``ValueError`` when the socket path is too long for a Unix socket."""
        if not self.fits():
            raise ValueError(
                f"trainer folder {self.folder}: the socket path is longer than "
                f"{MAX_SOCKET_PATH} bytes; choose a shorter folder"
            )


def encode_request(
    message_type: str, node_config: Mapping[str, Any], content: RecordDict
) -> list[bytes]:
    from flwr.common.serde import recorddict_to_proto

    header = {"protocol": PROTOCOL, "message_type": message_type, "node_config": dict(node_config)}
    return [json.dumps(header).encode(), recorddict_to_proto(content).SerializeToString()]


def decode_request(header: bytes, body: bytes) -> tuple[str, dict[str, Any], RecordDict]:
    """The message type, node config and content of a request; ``ValueError`` if malformed."""
    fields = json.loads(header)
    if not isinstance(fields, dict) or fields.get("protocol") != PROTOCOL:
        raise ValueError(f"trainer request: protocol {PROTOCOL} expected")
    message_type, node_config = fields.get("message_type"), fields.get("node_config")
    if not isinstance(message_type, str) or not isinstance(node_config, dict):
        raise ValueError("trainer request: message_type and node_config are required")
    return message_type, node_config, decode_content(body)


def decode_content(body: bytes) -> RecordDict:
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    proto = ProtoRecordDict()
    proto.ParseFromString(body)
    return recorddict_from_proto(proto)


def encode_reply(content: RecordDict) -> list[bytes]:
    from flwr.common.serde import recorddict_to_proto

    return [json.dumps({"ok": True}).encode(), recorddict_to_proto(content).SerializeToString()]


def encode_error(reason: str) -> list[bytes]:
    return [json.dumps({"ok": False, "error": reason}).encode()]


def _connect(where: TrainerFolder) -> Connection:
    try:
        key = where.key.read_bytes()
    except FileNotFoundError as err:
        raise TrainerUnavailable(f"no trainer key at {where.key}") from err
    if not where.socket.exists():
        raise TrainerUnavailable(f"no trainer socket at {where.socket}")
    try:
        return Client(str(where.socket), family="AF_UNIX", authkey=key)
    except (ConnectionRefusedError, FileNotFoundError) as err:
        raise TrainerUnavailable(f"no trainer answers at {where.socket}: {err}") from err


def call_trainer(
    where: TrainerFolder,
    message_type: str,
    node_config: Mapping[str, Any],
    content: RecordDict,
    timeout: float = REPLY_TIMEOUT,
) -> RecordDict:
    """Have the trainer at ``where`` answer one message; the reply's content.

    Raises :class:`TrainerUnavailable` when nobody listens (the caller may answer the message
    itself) and :class:`TrainerFailed` when the trainer took it and failed, or went away.
    """
    with _connect(where) as conn:
        try:
            for frame in encode_request(message_type, node_config, content):
                conn.send_bytes(frame)
            if not conn.poll(timeout):
                raise TrainerFailed(f"the trainer did not answer within {timeout:.0f} s")
            header = json.loads(conn.recv_bytes())
            if not header.get("ok"):
                raise TrainerFailed(str(header.get("error", "unknown error")))
            return decode_content(conn.recv_bytes())
        except (EOFError, ConnectionError) as err:
            raise TrainerFailed(f"the trainer went away during the message: {err!r}") from err
