"""The code's shape holds: one-way layers, light Flower processes, small documented modules.

The layers are import-linter contracts in pyproject.toml (see docs/architecture.md); the
process checks import the real modules in a fresh interpreter, as Flower does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE_ROOTS = ("core", "server", "client", "apps", "proto")
MAX_LINES = 600


def _python_files(*folders: str) -> list[Path]:
    return [
        p
        for folder in folders
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "_pb2" not in p.name and "__pycache__" not in p.parts
    ]


def test_import_contracts_hold() -> None:
    tool = BIN / "lint-imports"
    if not tool.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [str(tool), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _loaded_after_import(module: str, then: str = "pass") -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``module`` (and running
    the statements ``then``)."""
    code = (
        f"import json, sys, {module}; {then}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(proc.stdout))


def test_the_serverapp_process_loads_no_training_stack() -> None:
    """``flwr-serverapp`` imports the ServerApp module: no torch, Opacus, polars or scipy."""
    loaded = _loaded_after_import("fedgaze.server.app")
    assert not loaded & {"torch", "opacus", "polars", "scipy", "matplotlib"}, loaded


def test_the_clientapp_process_loads_no_training_stack() -> None:
    """``flwr-clientapp`` imports the ClientApp module for every message: the heavy stack loads
    only where a message is answered (the warm trainer, or the fallback in that process)."""
    loaded = _loaded_after_import("fedgaze.client.app")
    assert not loaded & {"torch", "opacus", "polars", "scipy", "matplotlib"}, loaded


def test_the_client_agent_loads_no_torch() -> None:
    loaded = _loaded_after_import("fedgaze.client.agent.commands")
    assert not loaded & {"torch", "opacus", "polars"}, loaded


def test_planning_a_run_loads_no_torch() -> None:
    """``fedgaze demo`` and ``train`` plan the noise before any process starts: Opacus' RDP
    analysis without the rest of Opacus, and no ``dp_accounting`` without client-level DP."""
    loaded = _loaded_after_import(
        "fedgaze.local.demo",
        "from fedgaze.privacy.accounting import calibrate_noise_multiplier as c; "
        "c(8.0, rounds=3, local_epochs=1, delta=1e-5)",
    )
    assert not loaded & {"torch", "opacus", "dp_accounting", "matplotlib"}, loaded


def test_no_source_file_is_over_the_line_limit() -> None:
    files = _python_files(*SOURCE_ROOTS, "tests", "bench", "scripts")
    long = {
        str(p.relative_to(ROOT)): n
        for p in files
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_every_module_says_its_job() -> None:
    undocumented = [
        str(p.relative_to(ROOT))
        for p in _python_files(*SOURCE_ROOTS)
        if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not undocumented, f"modules without a docstring: {undocumented}"


def test_import_names_are_paths() -> None:
    """Every source root holds only ``fedgaze/...``, and ``fedgaze`` itself is a namespace
    (PEP 420), so ``fedgaze.x.y`` is ``<root>/fedgaze/x/y.py`` in exactly one root."""
    seen: dict[str, str] = {}
    for root in SOURCE_ROOTS:
        packages = [p.name for p in (ROOT / root).iterdir() if p.is_dir()]
        assert packages == ["fedgaze"] or packages == ["fedgaze", "__pycache__"], root
        assert not (ROOT / root / "fedgaze" / "__init__.py").exists(), root
        for path in _python_files(root):
            rel = path.relative_to(ROOT / root).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            assert name not in seen, f"{name} is in both {seen[name]} and {root}"
            seen[name] = root
