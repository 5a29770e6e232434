"""The package is ruff-clean and mypy-clean (run as tests so CI enforces them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(path)


def test_ruff_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "check", "common", "server", "client", "tests", "scripts", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean(tmp_path: Path) -> None:
    # The import namespace maps fedgaze -> common/, fedgaze.server -> server/, fedgaze.client ->
    # client/; mypy needs that tree on disk, so build it from symlinks.
    pkg = tmp_path / "fedgaze"
    pkg.mkdir()
    for child in (ROOT / "common").iterdir():
        if child.name != "__pycache__":
            (pkg / child.name).symlink_to(child)
    (pkg / "server").symlink_to(ROOT / "server")
    (pkg / "client").symlink_to(ROOT / "client")
    (pkg / "v1").symlink_to(ROOT / "proto" / "fedgaze" / "v1")
    env = {**os.environ, "MYPYPATH": str(tmp_path)}
    proc = subprocess.run(
        [
            _tool("mypy"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "-p",
            "fedgaze",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
