"""How fast the device stores captured samples: ``CaptureSink.add`` and the encrypted journal.

For each batch size, a fresh sink in a temporary device folder takes ``--samples`` gaze/mouse
samples in batches (each batch validated, encrypted with AES-GCM and fsynced before ``add``
returns, as in the capture service), then commits them into the encrypted device store.
Validation alone (``parse_batch``) is timed as the baseline of the same run.

    python bench/capture_sink_speed.py [--samples 20000]

Writes the section between this script's markers in docs/results.md and
bench/results/capture_sink_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _results import write_section
from fedgaze.client.capture.samples import QueryMeta, parse_batch
from fedgaze.client.capture.sink import JOURNAL_FILE, CaptureSink

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 10, 100, 1000)


def _items(n: int) -> list[dict[str, Any]]:
    t0 = 1.7e12
    return [
        {
            "type": "gaze" if i % 2 else "mouse",
            "query_id": 1,
            "t_ms": t0 + 16.0 * i,
            "x": 100.0 + (i % 700),
            "y": 200.0 + (i % 300),
            "side": "left" if i % 3 else "right",
            "char_index": i % 400,
            "validate": 1 if i % 2 else -1,
        }
        for i in range(n)
    ]


def _meta() -> QueryMeta:
    text = "x" * 500
    return QueryMeta(
        query_id=1,
        task_id=1,
        pairwise=True,
        prompt="p",
        response_left=text,
        response_right=text,
        shown_at_ms=1.7e12,
    )


def measure(samples: int, batch: int) -> dict[str, float]:
    """Samples per second into one sink at ``batch`` per call, journal bytes per sample, and
    the commit time."""
    items = _items(samples)
    with tempfile.TemporaryDirectory() as tmp, CaptureSink(Path(tmp) / "device") as sink:
        sink.begin_query(_meta())
        start = time.perf_counter()
        for i in range(0, samples, batch):
            sink.add(items[i : i + batch])
        seconds = time.perf_counter() - start
        journal = (Path(tmp) / "device" / JOURNAL_FILE).stat().st_size
        start = time.perf_counter()
        sink.commit()
        commit = time.perf_counter() - start
    return {
        "batch": batch,
        "samples_per_s": samples / seconds,
        "journal_bytes_per_sample": journal / samples,
        "commit_s": commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    items = _items(args.samples)
    parse_batch(items)  # warm-up: pydantic builds its validators on first use
    start = time.perf_counter()
    parse_batch(items)
    validate_rate = args.samples / (time.perf_counter() - start)
    rows = [measure(min(args.samples, 2_000 if b == 1 else args.samples), b) for b in BATCHES]
    result = {
        "date": datetime.now(UTC).date().isoformat(),
        "samples": args.samples,
        "validation_only_samples_per_s": validate_rate,
        "rows": rows,
    }
    out = ROOT / "bench" / "results" / "capture_sink_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = "\n".join(
        f"| {r['batch']} | {r['samples_per_s']:,.0f} | {r['journal_bytes_per_sample']:.1f} | "
        f"{r['commit_s'] * 1000:.0f} |"
        for r in rows
    )
    section = (
        f"`python bench/capture_sink_speed.py` ({result['date']}, this machine: 2 cores, "
        f"shared). Each `add` validates, encrypts (AES-GCM) and fsyncs its batch; the commit "
        "folds everything into the encrypted device store. Batch size 1 is measured on 2,000 "
        f"samples, the others on {args.samples:,}.\n\n"
        "| samples per `add` | samples/s | journal bytes per sample | commit (ms) |\n"
        "|---|---|---|---|\n"
        f"{table}\n\n"
        f"Validation alone (`parse_batch`, same run): {validate_rate:,.0f} samples/s."
    )
    write_section(
        ROOT / "docs" / "results.md",
        "capture_sink_speed",
        section,
        "## Capture storage speed (device)",
    )
    print(section)


if __name__ == "__main__":
    main()
