"""The agent's local capture service, run as a process: its command line and lifetime.

The service (the reference chat page and the JSON API it posts to) is split by job:
:mod:`~fedgaze.client.capture.web_server` holds :class:`CaptureServer` (loopback only, the
page, the API's actions), :mod:`~fedgaze.client.capture.web_handler` one HTTP request's checks
(``Host``, ``Origin``, token, body size, CSP) and routes, and
:mod:`~fedgaze.client.capture.web_requests` the API's request bodies and errors. This module
keeps the names other code imports from it.

Run as the agent's child process (``fedgaze client start`` does this)::

    python -m fedgaze.client.capture.web --device-dir DIR [--store-dir S] [--store-key FILE]
        [--device-id ID] (--replay FILE | --openai-url URL --openai-model M
        --openai-key-env VAR [--pointwise]) [--host 127.0.0.1] [--port P] [--grpc-port G]
        [--webgazer FILE] [--allow-origin ORIGIN]... [--ready-file F]

It prints one line ``fedgaze-capture listening on URL`` when ready (and writes ``--ready-file``,
mode 0600: ``{"url", "port", "pid", "token"[, "grpc_port"]}``; the token is the API token of
:mod:`~fedgaze.client.capture.web_auth`, which the gRPC service takes too; the page itself
opens from a one-time link, ``POST /api/v1/open``), runs until SIGTERM or SIGINT,
then stops serving and commits the sink into the encrypted device store before exiting 0.
Bad arguments exit 2 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from fedgaze.client.capture.answers import (
    AnswerBackend,
    AnswerError,
    OpenAICompatibleAnswers,
    ReplayAnswers,
)
from fedgaze.client.capture.sink import CaptureError, CaptureSink
from fedgaze.client.capture.web_handler import TOKEN_HEADER
from fedgaze.client.capture.web_server import MAX_BODY, STATIC_DIR, CaptureServer

__all__ = [
    "MAX_BODY",
    "STATIC_DIR",
    "TOKEN_HEADER",
    "CaptureServer",
    "main",
]


def _backend(args: argparse.Namespace) -> AnswerBackend:
    if args.replay is not None:
        return ReplayAnswers(args.replay)
    if not (args.openai_model and args.openai_key_env is not None):
        raise AnswerError("--openai-url needs --openai-model and --openai-key-env")
    return OpenAICompatibleAnswers(
        args.openai_url,
        args.openai_model,
        args.openai_key_env,
        pairwise=not args.pointwise,
        timeout_s=args.openai_timeout,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fedgaze.client.capture.web",
        description="Serve the local capture page and API until SIGTERM/SIGINT, then commit.",
    )
    p.add_argument("--device-dir", type=Path, required=True, help="the device's private folder")
    p.add_argument("--store-dir", type=Path, help="device store folder (sink's default if unset)")
    p.add_argument("--store-key", type=Path, help="the device store's key file")
    p.add_argument("--device-id", help="device id of a new store (default: device)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--replay", type=Path, help="JSONL file of prompts and answers to replay")
    src.add_argument("--openai-url", help="root URL of an OpenAI-compatible server")
    p.add_argument("--openai-model", help="model name for --openai-url")
    p.add_argument("--openai-key-env", help="environment variable holding the API key")
    p.add_argument("--openai-timeout", type=float, default=60.0, help="seconds per call")
    p.add_argument("--pointwise", action="store_true", help="one answer per prompt (openai)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    p.add_argument("--grpc-port", type=int, help="also serve the capture gRPC API on loopback")
    p.add_argument("--webgazer", type=Path, help="the operator's own webgazer.js to serve")
    p.add_argument(
        "--allow-origin", action="append", default=[], help="another page origin allowed (CORS)"
    )
    p.add_argument("--ready-file", type=Path, help="write url/port/pid/token here (0600)")
    return p


def _write_ready(path: Path, server: CaptureServer, grpc_port: int | None) -> None:
    data = {"url": server.url, "port": server.port, "pid": os.getpid(), "token": server.token}
    if grpc_port is not None:
        data["grpc_port"] = grpc_port
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an earlier temporary file was left with another mode
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _serve_grpc(sink: CaptureSink, host: str, port: int, token: str) -> tuple[Any, int]:
    from fedgaze.client.capture.grpc_service import serve_capture

    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return serve_capture(sink, address, token=token)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the capture service until SIGTERM/SIGINT, then commit the sink; the exit status."""
    args = _parser().parse_args(argv)
    try:
        backend = _backend(args)
    except (AnswerError, ValueError) as err:
        print(f"fedgaze-capture: {err}", file=sys.stderr)
        return 2
    try:
        sink = CaptureSink(
            args.device_dir,
            store_dir=args.store_dir,
            key_path=args.store_key,
            device_id=args.device_id,
        )
    except (CaptureError, ValueError) as err:
        print(f"fedgaze-capture: {err}", file=sys.stderr)
        return 2
    try:
        server = CaptureServer(
            sink,
            backend,
            host=args.host,
            port=args.port,
            webgazer=args.webgazer,
            allowed_origins=args.allow_origin,
        )
    except ValueError as err:
        sink.close()
        print(f"fedgaze-capture: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    grpc_server = None
    server.start()
    try:
        grpc_port = None
        if args.grpc_port is not None:
            grpc_server, grpc_port = _serve_grpc(sink, server._host, args.grpc_port, server.token)
        if args.ready_file is not None:
            _write_ready(args.ready_file, server, grpc_port)
        print(f"fedgaze-capture listening on {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=2).wait(5)
        try:
            sink.commit()
        finally:
            sink.close()
            if args.ready_file is not None:
                args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
