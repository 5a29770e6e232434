"""The dataset card (README.md) of a preference export: where the rows came from, their label-DP
guarantee, the counts, and how to train on noised labels without fitting the noise.

:func:`render_card` is pure: every number in the card is computed from the export's rows
(flip rates, and epsilon_label = ln((1 - r) / r) from them) or read from the run's
``run-start`` settings (delta, the configured labels). The card's first line is
:data:`CARD_MARKER`; :func:`write_card` replaces an existing file only if it carries that marker
(a card this command wrote), unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedgaze.atomic import write_bytes_atomic
from fedgaze.labels.export import (
    UNKNOWN_PROMPT,
    UNKNOWN_RESPONSE,
    ExportResult,
    OutputFormat,
    RunSettings,
    epsilon_label,
)
from fedgaze.privacy.label_dp import flip_rate_matches

CARD_MARKER = "<!-- written by `fedgaze alignment export`: rewritten by the next export -->"


class CardError(ValueError):
    """The card cannot be written where asked; the message says why."""


@dataclass(frozen=True)
class CardSource:
    """Where the export came from and went: the card's facts that are not in the rows."""

    run_dir: str
    served_log: str
    output: str
    """The exported file's name (as the card refers to it, relative to the card)."""
    output_format: OutputFormat
    run: RunSettings


def _num(value: float) -> str:
    return f"{value:.6g}"


def _privacy(result: ExportResult, run: RunSettings) -> list[str]:
    lines = [
        "## Privacy",
        "",
        "- **Privacy unit: one comparison** (a prompt and the two responses one person was "
        "shown). Each preference bit was released by the person's own device with **label "
        "differential privacy by randomized response**: the device's bit (the explicit choice, "
        "or the behaviour model's inference from gaze and mouse) was flipped with probability "
        "`flip_rate = 1 / (1 + e^epsilon_label)` before it left the device, using the OS's "
        "randomness. Each release is `epsilon_label`-DP for that comparison "
        "(`epsilon_label = ln((1 - flip_rate) / flip_rate)`).",
        "- **Only the preference bits are noised.** The prompt and response ids and texts are "
        "not private data of this release: they come from the operator's own log of what it "
        "served, joined to the bits by id.",
        "",
        "| epsilon_label | flip rate | rows |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_num(epsilon_label(rate))} | {_num(rate)} | {count} |"
        for rate, count in result.flip_rates
    ]
    lines.append("")
    if run.delta is not None:
        lines.append(
            f"- delta of the run (its `run-start` settings): {_num(run.delta)}. Randomized "
            "response itself is pure epsilon-DP (delta 0); delta is the one at which each "
            "device states its total spend (DP-SGD rounds composed with its label releases)."
        )
    elif run.release_deltas:
        shown = ", ".join(_num(d) for d in run.release_deltas)
        lines.append(
            f"- delta: {shown}, the one at which the devices state their total spend (DP-SGD "
            "rounds composed with their label releases) in their accepted label-release "
            "records. Randomized response itself is pure epsilon-DP (delta 0)."
        )
    else:
        lines.append("- delta: not recorded in the run's `run-start` settings.")
    labels = run.labels
    if labels is not None:
        configured = labels.get("epsilon_label")
        lines.append(
            f"- Labels settings of the run: epsilon_label {configured!r}, "
            f"source {labels.get('source')!r}."
        )
        if isinstance(configured, int | float) and not any(
            flip_rate_matches(float(configured), rate) for rate, _ in result.flip_rates
        ):
            lines.append(
                "- **Note:** no exported row carries the flip rate of the configured "
                "epsilon_label; the table above (computed from the rows) is what holds."
            )
    for problem in run.problems:
        lines.append(f"- Note: {problem}.")
    return [*lines, ""]


def _counts(result: ExportResult) -> list[str]:
    lines = [
        "## Counts",
        "",
        f"- releases stored by the run: {result.releases}, from {result.devices} device(s)",
        f"- rows exported: {len(result.rows)}, from {result.exported_devices} device(s), "
        f"{result.comparisons} distinct comparison(s)",
        f"- comparisons released by more than one device: {result.shared_comparisons} "
        f"({result.shared_rows} rows). Every release is kept: they are different people's "
        "preferences.",
        f"- releases dropped: {result.dropped_count}",
    ]
    explain = {
        UNKNOWN_PROMPT: "the served log has no such prompt id",
        UNKNOWN_RESPONSE: "the served log has no such response id under the prompt",
    }
    for d in result.dropped:
        shown = ", ".join(f"`{e}`" for e in d.examples)
        lines.append(
            f"  - {d.count}: {explain.get(d.reason, d.reason)} (first: {shown}); dropped, "
            "never guessed"
        )
    return [*lines, ""]


