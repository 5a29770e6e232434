"""An encrypted, append-only journal of records on the device's disk, crash-safe record by record.

Layout: a header ``FILE_MAGIC || journal id (16 random bytes) || sealed first free sequence
number (u64)``, written atomically when the file is created or replaced, then frames
``FRAME_MAGIC || length (u32) || seq (u64) || sealed`` where ``sealed`` is
:func:`fedgaze.client.device.store_crypto.encrypt_file` of the record under the device's store key
(AES-256-GCM, fresh nonce), with associated data binding the journal id and the sequence
number. So nothing is on disk in plaintext, and a frame copied to another journal or
given another number does not decrypt. The sealed header also proves the key: a journal opened
with the wrong key is refused, never mistaken for a torn tail.

:meth:`Journal.append` returns only after the frame is fsynced. A crash can leave only the last
frame torn (short, or with unwritten bytes); on open such a tail is cut off and every frame
before it is kept. A frame that fails to decrypt while an intact frame follows it is not a
torn tail but damage, and opening fails naming the file and offset rather than dropping data.
:meth:`Journal.retire` drops the frames a caller has folded elsewhere by atomically replacing
the file with one that keeps the rest (same id, same numbers), so a crash leaves either file.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fedgaze.atomic import write_bytes_atomic
from fedgaze.client.device.store_crypto import StoreCryptoError, decrypt_file, encrypt_file

__all__ = ["FILE_MAGIC", "FRAME_MAGIC", "HEADER_BYTES", "Journal", "JournalError", "Record"]

FILE_MAGIC = b"FGZJRNL1"
FRAME_MAGIC = b"FGJR"
_ID_BYTES = 16
_BASE = struct.Struct(">Q")
_SEALED_BASE = len(encrypt_file(bytes(32), _BASE.pack(0), role="size", name="size"))
HEADER_BYTES = len(FILE_MAGIC) + _ID_BYTES + _SEALED_BASE
_FRAME_HEAD = struct.Struct(">4sIQ")  # magic, sealed length, seq
_MAX_SEALED = 1 << 30
_ROLE = "capture-journal"

Record = tuple[int, bytes]
"""A journal record: its sequence number and its plaintext."""
_Frame = tuple[int, int, int]  # a record's sequence number and where its frame is in the file


class JournalError(ValueError):
    """The journal is damaged beyond a torn tail, or is not a journal; names file and offset."""


def _aad_name(journal_id: bytes, seq: int) -> str:
    return f"{journal_id.hex()}#{seq}"


class Journal:
    """One journal file, open for appending. Not thread-safe: the owner serializes calls."""

    def __init__(self, path: Path, key: bytes) -> None:
        """Open (or create) the journal at ``path``, cutting off a torn tail.

        The records found are returned once by :meth:`take_records`. Raises
        :class:`JournalError` when the file is damaged in the middle or is not a journal, or
        does not decrypt with ``key``.
        """
        self.path = Path(path)
        self._key = key
        if not self.path.exists():
            self.journal_id = secrets.token_bytes(_ID_BYTES)
            write_bytes_atomic(self.path, self._header(1))
        data = self.path.read_bytes()
        if len(data) < HEADER_BYTES or not data.startswith(FILE_MAGIC):
            raise JournalError(f"{self.path}: not a capture journal (bad header)")
        self.journal_id = data[len(FILE_MAGIC) : len(FILE_MAGIC) + _ID_BYTES]
        try:
            sealed = data[len(FILE_MAGIC) + _ID_BYTES : HEADER_BYTES]
            header_aad = Path(_aad_name(self.journal_id, -1))
            (base,) = _BASE.unpack(decrypt_file(key, sealed, role=_ROLE, path=header_aad))
        except (StoreCryptoError, struct.error):
            raise JournalError(
                f"{self.path}: header does not decrypt (wrong store key, or altered)"
            ) from None
        self._records, self._frames, end = self._scan(data)
        self.next_seq = max(base, self._records[-1][0] + 1 if self._records else 1)
        self._fh: BinaryIO = open(self.path, "r+b")  # noqa: SIM115 - held open for appends
        if end < len(data):  # a torn tail: cut it off durably before anything is appended
            self._fh.truncate(end)
            os.fsync(self._fh.fileno())
        self._fh.seek(end)

    def _header(self, next_seq: int) -> bytes:
        """The header of this journal with ``next_seq`` as its first free number (sealed)."""
        name = _aad_name(self.journal_id, -1)
        sealed = encrypt_file(self._key, _BASE.pack(next_seq), role=_ROLE, name=name)
        return FILE_MAGIC + self.journal_id + sealed

    def _open_frame(self, data: bytes, offset: int) -> tuple[int, bytes, int] | None:
        """``(seq, plaintext, end)`` of an intact frame at ``offset``, else None."""
        head_end = offset + _FRAME_HEAD.size
        if head_end > len(data):
            return None
        magic, length, seq = _FRAME_HEAD.unpack_from(data, offset)
        if magic != FRAME_MAGIC or length > _MAX_SEALED or head_end + length > len(data):
            return None
        sealed = data[head_end : head_end + length]
        try:
            plain = decrypt_file(
                self._key, sealed, role=_ROLE, path=Path(_aad_name(self.journal_id, seq))
            )
        except StoreCryptoError:
            return None
        return seq, plain, head_end + length

    def _scan(self, data: bytes) -> tuple[list[Record], list[_Frame], int]:
        records: list[Record] = []
        frames: list[_Frame] = []
        offset = HEADER_BYTES
        while offset < len(data):
            opened = self._open_frame(data, offset)
            if opened is None:
                self._check_torn_tail(data, offset)
                break
            seq, plain, end = opened
            if records and seq <= records[-1][0]:
                raise JournalError(
                    f"{self.path}: record at offset {offset} has sequence {seq} after "
                    f"{records[-1][0]} (records out of order)"
                )
            records.append((seq, plain))
            frames.append((seq, offset, end))
            offset = end
        return records, frames, offset

    def _check_torn_tail(self, data: bytes, offset: int) -> None:
        """Raise unless the bad frame at ``offset`` is a torn tail (no intact frame after it)."""
        probe = data.find(FRAME_MAGIC, offset + 1)
        while probe != -1:
            if self._open_frame(data, probe) is not None:
                raise JournalError(
                    f"{self.path}: record at offset {offset} is damaged (wrong store key, or "
                    "altered) but later records are intact; refusing to drop them"
                )
            probe = data.find(FRAME_MAGIC, probe + 1)

    def append(self, plaintext: bytes) -> int:
        """Seal ``plaintext`` as the next record and fsync it; returns its sequence number."""
        seq = self.next_seq
        sealed = encrypt_file(
            self._key, plaintext, role=_ROLE, name=_aad_name(self.journal_id, seq)
        )
        frame = _FRAME_HEAD.pack(FRAME_MAGIC, len(sealed), seq) + sealed
        start = self._fh.tell()
        try:
            self._fh.write(frame)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except BaseException:
            # Leave no partial frame behind for the next append to follow.
            self._fh.truncate(start)
            self._fh.seek(start)
            raise
        self._frames.append((seq, start, start + len(frame)))
        self.next_seq = seq + 1
        return seq

    def take_records(self) -> list[Record]:
        """The records found when the journal was opened, in order (only the first call)."""
        records, self._records = self._records, []
        return records

    def retire(self, keep: Callable[[int], bool]) -> None:
        """Drop every record whose sequence number ``keep`` rejects, atomically and durably.

        The file is replaced by one with the same id holding the kept frames byte for byte, so
        sequence numbers never repeat and a crash leaves the old file or the new one.
        """
        kept = [f for f in self._frames if keep(f[0])]
        if len(kept) == len(self._frames):
            return
        data = self.path.read_bytes()
        frames: list[_Frame] = []
        body = bytearray()
        for seq, start, end in kept:
            offset = HEADER_BYTES + len(body)
            body += data[start:end]
            frames.append((seq, offset, offset + end - start))
        # The header carries the next number, so that numbers stay unique once all are retired.
        write_bytes_atomic(self.path, self._header(self.next_seq) + bytes(body))
        self._fh.close()
        self._fh = open(self.path, "r+b")  # noqa: SIM115 - held open for appends
        self._fh.seek(0, os.SEEK_END)
        self._frames = frames

    def close(self) -> None:
        """Close the file; appends after this fail."""
        self._fh.close()
