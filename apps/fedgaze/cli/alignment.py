"""``fedgaze alignment export``: a run's accepted private preference labels as DPO training data.

Reads the run's label store (``RUN/labels.db``) and the operator's served log (``--responses``,
default ``RUN/served.jsonl``; IFLLM's ``query_logs_table.csv[.gz]`` also reads as one), joins
them (:mod:`fedgaze.labels.export`), writes the preference file atomically and its dataset card
(:mod:`fedgaze.labels.card`). Bad input exits 1 with a message and writes nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def add_parsers(sub: Any) -> None:
    """Add ``alignment`` and its subcommands to the ``fedgaze`` subparsers ``sub``."""
    alignment = sub.add_parser("alignment", help="turn private preference labels into DPO data")
    alignment_sub = alignment.add_subparsers(dest="alignment_command", required=True)
    export = alignment_sub.add_parser(
        "export",
        help="export a run's accepted preference labels in TRL's preference format",
        description=(
            "Join the run's accepted label releases (labels.db) to the served prompt and "
            "response texts and write prompt/chosen/rejected/flip_rate rows, plus a dataset "
            "card (README.md) stating their label-DP guarantee and how to train robustly."
        ),
    )
    export.add_argument("run", type=Path, metavar="RUN", help="run directory (with labels.db)")
    export.add_argument(
        "--out", type=Path, required=True, help="file to write: FILE.jsonl or FILE.parquet"
    )
    export.add_argument(
        "--responses",
        type=Path,
        metavar="LOG",
        help="served log: JSONL (default RUN/served.jsonl) or IFLLM's query_logs_table.csv[.gz]",
    )
    export.add_argument(
        "--card",
        type=Path,
        metavar="PATH",
        help="dataset card to write (default: README.md beside --out)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an existing card that this command did not write",
    )
    export.set_defaults(handler=_cmd_alignment_export)


def _relative(path: Path, start: Path) -> str:
    """``path`` as the card refers to it: relative to the card's folder where possible."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path.resolve())


def _cmd_alignment_export(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.federation.rundir import RunLayout
    from fedgaze.labels.card import (
        CardError,
        CardSource,
        check_card_target,
        render_card,
        write_card,
    )
    from fedgaze.labels.export import (
        ExportError,
        build_preferences,
        output_format,
        read_run_settings,
        write_preferences,
    )
    from fedgaze.labels.served import ServedLogError, read_served
    from fedgaze.labels.store import LabelStoreError, stored_labels

    errors = Console(stderr=True)

    def fail(message: str) -> int:
        errors.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
        return 1

    run: Path = args.run
    out: Path = args.out
    card: Path = args.card if args.card is not None else out.parent / "README.md"
    try:
        fmt = output_format(out)
        if not run.is_dir():
            return fail(f"{run}: not a run directory")
        layout = RunLayout(run)
        if out.resolve() == card.resolve():
            return fail(f"--out and the card are the same file ({out}); pass --card PATH")
        check_card_target(card, args.force)
        responses: Path = args.responses if args.responses is not None else layout.served_log
        if args.responses is None and not responses.is_file():
            return fail(
                f"{responses}: no served log in the run directory; pass --responses LOG "
                "(the operator's JSONL log of served prompts and responses, or IFLLM's "
                "query_logs_table.csv[.gz])"
            )
        if not layout.labels.is_file():
            return fail(f"{layout.labels}: no label store; did the run collect labels?")
        served = read_served(responses)
        stored = list(stored_labels(layout.labels))
        if not stored:
            return fail(f"{layout.labels}: no accepted label release stored; nothing to export")
        result = build_preferences(stored, served)
        if not result.rows:
            reasons = "; ".join(f"{d.count} {d.reason}" for d in result.dropped)
            return fail(
                f"none of the {result.releases} releases joins to the served log {responses} "
                f"({reasons}); is it the log of this run? Nothing written"
            )
        settings = read_run_settings(layout.server_ledger)
        text = render_card(
            result,
            CardSource(
                run_dir=str(run),
                served_log=str(responses),
                output=_relative(out, card.parent),
                output_format=fmt,
                run=settings,
            ),
        )
        write_preferences(out, result.rows)
        write_card(card, text, force=args.force)
    except (ServedLogError, LabelStoreError, ExportError, CardError, OSError) as err:
        return fail(str(err))

    def say(text: str) -> None:
        console.print(text, soft_wrap=True, highlight=False)

    say(
        f"exported {len(result.rows)} preference rows ({result.exported_devices} devices, "
        f"{result.comparisons} comparisons) of {result.releases} releases to {out}"
    )
    if result.shared_comparisons:
        say(
            f"  {result.shared_comparisons} comparisons were released by several devices: "
            f"all {result.shared_rows} of their rows kept"
        )
    for d in result.dropped:
        say(
            f"  [yellow]dropped {d.count}[/yellow]: {escape(d.reason)} "
            f"(first: {escape(', '.join(d.examples))})"
        )
    if served.problems:
        say(
            f"  {len(served.problems)} rows of {escape(str(responses))} were unusable "
            f"(first: {escape(served.problems[0])})"
        )
    for problem in settings.problems:
        say(f"  [yellow]note[/yellow]: {escape(problem)}")
    say(f"dataset card: {card}")
    return 0
