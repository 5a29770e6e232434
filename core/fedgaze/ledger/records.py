"""Append-only, hash-chained, Ed25519-signed ledgers: one JSON line per record.

Record (one line, canonical JSON)::

    {"body": {...}, "hash": HEX, "kind": STR, "prev": HEX, "seq": INT, "sig": B64, "signer": B64}

- ``seq`` counts from 0; ``prev`` is the ``hash`` of record ``seq - 1`` (64 zeros for seq 0);
- ``hash`` = SHA-256 of the canonical JSON of ``{seq, prev, kind, body, signer}``;
- ``sig`` = Ed25519 signature by ``signer`` (base64 raw public key) over the 32 hash bytes.

Canonical JSON is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)``; a stored line must be exactly the canonical serialization of itself, so a
change of whitespace, escapes or number spelling is caught even where the parsed value is equal.

Storage: :class:`JsonlLedger` (a device's ``ledger.jsonl``, each line appended and fsynced) and
:class:`SqliteLedger` (the server's ``records(seq, line)`` table, WAL, synchronous=FULL, one
transaction per append). :func:`verify_lines` checks stored lines without trusting anything in
them except, optionally, a set of trusted signers.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgaze.atomic import append_line_durable, write_bytes_atomic
from fedgaze.ledger.keys import load_public_key_b64, public_key_b64, strict_b64decode

GENESIS = "0" * 64
RECORD_KEYS = frozenset({"seq", "prev", "kind", "body", "signer", "hash", "sig"})

__all__ = [
    "GENESIS",
    "JsonlLedger",
    "LedgerError",
    "LedgerRecord",
    "Problem",
    "SqliteLedger",
    "VerifyReport",
    "canonical_json",
    "read_jsonl_lines",
    "read_sqlite_lines",
    "verify_lines",
]


class LedgerError(ValueError):
    """A ledger cannot be opened for appending (it does not verify); the message names it."""


def canonical_json(obj: Any) -> str:
    """The one serialization that is hashed and stored."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _digest(seq: int, prev: str, kind: str, body: dict[str, Any], signer: str) -> str:
    signed = {"seq": seq, "prev": prev, "kind": kind, "body": body, "signer": signer}
    return hashlib.sha256(canonical_json(signed).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class LedgerRecord:
    """One signed ledger record (immutable; treat ``body`` as read-only)."""

    seq: int
    prev: str
    kind: str
    body: dict[str, Any]
    signer: str
    hash: str
    sig: str

    @classmethod
    def sign(
        cls, key: Ed25519PrivateKey, *, seq: int, prev: str, kind: str, body: dict[str, Any]
    ) -> LedgerRecord:
        """A new record signed by ``key``."""
        signer = public_key_b64(key)
        # Round-trip the body through canonical JSON so the stored value is the hashed one
        # (and NaN, infinities or non-JSON types fail here, at the writer).
        body = json.loads(canonical_json(body))
        digest = _digest(seq, prev, kind, body, signer)
        sig = base64.b64encode(key.sign(bytes.fromhex(digest))).decode("ascii")
        return cls(seq=seq, prev=prev, kind=kind, body=body, signer=signer, hash=digest, sig=sig)

    @classmethod
    def sign_next(
        cls, key: Ed25519PrivateKey, tip: LedgerRecord | None, kind: str, body: dict[str, Any]
    ) -> LedgerRecord:
        """The record that follows ``tip`` (the genesis record when ``tip`` is None)."""
        return cls.sign(
            key,
            seq=tip.seq + 1 if tip else 0,
            prev=tip.hash if tip else GENESIS,
            kind=kind,
            body=body,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev": self.prev,
            "kind": self.kind,
            "body": self.body,
            "signer": self.signer,
            "hash": self.hash,
            "sig": self.sig,
        }

    def line(self) -> str:
        """The stored form: canonical JSON, no newline."""
        return canonical_json(self.to_json())

    def check(self) -> None:
        """Raise ValueError when the hash or the signature does not hold."""
        if self.hash != _digest(self.seq, self.prev, self.kind, self.body, self.signer):
            raise ValueError("hash does not match the record's content")
        try:
            public = load_public_key_b64(self.signer)
        except ValueError as err:
            raise ValueError(f"signer is not an Ed25519 public key ({err})") from None
        try:
            sig = strict_b64decode(self.sig)
        except ValueError as err:
            raise ValueError(f"signature is {err}") from None
        try:
            public.verify(sig, bytes.fromhex(self.hash))
        except InvalidSignature:
            raise ValueError("signature does not verify") from None

    @classmethod
    def parse(cls, line: str | bytes) -> LedgerRecord:
        """Parse one stored line strictly (shape and canonical form; not hash or signature)."""
        if isinstance(line, bytes):
            try:
                line = line.decode("ascii")
            except UnicodeDecodeError:
                raise ValueError("not ASCII (canonical JSON escapes everything else)") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err.msg} at column {err.pos + 1})") from None
        if not isinstance(obj, dict) or set(obj) != RECORD_KEYS:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"not a ledger record (fields {got})")
        try:
            again = canonical_json(obj)
        except ValueError:
            again = ""
        if again != line:
            raise ValueError("not in canonical form (the stored bytes were changed)")
        seq, prev, kind, body = obj["seq"], obj["prev"], obj["kind"], obj["body"]
        if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
            raise ValueError(f"seq must be an integer >= 0, got {seq!r}")
        for name in ("prev", "hash"):
            value = obj[name]
            if not (
                isinstance(value, str)
                and len(value) == 64
                and set(value) <= set("0123456789abcdef")
            ):
                raise ValueError(f"{name} must be 64 lowercase hex digits")
        if not isinstance(kind, str) or not kind:
            raise ValueError("kind must be a non-empty string")
        if not isinstance(body, dict):
            raise ValueError("body must be an object")
        if not isinstance(obj["signer"], str) or not isinstance(obj["sig"], str):
            raise ValueError("signer and sig must be strings")
        return cls(
            seq=seq,
            prev=prev,
            kind=kind,
            body=body,
            signer=obj["signer"],
            hash=obj["hash"],
            sig=obj["sig"],
        )

    @classmethod
    def parse_checked(cls, line: str | bytes) -> LedgerRecord:
        """:meth:`parse` plus hash and signature (a record seen on its own, e.g. in a reply)."""
        record = cls.parse(line)
        record.check()
        return record


