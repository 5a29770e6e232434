"""The device's non-positional capture events (scroll, click, ...): one encrypted file.

The features do not use these events, so they are not part of the device store; they are kept
beside it, encrypted with the same store key (AES-256-GCM via
:mod:`fedgaze.client.device.store_crypto`, associated data binding the role and file name), for
later analysis on the device. The file records ``folded_upto``, the first journal sequence number
whose events it does not hold, so that a commit replayed after a crash adds no event twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from fedgaze.atomic import write_bytes_atomic
from fedgaze.client.capture.samples import CaptureEvent
from fedgaze.client.device.store_crypto import StoreCryptoError, decrypt_file, encrypt_file

__all__ = ["EVENTS_FILE", "EventStoreError", "read_events", "write_events"]

EVENTS_FILE = "capture-events.enc"
_ROLE = "capture-events"
_VERSION = 1


class EventStoreError(ValueError):
    """The events file does not decrypt or is not an events file; names the file."""


def read_events(path: Path, key: bytes) -> tuple[int, list[CaptureEvent]]:
    """``(folded_upto, events)`` of the events file at ``path``; ``(0, [])`` when it is absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, []
    try:
        doc = json.loads(decrypt_file(key, data, role=_ROLE, path=path))
        if doc.get("version") != _VERSION:
            raise EventStoreError(f"{path}: unsupported events version {doc.get('version')!r}")
        events = [CaptureEvent.model_validate(e) for e in doc["events"]]
        return int(doc["folded_upto"]), events
    except StoreCryptoError as err:
        raise EventStoreError(str(err)) from None
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as err:
        if isinstance(err, EventStoreError):
            raise
        raise EventStoreError(f"{path}: corrupt events file ({type(err).__name__})") from None


def write_events(path: Path, key: bytes, folded_upto: int, events: list[CaptureEvent]) -> None:
    """Replace the events file atomically and durably with ``events`` (encrypted)."""
    doc = {
        "version": _VERSION,
        "folded_upto": folded_upto,
        "events": [e.model_dump(mode="json") for e in events],
    }
    sealed = encrypt_file(key, json.dumps(doc).encode(), role=_ROLE, name=path.name)
    write_bytes_atomic(path, sealed)
