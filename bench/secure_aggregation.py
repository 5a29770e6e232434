"""What secure aggregation (SecAgg+) costs a round: wall time, and bytes on the wire per device.

For each device count of ``--devices`` and with secure aggregation off and on (threshold: a
majority), a real local federation (SuperLink, one SuperNode per device, warm trainer) runs
``--rounds`` rounds on the synthetic cohort (seed 4: every device has comparisons to train
on). Every SuperNode reaches the SuperLink through its own recording TCP proxy
(``tests/wire_proxy.py``), with TLS off so that the proxy sees the gRPC bytes themselves (TLS
adds a near-constant few percent). Measured: the mean seconds of a train round (the server's
``rounds_log``), and the bytes each device sent and received per round: everything through
its proxy over the whole run (connection setup, heartbeats, the final evaluation included)
divided by the rounds. Both settings run in the same invocation, so the ratio is like for like.

    python bench/secure_aggregation.py [--devices 5,10] [--rounds 3]

Writes the section between this script's markers in docs/results.md and
bench/results/secure_aggregation.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _results import publish  # noqa: E402
from fedgaze.federation.secure import SecureAggregation  # noqa: E402
from fedgaze.local.cohort import provision_synthetic  # noqa: E402
from settings_factory import server_settings  # noqa: E402
from wire_proxy import RecordingProxy, launch_recorded  # noqa: E402

MARKER = "secure-aggregation"
HEADING = "## Secure aggregation's cost (bench/secure_aggregation.py)"


def run(devices: int, rounds: int, secure: bool, base: Path) -> dict[str, Any]:
    """One local federation; its round seconds and per-device bytes per round."""
    run_dir = base / f"n{devices}-{'secagg' if secure else 'plain'}"
    nodes = provision_synthetic(run_dir / "devices", devices, 4, 100.0, 1e-5)
    settings = server_settings(
        run_dir=str(run_dir),
        run_key=f"bench-{uuid.uuid4().hex[:8]}",
        rounds=rounds,
        min_nodes=devices,
        node_wait_timeout=180,
        round_timeout=300,
        hidden=16,
        noise_multiplier=1.5,
        batch_size=8,
        lr=0.05,
        seed=4,
        secure_aggregation=SecureAggregation(threshold=devices // 2 + 1) if secure else None,
    )
    proxies: list[RecordingProxy] = []
    t0 = time.monotonic()
    outcome = launch_recorded(run_dir, settings, nodes, proxies)
    logs = outcome.server_result.rounds_log
    if len(logs) != rounds or any(log.failures for log in logs):
        raise RuntimeError(f"n={devices} secure={secure}: a round failed: {logs}")
    return {
        "devices": devices,
        "secure_aggregation": secure,
        "round_s": sum(log.seconds for log in logs) / rounds,
        "trained_per_round": sum(log.train_devices for log in logs) / rounds,
        "sent_kib_per_device_round": sum(len(p.sent) for p in proxies) / devices / rounds / 1024,
        "received_kib_per_device_round": sum(len(p.received) for p in proxies)
        / devices
        / rounds
        / 1024,
        "run_wall_s": time.monotonic() - t0,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Produced by `python bench/secure_aggregation.py --devices {result['devices']} "
        f"--rounds {result['rounds']}` on {result['machine']} ({result['date']}). A real local "
        "federation per row (SuperLink, SuperNodes, warm trainer; TLS off so a recording proxy "
        "per device counts the gRPC bytes); secure aggregation is Flower's SecAgg+ with a "
        "majority threshold, four messages per device per round instead of one. Bytes: all of "
        "a device's traffic over the run per round (heartbeats and the final evaluation "
        "included).",
        "",
        "| devices | secure aggregation | round s | KiB sent per device per round | "
        "KiB received per device per round | round time ratio | sent ratio |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    plain = {r["devices"]: r for r in result["runs"] if not r["secure_aggregation"]}
    for r in result["runs"]:
        base = plain[r["devices"]]
        lines.append(
            f"| {r['devices']} | {'SecAgg+' if r['secure_aggregation'] else 'off'} | "
            f"{r['round_s']:.1f} | {r['sent_kib_per_device_round']:.1f} | "
            f"{r['received_kib_per_device_round']:.1f} | "
            f"{r['round_s'] / base['round_s']:.2f} | "
            f"{r['sent_kib_per_device_round'] / base['sent_kib_per_device_round']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="5,10", help="device counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/secure_aggregation.json")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",")]
    result: dict[str, Any] = {
        "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "devices": args.devices,
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory(prefix="fgsa-") as tmp:
        result["runs"] = [
            run(n, args.rounds, secure, Path(tmp)) for n in counts for secure in (False, True)
        ]
    where = {"markdown": args.out, "json_path": args.json}
    publish(render(result), result, **where, marker=MARKER, heading=HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
