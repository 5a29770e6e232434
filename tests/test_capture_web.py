"""The capture service over real HTTP on 127.0.0.1, and its answer backends.

Covers the service's refusals (host, origin, token, size, bad JSON naming the field, pause),
that accepted samples and labels land in the encrypted device store, the command-line entry
point as a child process (SIGTERM commits), and the replay and OpenAI-compatible backends (the
latter against a small chat-completions server on 127.0.0.1).
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
import pytest

from capture_replay import FakeChat
from fedgaze.client.capture.answers import (
    Answer,
    AnswerError,
    OpenAICompatibleAnswers,
    ReplayAnswers,
    ReplayExhausted,
    write_replay,
)
from fedgaze.client.capture.samples import TEXT_MAX_CHARS
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.client.capture.web import TOKEN_HEADER, CaptureServer
from fedgaze.client.device.pause import set_paused
from fedgaze.client.device.store import load_device
from fedgaze.data.schema import PREF_LEFT, SIDE_LEFT, SIDE_RIGHT, ServedIds

LEFT = "The quick brown fox jumps over the lazy dog."
RIGHT = "A second answer, somewhat longer than the first one."
T0 = 1.8e12  # an epoch millisecond in 2027


class Target(Protocol):
    """A capture service to talk to: in this process or another."""

    @property
    def port(self) -> int: ...

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class Remote:
    """A capture service in another process, known by its ready file."""

    port: int
    token: str


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


def request(
    server: Target,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: Mapping[str, str | None] | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One request to ``server`` over real HTTP; by default with its token and own Host."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        sent: dict[str, str | None] = {
            "Host": f"127.0.0.1:{server.port}",
            TOKEN_HEADER: server.token,
        }
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in sent.items():
            if value is not None:
                conn.putheader(key, value)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        res = conn.getresponse()
        payload = res.read()
        ctype = res.getheader("Content-Type", "")
        parsed = json.loads(payload) if ctype.startswith("application/json") else {"text": payload}
        return Reply(res.status, parsed, dict(res.getheaders()))
    finally:
        conn.close()


def _items(query_id: int) -> list[dict[str, Any]]:
    return [
        {"type": "mouse", "query_id": query_id, "t_ms": T0, "x": 10.0, "y": 20.0,
         "side": "left", "char_index": 4, "validate": -1},
        {"type": "gaze", "query_id": query_id, "t_ms": T0 + 40, "x": 600.5, "y": 220.0,
         "side": "right", "char_index": 9, "validate": 1},
        {"type": "scroll", "query_id": query_id, "t_ms": T0 + 50, "side": "none",
         "char_index": -1, "detail": "0,120"},
    ]  # fmt: skip


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return write_replay(
        tmp_path / "replay.jsonl",
        [
            Answer(prompt="pairwise?", answers=(LEFT, RIGHT), task_id=3),
            Answer(prompt="pointwise?", answers=(LEFT,)),
        ],
    )


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[CaptureSink]:
    with CaptureSink(tmp_path / "device") as s:
        yield s


@pytest.fixture
def server(sink: CaptureSink, replay: Path) -> Iterator[CaptureServer]:
    srv = CaptureServer(sink, ReplayAnswers(replay), max_body=4096).start()
    try:
        yield srv
    finally:
        srv.stop()


# --- the service ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.org", "::"])
def test_binding_to_a_non_loopback_host_is_refused(
    sink: CaptureSink, replay: Path, host: str
) -> None:
    with pytest.raises(ValueError, match="host: the capture service binds to loopback only"):
        CaptureServer(sink, ReplayAnswers(replay), host=host)


def test_page_opens_from_a_one_time_link_and_holds_no_token(server: CaptureServer) -> None:
    locked = request(server, "GET", "/", headers={TOKEN_HEADER: None})
    assert locked.status == 401 and b"fedgaze client open" in locked.body["text"]
    link = urlsplit(server.open_url())
    opened = request(server, "GET", f"/?{link.query}", headers={TOKEN_HEADER: None})
    assert opened.status == 303 and opened.headers["Location"] == "/"
    cookie = opened.headers["Set-Cookie"]
    name = f"fedgaze-capture-{server.port}"
    assert cookie.startswith(f"{name}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = {TOKEN_HEADER: None, "Cookie": cookie.split(";")[0]}
    page = request(server, "GET", "/", headers=session)
    assert page.status == 200
    html = page.body["text"].decode()
    assert server.token not in html and "token" not in html.lower()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in page.headers["Content-Security-Policy"]
    again = request(server, "GET", f"/?{link.query}", headers={TOKEN_HEADER: None})
    assert again.status == 401 and "Set-Cookie" not in again.headers  # used once
    lib = request(server, "GET", "/static/fedgaze-capture.js", headers={TOKEN_HEADER: None})
    assert lib.status == 200 and b"FedgazeCapture" in lib.body["text"]
    for path in ("/static/../web.py", "/static/chat.html", "/vendor/webgazer.js", "/nope"):
        assert request(server, "GET", path).status == 404, path


def test_webgazer_is_served_only_from_the_operator_file(
    sink: CaptureSink, replay: Path, tmp_path: Path
) -> None:
    wg = tmp_path / "webgazer.js"
    wg.write_text("window.webgazer = {};")
    srv = CaptureServer(sink, ReplayAnswers(replay), webgazer=wg).start()
    try:
        assert request(srv, "GET", "/vendor/webgazer.js").body["text"] == wg.read_bytes()
        assert request(srv, "GET", "/api/v1/status").body["webgazer"] is True
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({TOKEN_HEADER: None}, 401, "token"),
        ({TOKEN_HEADER: "not-the-token"}, 401, "token"),
        ({"Origin": "https://evil.example"}, 403, "Origin"),
        ({"Origin": "http://127.0.0.1:1"}, 403, "Origin"),
        ({"Host": "evil.example"}, 403, "Host"),
        ({"Host": "rebind.example:{port}"}, 403, "Host"),
    ],
)
def test_foreign_or_unauthenticated_requests_are_refused(
    server: CaptureServer,
    sink: CaptureSink,
    headers: dict[str, str | None],
    status: int,
    field: str,
) -> None:
    query_id = request(server, "GET", "/api/v1/next").body["query_id"]
    headers = {k: v.format(port=server.port) if v else v for k, v in headers.items()}
    reply = request(server, "POST", "/api/v1/samples", {"items": _items(query_id)}, headers=headers)
    assert (reply.status, reply.body["field"]) == (status, field)
    assert sink.stats()["mouse_samples"] == 0


def test_token_in_the_url_and_own_origin_are_accepted(server: CaptureServer) -> None:
    query_id = request(server, "GET", "/api/v1/next").body["query_id"]
    own = {TOKEN_HEADER: None, "Origin": f"http://127.0.0.1:{server.port}"}
    reply = request(
        server, "POST", f"/api/v1/samples?token={server.token}", {"items": _items(query_id)},
        headers=own,
    )  # fmt: skip
    assert reply.status == 200 and reply.body["accepted"] == 3


def test_oversized_body_is_refused_unread(server: CaptureServer) -> None:
    reply = request(server, "POST", "/api/v1/samples", raw=b" " * 5000)
    assert reply.status == 413 and reply.body["field"] == "body"
    assert "limit is 4096" in reply.body["error"]


@pytest.mark.parametrize(
    ("path", "raw", "status", "field"),
    [
        ("/api/v1/samples", b"{not json", 400, "body"),
        ("/api/v1/samples", b"[1, 2]", 400, "body"),
        ("/api/v1/samples", b'{"items": 3}', 400, "items"),
        ("/api/v1/samples", b'{"items": [1]}', 400, "items"),
        ("/api/v1/label", b'{"query_id": "one"}', 400, "query_id"),
        ("/api/v1/label", b'{"query_id": 1, "preference": 7}', 400, "preference"),
        ("/api/v1/label", b'{"query_id": 1, "preference": 1, "mood": 3}', 400, "mood"),
        ("/api/v1/label", b'{"query_id": 99, "preference": 1}', 400, "query_id"),
        ("/api/v1/calibration", b'{"precision": 150}', 400, "precision"),
        ("/api/v1/next", b'{"prompt": 5}', 400, "prompt"),
        ("/api/v1/status", b"{}", 405, None),
    ],
)
def test_bad_requests_name_the_field(
    server: CaptureServer, path: str, raw: bytes, status: int, field: str | None
) -> None:
    reply = request(server, "POST", path, raw=raw)
    assert (reply.status, reply.body["field"]) == (status, field), reply.body
    if field is not None:
        assert reply.body["error"].startswith(f"{field}") or "body" in reply.body["error"]


def test_invalid_items_are_rejected_one_by_one(server: CaptureServer, sink: CaptureSink) -> None:
    query_id = request(server, "GET", "/api/v1/next").body["query_id"]
    items = _items(query_id)
    items[0]["x"] = "ten"
    items.append({**items[1], "char_index": len(RIGHT) + 5})
    reply = request(server, "POST", "/api/v1/samples", {"items": items})
    assert reply.status == 200 and reply.body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in reply.body["rejected"]] == [
        (0, "x"),
        (3, "char_index"),
    ]
    assert sink.stats()["gaze_samples"] == 1


def test_samples_labels_and_calibration_land_in_the_store(
    server: CaptureServer, sink: CaptureSink
) -> None:
    first = request(server, "GET", "/api/v1/next").body
    assert (first["prompt"], first["answers"], first["task_id"]) == ("pairwise?", [LEFT, RIGHT], 3)
    assert first["pairwise"] is True
    qid = first["query_id"]
    assert request(server, "POST", "/api/v1/samples", {"items": _items(qid)}).status == 200
    label = {"query_id": qid, "preference": PREF_LEFT, "likert_left": 4.0, "likert_right": None}
    assert request(server, "POST", "/api/v1/label", label).status == 200
    assert request(server, "POST", "/api/v1/calibration", {"precision": 82.5}).body["tasks"] == [3]
    second = request(server, "GET", "/api/v1/next").body
    assert second["pairwise"] is False and second["task_id"] % 2 == 0
    status = request(server, "GET", "/api/v1/status").body
    assert status["sink"]["queries"] == 2 and status["query_id"] == second["query_id"]
    assert status["traffic"]["requests"]["/api/v1/samples"] == 1

    sink.commit()
    device = load_device(sink.store_dir, key_path=sink.key_path)
    q1, q2 = device.queries
    assert (q1.query_id, q1.prompt, q1.response_right, q1.preference) == (
        qid,
        "pairwise?",
        RIGHT,
        1,
    )
    assert q1.likert_left == 4.0 and q1.shown_at_ms is not None
    assert list(q1.mouse.side) == [SIDE_LEFT] and list(q1.mouse.char_index) == [4]
    assert list(q1.gaze.side) == [SIDE_RIGHT] and list(q1.gaze.validate) == [1]
    assert q2.response_right is None
    # replayed without ids: derived from the replay file's name and line
    assert q1.served == ServedIds("replay:1", "replay:1/1", "replay:1/2")
    assert q2.served == ServedIds("replay:2", "replay:2/1", None)
    # calibration given without a task applies to every task of the session, later ones too
    assert dict(device.calibration) == {3: 82.5, second["task_id"]: 82.5}


def test_paused_device_gets_409_and_records_nothing(
    server: CaptureServer, sink: CaptureSink
) -> None:
    qid = request(server, "GET", "/api/v1/next").body["query_id"]
    set_paused(sink.device_dir, True)
    try:
        for path, body in [
            ("/api/v1/samples", {"items": _items(qid)}),
            ("/api/v1/label", {"query_id": qid, "preference": 1}),
            ("/api/v1/next", None),
        ]:
            reply = request(server, "POST", path, body)
            assert reply.status == 409 and reply.body["paused"] is True, path
            assert "paused" in reply.body["error"]
        assert request(server, "GET", "/api/v1/status").body["paused"] is True
        assert sink.stats()["mouse_samples"] == 0 and sink.stats()["labels"] == 0
    finally:
        set_paused(sink.device_dir, False)
    assert request(server, "POST", "/api/v1/samples", {"items": _items(qid)}).status == 200


def test_end_of_replay_is_410(server: CaptureServer) -> None:
    assert [request(server, "GET", "/api/v1/next").status for _ in range(3)] == [200, 200, 410]


def test_allowed_foreign_origin_gets_cors_others_do_not(sink: CaptureSink, replay: Path) -> None:
    chat = "http://127.0.0.1:9"
    srv = CaptureServer(sink, ReplayAnswers(replay), allowed_origins=[chat]).start()
    try:
        pre = request(srv, "OPTIONS", "/api/v1/samples", headers={"Origin": chat})
        assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == chat
        assert TOKEN_HEADER in pre.headers["Access-Control-Allow-Headers"]
        ok = request(srv, "GET", "/api/v1/status", headers={"Origin": chat})
        assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == chat
        other = request(srv, "OPTIONS", "/api/v1/samples", headers={"Origin": "http://x.test"})
        assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers
    finally:
        srv.stop()


def test_command_line_serves_until_sigterm_then_commits(replay: Path, tmp_path: Path) -> None:
    device_dir, ready = tmp_path / "dev", tmp_path / "run" / "capture.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgaze.client.capture.web", "--device-dir", str(device_dir),
         "--replay", str(replay), "--ready-file", str(ready), "--grpc-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate(timeout=5)
            assert time.monotonic() < deadline, "the capture service did not start in 30 s"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert ready.stat().st_mode & 0o077 == 0 and info["pid"] == proc.pid
        grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{info['grpc_port']}")).result(
            timeout=10
        )  # the gRPC front end for native trackers is up too
        srv = Remote(info["port"], info["token"])
        qid = request(srv, "GET", "/api/v1/next").body["query_id"]
        assert request(srv, "POST", "/api/v1/samples", {"items": _items(qid)}).status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"listening on http://127.0.0.1:{info['port']}/" in out
    assert not ready.exists()
    device = load_device(device_dir / "store")
    assert [len(q.mouse) + len(q.gaze) for q in device.queries] == [2]


def test_command_line_rejects_a_bad_replay_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "answers": ["a"]}\n{"prompt": "p", "answers": []}\n')
    done = subprocess.run(
        [sys.executable, "-m", "fedgaze.client.capture.web", "--device-dir",
         str(tmp_path / "dev"), "--replay", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and f"{bad}:2: answers:" in done.stderr


# --- answer backends --------------------------------------------------------------------------


def _ids_line(prompt_id: str, answer_ids: list[str]) -> str:
    return json.dumps({"prompt": "p", "answers": ["a", "b"], "prompt_id": prompt_id,
                       "answer_ids": answer_ids})  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", ":2: not JSON"),
        ("[1, 2]", ":2: expected a JSON object"),
        ('{"answers": ["a"]}', ":2: prompt: Field required"),
        ('{"prompt": "p", "answers": ["a", "b", "c"]}', ":2: answers: Tuple should have at most 2"),
        ('{"prompt": "p", "answers": ["a"], "task": 1}', ":2: task: Extra inputs"),
        ('{"prompt": "p", "answers": [3]}', ":2: answers.0: Input should be a valid string"),
        ('{"prompt": "p", "answers": ["a"], "answer_ids": ["x"]}', ":2: prompt_id: required"),
        ('{"prompt": "p", "answers": ["a"], "prompt_id": ""}', ":2: prompt_id: must not be empty"),
        ('{"prompt": "p", "answers": ["a"], "prompt_id": 7}', ":2: prompt_id: Input should be"),
        (_ids_line("p", ["x"]), ":2: answer_ids: one id per answer (1 ids for 2 answers)"),
        (_ids_line("p", ["x", "x"]), ":2: answer_ids: the answers need different ids"),
        (_ids_line("p", ["x", "y" * 201]), ":2: answer_ids.1: String should have at most 200"),
    ],
)
def test_replay_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "ok", "answers": ["a"]}\n' + line + "\n")
    with pytest.raises(AnswerError) as err:
        ReplayAnswers(path)
    assert str(err.value).startswith(f"{path}{message}")


def test_replay_reads_given_ids_and_derives_the_others(tmp_path: Path) -> None:
    path = tmp_path / "study.jsonl"
    lines = [
        {"prompt": "a", "answers": ["x", "y"], "prompt_id": "P1", "answer_ids": ["A1", "A2"]},
        None,  # a blank line still counts as a line
        {"prompt": "b", "answers": ["x"], "prompt_id": "P3"},
        {"prompt": "c", "answers": ["x", "y"]},
        {"prompt": "d", "answers": ["x"], "prompt_id": None, "answer_ids": None},
    ]
    path.write_text("\n".join(json.dumps(x) if x else "" for x in lines) + "\n")
    backend = ReplayAnswers(path)
    items = [backend.next(None) for _ in range(len(backend))]
    assert [(a.prompt_id, a.answer_ids) for a in items] == [
        ("P1", ("A1", "A2")), ("P3", ("P3/1",)), ("study:4", ("study:4/1", "study:4/2")),
        ("study:5", ("study:5/1",)),
    ]  # fmt: skip
    again = ReplayAnswers(write_replay(tmp_path / "copy.jsonl", items))  # ids are written
    assert [again.next(None) for _ in items] == items


def test_replay_plays_items_in_order_then_ends(replay: Path) -> None:
    answers = ReplayAnswers(replay)
    assert [answers.next(None).pairwise for _ in range(2)] == [True, False]
    with pytest.raises(ReplayExhausted):
        answers.next(None)


@pytest.fixture
def chat() -> Iterator[tuple[FakeChat, str]]:
    fake = FakeChat()
    httpd, url = fake.serve()
    try:
        yield fake, url
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_openai_backend_asks_for_two_answers(
    chat: tuple[FakeChat, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = chat
    monkeypatch.setenv("FGZ_TEST_KEY", "sk-test")
    answer = OpenAICompatibleAnswers(url, "tiny", "FGZ_TEST_KEY").next("why?")
    assert answer.answers == ("answer 0 of 1: why?", "answer 1 of 1: why?")
    # the completion's id is the prompt's, "<id>/<choice index>" each answer's
    assert (answer.prompt_id, answer.answer_ids) == ("chatcmpl-1", ("chatcmpl-1/0", "chatcmpl-1/1"))
    path, auth, body = fake.seen[0]
    assert (path, auth, body["model"], body["n"]) == (
        "/v1/chat/completions",
        "Bearer sk-test",
        "tiny",
        2,
    )
    assert body["messages"] == [{"role": "user", "content": "why?"}]


def test_openai_backend_makes_a_second_call_when_n_is_ignored(
    chat: tuple[FakeChat, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = chat
    fake.mode = "one"
    monkeypatch.delenv("FGZ_UNSET_KEY", raising=False)
    answer = OpenAICompatibleAnswers(url + "/v1", "tiny", "FGZ_UNSET_KEY").next("q")
    assert answer.answers == ("answer 0 of 1: q", "answer 0 of 2: q")
    # the second answer is under the second call's id
    assert (answer.prompt_id, answer.answer_ids) == ("chatcmpl-1", ("chatcmpl-1/0", "chatcmpl-2/0"))
    assert [auth for _, auth, _ in fake.seen] == [None, None]  # no key: no header
    pointwise = OpenAICompatibleAnswers(url, "tiny", "", pairwise=False).next("q")
    assert not pointwise.pairwise and len(fake.seen) == 3
    assert (pointwise.prompt_id, pointwise.answer_ids) == ("chatcmpl-3", ("chatcmpl-3/0",))


@pytest.mark.parametrize(("mode", "message"), [("error", "HTTP 500"), ("slow", "request failed")])
def test_openai_backend_failures_are_answer_errors(
    chat: tuple[FakeChat, str], mode: str, message: str
) -> None:
    fake, url = chat
    fake.mode = mode
    backend = OpenAICompatibleAnswers(url, "tiny", "", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(AnswerError, match=message):
        backend.next("q")
    assert time.monotonic() - start < 1.5


def _is_uuid4(text: str) -> bool:
    return str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4


@pytest.mark.parametrize("given", [None, "", "chatcmpl-same"])
@pytest.mark.parametrize("mode", ["n", "one"])
def test_openai_backend_makes_up_missing_or_repeated_ids(
    chat: tuple[FakeChat, str], mode: str, given: str | None
) -> None:
    fake, url = chat
    fake.mode, fake.ids = mode, lambda k: given
    answer = OpenAICompatibleAnswers(url, "tiny", "").next("q")
    assert answer.prompt_id is not None and answer.answer_ids is not None
    left, right = answer.answer_ids
    assert left == f"{answer.prompt_id}/0" and left != right
    # the server's id is kept; a second call under the same id (or none) gets a uuid4
    assert answer.prompt_id == given if given else _is_uuid4(answer.prompt_id)
    second_id, _, index = right.rpartition("/")
    assert (second_id, index) == (answer.prompt_id, "1") if mode == "n" else _is_uuid4(second_id)


@pytest.mark.parametrize("bad", [12345, "x" * 201, "line\nbreak", ["a"]])
def test_openai_backend_refuses_an_unusable_id(chat: tuple[FakeChat, str], bad: Any) -> None:
    fake, url = chat
    fake.ids = lambda k: bad
    with pytest.raises(AnswerError, match=r"reply 'id' is not a usable id"):
        OpenAICompatibleAnswers(url, "tiny", "").next("q")


def test_an_answer_the_contract_refuses_is_a_502_and_begins_nothing(
    sink: CaptureSink, tmp_path: Path
) -> None:
    huge = Answer(prompt="p", answers=("x" * (TEXT_MAX_CHARS + 1),))
    with CaptureServer(sink, ReplayAnswers(write_replay(tmp_path / "huge.jsonl", [huge]))) as srv:
        reply = request(srv, "GET", "/api/v1/next")
    assert reply.status == 502 and reply.body["error"].startswith("answers: response_left:")
    assert sink.stats()["queries"] == 0


def test_service_with_openai_backend_needs_the_typed_prompt(
    chat: tuple[FakeChat, str], sink: CaptureSink
) -> None:
    _, url = chat
    srv = CaptureServer(sink, OpenAICompatibleAnswers(url, "tiny", "")).start()
    try:
        missing = request(srv, "GET", "/api/v1/next")
        assert (missing.status, missing.body["field"]) == (400, "prompt")
        reply = request(srv, "POST", "/api/v1/next", {"prompt": "hello"})
        assert reply.status == 200 and reply.body["answers"][1] == "answer 1 of 1: hello"
        assert request(srv, "GET", "/api/v1/status").body["needs_prompt"] is True
    finally:
        srv.stop()
    (query,) = sink.commit().queries  # the completion's ids are the query's
    assert query.served == ServedIds("chatcmpl-1", "chatcmpl-1/0", "chatcmpl-1/1")
    assert load_device(sink.store_dir, key_path=sink.key_path).queries[0].served == query.served


def test_unreachable_openai_server_is_a_502(sink: CaptureSink) -> None:
    dead = CaptureServer(sink, OpenAICompatibleAnswers("http://127.0.0.1:9", "m", "", timeout_s=2))
    with dead:
        reply = request(dead, "POST", "/api/v1/next", {"prompt": "hello"})
    assert reply.status == 502 and "request failed" in reply.body["error"]
