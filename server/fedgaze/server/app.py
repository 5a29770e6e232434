"""The fedgaze ServerApp: what ``flwr-serverapp`` runs for a submitted run.

It parses the run config (:class:`~fedgaze.federation.settings.ServerSettings`), runs every
round (:func:`fedgaze.server.rounds.run_federation`) and reports a failure as a ``failed``
progress event before Flower sees it. This process imports no training stack: torch only to
draw a new run's initial weights, Opacus never.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgaze.federation.events import Failed
from fedgaze.federation.results import ServerResult
from fedgaze.federation.settings import ServerSettings
from fedgaze.server.progress import emit
from fedgaze.server.rounds import run_federation

app = ServerApp()


def run_and_report(grid: Grid, settings: ServerSettings) -> ServerResult:
    """Run the federation of ``settings`` on ``grid``; a failure becomes a ``failed`` progress
    event before it propagates (the deployment's ServerApp and ``fedgaze simulate`` share it)."""
    try:
        return run_federation(grid, settings)
    except Exception as err:
        emit(Path(settings.run_dir), Failed(f"{type(err).__name__}: {err}"))
        raise


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point: parse the run config, run the federation, report failures."""
    run_dir = Path(str(context.run_config.get("run-dir", ".")))
    try:
        settings = ServerSettings.from_run_config(context.run_config)
    except Exception as err:
        emit(run_dir, Failed(f"{type(err).__name__}: {err}"))
        raise
    run_and_report(grid, settings)
