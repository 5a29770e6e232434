"""The agent's local capture service: the reference chat page and the JSON API it posts to.

A stdlib ``ThreadingHTTPServer`` bound to the loopback interface only (any other host is
refused). It serves the chat page (``static/chat.html``, with this process's token in a
``<meta>`` tag), the capture library ``static/fedgaze-capture.js``, optionally the operator's
own copy of WebGazer at ``/vendor/webgazer.js`` (GPL-3.0, so never shipped with fedgaze), and:

=========================  =================================================================
``GET|POST /api/v1/next``  the next prompt and its one or two answers (POST ``{"prompt"}`` for
                           backends where the person types it); begins the query in the sink
``POST /api/v1/samples``   ``{"items": [...]}`` -> ``{"accepted": n, "rejected": [...]}``
``POST /api/v1/label``     ``{"query_id", "preference", "likert_left", "likert_right"}``
``POST /api/v1/calibration``  ``{"precision": percent, "task_id"?}``
``GET /api/v1/status``     paused, backend, current query, sink counts, traffic counters
=========================  =================================================================

Security: any web site the person visits can make the browser send requests to 127.0.0.1, so
every request must carry a ``Host`` naming this server (defeats DNS rebinding), an ``Origin``,
when the browser sends one, that is this server's own (or one the operator allowed), and every
API call the per-process random token (header ``X-Fedgaze-Token``, or ``?token=`` for
``navigator.sendBeacon``, which cannot set headers). Bodies over ``max_body`` bytes are refused
unread. While the device is paused (:mod:`fedgaze.client.device.pause`) nothing is recorded:
sample, label and next posts get HTTP 409 with the reason. Errors are JSON
``{"error": message, "field": name or null}``. Nothing here logs samples, prompts or answers.

Run as the agent's child process (``fedgaze client start`` does this)::

    python -m fedgaze.client.capture.web --device-dir DIR [--store-dir S] [--store-key FILE]
        [--device-id ID] (--replay FILE | --openai-url URL --openai-model M
        --openai-key-env VAR [--pointwise]) [--host 127.0.0.1] [--port P] [--grpc-port G]
        [--webgazer FILE] [--allow-origin ORIGIN]... [--ready-file F]

It prints one line ``fedgaze-capture listening on URL`` when ready (and writes ``--ready-file``,
mode 0600: ``{"url", "port", "pid", "token"[, "grpc_port"]}``), runs until SIGTERM or SIGINT,
then stops serving and commits the sink into the encrypted device store before exiting 0.
Bad arguments exit 2 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedgaze.client.capture.answers import (
    AnswerBackend,
    AnswerError,
    OpenAICompatibleAnswers,
    ReplayAnswers,
    ReplayExhausted,
)
from fedgaze.client.capture.samples import Label, QueryMeta
from fedgaze.client.capture.sink import CaptureError, CapturePaused, CaptureSink
from fedgaze.client.device.pause import is_paused
from fedgaze.security.net import is_loopback_host

__all__ = [
    "MAX_BODY",
    "STATIC_DIR",
    "TOKEN_HEADER",
    "CaptureServer",
    "main",
]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""Largest request body accepted (bytes); the page posts far smaller batches."""

