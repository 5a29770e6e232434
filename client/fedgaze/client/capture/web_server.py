"""The capture service object: one sink and one answer backend behind the page's JSON API.

:class:`CaptureServer` runs a stdlib ``ThreadingHTTPServer`` (its requests are handled by
:mod:`fedgaze.client.capture.web_handler`) bound to the loopback interface only (any other host
is refused). It serves the chat page (``static/chat.html``, to a browser holding a session of
:mod:`fedgaze.client.capture.web_auth`; the page holds no secret), the capture library
``static/fedgaze-capture.js``, optionally the operator's own copy of WebGazer at
``/vendor/webgazer.js`` (GPL-3.0, so never shipped with fedgaze), and the API whose calls it
answers here. While the device is paused (:mod:`fedgaze.client.device.pause`) nothing is
recorded: sample, label and next posts get HTTP 409 with the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from fedgaze.client.capture.answers import Answer, AnswerBackend, AnswerError, ReplayExhausted
from fedgaze.client.capture.samples import Label, QueryMeta, rejection_of
from fedgaze.client.capture.sink import CaptureError, CapturePaused, CaptureSink
from fedgaze.client.capture.web_auth import OPEN_PARAM, CaptureCredentials, cookie_name
from fedgaze.client.capture.web_handler import (
    STATIC_TYPES,
    CaptureHTTPServer,
    CaptureHTTPServer6,
    CaptureRequestHandler,
)
from fedgaze.client.capture.web_requests import (
    Calibration,
    NextRequest,
    RequestError,
    validation_error,
)
from fedgaze.client.device.pause import is_paused
from fedgaze.security.net import is_loopback_host

__all__ = ["MAX_BODY", "STATIC_DIR", "CaptureServer", "Traffic"]

MAX_BODY = 1 << 20
"""Largest request body accepted (bytes); the page posts far smaller batches."""

STATIC_DIR = Path(__file__).with_name("static")
"""The page, its stylesheet and script, and the capture library (package data)."""


def _query_meta(answer: Answer, query_id: int, task_id: int) -> QueryMeta:
    """The metadata of the query that shows ``answer`` now, with the ids it was served under.

    An answer the capture contract refuses (an id :class:`QueryMeta` does not take, a text over
    its length limit) is the backend's fault: HTTP 502 naming the field, and nothing is begun.
    """
    ids = answer.answer_ids or ()
    try:
        return QueryMeta(
            query_id=query_id,
            task_id=task_id,
            pairwise=answer.pairwise,
            prompt=answer.prompt,
            response_left=answer.answers[0],
            response_right=answer.answers[1] if answer.pairwise else None,
            shown_at_ms=time.time() * 1000.0,
            prompt_id=answer.prompt_id,
            response_left_id=ids[0] if ids else None,
            response_right_id=ids[1] if len(ids) > 1 else None,
        )
    except ValidationError as err:
        problem = rejection_of(0, err)
        raise RequestError(
            HTTPStatus.BAD_GATEWAY, f"answers: {problem.field}: {problem.reason}"
        ) from None


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


class CaptureServer:
    """The capture service over one sink and one answer backend; see the module docstring.

    ``host`` must be a loopback address (``ValueError`` otherwise); ``port`` 0 picks a free
    one. ``allowed_origins`` lists other origins (``http://host:port``) whose pages may call
    the API with the token (CORS); by default only the service's own page may. ``token`` is
    the API token (random by default); browsers get in through :meth:`open_url`.
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
        self.credentials = CaptureCredentials(token)
        self.traffic = Traffic()
        self._host = "127.0.0.1" if host == "localhost" else host.strip("[]")
        self._requested_port = port
        self._extra_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._httpd: CaptureHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()
        self._next_lock = threading.Lock()
        self._current: QueryMeta | None = None
        self._last_query_id = 0
        self._session = int(time.time())
        self._tasks: set[int] = set()
        self._precision: float | None = None
        self.static_files = {
            p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in STATIC_TYPES
        }

    # lifecycle ------------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the capture server is already running")
        server_cls = CaptureHTTPServer6 if ":" in self._host else CaptureHTTPServer
        httpd = server_cls((self._host, self._requested_port), CaptureRequestHandler)
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

    @property
    def token(self) -> str:
        """The API token (for the 0600 ready file and programs; never in a page)."""
        return self.credentials.api_token

    def open_url(self) -> str:
        """A new one-time link to the page: the first request with it gets a session cookie."""
        return f"{self.url}?{OPEN_PARAM}={self.credentials.mint_open_token()}"

    def session_cookie(self, session: str) -> str:
        """The ``Set-Cookie`` value of a browser session on this service."""
        return f"{cookie_name(self.port)}={session}; Path=/; HttpOnly; SameSite=Strict"

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
        """Get the next answers from the backend and begin their query in the sink, with the
        ids the backend served the prompt and answers under (the query's ``served``)."""
        try:
            request = NextRequest.model_validate(body or {})
        except ValidationError as err:
            raise validation_error(err) from None
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
            meta = _query_meta(answer, self._query_id(), task_id)
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
            raise validation_error(err) from None
        with self._unless_paused():
            self.sink.set_label(label)
        return {"ok": True}

    def set_calibration(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record the gaze tracker's calibration precision for a task (default: this session's
        tasks so far and the ones to come)."""
        try:
            cal = Calibration.model_validate(body)
        except ValidationError as err:
            raise validation_error(err) from None
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
        """The chat page (the same bytes for everyone: it holds no credential)."""
        return (STATIC_DIR / "chat.html").read_bytes()
