"""How ``fedgaze simulate`` scales with the number of devices, and where a message's time goes.

1. **Scale.** ``fedgaze simulate --devices N --rounds 1 --fraction F --cpus C`` as a child
   process (in a loopback-only network namespace when ``unshare`` allows, as Ray's servers
   listen on every interface), for each ``N:F`` of ``--configs``. Measured: the round's wall
   seconds (the server's ``rounds_log``), its train messages (devices sampled), device messages
   per second, the whole run's wall seconds (engine start, the round, the final evaluation of
   every device), and the peak RSS of the whole process tree (every descendant's RSS summed,
   sampled every 0.5 s).
2. **A message's cost split**, in one process (no engine), with the simulation's own device
   provisioning and handlers (``fedgaze.local.simulate.device_node``,
   ``fedgaze.client.rounds``): ``--split-devices`` fresh devices each answer their first train
   message (what a round of a new simulation costs per device), then a second round's, after
   one more device has paid the process's first-use costs (torch's lazy imports). Each
   part is timed by wrapping the function that does it. The engine's overhead per message is
   the scale run's CPU-seconds per message (wall x CPUs / messages) minus the handler's time.
3. **The engine's floor**: ``bench/_engine_floor.py`` sends ``--floor-devices`` simulated nodes
   two rounds of train messages that a ClientApp answers at once (no fedgaze code), so what
   Flower's engine alone costs per message, in a first round and a later one, is measured
   rather than inferred.

    python bench/scale.py [--configs 100:1,1000:1] [--cpus 2] [--split-devices 40]
                          [--floor-devices 1000]

Writes the section between this script's markers in docs/results.md and
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.supercore.task_identity import TaskIdentity

from _results import publish
from fedgaze.processes import descendants

ROOT = Path(__file__).resolve().parents[1]
MARKER = "scale"
HEADING = "## Many devices on the simulation engine (bench/scale.py)"
PAGE = os.sysconf("SC_PAGE_SIZE")
TARGETS = "10,000 devices in one round in at most 120 s; at most 8 GiB; at most 25 ms per message"


def _tree_rss(root: int) -> int:
    """Bytes of RSS of ``root`` and every descendant (from /proc)."""
    total = 0
    for pid in (root, *descendants(root)):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(stat[21]) * PAGE
    return total


def _prefix() -> list[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    probe = ["unshare", "--net", "ip", "link", "set", "lo", "up"]
    if subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
        return []
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def run_scale(devices: int, fraction: float, cpus: int, base: Path) -> dict[str, Any]:
    """One simulated round of ``devices`` devices at ``fraction``: timings and peak memory."""
    run_dir = base / f"n{devices}-f{fraction:g}"
    argv = [*_prefix(), sys.executable, "-m", "fedgaze.cli", "simulate", "--devices", str(devices)]
    argv += ["--rounds", "1", "--fraction", str(fraction), "--cpus", str(cpus)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*argv, "--run-dir", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.5)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"simulate N={devices} failed: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    summary = json.loads((run_dir / "summary.json").read_text())
    (log,) = summary["rounds_log"]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "devices": devices,
        "fraction": fraction,
        "sampled": log["sampled"],
        "trained": log["train_devices"],
        "failures": len(log["failures"]),
        "round_s": log["seconds"],
        "messages_per_s": log["sampled"] / log["seconds"] if log["seconds"] else None,
        "wall_s": wall,
        "peak_rss_gib": peak / 2**30,
    }


def run_floor(devices: int, cpus: int) -> dict[str, Any]:
    """Two rounds of ``devices`` messages that Flower's engine delivers to a ClientApp that
    replies at once: wall seconds per round and per message (wall x CPUs / messages)."""
    argv = [*_prefix(), sys.executable, str(ROOT / "bench" / "_engine_floor.py")]
    done = subprocess.run(
        [*argv, str(devices), str(cpus)], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine floor N={devices} failed: {done.stderr[-2000:]}")
    rounds = json.loads(done.stdout.strip().splitlines()[-1])["rounds_s"]
    return {
        "devices": devices,
        "rounds_s": rounds,
        "per_message_s": [r * cpus / devices for r in rounds],
    }


@contextmanager
def _timed(parts: dict[str, float], owner: Any, name: str, label: str) -> Iterator[None]:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            parts[label] += time.perf_counter() - t

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def measure_split(devices: int, base: Path) -> dict[str, dict[str, float]]:
    """Seconds per train message by part, for a device's first message and its second."""
    from fedgaze.client import rounds
    from fedgaze.local import simulate
    from fedgaze.local.demo import FederationOptions
    from fedgaze.model.factory import initial_state
    from fedgaze.privacy import dp_train
    from fedgaze.privacy.state import PrivacyState
    from fedgaze.server.exchange import round_messages

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    env = {"run_dir": str(base / "split"), "seed": 3, "epsilon": 8.0, "delta": 1e-5}
    settings = FederationOptions(rounds=2).settings(base / "split", "scale-split", 1)
    state = initial_state(settings.hidden, settings.seed)
    (warm,) = round_messages([1], state, settings.plan(1), "train", 1)
    rounds.HANDLERS["train"](warm.content, simulate.device_node(devices, env))  # first-use costs
    out: dict[str, dict[str, float]] = {}
    for rnd, label in ((1, "first message of a device"), (2, "a later message")):
        (msg,) = round_messages([1], state, settings.plan(rnd), "train", rnd)
        parts: dict[str, float] = defaultdict(float)
        wraps = [
            (simulate, "generate_cohort", "provisioning (generate)"),
            (simulate, "save_device", "provisioning (encrypt, write)"),
            (rounds, "_rows", "load + featurize"),
            (rounds, "_held_out", "held-out eval + personal head"),
            (dp_train, "_dp_sgd", "DP-SGD"),
            (dp_train, "check_budget", "accounting"),
            (PrivacyState, "epsilon", "accounting"),
            (rounds, "sync_ledger", "ledger"),
            (rounds, "save_last_model", "state writes"),
            (PrivacyState, "save", "state writes"),
        ]
        with _wrapped(parts, wraps):
            t = time.perf_counter()
            for i in range(devices):
                node = simulate.device_node(i, env)
                rounds.HANDLERS["train"](msg.content, node)
            total = time.perf_counter() - t
        named = dict(parts)
        named["other"] = total - sum(named.values())
        out[label] = {k: v / devices for k, v in named.items()} | {"total": total / devices}
    return out


