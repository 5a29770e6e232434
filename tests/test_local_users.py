"""Another Unix user on the person's machine gets nothing from the device agent's capture service.

Needs root (to create the other user, removed afterwards); skipped cleanly otherwise. The
person's enrolled device folder lies in a folder everyone may enter, so only the agent's own
modes protect it. A real capture service process serves it (HTTP and gRPC on 127.0.0.1); a
second process runs as the other user (it loads Python and gRPC as root, then drops to that
user's uid and gid with no groups, for good: the interpreter may live where that user cannot
read) and tries what a hostile local program would: read the
ready file, the folder and the keys; load the page and look for the token; post samples, read
the status, mint a link; open a gRPC stream. Every attempt must fail, nothing may reach the
store, and the person's own calls must still work.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_helpers import capture_service, enroll_device, operator_credentials
from fedgaze.client.capture.answers import Answer, write_replay
from fedgaze.client.device.private import public_entries

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="creating a second Unix user needs root",
    ),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd on this machine"),
]

INTRUDER = r"""
import encodings.idna, http.client, json, os, sys  # (idna: loaded lazily by http.client)
from pathlib import Path
import grpc
from fedgaze.v1 import capture_pb2, capture_pb2_grpc

device, port, grpc_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
uid, gid = int(sys.argv[4]), int(sys.argv[5])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)  # from here on this process is the other user, for good
try:
    os.setuid(0)
    sys.exit("could take root back")
except PermissionError:
    pass
out = {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()}

def attempt(name, action):
    try:
        out[name] = {"ok": action()}
    except Exception as err:
        out[name] = {"error": type(err).__name__, "message": str(err)[:200]}

attempt("ready", lambda: (device / "capture_ready.json").read_text())
attempt("list", lambda: sorted(p.name for p in device.iterdir()))
attempt("store_key", lambda: (device / "store.key").read_bytes().hex())

def ask(method, path, body=None, headers=()):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body).encode() if body is not None else b""
    conn.request(method, path, body=data, headers={"Host": f"127.0.0.1:{port}",
                 "Content-Length": str(len(data)), **dict(headers)})
    res = conn.getresponse()
    return {"status": res.status, "body": res.read().decode("utf-8", "replace"),
            "cookie": res.getheader("Set-Cookie")}

items = {"items": [{"type": "gaze", "query_id": 1, "t_ms": 1.8e12, "x": 1.0, "y": 2.0,
                    "side": "left", "char_index": 0, "validate": 1}]}
attempt("page", lambda: ask("GET", "/"))
attempt("index", lambda: ask("GET", "/index.html"))
attempt("link", lambda: ask("GET", "/?open=guess"))
attempt("next", lambda: ask("GET", "/api/v1/next"))
attempt("samples", lambda: ask("POST", "/api/v1/samples", items))
attempt("samples_guess", lambda: ask("POST", "/api/v1/samples?token=guess", items,
                                      [("X-Fedgaze-Token", "guess")]))
attempt("status", lambda: ask("GET", "/api/v1/status"))
attempt("open", lambda: ask("POST", "/api/v1/open"))

def stream():
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = capture_pb2_grpc.CaptureStub(channel)
        sample = capture_pb2.Sample(query_id=1, kind=capture_pb2.SAMPLE_KIND_GAZE,
                                    side=capture_pb2.SIDE_LEFT, t_ms=1.8e12, x=1.0, y=2.0)
        codes = []
        for metadata in ((), (("x-fedgaze-token", "guess"),)):
            for call in (
                lambda: stub.BeginQuery(capture_pb2.QueryMeta(query_id=1, task_id=1,
                    pairwise=False, prompt="p", response_left="a"), timeout=10,
                    metadata=metadata),
                lambda: stub.StreamSamples(iter([sample] * 50), timeout=10, metadata=metadata),
            ):
                try:
                    call()
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
        return codes

attempt("grpc", stream)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def other_user() -> Iterator[tuple[int, int]]:
    """A fresh system user (uid, gid), removed afterwards."""
    import pwd

    name = f"fgz-other-{secrets.token_hex(3)}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter: only the agent's own modes protect what is inside."""
    path = Path(tempfile.mkdtemp(prefix="fedgaze-users-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _status(port: int, token: str) -> dict[str, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/v1/status", headers={"X-Fedgaze-Token": token})
        res = conn.getresponse()
        assert res.status == 200
        return dict(json.loads(res.read()))
    finally:
        conn.close()


def test_another_user_cannot_read_post_or_stream(
    other_user: tuple[int, int], open_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    uid, gid = other_user
    config = enroll_device(open_dir, operator_credentials(tmp_path_factory)).config
    layout = config.layout
    replay = write_replay(open_dir / "replay.jsonl", [Answer(prompt="p", answers=("a", "b"))])
    with capture_service(config, replay, "--grpc-port", "0") as ready:
        done = subprocess.run(
            [sys.executable, "-c", INTRUDER, str(layout.root), str(ready["port"]),
             str(ready["grpc_port"]), str(uid), str(gid)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert (seen["uid"], seen["euid"], seen["groups"]) == (uid, uid, [])
        for name in ("ready", "list", "store_key"):
            assert seen[name]["error"] == "PermissionError", (name, seen[name])
        for name in ("page", "index", "link", "next", "samples", "samples_guess", "status"):
            assert "ok" in seen[name], (name, seen[name])
            reply = seen[name]["ok"]
            assert reply["status"] == 401 and reply["cookie"] is None, (name, reply)
            assert ready["token"] not in reply["body"], name
        assert seen["open"]["ok"]["status"] == 401
        assert seen["grpc"]["ok"] == ["UNAUTHENTICATED"] * 4
        assert done.stdout.count(ready["token"]) == 0
        status = _status(ready["port"], ready["token"])  # the person's own call still works
        assert status["sink"]["queries"] == 0 and status["sink"]["gaze_samples"] == 0
    assert public_entries(layout.root) == {}
