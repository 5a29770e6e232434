"""``fedgaze client open``: a one-time link to the running agent's capture page, for this person.

The capture service's API token is in its ready file (mode 0600, in the person's private device
folder), so only the person's own account can ask the service for a link
(``POST /api/v1/open``). The link works once, for a few minutes: the browser that opens it gets
an HttpOnly session cookie and is redirected to the page.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

from fedgaze.client.capture.web_handler import TOKEN_HEADER

__all__ = ["OpenError", "open_link"]

OPEN_ROUTE = "/api/v1/open"
TIMEOUT_S = 10.0


class OpenError(RuntimeError):
    """No link: the service is not running, or it refused; the message says which."""


def _ready(ready_file: Path) -> tuple[str, str]:
    try:
        ready = json.loads(ready_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpenError(
            f"{ready_file}: the capture service is not running (start the agent: "
            "fedgaze client start, and check that the config has [capture.answers])"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OpenError(f"{ready_file}: not the capture service's ready file ({err})") from None
    if not isinstance(ready, dict):
        raise OpenError(f"{ready_file}: expected a JSON object")
    for key in ("url", "token"):
        if not isinstance(ready.get(key), str) or not ready[key]:
            raise OpenError(f"{ready_file}: {key}: missing")
    return ready["url"], ready["token"]


def open_link(ready_file: Path) -> str:
    """A new one-time link to the page of the capture service that wrote ``ready_file``."""
    url, token = _ready(ready_file)
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise OpenError(f"{ready_file}: url: {url!r} has no host and port")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", OPEN_ROUTE, headers={TOKEN_HEADER: token, "Content-Length": "0"})
        res = conn.getresponse()
        body = res.read()
    except OSError as err:
        raise OpenError(f"{url}: the capture service does not answer ({err})") from None
    finally:
        conn.close()
    try:
        reply = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        reply = {}
    if res.status != 200 or not isinstance(reply, dict) or not isinstance(reply.get("url"), str):
        why = reply.get("error") if isinstance(reply, dict) else None
        raise OpenError(f"{url}: no link (HTTP {res.status}: {why or 'unexpected reply'})")
    return str(reply["url"])