@contextmanager
def _wrapped(parts: dict[str, float], wraps: list[tuple[Any, str, str]]) -> Iterator[None]:
    if not wraps:
        yield
        return
    (owner, name, label), rest = wraps[0], wraps[1:]
    with _timed(parts, owner, name, label), _wrapped(parts, rest):
        yield


def render(result: dict[str, Any]) -> str:
    cpus = result["cpus"]
    lines = [
        f"Produced by `python bench/scale.py --configs {result['configs']} --cpus {cpus}` on "
        f"{result['machine']} ({result['date']}). One round of `fedgaze simulate` (the deployed "
        "ServerApp body and ClientApp handlers on Flower's simulation engine, Ray, one CPU per "
        "actor); a run also starts the engine and ends with an evaluate message to a sample "
        "drawn like a round's (every device at fraction 1). s per message = the round's wall "
        f"seconds x CPUs / train messages. Issue 15's targets: {TARGETS}.",
        "",
        "| devices | fraction | sampled (train messages) | trained | failures | round s | "
        "messages / s | s per message (wall x CPUs) | run wall s | peak RSS GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["scale"]:
        per = r["round_s"] * cpus / r["sampled"] if r["sampled"] else float("nan")
        lines.append(
            f"| {r['devices']} | {r['fraction']:g} | {r['sampled']} | {r['trained']} | "
            f"{r['failures']} | {r['round_s']:.1f} | {r['messages_per_s']:.2f} | {per:.3f} | "
            f"{r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} |"
        )
    split = result["split"]
    labels = list(split)
    parts = [p for p in split[labels[0]] if p != "total"]
    parts += [p for p in split[labels[1]] if p not in parts and p != "total"]
    lines += [
        "",
        f"Where a train message's time goes (seconds per message, {result['split_devices']} "
        "devices in one process, no engine):",
        "",
        "| part | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for part in [*parts, "total"]:
        cells = [f"{split[label].get(part, 0.0):.4f}" for label in labels]
        name = f"**{part}**" if part == "total" else part
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    floor = result["floor"]
    first, later = floor["per_message_s"]
    lines += [
        "",
        f"Flower's engine alone ({floor['devices']} nodes, a ClientApp that replies at once, "
        f"bench/_engine_floor.py): a first round {floor['rounds_s'][0]:.1f} s, "
        f"**{first:.4f} s per message** (wall x CPUs); a later round "
        f"{floor['rounds_s'][1]:.1f} s, **{later:.4f} s per message**.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="100:1,1000:1", help="N:F pairs, comma-separated")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--split-devices", type=int, default=40)
    parser.add_argument("--floor-devices", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/scale.json")
    args = parser.parse_args(argv)
    configs = [(int(n), float(f)) for n, f in (c.split(":") for c in args.configs.split(","))]
    result: dict[str, Any] = {
        "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "configs": args.configs,
        "cpus": args.cpus,
        "split_devices": args.split_devices,
    }
    with tempfile.TemporaryDirectory(prefix="fgs-") as tmp:
        result["split"] = measure_split(args.split_devices, Path(tmp))
        result["scale"] = [run_scale(n, f, args.cpus, Path(tmp)) for n, f in configs]
        result["floor"] = run_floor(args.floor_devices, args.cpus)
    where = {"markdown": args.out, "json_path": args.json}
    publish(render(result), result, **where, marker=MARKER, heading=HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
