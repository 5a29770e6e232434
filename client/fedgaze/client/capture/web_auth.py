"""Who may use the capture service: the API token, one-time open links and browser sessions.

Three credentials, all random (``secrets``) and compared in constant time:

* The **API token** of the service process. It is written only to the 0600 ready file (and
  given to the gRPC service), so only the person's own account can read it. Programs send it
  in the ``X-Fedgaze-Token`` header (or ``?token=`` on a beacon from an operator-allowed
  origin); it also mints open links (``POST /api/v1/open``).
* **Open tokens**: single-use, valid for :data:`OPEN_TTL_S` seconds, minted for
  ``fedgaze client open``. The page URL carries one (``/?open=...``); the first request with it
  consumes it and gets a session cookie back.
* **Session cookies**: ``HttpOnly; SameSite=Strict; Path=/``, named after the service's port
  (browsers share cookies between ports of one host, so the name keeps two services apart), and
  valid while the service process lives. Page scripts cannot read them, other sites' requests
  do not carry them, and ``navigator.sendBeacon`` on the page's own origin does.

Nothing here is persisted: a restarted service invalidates every link and session.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

__all__ = [
    "MAX_OPEN_TOKENS",
    "MAX_SESSIONS",
    "OPEN_PARAM",
    "OPEN_TTL_S",
    "CaptureCredentials",
    "cookie_name",
    "session_from_cookies",
]

OPEN_PARAM = "open"
"""The page URL's query parameter that carries a one-time open token."""
OPEN_TTL_S = 300.0
"""Seconds an open link stays valid if nobody uses it."""
MAX_OPEN_TOKENS = 32
"""Open links outstanding at once; minting another drops the oldest."""
MAX_SESSIONS = 64
"""Browser sessions kept at once; opening another ends the oldest."""


def cookie_name(port: int) -> str:
    """The session cookie's name for the service on ``port``."""
    return f"fedgaze-capture-{port}"


def session_from_cookies(header: str | None, port: int) -> str | None:
    """The value of this service's session cookie in a ``Cookie`` header, if any."""
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(cookie_name(port))
    return morsel.value if morsel is not None else None


def _match(presented: str | None, known: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), known.encode())


class CaptureCredentials:
    """The service's API token, its outstanding open tokens and its live browser sessions.

    Thread-safe: the HTTP server answers requests on several threads. ``clock`` is injectable
    for tests (monotonic seconds).
    """

    def __init__(
        self,
        api_token: str | None = None,
        *,
        open_ttl_s: float = OPEN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_token = api_token or secrets.token_urlsafe(32)
        self._ttl = open_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, float] = {}  # token -> expiry, oldest first
        self._sessions: list[str] = []  # oldest first

    def api_token_ok(self, presented: str | None) -> bool:
        """True when ``presented`` is the API token."""
        return _match(presented, self.api_token)

    def mint_open_token(self) -> str:
        """A new single-use open token (the oldest is dropped beyond :data:`MAX_OPEN_TOKENS`)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._open) >= MAX_OPEN_TOKENS:
                del self._open[next(iter(self._open))]
            self._open[token] = self._clock() + self._ttl
        return token

    def redeem(self, presented: str | None) -> str | None:
        """Consume an open token: a new session id, or None when it is unknown, used or
        expired."""
        if not presented:
            return None
        with self._lock:
            self._expire()
            found = next((t for t in self._open if _match(presented, t)), None)
            if found is None:
                return None
            del self._open[found]
            session = secrets.token_urlsafe(32)
            self._sessions.append(session)
            del self._sessions[:-MAX_SESSIONS]
            return session

    def session_ok(self, presented: str | None) -> bool:
        """True when ``presented`` is a live session id."""
        if not presented:
            return False
        with self._lock:
            return any(_match(presented, s) for s in self._sessions)

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, expiry in self._open.items() if expiry <= now]:
            del self._open[token]
