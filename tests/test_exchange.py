"""The server's push/pull exchange: a device whose connection dropped gets the message again
when it is back (as after a SuperLink restart), within the round's timeout; an error reply
becomes one line naming its root cause."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedgaze.server.exchange import Exchange, brief_reason, push_and_pull
from flaky_grid import FlakyGrid

pytestmark = pytest.mark.usefixtures("task_identity")


def _messages(nodes: list[int]) -> list[Message]:
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return [
        Message(content=content, dst_node_id=n, message_type="evaluate", group_id="1")
        for n in nodes
    ]


def test_a_node_that_comes_back_gets_the_message_again() -> None:
    grid = FlakyGrid([1, 2, 3], flaky=2, drops=1, away_polls=3)
    outcome = Exchange.of(push_and_pull(grid, _messages([1, 2, 3]), 5.0, poll=0.01))  # type: ignore[arg-type]
    assert outcome.failures == []
    assert sorted(r.device_id for r, _ in outcome.reports) == ["d1", "d2", "d3"]
    assert grid.pushed.count(2) == 2


def test_resends_are_bounded_and_the_failure_is_named() -> None:
    grid = FlakyGrid([1, 2], flaky=2, drops=10, away_polls=0)
    outcome = Exchange.of(push_and_pull(grid, _messages([1, 2]), 5.0, 0.01, max_resends=3))  # type: ignore[arg-type]
    assert [r.device_id for r, _ in outcome.reports] == ["d1"]
    assert grid.pushed.count(2) == 4
    assert outcome.failures == ["node 2: Node Unavailable"]


def test_a_node_that_stays_away_fails_at_the_timeout() -> None:
    grid = FlakyGrid([1, 2], flaky=2, drops=1, away_polls=10_000)
    outcome = Exchange.of(push_and_pull(grid, _messages([1, 2]), 0.3, poll=0.01))  # type: ignore[arg-type]
    assert [r.device_id for r, _ in outcome.reports] == ["d1"]
    assert len(outcome.failures) == 1
    assert outcome.failures[0].startswith("node 2: Node Unavailable (not back within")


SIMULATION_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()"
    '\x1b[39m (pid=1)\n  File "rounds.py", line 124, in train\n    rows = _rows(node)\n'
    "fedgaze.client.device.store.StoreError: /run/devices/sim-00001/store.key: key missing\n\n"
    "The above exception was the direct cause of the following exception:\n\n"
    "flwr.clientapp.client_app.ClientAppException: \n"
    "Exception ClientAppException occurred. Message: /run/devices/sim-00001/store.key: "
    "key missing'>"
)


@pytest.mark.parametrize(
    ("reason", "brief"),
    [
        (SIMULATION_REASON, "StoreError: /run/devices/sim-00001/store.key: key missing"),
        (
            "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\n"
            "Exception ClientAppException occurred. Message: bad input'>",
            "ClientApp raised: bad input",
        ),
        ("Node Unavailable", "Node Unavailable"),
        ("x" * 900, "x" * 500),
    ],
)
def test_an_error_reason_becomes_one_line_naming_the_root_cause(reason: str, brief: str) -> None:
    assert brief_reason(reason) == brief
