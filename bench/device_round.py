"""What a device message costs in CPU, and ``fedgaze demo``'s wall time, with and without the
device's warm trainer.

1. **Per message.** One synthetic device (the simulation's device 0) answers the demo's messages
   for ``--rounds`` rounds: each round a train message, then an evaluate message, as the
   ServerApp builds them (demo settings, noise calibrated). Each message is answered in a fresh
   process that loads what ``flwr-clientapp`` loads (``bench/_message_probe.py``), once with the
   message answered in that process (as before the warm trainer: it loads torch and Opacus, then
   the device's data) and once handed to a running warm trainer, whose CPU during the message
   (``/proc/PID/stat``) is added to the process's. Flower's gRPC pull and push are in neither.
2. **``fedgaze demo``** (defaults: 5 synthetic devices, 3 rounds, TLS) run twice in this run:
   every message in its own process, then with one warm trainer for the devices.

    python bench/device_round.py [--rounds 3] [--skip-demo]

Writes the section between this script's markers in docs/results.md and
bench/results/device_round.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

from flwr.app import MessageType
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console

from _results import publish
from fedgaze.client.trainer_channel import SERVICE_MODULE, encode_reply
from fedgaze.local.demo import FederationOptions, run_local_federation
from fedgaze.local.simulate import device_node
from fedgaze.model.factory import initial_state
from fedgaze.server.exchange import round_messages

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "_message_probe.py"
MARKER = "device-round"
HEADING = "## A device message's cost, and the demo's wall time (bench/device_round.py)"
KINDS = (MessageType.TRAIN, MessageType.EVALUATE)
TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 120.0


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _start_trainer(folder: Path, device_dir: str) -> tuple[subprocess.Popen[str], float]:
    argv = [sys.executable, "-m", SERVICE_MODULE, "--folder", str(folder)]
    proc = subprocess.Popen([*argv, "--device-dir", device_dir], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT
    for line in proc.stderr:  # the trainer says "serving" once its stack is loaded
        if "serving" in line or time.monotonic() > deadline:
            break
    return proc, _cpu(proc.pid)


def _probe(node_config: dict[str, Any], kind: str, body: Path, split: bool) -> dict[str, Any]:
    argv = [sys.executable, str(PROBE), json.dumps(node_config), kind, str(body)]
    out = subprocess.run(
        argv + (["--split"] if split else []),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _messages(run_dir: Path, rounds: int, folder: Path) -> list[tuple[str, Path]]:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # as a ServerApp
    settings = FederationOptions(rounds=rounds).settings(run_dir, "bench-round", 1)
    state = initial_state(settings.hidden, settings.seed)
    out = []
    for rnd in range(1, rounds + 1):
        for kind in KINDS:
            (msg,) = round_messages([1], state, settings.plan(rnd), kind, rnd)
            path = folder / f"{kind}-{rnd}.pb"
            path.write_bytes(encode_reply(msg.content)[1])
            out.append((kind, path))
    return out


def _split(steps: dict[str, float], trainer: float | None) -> dict[str, float]:
    parts = {
        "interpreter": steps["interpreter"],
        "flwr imports": steps["flwr"] - steps["interpreter"],
        "fedgaze ClientApp import": steps["app"] - steps["flwr"],
    }
    if trainer is None:
        parts |= {
            "torch + Opacus + rounds import": steps["stack"] - steps["app"],
            "data load + featurize": steps["rows"] - steps["stack"],
            "answer (eval, DP-SGD, accounting, ledger)": steps["answer"] - steps["rows"],
        }
    else:
        parts |= {
            "channel (ClientApp side)": steps["answer"] - steps["app"],
            "warm trainer (answer)": trainer,
        }
    parts["total"] = sum(parts.values())
    return parts


def measure_messages(rounds: int) -> dict[str, Any]:
    """Per-message CPU splits, per mode and message kind, over ``rounds`` rounds."""
    with tempfile.TemporaryDirectory(prefix="fgb-") as tmp:
        base = Path(tmp)
        result: dict[str, Any] = {}
        for mode in ("per-message process", "warm trainer"):
            run_dir = base / mode.replace(" ", "-")
            env = {"run_dir": str(run_dir), "seed": 7, "epsilon": 8.0, "delta": 1e-5}
            node = device_node(0, env)
            messages = _messages(run_dir, rounds, base)
            trainer, startup = None, None
            if mode == "warm trainer":
                folder = base / "t"
                trainer, startup = _start_trainer(folder, node.device_dir)
                node = node.model_copy(update={"trainer": str(folder)})
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
            try:
                for kind, body in messages:
                    before = _cpu(trainer.pid) if trainer else 0.0
                    out = _probe(node.to_node_config(), kind, body, split=trainer is None)
                    spent = _cpu(trainer.pid) - before if trainer else None
                    assert out["status"] in ("trained", "evaluated"), out
                    rows[kind].append(_split(out["steps"], spent))
            finally:
                if trainer is not None:
                    trainer.send_signal(signal.SIGTERM)
                    trainer.wait(timeout=30)
            result[mode] = {
                "startup_cpu_s": startup,
                "messages": {
                    k: {part: mean(r[part] for r in v) for part in v[0]} for k, v in rows.items()
                },
                "train_totals": [r["total"] for r in rows[MessageType.TRAIN]],
            }
        return result


def measure_demo() -> dict[str, float]:
    """``fedgaze demo``'s wall seconds (defaults), per mode, in this run."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="fgd-") as tmp:
        for mode, warm in (("per-message process", False), ("warm trainer", True)):
            opts = FederationOptions(run_dir=Path(tmp) / str(warm), warm_trainer=warm)
            summary = run_local_federation(opts, Console(file=io.StringIO()))
            if summary.rounds_completed != summary.rounds:
                raise RuntimeError(f"demo ({mode}) completed {summary.rounds_completed} rounds")
            out[mode] = summary.wall_seconds
    return out