TOKEN_HEADER = "X-Fedgaze-Token"
TOKEN_PLACEHOLDER = "{{FEDGAZE_TOKEN}}"
STATIC_DIR = Path(__file__).with_name("static")
"""The page, its stylesheet and script, and the capture library (package data)."""
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# WebGazer runs TensorFlow.js (eval/wasm), fetches its face model over https and shows video.
_CSP_WEBGAZER = (
    "default-src 'none'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; connect-src 'self' https: data: blob:; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class RequestError(Exception):
    """A request the service refuses: HTTP status, message and the offending field."""

    def __init__(self, status: HTTPStatus, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class _Calibration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    precision: float = Field(ge=0.0, le=100.0)
    task_id: int | None = Field(default=None, ge=0)


class _NextRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    prompt: str | None = Field(default=None, max_length=100_000)


def _validation_error(err: ValidationError) -> RequestError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return RequestError(HTTPStatus.BAD_REQUEST, f"{where}: {first['msg']}", where)


@dataclass
class Traffic:
    """Requests and bytes (request line, headers and body) received per API route."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, route: str, size: int) -> None:
        """Count one request of ``size`` bytes on ``route``."""
        with self.lock:
            self.requests[route] = self.requests.get(route, 0) + 1
            self.bytes[route] = self.bytes.get(route, 0) + size

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy safe to serialize."""
        with self.lock:
            return {"requests": dict(self.requests), "bytes": dict(self.bytes)}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: CaptureServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class CaptureServer:
    """The capture service over one sink and one answer backend; see the module docstring.

    ``host`` must be a loopback address (``ValueError`` otherwise); ``port`` 0 picks a free
    one. ``allowed_origins`` lists other origins (``http://host:port``) whose pages may call
    the API with the token (CORS); by default only the service's own page may.
    """

    def __init__(
        self,
        sink: CaptureSink,
        answers: AnswerBackend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webgazer: str | Path | None = None,
        allowed_origins: Sequence[str] = (),
        max_body: int = MAX_BODY,
        token: str | None = None,
    ) -> None:
        if not is_loopback_host(host):
            raise ValueError(
                f"host: the capture service binds to loopback only (127.0.0.1, ::1), got {host!r}"
            )
        if webgazer is not None and not Path(webgazer).is_file():
            raise ValueError(f"webgazer: {webgazer} is not a file")
        for origin in allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"allowed_origins: {origin!r} is not scheme://host[:port]")
        self.sink = sink
        self.answers = answers
        self.device_dir = sink.device_dir
        self.webgazer = Path(webgazer) if webgazer is not None else None
        self.max_body = max_body
        self.token = token or secrets.token_urlsafe(32)
        self.traffic = Traffic()
        self._host = "127.0.0.1" if host == "localhost" else host.strip("[]")
        self._requested_port = port
        self._extra_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()
        self._next_lock = threading.Lock()
        self._current: QueryMeta | None = None
        self._last_query_id = 0
        self._session = int(time.time())
        self._tasks: set[int] = set()
        self._precision: float | None = None
        self._static = {
            p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _STATIC_TYPES
        }

    # lifecycle ------------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the capture server is already running")
        server_cls = _HTTPServer6 if ":" in self._host else _HTTPServer
        httpd = server_cls((self._host, self._requested_port), _Handler)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); does not commit the sink."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("the capture server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The page's URL, e.g. ``http://127.0.0.1:8765/``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    # checks ---------------------------------------------------------------------------------

    def own_hosts(self) -> frozenset[str]:
        """The ``Host`` header values that name this server."""
        names = {self._host, f"[{self._host}]"} if ":" in self._host else {self._host}
        if self._host == "127.0.0.1":
            names.add("localhost")
        return frozenset(f"{n}:{self.port}" for n in names)

    def origin_allowed(self, origin: str) -> bool:
        """True for this server's own origin and the operator's allowed origins."""
        own = {f"http://{h}" for h in self.own_hosts()}
        return origin in own or origin in self._extra_origins

    def cors_origin(self, origin: str | None) -> str | None:
        """The origin to echo in CORS headers: only an operator-allowed foreign origin."""
        return origin if origin is not None and origin in self._extra_origins else None

    def token_ok(self, presented: str | None) -> bool:
        """Constant-time comparison with this process's token."""
        return presented is not None and hmac.compare_digest(presented, self.token)

    # API ------------------------------------------------------------------------------------

    def paused(self) -> bool:
        """True while the person has paused capture on this device."""
        return is_paused(self.device_dir)

    @contextmanager
    def _unless_paused(self) -> Iterator[None]:
        if self.paused():
            raise RequestError(HTTPStatus.CONFLICT, "capture is paused on this device")
        try:
            yield
        except CapturePaused as err:
            raise RequestError(HTTPStatus.CONFLICT, str(err) or "capture is paused") from None
        except CaptureError as err:  # its message starts with the field: "query_id: ..."
            message = str(err)
            name = message.split(":", 1)[0] if ":" in message else None
            raise RequestError(HTTPStatus.BAD_REQUEST, message, name) from None

    def _task_id(self, pairwise: bool, given: int | None) -> int:
        # IFLLM's convention: odd task ids are pairwise pages, even ones pointwise.
        return given if given is not None else self._session * 2 + int(pairwise)

    def _query_id(self) -> int:
        # Epoch milliseconds: unique across restarts of the service on one device, and ordered.
        with self._state:
            self._last_query_id = max(self._last_query_id + 1, int(time.time() * 1000))
            return self._last_query_id

    def next_query(self, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """Get the next answers from the backend and begin their query in the sink."""
        try:
            request = _NextRequest.model_validate(body or {})
        except ValidationError as err:
            raise _validation_error(err) from None
        if self.answers.needs_prompt and not (request.prompt or "").strip():
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"prompt: required by the {self.answers.name} backend",
                "prompt",
            )
        with self._next_lock, self._unless_paused():
            # The previous query is over: fold it into the device store now, so training sees
            # it while the agent keeps running (and the journal stays short).
            self.sink.commit()
            try:
                answer = self.answers.next(request.prompt)
            except ReplayExhausted as err:
                raise RequestError(HTTPStatus.GONE, str(err)) from None
            except AnswerError as err:
                raise RequestError(HTTPStatus.BAD_GATEWAY, str(err)) from None
            task_id = self._task_id(answer.pairwise, answer.task_id)
            meta = QueryMeta(
                query_id=self._query_id(),
                task_id=task_id,
                pairwise=answer.pairwise,
                prompt=answer.prompt,
                response_left=answer.answers[0],
                response_right=answer.answers[1] if answer.pairwise else None,
                shown_at_ms=time.time() * 1000.0,
            )
            self.sink.begin_query(meta)
            with self._state:
                self._current = meta
                new_task = task_id not in self._tasks
                self._tasks.add(task_id)
                precision = self._precision
            if new_task and precision is not None:
                self.sink.set_calibration(task_id, precision)
        return {
            "query_id": meta.query_id,
            "task_id": meta.task_id,
            "pairwise": meta.pairwise,
            "prompt": meta.prompt,
            "answers": list(answer.answers),
        }

    def add_samples(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Hand a batch from the page to the sink; the reply counts what it accepted."""
        items = body.get("items")
        if not isinstance(items, list):
            raise RequestError(HTTPStatus.BAD_REQUEST, "items: expected a JSON array", "items")
        if any(not isinstance(item, dict) for item in items):
            index = next(i for i, item in enumerate(items) if not isinstance(item, dict))
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"items[{index}]: expected a JSON object", "items"
            )
        with self._unless_paused():
            result = self.sink.add(items)
        return {
            "accepted": result.accepted,
            "rejected": [
                {"index": r.index, "field": r.field, "reason": r.reason} for r in result.rejected
            ],
        }

    def set_label(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record the person's explicit preference or likert rating of a query."""
        try:
            label = Label.model_validate(body)
        except ValidationError as err:
            raise _validation_error(err) from None
        with self._unless_paused():
            self.sink.set_label(label)
        return {"ok": True}

    def set_calibration(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record the gaze tracker's calibration precision for a task (default: this session's
        tasks so far and the ones to come)."""
        try:
            cal = _Calibration.model_validate(body)
        except ValidationError as err:
            raise _validation_error(err) from None
        with self._unless_paused():
            with self._state:
                if cal.task_id is None:
                    self._precision = cal.precision
                tasks = {cal.task_id} if cal.task_id is not None else set(self._tasks)
            for task in sorted(tasks):
                self.sink.set_calibration(task, cal.precision)
        return {"ok": True, "tasks": sorted(tasks)}

    def status(self) -> dict[str, Any]:
        """What the page's status line and ``fedgaze client status`` show: no texts, counts."""
        with self._state:
            current = self._current
        return {
            "paused": self.paused(),
            "backend": self.answers.name,
            "needs_prompt": self.answers.needs_prompt,
            "webgazer": self.webgazer is not None,
            "query_id": current.query_id if current is not None else None,
            "task_id": current.task_id if current is not None else None,
            "pairwise": current.pairwise if current is not None else None,
            "sink": self.sink.stats(),
            "traffic": self.traffic.snapshot(),
        }

    def page(self) -> bytes:
        """The chat page with this process's token filled in."""
        html = (STATIC_DIR / "chat.html").read_text(encoding="utf-8")
        return html.replace(TOKEN_PLACEHOLDER, self.token).encode("utf-8")


_API_GET = {"/api/v1/next", "/api/v1/status"}
_API_POST = {"/api/v1/next", "/api/v1/samples", "/api/v1/label", "/api/v1/calibration"}


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request: checks first (host, origin, token, size), then the route."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fedgaze-capture"
    sys_version = ""
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        # The default logs the full path, whose query may hold the token: log nothing here.
        return

    @property
    def app(self) -> CaptureServer:
        return self.server.app

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        cors = self.app.cors_origin(self.headers.get("Origin"))
        if cors is not None:
            self.send_header("Access-Control-Allow-Origin", cors)
            self.send_header("Vary", "Origin")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, err: RequestError) -> None:
        extra = {"paused": True} if err.status == HTTPStatus.CONFLICT else {}
        self._json(err.status, {"error": err.message, "field": err.field, **extra})

    def _check_origin(self) -> None:
        host = self.headers.get("Host")
        if host is None or host.lower() not in self.app.own_hosts():
            self.close_connection = True
            raise RequestError(HTTPStatus.FORBIDDEN, "Host: not this capture service", "Host")
        origin = self.headers.get("Origin")
        if origin is not None and not self.app.origin_allowed(origin):
            self.close_connection = True
            raise RequestError(HTTPStatus.FORBIDDEN, "Origin: not allowed", "Origin")
        site = self.headers.get("Sec-Fetch-Site")
        if site == "cross-site" and origin is None:
            raise RequestError(HTTPStatus.FORBIDDEN, "Sec-Fetch-Site: cross-site", "Origin")

    def _check_token(self, query: Mapping[str, list[str]]) -> None:
        presented = self.headers.get(TOKEN_HEADER) or next(iter(query.get("token", [])), None)
        if not self.app.token_ok(presented):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "token: missing or wrong", "token")

    def _body(self, route: str) -> dict[str, Any] | None:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED, "body: send a Content-Length", "Content-Length"
            )
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "Content-Length: not a number", "Content-Length"
            ) from None
        if length < 0 or length > self.app.max_body:
            self.close_connection = True  # the body stays unread
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body: {length} bytes, the limit is {self.app.max_body}",
                "body",
            )
        raw = self.rfile.read(length) if length else b""
        header_bytes = len(self.requestline) + 2 + len(str(self.headers).encode("latin-1"))
        self.app.traffic.add(route, header_bytes + len(raw))
        if not raw:
            return None
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body: not JSON ({msg})", "body") from None
        if not isinstance(obj, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body: expected a JSON object", "body")
        return obj

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        route, query = parts.path, parse_qs(parts.query)
        try:
            self._check_origin()
            if self.command in ("GET", "HEAD") and not route.startswith("/api/"):
                self._static(route)
                return
            allowed = _API_POST if self.command == "POST" else _API_GET
            if route not in _API_GET | _API_POST:
                raise RequestError(HTTPStatus.NOT_FOUND, f"{route}: no such endpoint")
            if route not in allowed:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{route}: not {self.command}")
            self._check_token(query)
            body = self._body(route) if self.command == "POST" else None
            self._json(HTTPStatus.OK, self._route(route, body))
        except RequestError as err:
            self._error(err)
        except Exception as err:  # never leak data in the reply or the log: type only
            log.error("capture service: %s on %s", type(err).__name__, route)
            self._error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"))

    def _route(self, route: str, body: dict[str, Any] | None) -> dict[str, Any]:
        app = self.app
        if route == "/api/v1/status":
            self.app.traffic.add(route, len(self.requestline))
            return app.status()
        if route == "/api/v1/next":
            return app.next_query(body)
        if body is None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "body: expected a JSON object", "body")
        if route == "/api/v1/samples":
            return app.add_samples(body)
        if route == "/api/v1/label":
            return app.set_label(body)
        return app.set_calibration(body)

    def _static(self, route: str) -> None:
        app = self.app
        if route in ("/", "/index.html"):
            csp = _CSP_WEBGAZER if app.webgazer is not None else _CSP
            self._send(
                HTTPStatus.OK, app.page(), _STATIC_TYPES[".html"], {"Content-Security-Policy": csp}
            )
            return
        if route == "/vendor/webgazer.js":
            if app.webgazer is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND, "webgazer: not configured on this agent (--webgazer)"
                )
            self._send(HTTPStatus.OK, app.webgazer.read_bytes(), _STATIC_TYPES[".js"])
            return
        name = route.removeprefix("/static/")
        path = app._static.get(name) if route.startswith("/static/") else None
        if path is None or name == "chat.html":
            raise RequestError(HTTPStatus.NOT_FOUND, f"{route}: not found")
        self._send(HTTPStatus.OK, path.read_bytes(), _STATIC_TYPES[path.suffix])

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        """CORS preflight: granted only to operator-allowed origins."""
        try:
            self._check_origin()
            origin = self.app.cors_origin(self.headers.get("Origin"))
            if origin is None:
                raise RequestError(HTTPStatus.FORBIDDEN, "Origin: not allowed", "Origin")
            self._send(
                HTTPStatus.NO_CONTENT,
                b"",
                "text/plain",
                {
                    "Access-Control-Allow-Methods": "GET, POST",
                    "Access-Control-Allow-Headers": f"Content-Type, {TOKEN_HEADER}",
                    "Access-Control-Max-Age": "600",
                },
            )
        except RequestError as err:
            self._error(err)


# command line -------------------------------------------------------------------------------


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _serve_grpc(sink: CaptureSink, host: str, port: int) -> tuple[Any, int]:
    from fedgaze.client.capture.grpc_service import serve_capture

    return serve_capture(sink, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


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
            grpc_server, grpc_port = _serve_grpc(sink, server._host, args.grpc_port)
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
