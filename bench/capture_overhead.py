"""What capture in the browser costs: bytes and requests posted, agent CPU, page JS time.

Starts the capture service as its own process (``python -m fedgaze.client.capture.web`` with a
replay file in a temporary device folder, exactly as the agent starts it), opens the reference
page in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``) and, for ``--seconds``
of wall time, moves the mouse continuously over both answers (a new position every ~16 ms, so
the library's 20 ms throttle decides the mouse rate) while the page pushes gaze points at
``--gaze-hz`` through ``FedgazeCapture.pushGaze`` (WebGazer runs at about 12 Hz; 30 Hz is a
fast tracker). Then it leaves the page (flushing by beacon) and stops the service with SIGTERM
(which commits the encrypted device store).

Measured, scaled to one minute of capture:

- bytes and requests received by ``POST /api/v1/samples`` (request line, headers and body, as
  counted by the service), and the samples stored;
- the service process's CPU seconds during the capture window (``/proc/<pid>/stat``), and the
  commit at shutdown;
- the library's own JavaScript time (``FedgazeCapture.stats().js_ms``: every event handler and
  ``pushGaze`` call timed with ``performance.now()``; the fetches' network time excluded);
- the encrypted store's size after the commit.

    python bench/capture_overhead.py [--seconds 60] [--gaze-hz 30]

Writes the section between this script's markers in docs/results.md and
bench/results/capture_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section
from fedgaze.atomic import write_json_atomic
from fedgaze.client.agent.open_page import open_link
from fedgaze.client.capture.answers import Answer, write_replay
from fedgaze.client.capture.web import TOKEN_HEADER

ROOT = Path(__file__).resolve().parents[1]
MARKER = "capture_overhead"
HEADING = "## Capture overhead (browser)"
CHROMIUM = Path(os.environ.get("FEDGAZE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_PARAGRAPH = (
    "Reading a long answer is mostly scanning lines, then going back to a sentence. This "
    "paragraph stands in for an answer of realistic length, so that the caret lookups walk as "
    "many text nodes and lines as a real page would. "
)
_START_GAZE = """([hz]) => {
  const t0 = performance.now();
  window.__gaze = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    const x = innerWidth * (0.5 + 0.42 * Math.sin(s * 0.7));
    const y = innerHeight * (0.5 + 0.3 * Math.sin(s * 1.3));
    FedgazeCapture.pushGaze(x + 30 * Math.sin(s * 17), y, {validate: 1});
  }, 1000 / hz);
}"""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _status(port: int, token: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/status", headers={TOKEN_HEADER: token}
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        reply: dict[str, Any] = json.loads(res.read())
    return reply


def _start_service(work: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    replay = write_replay(
        work / "replay.jsonl",
        [Answer(prompt="bench", answers=(_PARAGRAPH * 12, _PARAGRAPH * 9), task_id=1)],
    )
    ready = work / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgaze.client.capture.web", "--device-dir", str(work / "dev"),
         "--replay", str(replay), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the capture service did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _drive(url: str, seconds: float, gaze_hz: float) -> dict[str, Any]:
    """Mouse and gaze on the page for ``seconds``; the library's stats just before leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(15_000)
            page.goto(url)
            page.wait_for_function("() => window.fedgazePage && fedgazePage.current() !== null")
            page.evaluate(_START_GAZE, [gaze_hz])
            start = time.monotonic()
            moves = 0
            while (elapsed := time.monotonic() - start) < seconds:
                x = 640 + 560 * math.sin(elapsed * 0.9)
                y = 400 + 300 * math.sin(elapsed * 2.3)
                page.mouse.move(x, y)
                moves += 1
                time.sleep(0.016)
            page.evaluate("() => clearInterval(window.__gaze)")
            stats: dict[str, Any] = page.evaluate("() => FedgazeCapture.stats()")
            stats["wall_s"] = time.monotonic() - start
            stats["mouse_moves_driven"] = moves
            page.goto("about:blank")  # pagehide: the rest goes by beacon
        finally:
            browser.close()
    return stats


