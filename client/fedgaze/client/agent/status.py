"""``fedgaze client status``: what this device holds, has spent, last received, and is doing.

Read-only. The data counts come from the encrypted store (decrypted in memory; only counts are
reported), the spending from the verified device ledger (:mod:`fedgaze.audit.budget`), the
last model from ``last_model/`` (saved by the ClientApp), the agent from its lock and state
file. A part that cannot be read is reported as a problem, not raised, so the rest still shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fedgaze.audit.budget import device_budget
from fedgaze.client.agent.config import ClientConfig
from fedgaze.client.agent.lock import agent_running
from fedgaze.client.agent.supervisor import read_state
from fedgaze.client.device.pause import is_paused
from fedgaze.client.device.store import MANIFEST, StoreError, load_device
from fedgaze.data.schema import Device
from fedgaze.model.store import ModelDirError, load_model


@dataclass(frozen=True)
class DataHeld:
    """Counts of what the device store holds (never its content)."""

    queries: int = 0
    gaze_samples: int = 0
    mouse_samples: int = 0
    labels: int = 0
    """Labelled pairwise comparisons (what training uses)."""


@dataclass(frozen=True)
class ClientStatus:
    """Everything ``fedgaze client status`` shows; ``problems`` lists what could not be read."""

    device_id: str
    device_dir: str
    server: str
    data: DataHeld
    rounds: int
    runs: int
    epsilon: float
    epsilon_budget: float
    epsilon_remaining: float
    delta: float
    last_model: dict[str, Any] | None
    paused: bool
    running: bool
    agent: dict[str, Any] | None
    capture_url: str | None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


def data_held(device: Device) -> DataHeld:
    """Counts of ``device``'s queries, samples and labelled comparisons (pure)."""
    return DataHeld(
        queries=len(device.queries),
        gaze_samples=sum(len(q.gaze) for q in device.queries),
        mouse_samples=sum(len(q.mouse) for q in device.queries),
        labels=sum(q.is_labelled_comparison for q in device.queries),
    )


def _data(config: ClientConfig, problems: list[str]) -> DataHeld:
    layout = config.layout
    if not (layout.store / MANIFEST).exists():
        return DataHeld()
    try:
        return data_held(load_device(layout.store, key_path=layout.store_key))
    except StoreError as err:
        problems.append(f"store: {err}")
        return DataHeld()


def _last_model(config: ClientConfig, problems: list[str]) -> dict[str, Any] | None:
    path = config.layout.last_model
    if not path.exists():
        return None
    try:
        saved = load_model(path)
    except ModelDirError as err:
        problems.append(f"last model: {err}")
        return None
    p = saved.provenance
    return {"round": p.get("round"), "run": p.get("run_key"), "received": p.get("received")}


def _agent(config: ClientConfig, running: bool) -> dict[str, Any] | None:
    state = read_state(config.layout)
    if state is None:
        return None
    children = state.get("children") or {}
    return {
        "pid": state.get("pid") if running else None,
        "state": state.get("state") if running else f"not running (last: {state.get('state')})",
        "updated": state.get("updated"),
        "children": {
            name: {
                "pid": c.get("pid") if running else None,
                "restarts": c.get("restarts"),
                "last_exit": c.get("last_exit"),
            }
            for name, c in children.items()
        },
    }


def _capture_url(config: ClientConfig, running: bool) -> str | None:
    if not running:
        return None
    try:
        ready = json.loads(config.layout.capture_ready.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    url = ready.get("url") if isinstance(ready, dict) else None
    return str(url) if url else None


def client_status(config: ClientConfig) -> ClientStatus:
    """The status of the device that ``config`` describes."""
    problems: list[str] = []
    layout = config.layout
    budget = device_budget(layout.root)
    problems += [f"ledger: {p}" for p in budget.problems]
    running = agent_running(layout)
    return ClientStatus(
        device_id=config.device_id,
        device_dir=str(layout.root),
        server=config.server,
        data=_data(config, problems),
        rounds=budget.rounds,
        runs=len(budget.runs),
        epsilon=budget.epsilon,
        epsilon_budget=config.epsilon_budget,
        epsilon_remaining=max(0.0, config.epsilon_budget - budget.epsilon),
        delta=config.delta,
        last_model=_last_model(config, problems),
        paused=is_paused(layout.root),
        running=running,
        agent=_agent(config, running),
        capture_url=_capture_url(config, running),
        problems=problems,
    )
