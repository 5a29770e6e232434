"""The server's store of accepted preference-label releases: SQLite beside the server ledger.

One row per ``(device, comparison)``: a comparison a device released is stored once. Writes
are one transaction per device reply (``synchronous=FULL``), so a crash keeps either all of a
reply's rows or none. The same bit for a stored comparison again (a retried message, or a
later run the device resends it to) is counted as already stored; a different bit is a double
release and the whole reply is refused (:class:`DoubleRelease`, naming the comparison), with
nothing of it stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedgaze.labels.rows import ReleasedLabel

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    device TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    left_id TEXT NOT NULL,
    right_id TEXT NOT NULL,
    right_preferred INTEGER NOT NULL CHECK (right_preferred IN (0, 1)),
    flip_rate REAL NOT NULL CHECK (flip_rate > 0 AND flip_rate < 0.5),
    run_key TEXT NOT NULL,
    round INTEGER NOT NULL,
    record_hash TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (device, prompt_id, left_id, right_id)
)
"""


class DoubleRelease(ValueError):
    """A reply releases a comparison the device already released with another bit."""


class LabelStoreError(ValueError):
    """The label store cannot be read; the message names the file."""


@dataclass(frozen=True)
class StoredLabel:
    """One accepted release as stored: which device (pseudonym), which run and round."""

    device: str
    label: ReleasedLabel
    run_key: str
    round: int
    record_hash: str


@dataclass(frozen=True)
class Added:
    """What one reply added: new rows, and rows identical to ones already stored."""

    stored: int
    already: int


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if not create and not path.exists():
        raise LabelStoreError(f"{path}: no label store here")
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if create:
            conn.execute(_SCHEMA)
        return conn
    except sqlite3.DatabaseError as err:
        raise LabelStoreError(f"{path}: cannot open the label store ({err})") from None


def add_releases(
    path: str | Path,
    device: str,
    rows: Sequence[ReleasedLabel],
    *,
    run_key: str,
    round: int,
    record_hash: str,
) -> Added:
    """Store one accepted reply's ``rows`` for ``device`` in one transaction."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with closing(_connect(Path(path), create=True)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = already = 0
            for row in rows:
                found = conn.execute(
                    "SELECT right_preferred, flip_rate FROM releases WHERE device = ? AND "
                    "prompt_id = ? AND left_id = ? AND right_id = ?",
                    (device, *row.key),
                ).fetchone()
                if found is not None:
                    if (int(found[0]), float(found[1])) != (row.right_preferred, row.flip_rate):
                        raise DoubleRelease(
                            f"comparison {list(row.key)} was already released by device "
                            f"{device} with another bit or flip rate: a double release"
                        )
                    already += 1
                    continue
                conn.execute(
                    "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        device,
                        *row.key,
                        row.right_preferred,
                        row.flip_rate,
                        run_key,
                        round,
                        record_hash,
                        now,
                    ),
                )
                stored += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return Added(stored, already)


def stored_labels(path: str | Path) -> Iterator[StoredLabel]:
    """Every stored release, in the order they were stored."""
    with closing(_connect(Path(path), create=False)) as conn:
        try:
            cursor = conn.execute(
                "SELECT device, prompt_id, left_id, right_id, right_preferred, flip_rate, "
                "run_key, round, record_hash FROM releases ORDER BY rowid"
            )
            for device, prompt, left, right, bit, rate, run_key, rnd, digest in cursor:
                yield StoredLabel(
                    device=device,
                    label=ReleasedLabel(
                        prompt_id=prompt,
                        left_id=left,
                        right_id=right,
                        right_preferred=bit,
                        flip_rate=rate,
                    ),
                    run_key=run_key,
                    round=rnd,
                    record_hash=digest,
                )
        except sqlite3.DatabaseError as err:
            raise LabelStoreError(f"{path}: cannot read the label store ({err})") from None


def count_labels(path: str | Path) -> tuple[int, int]:
    """``(releases, devices)`` stored at ``path``; ``(0, 0)`` when there is no store."""
    file = Path(path)
    if not file.exists():
        return 0, 0
    with closing(_connect(file, create=False)) as conn:
        try:
            n, devices = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT device) FROM releases"
            ).fetchone()
        except sqlite3.DatabaseError as err:
            raise LabelStoreError(f"{file}: cannot read the label store ({err})") from None
    return int(n), int(devices)
