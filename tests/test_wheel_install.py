"""The wheel a person installs (``pipx install dist/fedgaze-*.whl``) holds everything and works.

The wheel is built from a copy of the working tree, with this environment's hatchling (the
build backend) and no download. It is
installed with ``--no-deps`` into a fresh virtual environment that sees this environment's
third-party packages through a ``.pth`` line (not the editable ``fedgaze``: that needs the
editable finder's own ``.pth``, which Python only runs in a site directory), and the installed
``fedgaze`` must run from that environment, not from the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from agent_helpers import operator_credentials

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = (
    "fedgaze/data/py.typed",
    "fedgaze/server/py.typed",
    "fedgaze/data/synthetic/*.json",
    "fedgaze/v1/*.proto",
    "fedgaze/client/agent/fedgaze-client.service",
    "fedgaze/client/device/pause.py",
    "fedgaze/cli/main.py",
)


def _sources(root: Path) -> list[str]:
    """The project's files as git sees them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [f for f in listed.split("\0") if f and (root / f).is_file()]


def _copy_tree(files: list[str], source: Path, target: Path) -> None:
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((source / name).read_bytes())


def _run(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_wheel_installs_and_enrolls_a_device(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    files = _sources(ROOT)
    src = tmp_path / "src"
    _copy_tree(files, ROOT, src)
    dist = tmp_path / "dist"
    _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--quiet", "-w", str(dist), str(src)),
        ]
    )
    (wheel,) = dist.glob("fedgaze-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    static = [f for f in files if f.startswith("client/fedgaze/client/capture/static/")]
    expected = [*REQUIRED, *(f"fedgaze/client/capture/static/{Path(f).name}" for f in static)]
    missing = [p for p in expected if not any(fnmatch(n, p) for n in names)]
    assert not missing, f"{wheel.name} lacks {missing}"
    assert not any(n.startswith(("tests/", "fedgaze/tests/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
        ).stdout.strip()
    )
    (site / "third_party.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install"),
            *("--no-deps", "--no-index", "--quiet", str(wheel)),
        ]
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
    }
    env.update(HOME=str(home), FLWR_TELEMETRY_ENABLED="0")
    where = _run(
        [
            str(python),
            "-c",
            "import fedgaze.cli, fedgaze.client.agent; print(fedgaze.cli.__file__)",
        ],
        env=env,
        cwd=home,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"fedgaze imported from {where}, not the wheel"
    fedgaze = venv / "bin" / "fedgaze"
    assert "client" in _run([str(fedgaze), "--help"], env=env, cwd=home).stdout
    ca = operator_credentials(tmp_path_factory).ca_cert
    enrolled = _run(
        [str(fedgaze), "client", "enroll", "--server", "fl.example.org:9092", "--ca", str(ca)],
        env=env,
        cwd=home,
    ).stdout
    assert "flwr supernode register device-" in enrolled
    assert (home / ".config" / "fedgaze" / "client.toml").is_file()
    status = _run([str(fedgaze), "client", "status", "--json"], env=env, cwd=home).stdout
    assert '"queries": 0' in status
    unit = _run([str(fedgaze), "client", "service"], env=env, cwd=home).stdout
    assert unit == (ROOT / "deploy" / "fedgaze-client.service").read_text()
