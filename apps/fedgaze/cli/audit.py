"""``fedgaze audit verify|export|report|canary|serve``: signed ledgers and recomputed epsilon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fedgaze.cli.audit_canary import add_canary_parser


def add_parsers(sub: Any) -> None:
    """Add ``audit`` and its subcommands to the ``fedgaze`` subparsers ``sub``."""
    audit = sub.add_parser("audit", help="verify signed ledgers and recompute epsilon")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check every hash and signature and recompute every epsilon (exit 1 on a problem)",
    )
    verify.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    verify.add_argument("--no-pld", action="store_true", help="skip the PLD recomputation")
    verify.set_defaults(handler=_cmd_audit_verify)
    export = audit_sub.add_parser("export", help="DP events of every device, for recomputation")
    export.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    export.add_argument("--json", action="store_true", required=True, help="JSON output")
    export.add_argument("--out", type=Path, help="write to FILE instead of stdout")
    export.set_defaults(handler=_cmd_audit_export)
    report = audit_sub.add_parser("report", help="self-contained HTML report with plots")
    report.add_argument("path", type=Path, help="run directory, ledger.jsonl or server_ledger.db")
    report.add_argument("--out", type=Path, required=True, help="HTML file to write")
    report.set_defaults(handler=_cmd_audit_report)
    add_canary_parser(audit_sub)
    serve = audit_sub.add_parser("serve", help="serve the PrivacyAudit gRPC service of a run")
    serve.add_argument("path", type=Path, help="run directory (with server_ledger.db)")
    serve.add_argument(
        "--address", default="127.0.0.1:50061", help="host:port (default 127.0.0.1:50061)"
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (required off loopback)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of the certificate")
    serve.set_defaults(handler=_cmd_audit_serve)


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
    from fedgaze.audit.outcome import load_audit
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
        export_events(audits),
        source=str(args.path),
        evaluations=evaluations,
        problems=problems,
        canary=load_audit(args.path) if args.path.is_dir() else None,
    )
    write_bytes_atomic(args.out, page.encode("utf-8"))
    state = "[red]ledgers did NOT verify[/red] (the report says so)" if problems else "verified"
    console.print(f"report written to {args.out}; {state}", soft_wrap=True)
    return 1 if problems else 0


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