def _table(result: dict[str, Any]) -> str:
    modes = list(result["messages"])
    lines = []
    for kind in KINDS:
        parts: list[str] = []
        for mode in modes:
            parts += [p for p in result["messages"][mode]["messages"][kind] if p not in parts]
        parts.remove("total")
        lines += [f"| {kind} message: CPU seconds | " + " | ".join(modes) + " |"]
        lines += ["|---|" + "---:|" * len(modes)]
        for part in [*parts, "total"]:
            cells = [result["messages"][m]["messages"][kind].get(part) for m in modes]
            text = [f"{c:.2f}" if c is not None else "-" for c in cells]
            name = f"**{part}**" if part == "total" else part
            lines.append(f"| {name} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    msgs = result["messages"]
    before, after = (msgs[m]["messages"][MessageType.TRAIN]["total"] for m in msgs)
    startup = msgs["warm trainer"]["startup_cpu_s"]
    text = [
        f"Produced by `python bench/device_round.py` on {result['machine']} ({result['date']}; "
        f"{result['rounds']} rounds; mean over rounds). CPU seconds of one device message: the "
        "fresh process that `flwr-clientapp` starts for it (interpreter, Flower's runner and "
        "the fedgaze ClientApp module), plus, with a warm trainer, the trainer's CPU during the "
        "message. The warm trainer keeps the device's featurized rows between messages "
        "(refeaturized when its store changes). Flower's gRPC pull and push of the message are "
        "in neither column.",
        "",
        _table(result),
        f"A train message: {before:.2f} s of CPU in its own process, {after:.2f} s with the warm "
        f"trainer ({before / after:.1f}x less; target 1.5 s). The trainer pays its stack once per "
        f"start: {startup:.2f} s of CPU.",
    ]
    demo = result.get("demo")
    if demo:
        old, new = demo["per-message process"], demo["warm trainer"]
        text += [
            "",
            "| `fedgaze demo` (5 devices, 3 rounds, TLS) | wall seconds |",
            "|---|---:|",
            f"| every message in its own process | {old:.1f} |",
            f"| one warm trainer for the devices (the default) | {new:.1f} |",
            "",
            f"Demo wall time {old:.1f} s -> {new:.1f} s ({old / new:.2f}x; target 45 s).",
        ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/device_round.json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "messages": measure_messages(args.rounds),
    }
    if not args.skip_demo:
        result["demo"] = measure_demo()
    publish(
        render(result),
        result,
        markdown=args.out,
        json_path=args.json,
        marker=MARKER,
        heading=HEADING,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
