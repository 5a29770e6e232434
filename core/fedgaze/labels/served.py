"""The operator's log of served prompts and responses: the texts a private preference bit is
joined back to by ``fedgaze alignment export``.

A device releases only ids and a noised bit (:mod:`fedgaze.labels.rows`); the texts come from
the answering service's own log of what it served. Format (``served.jsonl``), UTF-8 JSON Lines,
one object per served prompt::

    {"prompt_id": "q17", "prompt": "How do I ...?",
     "responses": {"q17/1": "You can ...", "q17/2": "First, ..."}}

- ``prompt_id``: non-empty string, the id the service gave the prompt (``ServedIds.prompt_id``);
- ``prompt``: string, the prompt's text;
- ``responses``: object mapping each response id (non-empty string, ``ServedIds.response_*_id``)
  to the response's text (string).

Other fields are ignored; blank lines are skipped. A line that is not a JSON object, a missing
or ill-typed field, or a last line cut short (no line end and no complete JSON: a torn write)
is a :class:`ServedLogError` naming ``file:line`` and the field. The same ``prompt_id`` on two
lines must carry identical content (a prompt logged twice), else it is an error naming both
lines; a response id is one text wherever it appears, else it is an error naming both lines.

IFLLM's query table (``query_logs_table.csv`` or ``.csv.gz``) reads as a served log too: the
prompt is ``user_query``, its id ``str(query_ID)``, the answers ``{query_ID}/1``
(``llm_response_1``, left) and ``{query_ID}/2`` (``llm_response_2``, right), the ids IFLLM
replay serves under (:func:`fedgaze.data.schema.ifllm_served_ids`).

:func:`write_served_log` writes the log for devices whose queries carry their served ids (what a
demo run serves), atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fedgaze.atomic import write_bytes_atomic
from fedgaze.data.schema import Device, ifllm_served_ids

IFLLM_QUERY_TABLE_NAMES = ("query_logs_table.csv", "query_logs_table.csv.gz")
"""File names read as IFLLM's query table rather than as a JSONL served log."""


class ServedLogError(ValueError):
    """The served log cannot be used; the message names ``file:line`` and the field."""


@dataclass(frozen=True)
class ServedPrompt:
    """One served prompt: its id, its text and its responses' texts by response id."""

    prompt_id: str
    prompt: str
    responses: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "responses", MappingProxyType(dict(self.responses)))

    def to_json(self) -> dict[str, Any]:
        """The log line's object."""
        return {
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "responses": dict(self.responses),
        }


