"""``fedgaze reward score`` and ``fedgaze reward best-of-n``: a text reward model on JSONL files.

``score``: each line with ``prompt`` and ``response`` gains ``score``; a line with ``prompt``,
``chosen`` and ``rejected`` gains ``score_chosen`` and ``score_rejected`` (a line with all four
gains all three). ``best-of-n``: each line with ``prompt`` and ``responses`` (a non-empty list
of strings) gains ``scores``, ``best_index`` (the first highest) and ``best_score``.

Every other field and the input order are kept; blank lines are ignored. A bad line (not UTF-8,
not JSON, not an object, a field missing or of the wrong type) is reported on stderr as
``FILE:LINE: reason`` and left out of the output. Lines are read, embedded and scored in
batches, so a large file never sits in memory; ``--out`` is written to a temporary file beside
it and renamed into place when complete. Exit 0 when at least one line was processed, 1 when
none was, or the model, the input or the output failed (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from fedgaze.argtypes import positive_int
from fedgaze.atomic import text_replacing

if TYPE_CHECKING:
    from fedgaze.text.reward_model import RewardModel

BATCH_PAIRS = 256
"""Default (prompt, response) pairs embedded and scored at once."""


class LineError(ValueError):
    """A line that cannot be scored; the message says why."""


@dataclass(frozen=True)
class Request:
    """One parsed line: the record to write back and the responses to score for it."""

    line: int
    record: dict[str, Any]
    prompt: str
    responses: tuple[str, ...]


@dataclass(frozen=True)
class Counts:
    """What a pass over the input did."""

    processed: int
    responses: int
    skipped: int


def _string(record: dict[str, Any], field: str) -> str:
    if field not in record:
        raise LineError(f"missing field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise LineError(f"field {field!r} must be a string, got {type(value).__name__}")
    return value


def score_fields(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(output field, response)`` to score for a ``score`` line (LineError when none)."""
    fields: list[tuple[str, str]] = []
    if "response" in record:
        fields.append(("score", _string(record, "response")))
    if "chosen" in record or "rejected" in record:
        fields.append(("score_chosen", _string(record, "chosen")))
        fields.append(("score_rejected", _string(record, "rejected")))
    if not fields:
        raise LineError("needs 'response', or 'chosen' and 'rejected'")
    return tuple(fields)


def parse_score(record: dict[str, Any], line: int) -> Request:
    """A ``score`` line's request."""
    prompt = _string(record, "prompt")
    return Request(line, record, prompt, tuple(r for _, r in score_fields(record)))


def finish_score(request: Request, scores: list[float]) -> dict[str, Any]:
    """The ``score`` line to write: the record with its score fields set."""
    names = [name for name, _ in score_fields(request.record)]
    return {**request.record, **dict(zip(names, scores, strict=True))}


def parse_best_of_n(record: dict[str, Any], line: int) -> Request:
    """A ``best-of-n`` line's request."""
    prompt = _string(record, "prompt")
    if "responses" not in record:
        raise LineError("missing field 'responses'")
    responses = record["responses"]
    if not isinstance(responses, list) or not responses:
        raise LineError("field 'responses' must be a non-empty list of strings")
    bad = next((i for i, r in enumerate(responses) if not isinstance(r, str)), None)
    if bad is not None:
        kind = type(responses[bad]).__name__
        raise LineError(f"responses[{bad}] must be a string, got {kind}")
    return Request(line, record, prompt, tuple(responses))


def finish_best_of_n(request: Request, scores: list[float]) -> dict[str, Any]:
    """The ``best-of-n`` line to write: the record with ``scores``, ``best_index`` and
    ``best_score`` (the first of equal best scores)."""
    best = max(range(len(scores)), key=scores.__getitem__)
    return {**request.record, "scores": scores, "best_index": best, "best_score": scores[best]}


