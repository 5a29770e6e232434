"""``fedgaze client enroll|start|open|status|pause|resume|forget|service``: parsers and handlers.

:func:`add_client_parsers` adds the subcommands to ``fedgaze client`` and sets each one's
handler with ``set_defaults(handler=...)`` (``fedgaze.cli`` calls it). Heavy modules are
imported inside the handlers so ``fedgaze --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fedgaze.argtypes import port, positive_float

SERVICE_NAME = "fedgaze-client.service"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="client config (default: $XDG_CONFIG_HOME/fedgaze/client.toml, "
        "i.e. ~/.config/fedgaze/client.toml)",
    )


def add_client_parsers(client_sub: Any) -> None:
    """Add the agent's subcommands to the ``fedgaze client`` subparsers ``client_sub``."""
    enroll = client_sub.add_parser(
        "enroll", help="make this device's keys and config to join a federation"
    )
    enroll.add_argument("--server", required=True, help="the SuperLink's Fleet API, HOST:PORT")
    enroll.add_argument("--ca", type=Path, required=True, help="the federation's CA (ca.pem)")
    enroll.add_argument(
        "--device-dir",
        type=Path,
        help="the device folder (default: $XDG_DATA_HOME/fedgaze/device, "
        "i.e. ~/.local/share/fedgaze/device)",
    )
    _config_arg(enroll)
    enroll.add_argument("--device-id", help="name in replies (default: random device-XXXXXXXX)")
    enroll.add_argument(
        "--epsilon-budget",
        type=positive_float,
        default=8.0,
        help="this device's own privacy budget, enforced on the device (8)",
    )
    enroll.add_argument("--delta", type=positive_float, default=1e-5, help="its delta (1e-5)")
    enroll.add_argument(
        "--supernode-port", type=port, default=9094, help="SuperNode's local runtime port (9094)"
    )
    enroll.add_argument("--capture-port", type=port, default=8765, help="capture page (8765)")
    enroll.add_argument("--capture-grpc-port", type=port, help="also serve capture over gRPC")
    answers = enroll.add_mutually_exclusive_group()
    answers.add_argument("--replay", type=Path, help="answers: replay this JSONL file")
    answers.add_argument("--openai-url", help="answers: an OpenAI-compatible server's base URL")
    enroll.add_argument("--openai-model", help="model for --openai-url")
    enroll.add_argument(
        "--openai-key-env", default="OPENAI_API_KEY", help="env variable with the API key"
    )
    enroll.add_argument("--webgazer", type=Path, help="your own copy of webgazer.js to serve")
    enroll.add_argument(
        "--connection",
        default="fedgaze",
        help="the operator's flwr connection name, for the printed command (fedgaze)",
    )
    enroll.add_argument(
        "--force",
        action="store_true",
        help="re-enroll: new SuperNode key and config; keeps the data, store key and ledger",
    )
    enroll.set_defaults(handler=_cmd_enroll)
    start = client_sub.add_parser(
        "start", help="run the agent (capture service + SuperNode) until SIGTERM/Ctrl-C"
    )
    _config_arg(start)
    start.set_defaults(handler=_cmd_start)
    open_page = client_sub.add_parser(
        "open", help="open the capture page in your browser (a one-time link, for you only)"
    )
    _config_arg(open_page)
    open_page.add_argument(
        "--print-only", action="store_true", help="print the link; do not start a browser"
    )
    open_page.set_defaults(handler=_cmd_open)
    status = client_sub.add_parser(
        "status", help="data held, rounds, budget, last model, paused, running"
    )
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)
    for name, text, paused in (
        ("pause", "stop capturing and training until 'resume' (survives restarts)", True),
        ("resume", "capture and train again", False),
    ):
        pause = client_sub.add_parser(name, help=text)
        _config_arg(pause)
        pause.set_defaults(handler=partial(_cmd_pause, paused=paused))
    forget = client_sub.add_parser(
        "forget", help="erase every local trace, key and label of this device, then its config"
    )
    _config_arg(forget)
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(handler=_cmd_forget)
    service = client_sub.add_parser("service", help="print or install the systemd user unit")
    service.add_argument(
        "--install",
        action="store_true",
        help="write it to $XDG_CONFIG_HOME/systemd/user/ (~/.config/systemd/user/)",
    )
    service.set_defaults(handler=_cmd_service)


