"""The capture service's HTTP side: one request's checks, its route, and the reply.

=========================  =================================================================
``GET|POST /api/v1/next``  the next prompt and its one or two answers (POST ``{"prompt"}`` for
                           backends where the person types it); begins the query in the sink
``POST /api/v1/samples``   ``{"items": [...]}`` -> ``{"accepted": n, "rejected": [...]}``
``POST /api/v1/label``     ``{"query_id", "preference", "likert_left", "likert_right"}``
``POST /api/v1/calibration``  ``{"precision": percent, "task_id"?}``
``GET /api/v1/status``     paused, backend, current query, sink counts, traffic counters
``POST /api/v1/open``      ``{"url", "expires_in_s"}``: a one-time link to the page
=========================  =================================================================

Security: any web site the person visits can make the browser send requests to 127.0.0.1, so
every request must carry a ``Host`` naming this server (defeats DNS rebinding) and an
``Origin``, when the browser sends one, that is this server's own (or one the operator
allowed). Any local process can connect too, so the page and the API need a credential
(:mod:`fedgaze.client.capture.web_auth`): the page is served only to a browser holding a
session cookie, which the one-time link ``/?open=...`` (``fedgaze client open``) exchanges for
one and redirects to ``/``; without it ``GET /`` gets a short 401 page saying how to open it.
Every API call needs the session cookie or the API token from the 0600 ready file (header
``X-Fedgaze-Token``, or ``?token=`` for a beacon from an operator-allowed origin);
``POST /api/v1/open`` (mint a link) takes the header only. The scripts and stylesheet hold no
secret and are served to anyone. Bodies over ``max_body`` bytes are refused unread. The page
is served with a Content-Security-Policy that allows only this server's own scripts, styles
and API (loosened for WebGazer when the operator serves it). Errors are JSON
``{"error": message, "field": name or null}``. Nothing here logs samples, prompts or answers.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fedgaze.client.capture.web_auth import OPEN_PARAM, OPEN_TTL_S, session_from_cookies
from fedgaze.client.capture.web_requests import RequestError

if TYPE_CHECKING:
    from fedgaze.client.capture.web_server import CaptureServer

__all__ = [
    "STATIC_TYPES",
    "TOKEN_HEADER",
    "CaptureHTTPServer",
    "CaptureHTTPServer6",
    "CaptureRequestHandler",
]

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Fedgaze-Token"
STATIC_TYPES = {
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


class CaptureHTTPServer(ThreadingHTTPServer):
    """The stdlib server; its handlers reach the :class:`CaptureServer` as ``app``."""

    daemon_threads = True
    allow_reuse_address = True
    app: CaptureServer


class CaptureHTTPServer6(CaptureHTTPServer):
    """The same on an IPv6 loopback address."""

    address_family = socket.AF_INET6


_OPEN = "/api/v1/open"
_API_GET = {"/api/v1/next", "/api/v1/status"}
_API_POST = {"/api/v1/next", "/api/v1/samples", "/api/v1/label", "/api/v1/calibration", _OPEN}
_LOCKED_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedgaze - open the reading page</title>
</head><body><h1>fedgaze reading page</h1>
<p>This page opens only from a one-time link of the person who runs this device's agent.
Run <code>fedgaze client open</code> in a terminal: it opens the page in your browser (or
prints the link). A link works once and for a few minutes.</p></body></html>
"""


class CaptureRequestHandler(BaseHTTPRequestHandler):
    """One HTTP request: checks first (host, origin, token, size), then the route."""

    server: CaptureHTTPServer
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

    def _session_ok(self) -> bool:
        session = session_from_cookies(self.headers.get("Cookie"), self.app.port)
        return self.app.credentials.session_ok(session)

    def _check_credential(self, route: str, query: Mapping[str, list[str]]) -> None:
        credentials = self.app.credentials
        if credentials.api_token_ok(self.headers.get(TOKEN_HEADER)):
            return
        if route != _OPEN and (
            self._session_ok() or credentials.api_token_ok(next(iter(query.get("token", [])), None))
        ):
            return
        raise RequestError(
            HTTPStatus.UNAUTHORIZED,
            "token: missing or wrong (open the page with 'fedgaze client open', or send the "
            f"{TOKEN_HEADER} header from the agent's ready file)",
            "token",
        )

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
                self._static(route, query)
                return
            allowed = _API_POST if self.command == "POST" else _API_GET
            if route not in _API_GET | _API_POST:
                raise RequestError(HTTPStatus.NOT_FOUND, f"{route}: no such endpoint")
            if route not in allowed:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{route}: not {self.command}")
            self._check_credential(route, query)
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
        if route == _OPEN:
            return {"url": app.open_url(), "expires_in_s": OPEN_TTL_S}
        if body is None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "body: expected a JSON object", "body")
        if route == "/api/v1/samples":
            return app.add_samples(body)
        if route == "/api/v1/label":
            return app.set_label(body)
        return app.set_calibration(body)

    def _static(self, route: str, query: Mapping[str, list[str]]) -> None:
        app = self.app
        if route in ("/", "/index.html"):
            if OPEN_PARAM in query:  # a one-time link: trade it for a session, drop it from the URL
                session = app.credentials.redeem(query[OPEN_PARAM][0])
                if session is None:
                    self._locked()
                    return
                self._send(
                    HTTPStatus.SEE_OTHER,
                    b"",
                    "text/plain",
                    {"Location": "/", "Set-Cookie": app.session_cookie(session)},
                )
                return
            if not self._session_ok():
                self._locked()
                return
            csp = _CSP_WEBGAZER if app.webgazer is not None else _CSP
            self._send(
                HTTPStatus.OK, app.page(), STATIC_TYPES[".html"], {"Content-Security-Policy": csp}
            )
            return
        if route == "/vendor/webgazer.js":
            if app.webgazer is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND, "webgazer: not configured on this agent (--webgazer)"
                )
            self._send(HTTPStatus.OK, app.webgazer.read_bytes(), STATIC_TYPES[".js"])
            return
        name = route.removeprefix("/static/")
        path = app.static_files.get(name) if route.startswith("/static/") else None
        if path is None or name == "chat.html":
            raise RequestError(HTTPStatus.NOT_FOUND, f"{route}: not found")
        self._send(HTTPStatus.OK, path.read_bytes(), STATIC_TYPES[path.suffix])

    def _locked(self) -> None:
        self._send(
            HTTPStatus.UNAUTHORIZED,
            _LOCKED_PAGE,
            STATIC_TYPES[".html"],
            {"Content-Security-Policy": _CSP},
        )

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
