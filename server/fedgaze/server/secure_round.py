"""A train round under secure aggregation: Flower's SecAgg+ workflow, driven from our round loop.

Flower 1.39 ships SecAgg+ as a workflow of its legacy strategy layer (``SecAggPlusWorkflow``,
four ``train`` messages per device: setup, share keys, collect masked vectors, unmask). This
module runs it for one round on the sampled devices, and adapts it at three points, all through
the workflow's own stage hooks (no cryptography here):

- the message of the third stage, where devices train, is our plain train message (model and
  round plan; a fresh content per device, since the workflow writes each device's ciphertexts
  into it);
- a device's reply to that stage is admitted as a plain reply is (its signed ``dp-record`` and
  its round, which travel in the clear: ``screen``); a refused reply is turned into an error
  reply *before* the masked vectors are summed, so the workflow drops it like a device that
  died: its vector leaves the sum and its pairwise masks are removed with the other devices'
  shares of its key, while its own mask stays secret;
- a device that drops out in the first two stages is removed from the protocol after them
  (Flower 1.39 keeps it as a dead node in the last stage, where every surviving device then
  fails to find its shares and the round halts).

The workflow leaves the unmasked weighted mean of the updates with the strategy, which is a
stand-in that only names the sampled devices and keeps that result. Fewer than ``threshold``
devices left at any stage halt the round: no aggregate, and nothing partial.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedgaze.federation import protocol
from fedgaze.federation.secure import STAGE_CONFIGS, SecureAggregation
from fedgaze.model.weights import ModelState
from fedgaze.server.exchange import push_and_pull, reply_error

Screen = Callable[[list[tuple[protocol.DeviceReport, Message]]], dict[int, str]]
"""Given the parsed replies of the training stage, the node ids to leave out, with reasons."""


@dataclass(frozen=True)
class SecureOutcome:
    """One secure round: the replies of the training stage (parsed, whether summed or not),
    the unmasked example-weighted mean of the summed updates (None when the round halted or
    no summed device trained) and the devices inside the sum, what went wrong, per node, and
    why the protocol halted (None when it did not)."""

    reports: list[tuple[protocol.DeviceReport, Message]]
    mean_update: ModelState | None
    summed: tuple[int, ...]
    failures: list[str]
    halted: str | None


class _SampledOnly(Strategy):
    """The workflow's strategy: names the sampled nodes and keeps the unmasked result."""

    def __init__(self, grid: Grid, run_id: int, nodes: Sequence[int]) -> None:
        self._proxies = [GridClientProxy(node, grid, run_id) for node in nodes]
        self.results: list[tuple[ClientProxy, FitRes]] | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(p, FitIns(Parameters(tensors=[], tensor_type=""), {})) for p in self._proxies]

    def aggregate_fit(
        self, server_round: int, results: Any, failures: Any
    ) -> tuple[Parameters | None, dict[str, Any]]:
        self.results = list(results)
        return None, {}

    def configure_evaluate(self, *args: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, *args: Any) -> None:
        return None


