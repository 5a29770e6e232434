"""Pushing a round's messages to the devices and collecting their replies, within a timeout.

Flower's ``Grid.send_and_receive`` does the same push and pull, but it polls every 3 s (which
dominates a round of small models), it names no device in what it returns, and it gives up on a
device that dropped off for a moment; :func:`exchange` polls every 0.25 s, names the destination
of every error, malformed or missing reply, and sends again to a device that comes back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedgaze.federation import protocol
from fedgaze.federation.arrays import to_array_record
from fedgaze.federation.settings import RoundPlan
from fedgaze.model.weights import ModelState


class NotEnoughNodes(RuntimeError):
    """Fewer devices connected than the run needs, within the configured wait."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exhausted)): (.+)$")
_WRAPPED = re.compile(r"Exception ClientAppException occurred\. Message: (.*?)'?>?$")


def brief_reason(reason: str, limit: int = 500) -> str:
    """An error reply's reason in one line, for ``rounds_log``: the root cause (the first
    ``Type: message`` line of a traceback the reason carries, as the simulation engine's does),
    else what the device's ClientApp said it raised, else the reason, colours removed."""
    text = _ANSI.sub("", reason)
    for line in text.splitlines():
        found = _RAISED.match(line.strip())
        if found and found.group(1) != "ClientAppException":
            return f"{found.group(1)}: {found.group(2)}"[:limit]
    flat = " ".join(text.split())
    wrapped = _WRAPPED.search(flat)
    return (f"ClientApp raised: {wrapped.group(1)}" if wrapped else flat)[:limit]


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float, poll: float = 0.5) -> list[int]:
    """Wait, bounded by ``timeout`` seconds, until at least ``min_nodes`` devices are connected."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes:
            return nodes
        if time.monotonic() >= deadline:
            raise NotEnoughNodes(
                f"only {len(nodes)} of the {min_nodes} required devices connected "
                f"within {timeout:.0f} s"
            )
        time.sleep(poll)


def round_content(
    state: ModelState, plan: RoundPlan, behaviour: ModelState | None = None
) -> RecordDict:
    """A train or evaluate message's content: ``state`` and ``plan`` (and, for a text model run
    that infers labels, the ``behaviour`` model)."""
    content = RecordDict(
        {
            protocol.Record.ARRAYS.value: to_array_record(state),
            protocol.Record.CONFIG.value: ConfigRecord(plan.to_config()),
        }
    )
    if behaviour is not None:
        content[protocol.Record.BEHAVIOUR_ARRAYS.value] = to_array_record(behaviour)
    return content


def round_messages(
    node_ids: Iterable[int],
    state: ModelState,
    plan: RoundPlan,
    kind: str,
    rnd: int,
    behaviour: ModelState | None = None,
) -> list[Message]:
    """One ``kind`` (train or evaluate) message per node, all with :func:`round_content`."""
    content = round_content(state, plan, behaviour)
    return [
        Message(content=content, dst_node_id=node, message_type=kind, group_id=str(rnd))
        for node in node_ids
    ]


def reply_error(msg: Message) -> str:
    """An error reply's reason in one line (:func:`brief_reason`), or its code without one."""
    return brief_reason(msg.error.reason or str(msg.error.code))


@dataclass(frozen=True)
class Delivery:
    """What pushing messages and pulling their replies gave: each reply with the node it came
    for (a SuperLink's own error reply names itself as its source), and why each node that
    gave none did not (not pushed, unavailable and not back, or silent)."""

    replies: list[tuple[int, Message]]
    missing: dict[int, str]


@dataclass(frozen=True)
class Exchange:
    """The outcome of one push/pull exchange: usable reports and what went wrong, per node."""

    reports: list[tuple[protocol.DeviceReport, Message]]
    failures: list[str]

    @classmethod
    def of(cls, delivery: Delivery) -> Exchange:
        """The replies of ``delivery`` parsed, naming the destination node of every error,
        malformed or missing reply."""
        reports: list[tuple[protocol.DeviceReport, Message]] = []
        failures = [f"node {node}: {why}" for node, why in delivery.missing.items()]
        for node, msg in delivery.replies:
            if msg.has_error():
                failures.append(f"node {node}: {reply_error(msg)}")
                continue
            try:
                reports.append((protocol.parse_report(msg), msg))
            except (ValueError, KeyError) as err:
                failures.append(f"node {node}: malformed reply ({err})")
        return cls(reports, failures)


def _resend(msg: Message) -> Message:
    """A fresh copy of ``msg`` (same content and destination) to push again."""
    meta = msg.metadata
    return Message(
        content=msg.content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
    )


def push_and_pull(
    grid: Grid,
    messages: list[Message],
    timeout: float,
    poll: float = 0.25,
    max_resends: int = 3,
) -> Delivery:
    """Push ``messages``, collect replies until all arrive or ``timeout`` seconds pass.

    Like ``Grid.send_and_receive`` but polling every ``poll`` seconds instead of Flower's fixed
    3 s (which dominates round time for small models), and keeping the destination of every
    reply.

    A device whose connection dropped (Flower answers "Node Unavailable" when its heartbeats
    stop) gets the message again, up to ``max_resends`` times, as soon as it is back online
    within the timeout: after a SuperLink restart (``--resume``) devices reconnect with backoff,
    and a device that briefly lost its network should not miss the round.
    """
    deadline = time.monotonic() + timeout
    node_of: dict[str, int] = {}
    original: dict[int, Message] = {}
    unsent: list[int] = []
    resends: dict[int, int] = {}
    away: set[int] = set()  # nodes to resend to once they are online again

    def push(batch: list[Message]) -> None:
        ids = list(grid.push_messages(batch))
        for mid, msg in zip(ids, batch, strict=True):
            node = msg.metadata.dst_node_id
            original[node] = msg
            if mid:
                node_of[mid] = node
            else:
                unsent.append(node)

    push(messages)
    pending = set(node_of)
    replies: list[tuple[int, Message]] = []
    unavailable: dict[int, str] = {}
    while pending or away:
        for msg in grid.pull_messages(pending) if pending else []:
            pending.discard(msg.metadata.reply_to_message_id)
            node = node_of.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            if (
                msg.has_error()
                and msg.error.code == ErrorCode.NODE_UNAVAILABLE
                and resends.get(node, 0) < max_resends
            ):
                away.add(node)
                unavailable[node] = msg.error.reason or "Node Unavailable"
                continue
            replies.append((node, msg))
        if away:
            back = away & set(grid.get_node_ids())
            if back:
                away -= back
                for node in back:
                    resends[node] = resends.get(node, 0) + 1
                    unavailable.pop(node, None)
                before = set(node_of)
                push([_resend(original[node]) for node in sorted(back)])
                pending |= set(node_of) - before
        if time.monotonic() >= deadline or not (pending or away):
            break
        time.sleep(poll)
    missing = {node: "message could not be pushed to the SuperLink" for node in unsent}
    missing.update(
        (node, f"{unavailable.get(node, 'unavailable')} (not back within {timeout:.0f} s)")
        for node in away
    )
    missing.update((node_of[mid], f"no reply within {timeout:.0f} s") for mid in pending)
    return Delivery(replies, missing)


def exchange(grid: Grid, messages: list[Message], timeout: float) -> Exchange:
    """Push ``messages`` and collect their replies (:func:`push_and_pull`), parsed
    (:meth:`Exchange.of`). A device replays a round it was already charged for, so a resend
    costs it nothing."""
    return Exchange.of(push_and_pull(grid, messages, timeout))
