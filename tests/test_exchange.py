"""The server's push/pull exchange: a device whose connection dropped gets the message again
when it is back (as after a SuperLink restart), within the round's timeout; an error reply
becomes one line naming its root cause."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from fedgaze.federation import protocol
from fedgaze.server.exchange import brief_reason, exchange

pytestmark = pytest.mark.usefixtures("task_identity")


class FlakyGrid:
    """Answers every message at once, except that node ``flaky`` is away: its first ``drops``
    messages get Flower's "Node Unavailable" error, and it is offline for ``away_polls`` polls
    after each drop."""

    def __init__(self, nodes: list[int], flaky: int, drops: int, away_polls: int) -> None:
        self.nodes, self.flaky, self.drops, self.away_polls = nodes, flaky, drops, away_polls
        self.ids = (f"m{i}" for i in itertools.count())
        self.outbox: dict[str, Message] = {}
        self.pushed: list[int] = []
        self.offline_for = 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = next(self.ids)
            msg.metadata._message_id = mid  # type: ignore[attr-defined]
            node = msg.metadata.dst_node_id
            self.pushed.append(node)
            if node == self.flaky and self.drops > 0:
                self.drops -= 1
                self.offline_for = self.away_polls
                reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "Node Unavailable"), reply_to=msg)
            else:
                content = protocol.reply_content(
                    f"d{node}", protocol.ReplyStatus.EVALUATED, protocol.ReplyMetrics()
                )
                reply = Message(content, reply_to=msg)
            self.outbox[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.outbox.pop(mid) for mid in list(ids) if mid in self.outbox]

    def get_node_ids(self) -> list[int]:
        if self.offline_for > 0:
            self.offline_for -= 1
            return [n for n in self.nodes if n != self.flaky]
        return list(self.nodes)


def _messages(nodes: list[int]) -> list[Message]:
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return [
        Message(content=content, dst_node_id=n, message_type="evaluate", group_id="1")
        for n in nodes
    ]


def test_a_node_that_comes_back_gets_the_message_again() -> None:
    grid = FlakyGrid([1, 2, 3], flaky=2, drops=1, away_polls=3)
    outcome = exchange(grid, _messages([1, 2, 3]), timeout=5.0, poll=0.01)  # type: ignore[arg-type]
    assert outcome.failures == []
    assert sorted(r.device_id for r, _ in outcome.reports) == ["d1", "d2", "d3"]
    assert grid.pushed.count(2) == 2


def test_resends_are_bounded_and_the_failure_is_named() -> None:
    grid = FlakyGrid([1, 2], flaky=2, drops=10, away_polls=0)
    outcome = exchange(grid, _messages([1, 2]), timeout=5.0, poll=0.01, max_resends=3)  # type: ignore[arg-type]
    assert [r.device_id for r, _ in outcome.reports] == ["d1"]
    assert grid.pushed.count(2) == 4
    assert outcome.failures == ["node 2: Node Unavailable"]


def test_a_node_that_stays_away_fails_at_the_timeout() -> None:
    grid = FlakyGrid([1, 2], flaky=2, drops=1, away_polls=10_000)
    outcome = exchange(grid, _messages([1, 2]), timeout=0.3, poll=0.01)  # type: ignore[arg-type]
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
