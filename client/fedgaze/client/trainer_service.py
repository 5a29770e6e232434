"""The device's warm trainer: a long-lived process that answers round messages for ClientApps.

    python -m fedgaze.client.trainer_service --folder DIR --device-dir DEVICE [--device-dir ...]

It starts, makes ``DIR`` private (0700), writes a fresh key (0600) and listens on ``DIR``'s Unix
socket (:mod:`fedgaze.client.trainer_channel`), then loads the training stack once. Each
authenticated request names a device by its node config; the trainer answers only for the device
folders it was started for, with the same handlers a ClientApp process would run
(:mod:`fedgaze.client.rounds`), so every privacy, budget, ledger and crash-safety step is the
same code. It answers one message at a time, so its CPU use stays bounded however many ClientApp
processes wait, and no two handlers ever write the same device's files at once. Between messages
it keeps the device's loaded and featurized data (:mod:`fedgaze.client.local_rows`, keyed by the
store's manifest, so new captures are seen). SIGTERM or SIGINT stops it and removes its socket
and key.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from types import FrameType

from flwr.app import RecordDict

from fedgaze.atomic import remove_leftovers, write_bytes_atomic
from fedgaze.client.trainer_channel import (
    KEY_BYTES,
    TrainerFolder,
    decode_request,
    encode_error,
    encode_reply,
)
from fedgaze.federation.settings import NodeSettings

LOG = logging.getLogger("fedgaze.trainer")
Handler = Callable[[RecordDict, NodeSettings], RecordDict]


class Trainer:
    """Answers requests for the devices at ``device_dirs`` with ``handlers``, one at a time."""

    def __init__(self, device_dirs: Sequence[Path], handlers: dict[str, Handler]) -> None:
        self._devices = {p.resolve() for p in device_dirs}
        self._handlers = handlers
        self._turn = threading.Lock()

    def answer(self, conn: Connection) -> None:
        """Read one request from ``conn``, answer it, and close ``conn``."""
        with conn:
            try:
                header, body = conn.recv_bytes(), conn.recv_bytes()
                message_type, node_config, content = decode_request(header, body)
                node = NodeSettings.from_node_config(node_config)
                if Path(node.device_dir).resolve() not in self._devices:
                    raise PermissionError(f"this trainer does not serve device {node.device_dir}")
                handler = self._handlers.get(message_type)
                if handler is None:
                    raise ValueError(f"unknown message type {message_type!r}")
                with self._turn:
                    started = time.process_time()
                    reply = handler(content, node)
                    spent = time.process_time() - started
                LOG.info("trainer: %s for %s: %.2f s CPU", message_type, node.device_id, spent)
                frames = encode_reply(reply)
            except (EOFError, ConnectionError):
                return
            except Exception as err:  # the ClientApp reports it as this device's failure
                LOG.error("trainer: message failed\n%s", traceback.format_exc())
                frames = encode_error(f"{type(err).__name__}: {err}")
            try:
                for frame in frames:
                    conn.send_bytes(frame)
            except (BrokenPipeError, ConnectionError):
                LOG.warning("trainer: the ClientApp left before the reply")


def open_listener(where: TrainerFolder) -> Listener:
    """Make the folder private, write a fresh key, and listen on the socket (a stale socket, and a
    key half-written by a trainer killed at its start, go)."""
    where.check()
    where.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(where.folder, 0o700)
    key = secrets.token_bytes(KEY_BYTES)
    where.socket.unlink(missing_ok=True)
    remove_leftovers(where.key)
    write_bytes_atomic(where.key, key)
    listener = Listener(str(where.socket), family="AF_UNIX", authkey=key)
    os.chmod(where.socket, 0o600)
    return listener


def serve(listener: Listener, trainer: Trainer, stop: threading.Event) -> None:
    """Accept authenticated connections until ``stop``; each is answered on its own thread."""
    while not stop.is_set():
        try:
            conn = listener.accept()
        except AuthenticationError:
            LOG.warning("trainer: refused a connection that did not authenticate")
            continue
        except (OSError, EOFError):
            if stop.is_set():
                return
            LOG.warning("trainer: a connection failed before its request", exc_info=True)
            continue
        threading.Thread(target=trainer.answer, args=(conn,), daemon=True).start()


def _preload() -> None:
    """Pay torch's first-use imports now rather than in the first message: building the first
    optimizer loads torch's compiler package (``torch._dynamo``, most of a second of CPU)."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedgaze.client.trainer_service")
    parser.add_argument(
        "--folder", type=Path, required=True, help="private folder of socket and key"
    )
    parser.add_argument(
        "--device-dir", type=Path, action="append", required=True, help="a device folder served"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    where = TrainerFolder(args.folder)
    try:
        listener = open_listener(where)
    except (OSError, ValueError) as err:
        print(f"fedgaze trainer: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        listener.close()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        from fedgaze.client.rounds import HANDLERS

        _preload()
        LOG.info("fedgaze trainer: serving %d device(s) at %s", len(args.device_dir), where.socket)
        serve(listener, Trainer(args.device_dir, HANDLERS), stop)
    finally:
        listener.close()
        where.socket.unlink(missing_ok=True)
        where.key.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