class _Workflow(SecAggPlusWorkflow):
    """SecAgg+ with our training message, and early dropouts removed after the key stages."""

    def __init__(self, content: Callable[[int], RecordDict], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._content = content

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {node: self._content(node) for node in state.nid_to_fitins}
        return bool(ok)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = super().share_keys_stage(grid, context, state)
        if ok:
            alive = set(state.active_node_ids)
            state.sampled_node_ids = set(alive)
            state.nid_to_neighbours = {
                node: near & alive
                for node, near in state.nid_to_neighbours.items()
                if node in alive
            }
        return bool(ok)


class _StageGrid:
    """The round's grid for the workflow: Flower's ``send_and_receive`` with a short poll (and
    the setup stage sent again to a device that comes back), the training stage's replies parsed
    and screened, and every stage's failures named."""

    def __init__(self, grid: Grid, screen: Screen, poll: float) -> None:
        self._grid, self._screen, self._poll = grid, screen, poll
        self.reports: list[tuple[protocol.DeviceReport, Message]] = []
        self.failures: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        batch = list(messages)
        if not batch:
            return []
        stage = str(batch[0].content.config_records[STAGE_CONFIGS][Key.STAGE])
        # Only the setup stage is sent again to a device that comes back (after a SuperLink
        # restart devices reconnect with backoff): nothing has been shared yet, and a device
        # that misses a later stage has lost its place in the protocol.
        resends = 3 if stage == Stage.SETUP else 0
        wait = timeout if timeout is not None else 3600.0
        delivery = push_and_pull(self._grid, batch, wait, self._poll, resends)
        self.failures += [f"node {node}: {stage}: {why}" for node, why in delivery.missing.items()]
        self.failures += [
            f"node {node}: {stage}: {reply_error(reply)}"
            for node, reply in delivery.replies
            if reply.has_error()
        ]
        replies = [reply for _, reply in delivery.replies]
        if stage == Stage.COLLECT_MASKED_VECTORS:
            replies = self._screened(replies)
        return replies

    def _screened(self, replies: list[Message]) -> list[Message]:
        parsed: list[tuple[protocol.DeviceReport, Message]] = []
        out: list[Message] = []
        for reply in replies:
            if reply.has_error():
                out.append(reply)
                continue
            try:
                parsed.append((protocol.parse_report(reply), reply))
            except (ValueError, KeyError) as err:
                out.append(self._leave_out(reply, f"malformed reply ({err})"))
        self.reports = parsed
        refused = self._screen(parsed)
        for report, reply in parsed:
            reason = refused.get(report.node_id)
            out.append(reply if reason is None else self._leave_out(reply, reason))
        return out

    def _leave_out(self, reply: Message, reason: str) -> Message:
        """An error reply in place of ``reply``: the workflow then treats its node as one that
        dropped out before sending its masked vector (which is not summed)."""
        node = reply.metadata.src_node_id
        self.failures.append(f"node {node}: left out of the sum: {reason}")
        return Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=reply)


def secure_round(
    grid: Grid,
    nodes: Sequence[int],
    content: Callable[[int], RecordDict],
    state: ModelState,
    rnd: int,
    params: SecureAggregation,
    screen: Screen,
    poll: float = 0.25,
) -> SecureOutcome:
    """Run round ``rnd`` of SecAgg+ on ``nodes``, each sent ``content(node)`` to train on.

    The mean update comes back with ``state``'s names and dtypes. Raises nothing when the
    protocol halts (too few devices left at a stage) or fails on what a device sent (keys or
    shares that do not decode): the outcome says so, naming why.
    """
    strategy = _SampledOnly(grid, grid.run.run_id, nodes)
    legacy = LegacyContext(
        Context(
            run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: rnd}
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    stages = _StageGrid(grid, screen, poll)
    workflow = _Workflow(
        content,
        num_shares=1.0,
        reconstruction_threshold=params.threshold,
        max_weight=params.max_weight,
        clipping_range=params.clipping_range,
        quantization_range=params.quantization_range,
        modulus_range=params.modulus_range,
        timeout=params.timeout,
    )
    halted = f"fewer than {params.threshold} devices were left at a stage"
    try:
        workflow(cast(Grid, stages), legacy)
    except Exception as err:  # a device's malformed keys or shares must not end the run
        halted = f"the protocol failed on what a device sent ({type(err).__name__}: {err})"
    results = strategy.results
    if results is None:
        return SecureOutcome(stages.reports, None, (), stages.failures, halted)
    summed = tuple(sorted(proxy.node_id for proxy, _ in results))
    weight = sum(fit.num_examples for _, fit in results)
    mean = None
    if weight > 0:
        layers = parameters_to_ndarrays(results[0][1].parameters)
        mean = {
            name: np.asarray(layer).reshape(np.shape(like)).astype(np.asarray(like).dtype)
            for (name, like), layer in zip(state.items(), layers, strict=True)
        }
    return SecureOutcome(stages.reports, mean, summed, stages.failures, None)
