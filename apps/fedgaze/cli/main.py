"""The ``fedgaze`` command line: demo, train, score, features, audit, server, client.

The agent's ``fedgaze client`` subcommands (enroll, start, status, pause, resume, forget,
service) are defined in :mod:`fedgaze.client.agent.commands`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from fedgaze.argtypes import existing_dir, positive_float, positive_int

if TYPE_CHECKING:
    from fedgaze.local.demo import FederationOptions


def _add_federation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure",
        action="store_true",
        help="turn OFF TLS and SuperNode authentication (debugging only; default: both on, "
        "with a fresh CA and device keys under RUN_DIR/certs)",
    )
    p.add_argument("--rounds", type=positive_int, default=3, help="federated rounds (3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", help="comma-separated IFLLM worker ids to run as devices")
    p.add_argument(
        "--max-workers",
        type=positive_int,
        default=8,
        help="cap on IFLLM devices (8); each is a SuperNode process",
    )
    p.add_argument("--delta", type=positive_float, default=1e-5)
    p.add_argument(
        "--noise-multiplier",
        type=positive_float,
        help="DP-SGD noise (default: the smallest that fits every round into the budget)",
    )
    p.add_argument("--round-timeout", type=positive_float, default=120.0, help="seconds (120)")
    p.add_argument(
        "--max-device-epsilon",
        type=positive_float,
        help="server policy: do not aggregate an update whose signed record states a larger "
        "cumulative epsilon (default: no cap)",
    )
    p.add_argument(
        "--client-dp-epsilon",
        type=positive_float,
        help="also add client-level DP to the aggregate, calibrated to this epsilon per person "
        "over all rounds (default: off)",
    )
    p.add_argument(
        "--aggregation",
        choices=("fedavg", "trimmed-mean", "median"),
        default="fedavg",
        help="how the server combines updates (fedavg; the robust rules resist a few hostile "
        "devices, not combinable with client-level DP)",
    )
    p.add_argument(
        "--trim-fraction",
        type=float,
        default=0.1,
        help="trimmed-mean: share cut from each end per coordinate (0.1)",
    )
    p.add_argument(
        "--max-update-norm",
        type=positive_float,
        help="refuse an update farther than this (L2) from the model sent (default: no bound)",
    )
    p.add_argument(
        "--client-dp-clip",
        type=positive_float,
        default=0.5,
        help="client-level DP: L2 bound of each device's update (0.5)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``fedgaze`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedgaze",
        description="Federated, differentially private reward models from implicit feedback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a real local federation end to end")
    demo.add_argument("--nodes", type=positive_int, default=5, help="synthetic devices (5)")
    demo.add_argument("--data", type=existing_dir, help="IFLLM-format folder instead of synthetic")
    demo.add_argument("--run-dir", type=Path, help="run directory (default: new under ./runs/)")
    demo.add_argument("--epsilon", type=positive_float, default=8.0, help="per-device budget (8)")
    _add_federation_args(demo)

    train = sub.add_parser("train", help="train a reward model on an IFLLM-format folder")
    train.add_argument("--data", type=existing_dir, required=True)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--mode", choices=("central", "federated"), default="central")
    train.add_argument(
        "--epsilon",
        type=positive_float,
        help="DP budget: central = target epsilon; federated = per-device budget "
        "(default: non-private central, budget 8 federated)",
    )
    train.add_argument("--epochs", type=positive_int, default=10, help="central epochs (10)")
    train.add_argument("--run-dir", type=Path, help="federated: run directory")
    _add_federation_args(train)

    certs = sub.add_parser(
        "certs", help="create a CA, a SuperLink TLS certificate and SuperNode auth keys"
    )
    certs.add_argument("--out", type=Path, required=True, help="directory to write (new)")
    who = certs.add_mutually_exclusive_group()
    who.add_argument(
        "--devices", type=positive_int, default=None, help="device-000..N-1 key pairs (1)"
    )
    who.add_argument("--device-ids", help="comma-separated device ids, one key pair each")
    certs.add_argument(
        "--server-names",
        default="127.0.0.1,::1,localhost",
        help="SuperLink certificate SANs: IPs or DNS names (127.0.0.1,::1,localhost)",
    )

    score = sub.add_parser("score", help="score every labelled pairwise comparison of a folder")
    score.add_argument("--model", type=existing_dir, required=True)
    score.add_argument("--data", type=existing_dir, required=True)
    score.add_argument("--out", type=Path, required=True, help="CSV: query_ID,p_right")

    feats = sub.add_parser(
        "features", help="compute the feature table of every comparison of an IFLLM-format folder"
    )
    feats.add_argument("--data", type=existing_dir, required=True)
    feats.add_argument(
        "--out", type=Path, required=True, help="table to write: FILE.parquet or FILE.csv"
    )
    feats.add_argument(
        "--jobs",
        type=positive_int,
        default=len(os.sched_getaffinity(0)),
        help="worker processes (default: every core this process may use)",
    )
    feats.add_argument("--workers", help="comma-separated worker ids (default: all)")
    _add_audit_parsers(sub)
    server = sub.add_parser("server", help="commands for the operator of the federation server")
    server_sub = server.add_subparsers(dest="server_command", required=True)
    status = server_sub.add_parser("status", help="state of a run: rounds, devices, refusals")
    status.add_argument("run_dir", type=existing_dir, help="the run directory")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    start = server_sub.add_parser(
        "start", help="run the federation server of a server.toml (TLS, node auth, DP)"
    )
    start.add_argument("--config", type=Path, required=True, help="the server.toml")
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the run_dir's run after its last committed round (after a crash)",
    )
    client = sub.add_parser("client", help="commands for a person on their own device")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    budget = client_sub.add_parser(
        "budget", help="privacy spent by this device, per run and in total (verified ledger)"
    )
    budget.add_argument(
        "--device-dir",
        type=existing_dir,
        help="the device folder (default: the enrolled device's, from the client config)",
    )
    budget.add_argument("--config", type=Path, help="client config (default: the enrolled one)")
    from fedgaze.client.agent.commands import add_client_parsers

    add_client_parsers(client_sub)
    return parser


def _add_audit_parsers(sub: Any) -> None:
    """``fedgaze audit <subcommand>``: one parser per entry of :data:`AUDIT_COMMANDS`."""
    audit = sub.add_parser("audit", help="verify signed ledgers and recompute epsilon")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check every hash and signature and recompute every epsilon (exit 1 on a problem)",
    )
    verify.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    verify.add_argument("--no-pld", action="store_true", help="skip the PLD recomputation")
    export = audit_sub.add_parser("export", help="DP events of every device, for recomputation")
    export.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    export.add_argument("--json", action="store_true", required=True, help="JSON output")
    export.add_argument("--out", type=Path, help="write to FILE instead of stdout")
    report = audit_sub.add_parser("report", help="self-contained HTML report with plots")
    report.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    report.add_argument("--out", type=Path, required=True, help="HTML file to write")
    canary = audit_sub.add_parser(
        "canary",
        help="one-run empirical audit of local DP-SGD (Steinke, Nasr, Jagielski 2023)",
    )
    canary.add_argument("--noise-multiplier", type=positive_float, default=1.0)
    canary.add_argument("--canaries", type=positive_int, default=1000, help="m (1000)")
    canary.add_argument("--guesses", type=positive_int, default=100, help="r, half each way")
    canary.add_argument("--seed", type=int, default=0)
    canary.add_argument("--delta", type=positive_float, default=1e-5)
    canary.add_argument(
        "--noise-off",
        action="store_true",
        help="self-test: train WITHOUT noise while claiming the noisy epsilon (must be caught)",
    )
    serve = audit_sub.add_parser("serve", help="serve the PrivacyAudit gRPC service of a run")
    serve.add_argument("path", type=Path, help="run directory (with server_ledger.db)")
    serve.add_argument(
        "--address", default="127.0.0.1:50061", help="host:port (default 127.0.0.1:50061)"
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (required off loopback)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of the certificate")


def _federation_options(args: argparse.Namespace, **overrides: Any) -> FederationOptions:
    from fedgaze.local.demo import FederationOptions

    workers = (
        tuple(w.strip() for w in args.workers.split(",") if w.strip()) if args.workers else None
    )
    fields: dict[str, Any] = {
        "rounds": args.rounds,
        "seed": args.seed,
        "workers": workers,
        "max_workers": None if workers else args.max_workers,
        "delta": args.delta,
        "noise_multiplier": args.noise_multiplier,
        "round_timeout": args.round_timeout,
        "max_device_epsilon": args.max_device_epsilon,
        "client_dp_epsilon": args.client_dp_epsilon,
        "client_dp_clip_norm": args.client_dp_clip,
        "aggregation": args.aggregation,
        "trim_fraction": args.trim_fraction,
        "max_update_norm": args.max_update_norm,
        "run_dir": args.run_dir,
        "insecure": args.insecure,
        **overrides,
    }
    return FederationOptions(**fields)


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.local.demo import run_local_federation

    opts = _federation_options(args, nodes=args.nodes, data=args.data, epsilon_budget=args.epsilon)
    summary = run_local_federation(opts, console)
    return 0 if summary["rounds_completed"] == summary["rounds"] else 1


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_certs(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.security.certs import provision_credentials

    if args.device_ids:
        ids = _split(args.device_ids)
    else:
        ids = [f"device-{i:03d}" for i in range(args.devices or 1)]
    names = _split(args.server_names)
    if not names:
        raise ValueError("--server-names needs at least one name")
    if args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"{args.out} is not empty; choose a new directory")
    paths = provision_credentials(args.out, ids, names)
    console.print(
        f"CA {paths.ca_cert}, SuperLink certificate {paths.server_cert} "
        f"(names: {', '.join(names)}), key {paths.server_key}; "
        f"{len(ids)} device key pairs under {paths.directory / 'devices'}; "
        f"public keys listed in {paths.authorized}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        "SuperLink: --ssl-certfile server.pem --ssl-keyfile server.key --ssl-ca-certfile ca.pem "
        "--enable-supernode-auth; register each device: flwr supernode register "
        "devices/<id>.pub; SuperNode: --root-certificates ca.pem "
        "--auth-supernode-private-key devices/<id>.key",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    if args.mode == "central":
        from fedgaze.local.train_score import train_central_model

        saved = train_central_model(
            args.data,
            args.out,
            epsilon=args.epsilon,
            delta=args.delta,
            epochs=args.epochs,
            seed=args.seed,
        )
        eps = saved.provenance["epsilon"]
        console.print(
            f"trained on {saved.provenance['examples']} comparisons from "
            f"{saved.provenance['devices']} workers; "
            + ("non-private" if eps is None else f"epsilon={eps:.3f} delta={args.delta:g}")
            + f"; model written to {args.out}"
        )
        return 0
    from fedgaze.local.demo import run_local_federation

    opts = _federation_options(args, data=args.data, epsilon_budget=args.epsilon or 8.0)
    summary = run_local_federation(opts, console)
    if summary["rounds_completed"] != summary["rounds"]:
        return 1
    replace_model_dir(Path(summary["model"]), args.out)
    console.print(f"federated model written to {args.out}")
    return 0


def replace_model_dir(source: Path, out: Path) -> None:
    """Copy the model at ``source`` to ``out``, replacing only an earlier fedgaze model there."""
    if out.exists():
        if not (out / "model.json").is_file():
            raise ValueError(f"{out} exists and is not a fedgaze model directory; not replacing it")
        shutil.rmtree(out)
    shutil.copytree(source, out)


def _cmd_score(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.local.train_score import score

    rows = score(args.model, args.data, args.out)
    console.print(f"wrote {rows} predictions to {args.out}")
    return 0


def _cmd_features(args: argparse.Namespace, console: Console) -> int:
    import time

    from fedgaze.features.table import compute_feature_table, write_feature_table

    workers = [w.strip() for w in args.workers.split(",") if w.strip()] if args.workers else None
    if args.out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {args.out}")
    start = time.monotonic()
    table = compute_feature_table(args.data, jobs=args.jobs, workers=workers)
    write_feature_table(table, args.out)
    seconds = time.monotonic() - start
    console.print(
        f"{table.frame.height} comparisons x {table.frame.width} columns from "
        f"{table.frame['worker'].n_unique()} workers with pairwise queries, in {seconds:.1f} s "
        f"with {args.jobs} job(s); "
        f"{len(table.problems)} unusable rows or files reported; written to {args.out}",
        soft_wrap=True,
    )
    return 0


def _cmd_audit_verify(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from fedgaze.audit.verify import RDP_TOLERANCE, audit_path

    audits = audit_path(args.path, pld=not args.no_pld)
    console.print(
        f"epsilon recomputed with dp_accounting (RDP{'' if args.no_pld else ' and PLD'}); "
        f"allowed relative difference from the stated value: {RDP_TOLERANCE:g}",
        soft_wrap=True,
    )
    for a in audits:
        table = Table(title=f"{a.kind} ledger {escape(str(a.path))}", show_header=False)
        table.add_row("result", "[green]ok[/green]" if a.ok else "[red]FAILED[/red]")
        for key, value in a.summary.items():
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            table.add_row(key, escape(shown))
        console.print(table)
        for note in a.notes:
            console.print(f"  note: {escape(note)}", soft_wrap=True, highlight=False)
        for problem in a.problems:
            console.print(
                f"  [red]problem[/red]: {escape(problem)}", soft_wrap=True, highlight=False
            )
    bad = sum(len(a.problems) for a in audits)
    if bad:
        console.print(f"[red]verification FAILED[/red]: {bad} problem(s) in {len(audits)} ledgers")
        return 1
    console.print(f"[green]verified[/green]: {len(audits)} ledger(s), every record holds")
    return 0


def _cmd_audit_export(args: argparse.Namespace, console: Console) -> int:
    import json

    from fedgaze.atomic import write_bytes_atomic
    from fedgaze.audit.verify import audit_path, export_events

    audits = audit_path(args.path, pld=False)
    data = export_events(audits)
    if not data["verified"]:
        data["problems"] = [p for a in audits for p in a.problems]
    text = json.dumps(data, indent=2) + "\n"
    if args.out:
        write_bytes_atomic(args.out, text.encode())
        console.print(f"wrote {len(data['devices'])} devices' DP events to {args.out}")
    else:
        sys.stdout.write(text)
    if not data["verified"]:
        Console(stderr=True).print("[red]the ledgers do not verify[/red] (see 'problems')")
        return 1
    return 0


def _cmd_audit_report(args: argparse.Namespace, console: Console) -> int:
    import json

    from fedgaze.atomic import write_bytes_atomic
    from fedgaze.audit.report import render_report
    from fedgaze.audit.verify import audit_path, export_events

    audits = audit_path(args.path, pld=False)
    problems = [f"{a.path}: {p}" for a in audits for p in a.problems]
    result = args.path / "server_result.json" if args.path.is_dir() else None
    evaluations = (
        json.loads(result.read_text(encoding="utf-8")).get("evaluations", [])
        if result is not None and result.is_file()
        else []
    )
    page = render_report(
        export_events(audits), source=str(args.path), evaluations=evaluations, problems=problems
    )
    write_bytes_atomic(args.out, page.encode("utf-8"))
    state = "[red]ledgers did NOT verify[/red] (the report says so)" if problems else "verified"
    console.print(f"report written to {args.out}; {state}", soft_wrap=True)
    return 1 if problems else 0


def _cmd_audit_canary(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.audit.canary import CanaryAuditConfig, format_result, run_canary_audit

    config = CanaryAuditConfig(
        m=args.canaries,
        k_plus=args.guesses // 2,
        k_minus=args.guesses - args.guesses // 2,
        seed=args.seed,
        noise_multiplier=args.noise_multiplier,
        delta=args.delta,
    )
    if args.noise_off:
        console.print("[yellow]self-test: noise switched off, the claim is kept[/yellow]")
    result = run_canary_audit(config, noise_off=args.noise_off)
    console.print(escape(format_result(result)), soft_wrap=True, highlight=False)
    return 1 if result.violated else 0


def _cmd_audit_serve(args: argparse.Namespace, console: Console) -> int:
    import threading

    from fedgaze.server.audit_service import serve_audit

    cert = args.tls_cert.read_bytes() if args.tls_cert else None
    key = args.tls_key.read_bytes() if args.tls_key else None
    server, port = serve_audit(args.path, args.address, tls_cert=cert, tls_key=key)
    host = args.address.rsplit(":", 1)[0]
    console.print(
        f"PrivacyAudit serving {args.path} on {host}:{port} "
        f"({'TLS' if cert else 'plaintext, loopback only'}); Ctrl-C stops it",
        soft_wrap=True,
    )
    try:
        threading.Event().wait()
    finally:
        server.stop(grace=1.0)
    return 0


AUDIT_COMMANDS = {
    "verify": _cmd_audit_verify,
    "export": _cmd_audit_export,
    "report": _cmd_audit_report,
    "canary": _cmd_audit_canary,
    "serve": _cmd_audit_serve,
}
"""Handlers of ``fedgaze audit <subcommand>`` (add a subparser in ``_add_audit_parsers``)."""


def _cmd_audit(args: argparse.Namespace, console: Console) -> int:
    return AUDIT_COMMANDS[args.audit_command](args, console)


def _cmd_client(args: argparse.Namespace, console: Console) -> int:
    if args.client_command == "budget":
        return _cmd_client_budget(args, console)
    from fedgaze.client.agent.commands import CLIENT_COMMANDS

    return CLIENT_COMMANDS[args.client_command](args, console)


def _cmd_client_budget(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from fedgaze.audit.budget import device_budget

    if args.device_dir is None:
        from fedgaze.client.agent.config import load_config

        args.device_dir = load_config(args.config).device_dir
    view = device_budget(args.device_dir)
    for problem in view.problems:
        console.print(f"[red]problem[/red]: {escape(problem)}", soft_wrap=True, highlight=False)
    if view.problems:
        console.print("[red]the ledger does not verify[/red]; the figures below are not reliable")
    table = Table(title=f"privacy spent by device {view.device} (ledger {view.ledger})")
    for col in ("run", "rounds", "epsilon (this run alone)", "delta"):
        table.add_column(col)
    for run in view.runs:
        table.add_row(
            escape(run["run_id"]), str(run["rounds"]), f"{run['epsilon']:.3f}", f"{run['delta']:g}"
        )
    console.print(table)
    budget = "n/a" if view.epsilon_budget is None else f"{view.epsilon_budget:g}"
    console.print(
        f"total: {view.rounds} rounds in {len(view.runs)} runs, epsilon {view.epsilon:.3f} "
        f"(dp_accounting RDP {view.epsilon_rdp:.3f}) at delta {view.delta:g}; budget {budget}",
        soft_wrap=True,
    )
    return 1 if view.problems else 0


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cmd_server(args: argparse.Namespace, console: Console) -> int:
    if args.server_command == "start":
        return _cmd_server_start(args, console)
    return _cmd_server_status(args, console)


def _print_server_event(console: Console, event: dict[str, Any]) -> None:
    """One line per ServerApp progress event worth an operator's eye."""
    kind = event.get("event")
    if kind == "started":
        after = event.get("resumed_after")
        resumed = f", resumed after round {after}" if after is not None else ""
        console.print(f"{event.get('nodes')} devices connected{resumed}", soft_wrap=True)
    elif kind == "round":
        console.print(
            f"round {event.get('round')}: {event.get('train_devices')} updates aggregated, "
            f"{len(event.get('refused') or [])} refused, {len(event.get('failures') or [])} "
            f"failures, {event.get('seconds')} s",
            soft_wrap=True,
        )
    elif kind == "evaluation" and event.get("accuracy") is not None:
        console.print(
            f"  held-out accuracy of the model after round {event.get('round')}: "
            f"{_num(event.get('accuracy'))} (n={event.get('eval_examples')})",
            soft_wrap=True,
        )


