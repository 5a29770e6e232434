"""Who may use the capture service: one-time links, browser sessions, the API token, gRPC.

The credentials' rules on their own (single use, expiry, bounded tables, cookie parsing), then
over real HTTP and gRPC on 127.0.0.1: a session cookie is enough for the API, a cookie of
another port or a used link is not, minting a link takes the API token header only, and the
gRPC service refuses every call without the token before anything reaches the store. Last,
``fedgaze client open --print-only`` against a real capture process of an enrolled device.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from agent_helpers import capture_service, enroll_device, operator_credentials
from capture_replay import T0
from fedgaze.client.capture.answers import Answer, ReplayAnswers, write_replay
from fedgaze.client.capture.grpc_service import TOKEN_METADATA, serve_capture, token_metadata
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.client.capture.web import TOKEN_HEADER, CaptureServer
from fedgaze.client.capture.web_auth import (
    MAX_OPEN_TOKENS,
    CaptureCredentials,
    cookie_name,
    session_from_cookies,
)
from fedgaze.v1 import capture_pb2, capture_pb2_grpc


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_open_token_works_once_and_expires() -> None:
    clock = Clock()
    creds = CaptureCredentials("api", open_ttl_s=60.0, clock=clock)
    first, second = creds.mint_open_token(), creds.mint_open_token()
    session = creds.redeem(first)
    assert session is not None and creds.session_ok(session)
    assert creds.redeem(first) is None  # used
    clock.now += 61.0
    assert creds.redeem(second) is None  # expired
    assert creds.session_ok(session)  # a session lives as long as the service
    for bad in (None, "", "api", session, first + "x"):
        assert creds.redeem(bad) is None and not creds.session_ok(bad if bad != session else "x")
    assert (
        creds.api_token_ok("api") and not creds.api_token_ok("API") and not creds.api_token_ok(None)
    )


def test_outstanding_links_are_bounded_oldest_first() -> None:
    creds = CaptureCredentials()
    tokens = [creds.mint_open_token() for _ in range(MAX_OPEN_TOKENS + 1)]
    assert creds.redeem(tokens[0]) is None
    assert all(creds.redeem(t) is not None for t in tokens[1:])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (f"{cookie_name(8765)}=abc", "abc"),
        (f"other=1; {cookie_name(8765)}=abc; x=y", "abc"),
        (f"{cookie_name(8766)}=abc", None),  # another port's service
        ('bad"cookie', None),
    ],
)
def test_the_session_cookie_is_found_by_this_port_only(
    header: str | None, expected: str | None
) -> None:
    assert session_from_cookies(header, 8765) == expected


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return write_replay(tmp_path / "replay.jsonl", [Answer(prompt="p", answers=("a", "b"))])


@pytest.fixture
def served(tmp_path: Path, replay: Path) -> Iterator[tuple[CaptureServer, CaptureSink]]:
    with CaptureSink(tmp_path / "device") as sink:
        server = CaptureServer(sink, ReplayAnswers(replay)).start()
        try:
            yield server, sink
        finally:
            server.stop()


def call(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        sent = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(data)), **headers}
        conn.request(method, path, body=data, headers=sent)
        res = conn.getresponse()
        raw = res.read()
        parsed = json.loads(raw) if res.getheader("Content-Type", "").endswith("json") else {}
        return res.status, parsed, dict(res.getheaders())
    finally:
        conn.close()


def _session(server: CaptureServer) -> str:
    status, _, headers = call(server.port, "GET", "/?" + urlsplit(server.open_url()).query, {})
    assert status == 303
    return headers["Set-Cookie"].split(";")[0]


def _gaze(query_id: int) -> list[dict[str, Any]]:
    return [{"type": "gaze", "query_id": query_id, "t_ms": T0, "x": 1.0, "y": 2.0,
             "side": "left", "char_index": 0, "validate": 1}]  # fmt: skip


def test_a_session_cookie_is_enough_for_the_api(
    served: tuple[CaptureServer, CaptureSink],
) -> None:
    server, sink = served
    cookie = {"Cookie": _session(server)}
    status, body, _ = call(server.port, "GET", "/api/v1/next", cookie)
    assert status == 200
    status, body, _ = call(
        server.port, "POST", "/api/v1/samples", cookie, {"items": _gaze(body["query_id"])}
    )
    assert (status, body["accepted"]) == (200, 1)
    name, value = cookie["Cookie"].split("=", 1)
    for wrong in (f"{name}=forged", f"{cookie_name(server.port + 1)}={value}", ""):
        status, body, _ = call(server.port, "GET", "/api/v1/status", {"Cookie": wrong})
        assert (status, body["field"]) == (401, "token"), wrong
    assert sink.stats()["gaze_samples"] == 1


def test_only_the_api_token_header_mints_a_link(
    served: tuple[CaptureServer, CaptureSink],
) -> None:
    server, _ = served
    cookie = {"Cookie": _session(server)}
    for headers, path in (
        (cookie, "/api/v1/open"),
        ({}, f"/api/v1/open?token={server.token}"),
        ({TOKEN_HEADER: "wrong"}, "/api/v1/open"),
    ):
        status, body, _ = call(server.port, "POST", path, headers)
        assert (status, body["field"]) == (401, "token"), headers
    status, body, _ = call(server.port, "POST", "/api/v1/open", {TOKEN_HEADER: server.token})
    assert status == 200 and body["expires_in_s"] > 0
    assert body["url"].startswith(f"{server.url}?open=")
    status, _, headers = call(server.port, "GET", "/?" + urlsplit(body["url"]).query, {})
    assert status == 303 and headers["Set-Cookie"].startswith(cookie_name(server.port))


# --- over gRPC --------------------------------------------------------------------------------


def test_grpc_calls_without_the_token_are_refused_before_the_store(tmp_path: Path) -> None:
    meta = capture_pb2.QueryMeta(
        query_id=1, task_id=3, pairwise=True, prompt="p", response_left="a", response_right="b"
    )
    sample = capture_pb2.Sample(
        query_id=1, kind=capture_pb2.SAMPLE_KIND_GAZE, side=capture_pb2.SIDE_LEFT, t_ms=T0,
        x=1.0, y=2.0, char_index=0, validate=1,
    )  # fmt: skip
    with CaptureSink(tmp_path / "device") as sink:
        server, port = serve_capture(sink, "127.0.0.1:0", token="the-token")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = capture_pb2_grpc.CaptureStub(channel)
                label = capture_pb2.Label(query_id=1, preference=1)
                calls = (
                    (stub.BeginQuery, meta),
                    (stub.StreamSamples, [sample]),
                    (stub.SetLabel, label),
                )
                for metadata in ((), token_metadata("not-it"), (("x-other", "the-token"),)):
                    for method, request in calls:
                        arg = iter(request) if isinstance(request, list) else request
                        with pytest.raises(grpc.RpcError) as err:
                            method(arg, timeout=10, metadata=metadata)
                        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                        assert TOKEN_METADATA in (err.value.details() or "")
                assert sink.stats()["queries"] == 0
                good = token_metadata("the-token")
                stub.BeginQuery(meta, timeout=10, metadata=good)
                summary = stub.StreamSamples(iter([sample]), timeout=10, metadata=good)
                assert summary.accepted == 1
        finally:
            server.stop(grace=None).wait(10)
    with pytest.raises(ValueError, match="non-empty token"):
        serve_capture(CaptureSink(tmp_path / "other"), "127.0.0.1:0", token="")


# --- fedgaze client open ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_client_open_prints_a_link_that_opens_the_page_once(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, replay: Path
) -> None:
    creds = operator_credentials(tmp_path_factory)
    config = enroll_device(tmp_path, creds).config
    cli = [sys.executable, "-m", "fedgaze.cli", "client", "open", "--print-only"]
    cli += ["--config", str(tmp_path / "config" / "client.toml")]
    down = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "the capture service is not running" in down.stderr
    with capture_service(config, replay) as ready:
        port = ready["port"]
        done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        link = done.stdout.split()[-1]
        assert link.startswith(f"http://127.0.0.1:{port}/?open=")
        opened, _, headers = call(port, "GET", "/?" + urlsplit(link).query, {})
        assert opened == 303 and headers["Location"] == "/"
        page, _, _ = call(port, "GET", "/", {"Cookie": headers["Set-Cookie"].split(";")[0]})
        assert page == 200
        assert call(port, "GET", "/?" + urlsplit(link).query, {})[0] == 401  # once only
