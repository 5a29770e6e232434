"""Wrong environments end in clear errors within bounded time (real SuperLink processes)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fedgaze.federation.flower import child_env
from fedgaze.processes import ProcessFailed, Supervisor
from fedgaze.server import superlink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_fleet_port_already_taken_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    real_free_ports = superlink.free_ports

    def ports(count: int, host: str = "127.0.0.1") -> list[int]:
        return [taken, *real_free_ports(count - 1, host)]

    monkeypatch.setattr(superlink, "free_ports", ports)
    env = child_env(tmp_path / "flwr_home")
    start = time.monotonic()
    try:
        with (
            Supervisor(tmp_path / "logs") as sup,
            pytest.raises((ProcessFailed, superlink.FederationFailed)) as err,
        ):
            superlink.start_superlink(sup, tmp_path, env, None, ready_within=45.0)
    finally:
        squatter.close()
    assert time.monotonic() - start < 60
    message = str(err.value)
    assert "superlink" in message.lower() and "already in use" in message
    print(message[-400:])


def test_not_enough_devices_ends_in_a_bounded_wait() -> None:
    from fedgaze.server.exchange import NotEnoughNodes, wait_for_nodes

    class OneNodeGrid:
        def get_node_ids(self) -> list[int]:
            return [7]

    start = time.monotonic()
    with pytest.raises(NotEnoughNodes, match="only 1 of the 3 required devices connected"):
        wait_for_nodes(OneNodeGrid(), 3, timeout=1.0, poll=0.1)  # type: ignore[arg-type]
    assert time.monotonic() - start < 5
    assert wait_for_nodes(OneNodeGrid(), 1, timeout=1.0) == [7]  # type: ignore[arg-type]