@dataclass(frozen=True)
class Problem:
    """One verification failure, naming the record (``seq`` when known) and where it is."""

    where: str
    seq: int | None
    message: str

    def __str__(self) -> str:
        who = f"record {self.seq}" if self.seq is not None else "record ?"
        return f"{who} ({self.where}): {self.message}"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_lines`: the records that hold, and every problem found."""

    source: str
    records: list[LedgerRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    signer: str | None = None
    lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _peek_seq(line: str | bytes) -> int | None:
    """The seq a damaged line claims, when it can be read at all (to name it in a report)."""
    with contextlib.suppress(Exception):
        obj = json.loads(line)
        seq = obj.get("seq") if isinstance(obj, dict) else None
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


def verify_lines(
    lines: Sequence[str | bytes],
    *,
    trusted_signers: set[str] | None = None,
    labels: Sequence[str] | None = None,
    source: str = "<ledger>",
    truncated_last: bool = False,
) -> VerifyReport:
    """Check stored lines: canonical JSON, seq 0,1,2,..., prev chain, hash, signature, signer.

    ``labels`` names where each line is (default ``line N``, 1-based). ``truncated_last`` says
    the final line has no line end (a torn append). Every failure names the record: its seq
    (the expected one for a line that cannot be read) and its place. Pure: reads nothing else.
    """
    report = VerifyReport(source=source, lines=len(lines))
    where = list(labels) if labels is not None else [f"line {i + 1}" for i in range(len(lines))]
    present: dict[int, int] = {}
    for i, raw in enumerate(lines):
        seq = _peek_seq(raw)
        if seq is not None:
            present.setdefault(seq, i)
    expected = 0
    prev_hash: str | None = GENESIS  # None: the previous line could not be read
    seen: dict[int, str] = {}
    good: list[LedgerRecord] = []
    for i, raw in enumerate(lines):
        place = where[i]
        before = len(report.problems)

        def fail(message: str, seq: int | None, place: str = place) -> None:
            report.problems.append(Problem(place, seq, message))

        if truncated_last and i == len(lines) - 1:
            fail("is truncated (the final line has no line end: a torn append)", expected)
            break
        try:
            rec = LedgerRecord.parse(raw)
        except ValueError as err:
            claimed = _peek_seq(raw)
            fail(str(err), claimed if claimed is not None else expected)
            expected += 1
            prev_hash = None
            continue
        if rec.seq != expected:
            if rec.seq in seen:
                copy = " (an exact copy: replayed)" if seen[rec.seq] == rec.hash else ""
                fail(f"duplicate of record {rec.seq}{copy}; expected record {expected}", rec.seq)
            elif rec.seq < expected or any(s in present for s in range(expected, rec.seq)):
                fail(f"out of order: expected record {expected} here", rec.seq)
            else:
                gap = (
                    f"record {expected} is"
                    if rec.seq == expected + 1
                    else f"records {expected}..{rec.seq - 1} are"
                )
                fail(f"{gap} missing before it (gap)", rec.seq)
        if prev_hash is not None and rec.prev != prev_hash:
            fail("prev does not match the hash of the record before it (broken chain)", rec.seq)
        try:
            rec.check()
        except ValueError as err:
            fail(str(err), rec.seq)
        else:
            if report.signer is None:
                report.signer = rec.signer
            if rec.signer != report.signer:
                fail("signed by a different key than the ledger's first record", rec.seq)
            elif trusted_signers is not None and rec.signer not in trusted_signers:
                fail("signer is not a trusted key", rec.seq)
        seen.setdefault(rec.seq, rec.hash)
        if rec.seq >= expected:  # a late or repeated record does not move the chain on
            expected = rec.seq + 1
            prev_hash = rec.hash
        if len(report.problems) == before:
            good.append(rec)
    report.records = good
    return report


# ---------------------------------------------------------------------------------- storage


def read_jsonl_lines(path: str | Path) -> tuple[list[bytes], bool]:
    """The lines of a JSONL ledger (without line ends) and whether the last one is torn."""
    data = Path(path).read_bytes()
    if not data:
        return [], False
    parts = data.split(b"\n")
    torn = parts[-1] != b""
    return (parts if torn else parts[:-1]), torn


def verify_jsonl(path: str | Path, trusted_signers: set[str] | None = None) -> VerifyReport:
    """:func:`verify_lines` over a device's ``ledger.jsonl``."""
    lines, torn = read_jsonl_lines(path)
    return verify_lines(
        lines, trusted_signers=trusted_signers, source=str(path), truncated_last=torn
    )


def read_sqlite_lines(path: str | Path) -> tuple[list[bytes], list[int]]:
    """Every stored line of a server ledger with its ``seq`` column, in ``seq`` order."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such ledger")
    conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.text_factory = bytes
        rows = conn.execute("SELECT seq, line FROM records ORDER BY seq").fetchall()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{file}: not a fedgaze server ledger ({err})") from None
    finally:
        conn.close()
    lines = [r[1] if isinstance(r[1], bytes) else str(r[1]).encode() for r in rows]
    return lines, [int(r[0]) for r in rows]


def verify_sqlite(path: str | Path, trusted_signers: set[str] | None = None) -> VerifyReport:
    """:func:`verify_lines` over a server ledger; also checks the ``seq`` column of every row."""
    lines, seqs = read_sqlite_lines(path)
    labels = [f"row seq={s}" for s in seqs]
    report = verify_lines(lines, trusted_signers=trusted_signers, labels=labels, source=str(path))
    for line, column, label in zip(lines, seqs, labels, strict=True):
        claimed = _peek_seq(line)
        if claimed is not None and claimed != column:
            report.problems.append(
                Problem(label, claimed, f"stored in row seq={column} (moved or copied)")
            )
    return report


class JsonlLedger:
    """A device's append-only JSONL ledger, opened for appending with an exclusive lock.

    Use as a context manager (:meth:`open`). On open, a torn final line (a crashed append that
    was never acknowledged) is moved aside to ``<name>.torn-<time>``; then the whole ledger must
    verify with ``key`` as its only signer, else :class:`LedgerError` (it is never reset).
    """

    def __init__(self, path: Path, key: Ed25519PrivateKey, records: list[LedgerRecord]) -> None:
        self.path = path
        self._key = key
        self._records = records

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str | Path, key: Ed25519PrivateKey) -> Iterator[JsonlLedger]:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(file.with_name(file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            records: list[LedgerRecord] = []
            if file.exists():
                _set_aside_torn_line(file)
                report = verify_jsonl(file, {public_key_b64(key)})
                if not report.ok:
                    raise LedgerError(
                        f"{file}: ledger does not verify; refusing to append "
                        f"({'; '.join(str(p) for p in report.problems[:3])})"
                    )
                records = report.records
            yield cls(file, key, records)
        finally:
            os.close(lock_fd)  # releases the lock

    @property
    def records(self) -> tuple[LedgerRecord, ...]:
        return tuple(self._records)

    def append(self, kind: str, body: dict[str, Any]) -> LedgerRecord:
        """Sign and durably append one record (fsynced before this returns)."""
        tip = self._records[-1] if self._records else None
        record = LedgerRecord.sign_next(self._key, tip, kind, body)
        append_line_durable(self.path, record.line())
        self._records.append(record)
        return record


def _set_aside_torn_line(file: Path) -> None:
    data = file.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    write_bytes_atomic(file.with_name(f"{file.name}.torn-{stamp}-{os.getpid()}"), data[cut:])
    write_bytes_atomic(file, data[:cut])


class SqliteLedger:
    """The server's ledger: ``records(seq INTEGER PRIMARY KEY, line TEXT NOT NULL)`` in SQLite
    (WAL, synchronous=FULL), one transaction per append. The existing records must verify with
    ``key`` as their signer when it is opened, else :class:`LedgerError`."""

    def __init__(self, path: str | Path, key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self._key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, line TEXT NOT NULL)"
        )
        report = verify_sqlite(self.path, {public_key_b64(key)})
        if not report.ok:
            self._conn.close()
            raise LedgerError(
                f"{self.path}: ledger does not verify; refusing to append "
                f"({'; '.join(str(p) for p in report.problems[:3])})"
            )

    def append(self, kind: str, body: dict[str, Any]) -> LedgerRecord:
        """Sign and append one record in its own (durable) transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq, line FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            tip = LedgerRecord.parse(row[1]) if row else None
            record = LedgerRecord.sign_next(self._key, tip, kind, body)
            conn.execute(
                "INSERT INTO records (seq, line) VALUES (?, ?)", (record.seq, record.line())
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return record

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
