"""A recording TCP proxy between one SuperNode and the SuperLink, for tests that read the wire.

Every byte the client sent (``sent``) and received (``received``) is kept. With ``cut_at``, the
device is cut off the moment the SuperLink is about to hand it a message carrying those bytes
(``cut_at`` may be set while the proxy runs):
that data is not forwarded, every connection is closed and new ones are refused, so the
device stays away as if it had died just before that message (and after everything before it,
its own replies included, had gone through).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fedgaze.federation.events import ProgressEvent
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.local.launcher import FederationOutcome, launch_federation


class RecordingProxy:
    """Forwards TCP connections to ``target`` and keeps every byte the clients sent."""

    def __init__(self, target: str, cut_at: bytes | None = None) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.sent = bytearray()
        self.received = bytearray()
        self.cut = threading.Event()
        self.cut_at = cut_at
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, sink: bytearray, down: bool) -> None:
        tail = b""
        try:
            while not self._stop.is_set() and not self.cut.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if down and self.cut_at is not None and self.cut_at in tail + data:
                    self._cut_off()
                    break
                with self._lock:
                    sink.extend(data)
                dst.sendall(data)
                tail = data[-64:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _cut_off(self) -> None:
        self.cut.set()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:  # the SuperLink is gone (shutdown): drop this client
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(0.5)
            with self._lock:
                self._sockets += [client, upstream]
            for args in (
                (client, upstream, self.sent, False),
                (upstream, client, self.received, True),
            ):
                t = threading.Thread(target=self._pipe, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in [self._accept, *self._threads]:
            t.join(timeout=5)


def launch_recorded(
    run_dir: Path,
    settings: ServerSettings,
    nodes: Sequence[NodeSettings],
    proxies: list[RecordingProxy],
    cuts: Sequence[bytes | None] = (),
    on_event: Callable[[ProgressEvent], None] | None = None,
) -> FederationOutcome:
    """A local federation with TLS off and SuperNode ``i`` behind its own proxy, appended to
    ``proxies`` as it starts (with ``cut_at=cuts[i]`` where given); all closed at the end."""

    def through_proxy(fleet: str) -> str:
        i = len(proxies)
        proxies.append(RecordingProxy(fleet, cut_at=cuts[i] if i < len(cuts) else None))
        return proxies[-1].address

    try:
        return launch_federation(
            run_dir,
            settings,
            nodes,
            on_event=on_event,
            secure=False,
            fleet_address_for_nodes=through_proxy,
        )
    finally:
        for proxy in proxies:
            proxy.close()
