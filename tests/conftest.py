"""Test-suite wide markers: every multi-process federation test (``integration``) and every test
on the real IFLLM data (``realdata``: loading it takes seconds) is ``slow``.

``pytest -m "not slow"`` is the fast loop (unit tests and single-process checks); the README's
test command and CI run everything.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) is not None for m in ("integration", "realdata")):
            item.add_marker(pytest.mark.slow)