def _training(result: ExportResult, source: CardSource) -> list[str]:
    rates = [rate for rate, _ in result.flip_rates]
    rate = rates[0] if rates else 0.0
    loader = "json" if source.output_format == "jsonl" else "parquet"
    lines = [
        "## Training on these labels",
        "",
        f"About {_num(100 * rate)}% of the bits are flipped"
        + (" (the smallest of the rates above)" if len(rates) > 1 else "")
        + ". **Standard DPO on these labels is biased toward the noise**: its loss treats "
        "every bit as true, so it learns the noised preferences (every preference probability "
        "pulled toward 1/2 by the flips) instead of the people's. Use **robust DPO** (Chowdhury et "
        "al. 2024, *Provably Robust DPO: Aligning Language Models with Noisy Feedback*), which "
        "de-biases the loss with the known flip rate: TRL's "
        f'`DPOConfig(loss_type="robust", label_smoothing={rate!r})`.',
        "",
    ]
    if len(rates) > 1:
        lines += [
            "The rows carry different flip rates while `label_smoothing` is one number: train "
            "on the rows of one rate at a time (filter on the `flip_rate` column), as below.",
            "",
        ]
    filt = (
        f'\ntrain = train.filter(lambda row: row["flip_rate"] == {rate!r})'
        if len(rates) > 1
        else ""
    )
    lines += [
        "```python",
        "from datasets import load_dataset",
        "from trl import DPOConfig, DPOTrainer",
        "",
        f'train = load_dataset("{loader}", data_files="{source.output}", split="train"){filt}',
        "config = DPOConfig(",
        '    output_dir="dpo-robust",',
        '    loss_type="robust",',
        f"    label_smoothing={rate!r},  # the rows' flip rate",
        ")",
        "trainer = DPOTrainer(",
        "    model=model, ref_model=ref_model, args=config, train_dataset=train,",
        "    processing_class=tokenizer,",
        ")",
        "trainer.train()",
        "```",
        "",
    ]
    return lines


def render_card(result: ExportResult, source: CardSource) -> str:
    """The dataset card's Markdown for ``result`` (pure)."""
    runs = ", ".join(f"`{k}`" for k in result.run_keys) or "(none)"
    lines = [
        CARD_MARKER,
        f"# Private preference pairs of fedgaze run {runs}",
        "",
        f"`{source.output}`: {len(result.rows)} preference pairs in TRL's preference format "
        f"({source.output_format}; columns `prompt`, `chosen`, `rejected`, `flip_rate`).",
        "",
        "## Source",
        "",
        f"- run: {runs}, run directory `{source.run_dir}`",
        "- preference bits: the run's accepted label releases (`labels.db`)",
        f"- prompt and response texts: the served log `{source.served_log}`",
        "- chosen is the response the released bit prefers, rejected the other one",
        "",
        *_privacy(result, source.run),
        *_counts(result),
        *_training(result, source),
    ]
    return "\n".join(lines)


def is_our_card(path: str | Path) -> bool:
    """True when the file at ``path`` starts with :data:`CARD_MARKER`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\r\n") == CARD_MARKER
    except OSError:
        return False


def check_card_target(path: str | Path, force: bool) -> None:
    """CardError when ``path`` holds a file this command did not write and ``force`` is off."""
    target = Path(path)
    if target.is_dir():
        raise CardError(f"{target}: is a directory; pass --card FILE")
    if target.exists() and not force and not is_our_card(target):
        raise CardError(
            f"{target}: exists and was not written by `fedgaze alignment export`; "
            "pass --force to replace it, or --card PATH to write the card elsewhere"
        )


def write_card(path: str | Path, text: str, force: bool = False) -> None:
    """Write the card atomically (see :func:`check_card_target` for when it refuses)."""
    check_card_target(path, force)
    write_bytes_atomic(path, text.encode("utf-8"))
