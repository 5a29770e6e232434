"""Test-suite wide markers: every multi-process federation test (``integration``) and every test
on the real IFLLM data (``realdata``: loading it takes seconds) is ``slow``.

``pytest -m "not slow"`` is the fast loop (unit tests and single-process checks); the README's
test command and CI run everything.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flwr.supercore.task_identity import TaskIdentity


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) is not None for m in ("integration", "realdata")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Messages need the identity Flower sets in a ServerApp or ClientApp process."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)  # type: ignore[attr-defined]
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved  # type: ignore[attr-defined]
