"""The PrivacyAudit gRPC service (``proto/fedgaze/v1/audit.proto``) over a run's ledgers.

Read-only: every answer is computed from the signed ledgers on disk at the time of the call
(the server ledger is SQLite in WAL mode, so reading while a run appends is safe). Records are
returned as their exact signed lines, so an auditor can verify hashes and signatures without
trusting this service. On loopback the service may run without TLS; on any other address it
refuses to start without a certificate and key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from fedgaze.audit.verify import RDP_TOLERANCE, audit_path, export_events
from fedgaze.ledger.contract import SERVER_LEDGER_FILE, RecordKind
from fedgaze.ledger.keys import pseudonym
from fedgaze.ledger.records import LedgerRecord, read_sqlite_lines
from fedgaze.security.net import serve_local_grpc
from fedgaze.v1 import audit_pb2, audit_pb2_grpc


class AuditServicer(audit_pb2_grpc.PrivacyAuditServicer):
    """Answers PrivacyAudit calls from the ledgers of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.server_ledger = self.run_dir / SERVER_LEDGER_FILE

    def _records(self) -> list[tuple[int, str, LedgerRecord | None]]:
        lines, seqs = read_sqlite_lines(self.server_ledger)
        out: list[tuple[int, str, LedgerRecord | None]] = []
        for seq, raw in zip(seqs, lines, strict=True):
            text = raw.decode("ascii", errors="replace")
            try:
                out.append((seq, text, LedgerRecord.parse(raw)))
            except ValueError:
                out.append((seq, text, None))  # served as stored; Verify names the problem
        return out

    def GetBudgets(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Every device's recorded cumulative epsilon (from verified records only)."""
        export = export_events(audit_path(self.run_dir, pld=False))
        central = export.get("central") or {}
        return audit_pb2.GetBudgetsResponse(
            central_epsilon=central.get("epsilon"),
            central_delta=central.get("delta"),
            devices=[
                audit_pb2.DeviceBudget(
                    device_id=d["device_id"],
                    epsilon=float(d.get("epsilon", 0.0)),
                    delta=float(d.get("delta", 0.0)),
                    accountant=str(d.get("accountant", "")),
                    rounds=len(d["events"]),
                )
                for d in export["devices"]
            ],
        )

    def GetRound(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The server's record of a round and the device records it accepted."""
        for seq, text, rec in self._records():
            if (
                rec is not None
                and rec.kind == RecordKind.SERVER_ROUND
                and rec.body.get("round") == request.round
            ):
                return audit_pb2.GetRoundResponse(
                    round=request.round,
                    server_record=audit_pb2.LedgerRecord(seq=seq, line=text),
                    device_records=[
                        audit_pb2.LedgerRecord(seq=LedgerRecord.parse(line).seq, line=line)
                        for line in rec.body.get("accepted", [])
                    ],
                )
        context.abort(grpc.StatusCode.NOT_FOUND, f"no server record for round {request.round}")
        raise AssertionError("unreachable")  # abort raises

    def StreamLedger(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The server ledger from ``from_seq``, or the records of one device it holds."""
        for seq, text, rec in self._records():
            if not request.device_id:
                if seq >= request.from_seq:
                    yield audit_pb2.LedgerRecord(seq=seq, line=text)
                continue
            if rec is None or rec.kind != RecordKind.SERVER_ROUND:
                continue
            for line in rec.body.get("accepted", []):
                inner = LedgerRecord.parse(line)
                if pseudonym(inner.signer) == request.device_id and inner.seq >= request.from_seq:
                    yield audit_pb2.LedgerRecord(seq=inner.seq, line=line)

    def Verify(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Full verification of the run directory, as ``fedgaze audit verify`` does it."""
        audits = audit_path(self.run_dir, pld=False)
        return audit_pb2.VerifyResponse(
            ok=all(a.ok for a in audits),
            problems=[f"{a.path}: {p}" for a in audits for p in a.problems],
            tolerance=RDP_TOLERANCE,
            records=sum(a.report.lines for a in audits),
        )


def serve_audit(
    run_dir: str | Path,
    address: str,
    *,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Start the service on ``address`` (``host:port``; port 0 picks one) and return the server
    and its port. Without ``tls_cert``/``tls_key`` only a loopback address is accepted."""
    run = Path(run_dir)
    if not (run / SERVER_LEDGER_FILE).is_file():
        raise FileNotFoundError(f"{run}: no {SERVER_LEDGER_FILE} to serve")
    return serve_local_grpc(
        "audit",
        address,
        lambda server: audit_pb2_grpc.add_PrivacyAuditServicer_to_server(
            AuditServicer(run), server
        ),
        certificate=tls_cert,
        private_key=tls_key,
        workers=workers,
    )
