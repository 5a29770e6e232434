"""The fedgaze ClientApp: the entry Flower runs on a person's device for every message.

What a device computes for a message (train, evaluate, release labels) is in
:mod:`fedgaze.client.rounds`; only the trained weights and the declared metrics go back (see
that module and ``fedgaze.federation.protocol``). Flower 1.39 starts a fresh ``flwr-clientapp``
process for every message, so this module loads no training stack: when the device's node
config names a warm trainer (``trainer``, :mod:`fedgaze.client.trainer_service`) the message's
content goes to it over the authenticated local channel and its reply comes back; when no
trainer answers there (not started yet, or stopped), or none is configured, this process
answers the message itself with the same handlers.

In a round with secure aggregation (:mod:`fedgaze.federation.secure`), Flower's
``secaggplus_mod`` answers the protocol's key and share stages itself and masks the reply of the
stage in which the device trains; that reply is the plain one reshaped by
:func:`~fedgaze.federation.secure.secure_reply` (the update as a difference, and its weight).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from fedgaze.client.trainer_channel import TrainerFolder, TrainerUnavailable, call_trainer
from fedgaze.federation import secure
from fedgaze.federation.protocol import LABELS_ACTION, Record
from fedgaze.federation.settings import NodeSettings

LOG = logging.getLogger(__name__)


def secure_stages(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's SecAgg+ mod for the messages of a secure round; others pass straight through
    (Flower's mod takes every train message for one of its own)."""
    if not secure.is_stage(msg):
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(msg, context, call_next)


app = ClientApp(mods=[secure_stages])


def answer(msg: Message, context: Context) -> Message:
    """The reply to ``msg``: from the device's warm trainer when one answers, else from here."""
    node = NodeSettings.from_node_config(context.node_config)
    message_type = msg.metadata.message_type
    content = None
    if node.trainer is not None:
        try:
            content = call_trainer(
                TrainerFolder(Path(node.trainer)), message_type, context.node_config, msg.content
            )
        except TrainerUnavailable as err:
            LOG.warning("fedgaze: %s; answering in the ClientApp process", err)
    if content is None:
        from fedgaze.client.rounds import HANDLERS

        content = HANDLERS[message_type](msg.content, node)
    if secure.is_stage(msg):
        content = secure.secure_reply(content, msg.content.array_records[Record.ARRAYS])
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Score the pushed global model, then train it on this device's data with DP-SGD."""
    return answer(msg, context)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """Score the pushed global model on this device's later (held-out) comparisons."""
    return answer(msg, context)


@app.query(LABELS_ACTION)
def labels(msg: Message, context: Context) -> Message:
    """Release this device's preference labels with label DP (:mod:`fedgaze.client.labels`)."""
    return answer(msg, context)
