"""Deterministic fingerprint of what ``load_ifllm`` returns, to check a loader change is neutral.

Writes JSON with, per device (sorted by id): its calibration and, per query, every field of the
query (long texts as sha256) and a sha256 of each Samples array's bytes (gaze and mouse); plus
the problems (sorted) and the stats counters (sorted). Two loader versions agree exactly when
their fingerprint files are byte-identical.

    python scripts/loader_fingerprint.py [--data ../shared/datasets/ifllm] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from fedgaze.data.ifllm import IfllmDataset, load_ifllm
from fedgaze.data.schema import Query, Samples

ROOT = Path(__file__).resolve().parents[1]
_COLUMNS = ("t_ms", "x", "y", "side", "char_index", "validate")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(value: str | None) -> str | None:
    return None if value is None else _sha(value.encode("utf-8"))


def _samples(samples: Samples) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for col in _COLUMNS:
        array = getattr(samples, col)
        out[col] = f"{array.dtype.str}:{_sha(array.tobytes())}"
    return out


def _query(q: Query) -> dict[str, Any]:
    return {
        "query_id": q.query_id,
        "task_id": q.task_id,
        "pairwise": q.pairwise,
        "prompt": _text(q.prompt),
        "response_left": _text(q.response_left),
        "response_right": _text(q.response_right),
        "preference": q.preference,
        "likert_left": q.likert_left,
        "likert_right": q.likert_right,
        "shown_at_ms": q.shown_at_ms,
        "gaze": _samples(q.gaze),
        "mouse": _samples(q.mouse),
    }


def fingerprint(ds: IfllmDataset) -> dict[str, Any]:
    """The JSON-able fingerprint of a loaded data set."""
    return {
        "devices": [
            {
                "device_id": d.device_id,
                "calibration": sorted(d.calibration.items()),
                "queries": [_query(q) for q in d.queries],
            }
            for d in sorted(ds.devices, key=lambda d: d.device_id)
        ],
        "problems": sorted([p.file, p.line, p.reason] for p in ds.problems),
        "stats": dict(sorted(ds.stats.items())),
    }


def main() -> None:
    """Load the data set, write its fingerprint and print the load's CPU time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--out", type=Path, default=Path("/tmp/loader_fingerprint.json"))
    args = parser.parse_args()
    start = time.process_time()
    ds = load_ifllm(args.data)
    cpu = time.process_time() - start
    text = json.dumps(fingerprint(ds), indent=1, sort_keys=True) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"load_ifllm: {cpu:.2f} s CPU; fingerprint sha256 {_sha(text.encode())} -> {args.out}")


if __name__ == "__main__":
    main()