def parse_line(
    raw: bytes, line: int, parse: Callable[[dict[str, Any], int], Request]
) -> Request | None:
    """The request on one input line (None: blank); LineError when it is bad."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LineError(f"not UTF-8 ({err.reason} at byte {err.start})") from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise LineError(f"not JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise LineError(f"not a JSON object (a {type(record).__name__})")
    return parse(record, line)


Parse = Callable[[dict[str, Any], int], Request]
Finish = Callable[[Request, list[float]], dict[str, Any]]


def stream(
    lines: Iterator[bytes],
    model: RewardModel,
    parse: Parse,
    finish: Finish,
    write: Callable[[str], object],
    report: Callable[[int, str], None],
    batch_pairs: int = BATCH_PAIRS,
) -> Counts:
    """Parse, score and write every line, ``batch_pairs`` responses at a time, in input order;
    bad lines go to ``report(line, reason)`` and are skipped."""
    batch: list[Request] = []
    pending = processed = responses = skipped = 0

    def flush() -> None:
        scores = model.score(
            [r.prompt for r in batch for _ in r.responses],
            [text for r in batch for text in r.responses],
        ).tolist()
        start = 0
        for request in batch:
            end = start + len(request.responses)
            write(json.dumps(finish(request, scores[start:end]), ensure_ascii=False) + "\n")
            start = end
        batch.clear()

    for number, raw in enumerate(lines, start=1):
        try:
            request = parse_line(raw, number, parse)
        except LineError as err:
            report(number, str(err))
            skipped += 1
            continue
        if request is None:
            continue
        batch.append(request)
        pending += len(request.responses)
        processed += 1
        responses += len(request.responses)
        if pending >= batch_pairs:
            flush()
            pending = 0
    if batch:
        flush()
    return Counts(processed=processed, responses=responses, skipped=skipped)


class _NothingProcessed(Exception):
    """No line could be processed: the output is not written."""

    def __init__(self, counts: Counts) -> None:
        super().__init__(f"{counts.skipped} bad lines")
        self.counts = counts


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="text model")
    p.add_argument(
        "--in", dest="input", type=Path, required=True, metavar="FILE.jsonl", help="input lines"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=BATCH_PAIRS,
        help=f"responses embedded and scored at once ({BATCH_PAIRS})",
    )


def add_parsers(sub: Any) -> None:
    """Add ``reward`` and its subcommands to the ``fedgaze`` subparsers ``sub``."""
    reward = sub.add_parser("reward", help="score responses with a text reward model")
    reward_sub = reward.add_subparsers(dest="reward_command", required=True)
    score = reward_sub.add_parser(
        "score",
        help="add a score to every line of a JSONL file",
        description="Lines with prompt and response gain 'score'; lines with prompt, chosen "
        "and rejected gain 'score_chosen' and 'score_rejected'. Bad lines are reported by "
        "number on stderr and left out.",
    )
    _add_common(score)
    score.add_argument(
        "--out", type=Path, required=True, metavar="FILE.jsonl", help="scored lines (atomic)"
    )
    score.set_defaults(handler=_cmd_score)
    best = reward_sub.add_parser(
        "best-of-n",
        help="pick the best of each line's responses",
        description="Each line with prompt and responses (a list of strings) gains 'scores', "
        "'best_index' and 'best_score'. Written to --out, or to stdout.",
    )
    _add_common(best)
    best.add_argument("--out", type=Path, metavar="FILE.jsonl", help="default: stdout")
    best.set_defaults(handler=_cmd_best_of_n)


def _cmd_score(args: argparse.Namespace, console: Console) -> int:
    return _run(args, console, parse_score, finish_score, "scored")


def _cmd_best_of_n(args: argparse.Namespace, console: Console) -> int:
    return _run(args, console, parse_best_of_n, finish_best_of_n, "ranked")


def _run(
    args: argparse.Namespace, console: Console, parse: Parse, finish: Finish, verb: str
) -> int:
    from fedgaze.text.model_dir import TextModelDirError
    from fedgaze.text.reward_model import RewardModel, RewardModelError

    errors = Console(stderr=True)

    def say(message: str) -> None:
        errors.print(escape(message), soft_wrap=True, highlight=False)

    def fail(message: str) -> int:
        errors.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
        return 1

    source: Path = args.input
    out: Path | None = args.out
    try:
        model = RewardModel.load(args.model, batch_size=args.batch_size)
    except (TextModelDirError, RewardModelError) as err:
        return fail(str(err))
    for warning in model.warnings:
        say(f"warning: {warning}")

    def report(line: int, reason: str) -> None:
        say(f"{source}:{line}: {reason}; skipped")

    try:
        with open(source, "rb") as fh:
            if out is None:
                counts = stream(iter(fh), model, parse, finish, sys.stdout.write, report)
                sys.stdout.flush()
            else:
                with text_replacing(out) as sink:
                    counts = stream(iter(fh), model, parse, finish, sink.write, report)
                    if counts.processed == 0:
                        raise _NothingProcessed(counts)
    except _NothingProcessed as nothing:
        skipped = nothing.counts.skipped
        return fail(f"{source}: no line could be {verb} ({skipped} bad); nothing written")
    except OSError as err:
        where = err.filename or source
        return fail(f"{where}: {err.strerror or err}")
    summary = (
        f"{verb} {counts.processed} lines ({counts.responses} responses), "
        f"skipped {counts.skipped} bad lines"
    )
    if out is None:
        say(summary)
        if counts.processed == 0:
            return fail(f"{source}: no line could be {verb}")
        return 0
    console.print(f"{summary}; written to {out}", soft_wrap=True, highlight=False)
    return 0