def run(seconds: float, gaze_hz: float) -> dict[str, Any]:
    """One measured capture session; the raw numbers and their per-minute rates."""
    with tempfile.TemporaryDirectory(prefix="fedgaze-capture-bench-") as tmp:
        work = Path(tmp)
        proc, info = _start_service(work)
        try:
            cpu_before = _cpu_s(proc.pid)
            js = _drive(open_link(work / "ready.json"), seconds, gaze_hz)  # as `client open`
            time.sleep(1.0)  # the beacon's request
            cpu_after = _cpu_s(proc.pid)
            status = _status(info["port"], info["token"])
            stop = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
            commit_s = time.perf_counter() - stop
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        store = work / "dev" / "store"
        store_bytes = sum(f.stat().st_size for f in store.iterdir() if f.is_file())
    if proc.returncode != 0:
        raise RuntimeError(f"the capture service exited with {proc.returncode}")
    per_min = 60.0 / js["wall_s"]
    route = "/api/v1/samples"
    sink = status["sink"]
    samples = sink["gaze_samples"] + sink["mouse_samples"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "seconds": js["wall_s"],
        "gaze_hz": gaze_hz,
        "chromium": CHROMIUM.name,
        "requests": status["traffic"]["requests"].get(route, 0),
        "bytes": status["traffic"]["bytes"].get(route, 0),
        "gaze_samples": sink["gaze_samples"],
        "mouse_samples": sink["mouse_samples"],
        "events": sink["events"],
        "agent_cpu_s": cpu_after - cpu_before,
        "commit_and_exit_s": commit_s,
        "store_bytes": store_bytes,
        "js": js,
        "per_minute": {
            "bytes": status["traffic"]["bytes"].get(route, 0) * per_min,
            "requests": status["traffic"]["requests"].get(route, 0) * per_min,
            "samples": samples * per_min,
            "agent_cpu_s": (cpu_after - cpu_before) * per_min,
            "js_ms": js["js_ms"] * per_min,
            "store_bytes": store_bytes * per_min,
        },
    }


def render(r: dict[str, Any]) -> str:
    """The markdown section written into docs/results.md."""
    m = r["per_minute"]
    per_sample = r["bytes"] / max(1, r["gaze_samples"] + r["mouse_samples"])
    lines = [
        f"`python bench/capture_overhead.py` ({r['date']}, {r['cpu_count']} cores, load "
        f"average {r['load_average']:.1f}; headless Debian Chromium driven by Playwright): "
        f"{r['seconds']:.0f} s of continuous mouse movement over both answers plus gaze pushed "
        f"at {r['gaze_hz']:.0f} Hz, into the capture service running as its own process "
        "(`python -m fedgaze.client.capture.web`, replay backend), which commits the encrypted "
        "store on SIGTERM. Rates are per minute of capture.",
        "",
        "| measure | per minute |",
        "|---|---|",
        f"| samples stored (gaze + mouse) | {m['samples']:,.0f} |",
        f"| bytes posted to the agent (headers included) | {m['bytes'] / 1e3:,.0f} kB |",
        f"| requests | {m['requests']:,.0f} |",
        f"| agent CPU (service process) | {m['agent_cpu_s']:.2f} s |",
        f"| page JS time in the capture library | {m['js_ms']:,.0f} ms |",
        f"| encrypted device store after commit | {m['store_bytes'] / 1e3:,.0f} kB |",
        "",
        f"Totals: {r['gaze_samples']:,} gaze and {r['mouse_samples']:,} mouse samples, "
        f"{r['events']} events, {r['requests']} requests ({per_sample:.0f} bytes per sample on "
        f"the wire), {r['agent_cpu_s']:.2f} s of agent CPU; the commit at shutdown and exit took "
        f"{r['commit_and_exit_s']:.2f} s. The JS time counts the library's event handlers and "
        "`pushGaze` calls (caret lookup and queueing), not the browser's own work or the "
        "network. Every accepted batch is fsynced to the encrypted journal before the reply.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its results; the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="capture wall time")
    p.add_argument("--gaze-hz", type=float, default=30.0, help="injected gaze rate")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"no Chromium at {CHROMIUM} (set FEDGAZE_CHROMIUM)", file=sys.stderr)
        return 2
    result = run(args.seconds, args.gaze_hz)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        write_json_atomic(ROOT / "bench" / "results" / "capture_overhead.json", result)
        write_section(ROOT / "docs" / "results.md", MARKER, render(result), HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