def _cmd_server_start(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.server.config import load_server_config
    from fedgaze.server.start import start_server

    config = load_server_config(args.config)
    if not config.tls.enabled:
        console.print(
            "[bold red]WARNING: tls.enabled = false: model updates and privacy records travel "
            "in plaintext.[/bold red]"
        )
    run = start_server(
        config, resume=args.resume, on_event=lambda e: _print_server_event(console, e)
    )
    result = run.result
    console.print(
        f"run {escape(run.run_key)} finished: {result['rounds_completed']}/{result['rounds']} "
        f"rounds, tls={run.tls}, node_auth={run.node_auth}, "
        f"{run.wall_seconds:.0f} s; ledger {escape(str(result['ledger']))}",
        soft_wrap=True,
    )
    return 0


def _cmd_server_status(args: argparse.Namespace, console: Console) -> int:
    import dataclasses
    import json

    from fedgaze.server.status import run_status

    st = run_status(args.run_dir)
    if args.json:
        data = {**dataclasses.asdict(st), "run_dir": str(st.run_dir)}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0 if st.state in ("running", "finished") else 1
    color = {"finished": "green", "running": "cyan"}.get(st.state, "red")
    planned = st.rounds_planned if st.rounds_planned is not None else "?"
    console.print(
        f"run {escape(str(st.run_dir))}: [{color}]{st.state}[/{color}], "
        f"{st.rounds_completed}/{planned} rounds, {len(st.live_processes)} live processes, "
        f"server ledger: {st.ledger_records if st.ledger_records is not None else 'none'} records",
        soft_wrap=True,
    )
    if st.last_evaluation:
        ev = st.last_evaluation
        console.print(
            f"  last evaluation (model after round {ev.get('round')}): accuracy "
            f"{_num(ev.get('accuracy'))}, personalized {_num(ev.get('accuracy_personal'))}, "
            f"n={ev.get('eval_examples')}",
            soft_wrap=True,
        )
    for d in st.devices:
        console.print(
            f"  device {escape(str(d.get('device_id')))}: {d.get('status')}, "
            f"epsilon {float(d.get('epsilon') or 0.0):.3f}",
            soft_wrap=True,
        )
    for r in st.refused:
        console.print(f"  [red]refused[/red]: {escape(str(r))}", soft_wrap=True, highlight=False)
    for f in st.failures:
        console.print(f"  [red]failure[/red]: {escape(f)}", soft_wrap=True, highlight=False)
    return 0 if st.state in ("running", "finished") else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedgaze`` console script; returns the process exit code."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    args = build_parser().parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    handlers = {
        "demo": _cmd_demo,
        "train": _cmd_train,
        "certs": _cmd_certs,
        "score": _cmd_score,
        "features": _cmd_features,
        "audit": _cmd_audit,
        "client": _cmd_client,
        "server": _cmd_server,
    }
    try:
        return handlers[args.command](args, console)
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/red]: every child process was stopped", soft_wrap=True)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        # Soft wrap keeps file paths in error messages whole (copyable, greppable).
        errors.print(f"[red]error[/red]: {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