def _print(console: Console, text: str) -> None:
    console.print(escape(text), soft_wrap=True, highlight=False)


def _config_path(args: argparse.Namespace) -> Path:
    from fedgaze.client.agent.config import default_config_path

    return Path(args.config) if args.config is not None else default_config_path()


def _cmd_enroll(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.client.agent.config import (
        CaptureConfig,
        OpenAIAnswers,
        ReplayAnswers,
        SuperNodeConfig,
        default_device_dir,
    )
    from fedgaze.client.agent.enroll import EnrollRequest, enroll

    answers: ReplayAnswers | OpenAIAnswers | None = None
    if args.replay is not None:
        answers = ReplayAnswers(backend="replay", file=args.replay.absolute())
    elif args.openai_url is not None:
        if not args.openai_model:
            raise ValueError("--openai-url needs --openai-model")
        answers = OpenAIAnswers(
            backend="openai",
            base_url=args.openai_url,
            model=args.openai_model,
            api_key_env=args.openai_key_env,
        )
    capture = CaptureConfig(
        port=args.capture_port,
        grpc_port=args.capture_grpc_port,
        webgazer=args.webgazer.absolute() if args.webgazer else None,
        answers=answers,
    )
    done = enroll(
        EnrollRequest(
            config_path=_config_path(args),
            server=args.server,
            ca_source=args.ca,
            device_dir=args.device_dir or default_device_dir(),
            epsilon_budget=args.epsilon_budget,
            delta=args.delta,
            device_id=args.device_id,
            supernode=SuperNodeConfig(port=args.supernode_port),
            capture=capture,
            connection=args.connection,
            force=args.force,
        )
    )
    cfg = done.config
    again = " (re-enrolled: new SuperNode key; data, store key and ledger kept)"
    _print(
        console,
        f"enrolled device {cfg.device_id}{again if done.reenrolled else ''}: config "
        f"{done.config_path}, device folder {cfg.device_dir}, server {cfg.server}, "
        f"budget epsilon {cfg.epsilon_budget:g} at delta {cfg.delta:g}",
    )
    _print(console, f"ledger pseudonym: {done.pseudonym}")
    _print(console, f"SuperNode public key ({done.public_key_path}):")
    _print(console, done.public_key)
    _print(
        console,
        f"Send this public key to the operator, who saves it as {cfg.device_id}.pub and "
        "registers it with:",
    )
    _print(console, f"  {done.register_command}")
    if cfg.capture.answers is None:
        _print(console, "no answer backend (--replay or --openai-url): the agent will not capture")
    _print(console, "then start the agent: fedgaze client start (or the systemd user service)")
    return 0


def _cmd_start(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.client.agent.children import CAPTURE, agent_children
    from fedgaze.client.agent.config import load_config
    from fedgaze.client.agent.supervisor import AgentGaveUp, run_agent

    config = load_config(args.config)
    specs = agent_children(config)
    _print(
        console,
        f"fedgaze client agent for {config.device_id}: {', '.join(s.name for s in specs)} "
        f"(server {config.server}); logs in {config.layout.logs}; SIGTERM or Ctrl-C stops it",
    )
    if any(s.name == CAPTURE for s in specs):
        _print(console, "open the capture page with: fedgaze client open")
    try:
        return run_agent(specs, config.layout)
    except AgentGaveUp as err:
        Console(stderr=True).print(
            f"[red]agent stopped[/red]: {escape(str(err))}", soft_wrap=True, highlight=False
        )
        return 1


def _cmd_open(args: argparse.Namespace, console: Console) -> int:
    import webbrowser

    from fedgaze.client.agent.config import load_config
    from fedgaze.client.agent.open_page import OpenError, open_link

    config = load_config(args.config)
    try:
        link = open_link(config.layout.capture_ready)
    except OpenError as err:
        Console(stderr=True).print(
            f"[red]no link[/red]: {escape(str(err))}", soft_wrap=True, highlight=False
        )
        return 1
    opened = not args.print_only and webbrowser.open(link)
    _print(
        console,
        f"{'opened' if opened else 'open'} the capture page of {config.device_id} "
        f"(this link works once, for a few minutes): {link}",
    )
    return 0


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.client.agent.config import load_config
    from fedgaze.client.agent.status import client_status

    st = client_status(load_config(args.config))
    if args.json:
        sys.stdout.write(json.dumps(st.to_json(), indent=2) + "\n")
        return 1 if st.problems else 0
    d = st.data
    agent = "running" if st.running else "not running"
    if st.agent is not None and st.running:
        restarts = ", ".join(
            f"{n} {c['restarts']} restarts" for n, c in st.agent["children"].items()
        )
        agent += f" (pid {st.agent['pid']}; {restarts})"
    model = st.last_model
    lines = [
        f"device {st.device_id} ({st.device_dir}), server {st.server}",
        f"agent: {agent}; {'PAUSED (fedgaze client resume)' if st.paused else 'not paused'}"
        + (f"; capture page {st.capture_url} (fedgaze client open)" if st.capture_url else ""),
        f"data: {d.queries} queries, {d.gaze_samples} gaze and {d.mouse_samples} mouse samples, "
        f"{d.labels} labelled comparisons",
        f"privacy: {st.rounds} rounds in {st.runs} runs, epsilon {st.epsilon:.3f} of "
        f"{st.epsilon_budget:g} spent ({st.epsilon_remaining:.3f} left) at delta {st.delta:g}",
        "last model: none received"
        if model is None
        else f"last model: after round {model['round']} of run {model['run']}, "
        f"received {model['received']}",
    ]
    for line in lines:
        _print(console, line)
    for problem in st.problems:
        console.print(f"[red]problem[/red]: {escape(problem)}", soft_wrap=True, highlight=False)
    return 1 if st.problems else 0


def _cmd_pause(args: argparse.Namespace, console: Console, paused: bool) -> int:
    from fedgaze.client.agent.config import load_config
    from fedgaze.client.device.pause import set_paused

    config = load_config(args.config)
    set_paused(config.device_dir, paused)
    _print(
        console,
        f"device {config.device_id} paused: nothing is captured or trained until "
        "'fedgaze client resume'"
        if paused
        else f"device {config.device_id} resumed: capture and training go on",
    )
    return 0


def _confirm(device_id: str) -> bool:
    if not sys.stdin.isatty():
        raise ValueError("forget erases everything of this device; pass --yes to confirm")
    answer = input(f"erase every trace, label and key of device {device_id}? type its id: ")
    return answer.strip() == device_id


def _cmd_forget(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.client.agent.config import load_config
    from fedgaze.client.agent.forget import forget_device

    path = _config_path(args)
    config = load_config(path)
    if not args.yes and not _confirm(config.device_id):
        _print(console, "not confirmed; nothing erased")
        return 1
    report = forget_device(config, path)
    _print(
        console,
        f"erased device {config.device_id}: {report.files} files ({report.bytes} bytes "
        f"overwritten), keys first; {report.device_dir} and the config {path} are gone. The "
        "operator's server still holds its signed records of this device's privacy spending "
        "(no data): ask the operator to unregister its SuperNode key",
    )
    return 0


def _cmd_service(args: argparse.Namespace, console: Console) -> int:
    import os
    from importlib import resources

    from fedgaze.atomic import write_bytes_atomic

    unit = resources.files("fedgaze.client.agent").joinpath(SERVICE_NAME).read_text("utf-8")
    if not args.install:
        sys.stdout.write(unit)
        return 0
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    target = Path(base) / "systemd" / "user" / SERVICE_NAME
    write_bytes_atomic(target, unit.encode("utf-8"))
    os.chmod(target, 0o644)
    _print(
        console,
        f"wrote {target}; now run: systemctl --user daemon-reload && "
        "systemctl --user enable --now fedgaze-client",
    )
    return 0
