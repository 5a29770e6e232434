"""A grid stand-in for the server's push/pull code: every message is answered at once, except
by one node that drops off and comes back."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from fedgaze.federation import protocol


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