@dataclass(frozen=True)
class ServedLog(Mapping[str, str]):
    """Prompt text by prompt id (the mapping), response text by ``(prompt_id, response_id)``
    (:attr:`responses`), read from :attr:`source`. Immutable.

    ``problems`` lists the source's rows that were skipped (IFLLM table rows without a usable
    id); a JSONL log has none: any problem there is an error.
    """

    source: str
    prompts: Mapping[str, str]
    responses: Mapping[tuple[str, str], str]
    problems: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", MappingProxyType(dict(self.prompts)))
        object.__setattr__(self, "responses", MappingProxyType(dict(self.responses)))

    def __getitem__(self, prompt_id: str) -> str:
        return self.prompts[prompt_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def response(self, prompt_id: str, response_id: str) -> str | None:
        """The text of ``response_id`` served for ``prompt_id``; None when the log lacks it."""
        return self.responses.get((prompt_id, response_id))


# ------------------------------------------------------------------------------ JSONL reading


def _field_str(obj: dict[str, Any], name: str, where: str, *, non_empty: bool) -> str:
    if name not in obj:
        raise ServedLogError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise ServedLogError(
            f"{where}: field {name!r} must be a string, got {type(value).__name__}"
        )
    if non_empty and not value.strip():
        raise ServedLogError(f"{where}: field {name!r} must be a non-empty string")
    return value


def _parse_line(obj: Any, where: str) -> ServedPrompt:
    """One log line's object as a :class:`ServedPrompt`; ServedLogError naming the field."""
    if not isinstance(obj, dict):
        raise ServedLogError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt_id = _field_str(obj, "prompt_id", where, non_empty=True)
    prompt = _field_str(obj, "prompt", where, non_empty=False)
    if "responses" not in obj:
        raise ServedLogError(f"{where}: field 'responses' is missing")
    responses = obj["responses"]
    if not isinstance(responses, dict):
        raise ServedLogError(
            f"{where}: field 'responses' must be an object of response id to text, "
            f"got {type(responses).__name__}"
        )
    for rid, text in responses.items():
        if not rid.strip():
            raise ServedLogError(f"{where}: field 'responses' has an empty response id")
        if not isinstance(text, str):
            raise ServedLogError(
                f"{where}: field 'responses.{rid}' must be a string, got {type(text).__name__}"
            )
    return ServedPrompt(prompt_id, prompt, responses)


def parse_served_lines(lines: Iterable[tuple[int, Any]], source: str) -> ServedLog:
    """A :class:`ServedLog` from ``(line number, decoded JSON value)`` pairs (pure).

    Raises :class:`ServedLogError` naming ``source:line`` and the field on a bad object, on a
    prompt id logged twice with different content (naming both lines), and on a response id
    logged with two different texts (naming both lines).
    """
    prompts: dict[str, tuple[ServedPrompt, int]] = {}
    response_texts: dict[str, tuple[str, int]] = {}
    responses: dict[tuple[str, str], str] = {}
    for line, obj in lines:
        where = f"{source}:{line}"
        entry = _parse_line(obj, where)
        seen = prompts.get(entry.prompt_id)
        if seen is not None:
            if seen[0] != entry:
                raise ServedLogError(
                    f"{where}: prompt_id {entry.prompt_id!r} was logged at {source}:{seen[1]} "
                    "with different content (prompt or responses)"
                )
            continue
        for rid, text in entry.responses.items():
            earlier = response_texts.get(rid)
            if earlier is not None and earlier[0] != text:
                raise ServedLogError(
                    f"{where}: field 'responses.{rid}': response id {rid!r} was logged at "
                    f"{source}:{earlier[1]} with a different text"
                )
            response_texts.setdefault(rid, (text, line))
            responses[(entry.prompt_id, rid)] = text
        prompts[entry.prompt_id] = (entry, line)
    return ServedLog(
        source=source,
        prompts={pid: entry.prompt for pid, (entry, _) in prompts.items()},
        responses=responses,
    )


def _jsonl_values(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` of every non-blank line; ServedLogError naming the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ServedLogError(f"{path}: no such served log") from None
    except OSError as err:
        raise ServedLogError(f"{path}: cannot read the served log ({err.strerror})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    parts = data.split(b"\n")
    torn = parts[-1] != b""
    if not torn:
        parts.pop()
    for i, raw in enumerate(parts, start=1):
        where = f"{path}:{i}"
        last = torn and i == len(parts)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ServedLogError(
                f"{where}: invalid UTF-8 at byte {err.start} of the line"
            ) from None
        if not text.strip():
            continue
        try:
            yield i, json.loads(text)
        except json.JSONDecodeError as err:
            if last:
                raise ServedLogError(
                    f"{where}: the last line is truncated (no line end and no complete JSON "
                    f"object: a torn write?): {err.msg} at column {err.colno}"
                ) from None
            raise ServedLogError(
                f"{where}: malformed JSON: {err.msg} at column {err.colno}"
            ) from None


def read_served_jsonl(path: str | Path) -> ServedLog:
    """The JSONL served log at ``path`` (format: the module docstring)."""
    file = Path(path)
    return parse_served_lines(_jsonl_values(file), str(file))


# ------------------------------------------------------------------------------ IFLLM table


def is_ifllm_query_table(path: str | Path) -> bool:
    """True when ``path`` is named as IFLLM's query table (``query_logs_table.csv[.gz]``)."""
    return Path(path).name in IFLLM_QUERY_TABLE_NAMES


def read_ifllm_query_table(path: str | Path) -> ServedLog:
    """IFLLM's query table as a served log: prompt ``str(query_ID)`` with text ``user_query``,
    responses ``{query_ID}/1`` and ``{query_ID}/2`` (the second only where present).

    Read with the project's IFLLM table reader; rows it skips (no usable id, a repeated
    ``query_ID``) are listed in :attr:`ServedLog.problems`. ServedLogError when the table is
    missing or unreadable.
    """
    from fedgaze.data.ifllm.context import QUERY_TABLE, _Sink
    from fedgaze.data.ifllm.files import table_path
    from fedgaze.data.ifllm.tables import _read_queries

    file = Path(path)
    if not is_ifllm_query_table(file):
        raise ServedLogError(
            f"{file}: not IFLLM's query table ({' or '.join(IFLLM_QUERY_TABLE_NAMES)})"
        )
    if not file.is_file():
        raise ServedLogError(f"{file}: no such IFLLM query table")
    folder = file.parent
    chosen = table_path(folder, QUERY_TABLE)
    if chosen.resolve() != file.resolve():
        raise ServedLogError(
            f"{file}: {chosen.name} is beside it and the IFLLM reader takes that one; "
            f"pass --responses {chosen} or move one of them"
        )
    sink = _Sink(folder)
    try:
        rows = _read_queries(folder, sink)
    except (OSError, ValueError) as err:
        raise ServedLogError(f"{file}: cannot read the IFLLM query table ({err})") from None
    prompts: dict[str, str] = {}
    responses: dict[tuple[str, str], str] = {}
    for row in rows:
        ids = ifllm_served_ids(row.query_id, pairwise=row.response_2 is not None)
        prompts[ids.prompt_id] = row.prompt
        responses[(ids.prompt_id, ids.response_left_id)] = row.response_1
        if ids.response_right_id is not None and row.response_2 is not None:
            responses[(ids.prompt_id, ids.response_right_id)] = row.response_2
    return ServedLog(
        source=str(file),
        prompts=prompts,
        responses=responses,
        problems=tuple(str(p) for p in sink.problems),
    )


def read_served(path: str | Path) -> ServedLog:
    """The served log at ``path``: IFLLM's query table by its name, else JSONL."""
    if is_ifllm_query_table(path):
        return read_ifllm_query_table(path)
    return read_served_jsonl(path)


# ------------------------------------------------------------------------------ writing


def served_prompts(devices: Iterable[Device]) -> list[ServedPrompt]:
    """One entry per served prompt of ``devices``' queries whose ``served`` ids are set, in
    order of first appearance (pure).

    A prompt served to several devices is logged once; if its text or a response's text
    differs between them, ServedLogError names both queries (the log would contradict itself).
    """
    found: dict[str, tuple[ServedPrompt, str]] = {}
    texts: dict[str, tuple[str, str]] = {}
    for device in devices:
        for query in device.queries:
            ids = query.served
            if ids is None:
                continue
            here = f"device {device.device_id} query {query.query_id}"
            responses = {ids.response_left_id: query.response_left}
            if ids.response_right_id is not None and query.response_right is not None:
                responses[ids.response_right_id] = query.response_right
            for rid, text in responses.items():
                earlier = texts.setdefault(rid, (text, here))
                if earlier[0] != text:
                    raise ServedLogError(
                        f"{here}: response id {rid!r} was served by {earlier[1]} with a "
                        "different text"
                    )
            entry = ServedPrompt(ids.prompt_id, query.prompt, responses)
            seen = found.get(ids.prompt_id)
            if seen is None:
                found[ids.prompt_id] = (entry, here)
            elif seen[0].prompt != entry.prompt:
                raise ServedLogError(
                    f"{here}: prompt id {ids.prompt_id!r} was served by {seen[1]} with a "
                    "different prompt text"
                )
            else:
                merged = {**seen[0].responses, **responses}
                found[ids.prompt_id] = (ServedPrompt(ids.prompt_id, entry.prompt, merged), seen[1])
    return [entry for entry, _ in found.values()]


def render_served_log(entries: Iterable[ServedPrompt]) -> bytes:
    """The JSONL bytes of ``entries`` (one line each, UTF-8)."""
    return "".join(
        json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries
    ).encode("utf-8")


def write_served_log(path: str | Path, devices: Iterable[Device]) -> int:
    """Write the served log of ``devices`` to ``path`` atomically; returns how many prompts."""
    entries = served_prompts(devices)
    write_bytes_atomic(path, render_served_log(entries))
    return len(entries)
