"""Where the capture page's answers come from: a replay file or an OpenAI-compatible server.

The capture service shows a prompt and one answer (pointwise) or two (pairwise) and records how
the person reads them. Which answers it shows is pluggable (:class:`AnswerBackend`):

- :class:`ReplayAnswers` replays a JSONL file, one item per line:
  ``{"prompt": str, "answers": [str] or [str, str], "task_id": int (optional),
  "prompt_id": str (optional), "answer_ids": [str] or [str, str] (optional)}``. Used for
  studies with fixed material and for tests. A bad line is an error naming ``file:line``.
- :class:`OpenAICompatibleAnswers` asks any server speaking ``POST /v1/chat/completions``
  (OpenAI, vLLM, llama.cpp, Ollama...) for the answers to the prompt the person typed; two
  answers for pairwise comparison (``n=2``, or a second call when the server returns one).

Every :class:`Answer` carries the ids under which its prompt and answers were served
(``prompt_id``, and ``answer_ids`` in the order of ``answers``), so that a comparison recorded
on the device can be identified outside it (they become the query's
:class:`~fedgaze.data.schema.ServedIds`). Where they come from:

- replay: ``prompt_id`` and ``answer_ids`` as the line gives them. A line without
  ``prompt_id`` gets ``"<file stem>:<line number>"`` (``study:3`` for line 3 of
  ``study.jsonl``, lines counted from 1, blank ones included); a line without ``answer_ids``
  gets ``"<prompt id>/1"`` and ``"<prompt id>/2"`` (left, right). So a replayed comparison
  can be joined back to its line of the replay file. ``answer_ids`` without ``prompt_id`` is
  a bad line.
- OpenAI-compatible: the prompt id is the chat completion's ``id``; each answer's id is
  ``"<id>/<choice index>"`` of the completion it came from (the second call's ``id`` for an
  answer that needed a second call). A completion without an ``id`` (absent, null or empty)
  gets a fresh uuid4 in its place; so does a second call that repeats the first one's ``id``.

Answer texts stay on the device: they go to the device store with the query, never elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from fedgaze.client.capture.samples import ServedId

__all__ = [
    "Answer",
    "AnswerBackend",
    "AnswerError",
    "OpenAICompatibleAnswers",
    "ReplayAnswers",
    "ReplayExhausted",
    "write_replay",
]

_SERVED_ID: TypeAdapter[str] = TypeAdapter(ServedId)


class AnswerError(RuntimeError):
    """The backend could not produce answers; the message says which input or server and why."""


class ReplayExhausted(AnswerError):
    """The replay file has no more prompts."""


class Answer(BaseModel):
    """One prompt and the one (pointwise) or two (pairwise, left then right) answers to show.

    ``prompt_id`` and ``answer_ids`` (one per answer, in the same order, all different) are the
    ids the answering service gave them (see the module docstring); both or neither.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    answers: tuple[str, ...] = Field(min_length=1, max_length=2)
    task_id: int | None = None
    prompt_id: ServedId | None = None
    answer_ids: tuple[ServedId, ...] | None = None

    @model_validator(mode="after")
    def _ids_fit_answers(self) -> Answer:
        if self.answer_ids is not None and self.prompt_id is None:
            raise ValueError("prompt_id: required when answer_ids are given")
        if self.prompt_id is not None and self.answer_ids is None:
            raise ValueError("answer_ids: required when prompt_id is given")
        if self.answer_ids is not None:
            if len(self.answer_ids) != len(self.answers):
                raise ValueError(
                    f"answer_ids: one id per answer ({len(self.answer_ids)} ids for "
                    f"{len(self.answers)} answers)"
                )
            if len(set(self.answer_ids)) != len(self.answer_ids):
                raise ValueError("answer_ids: the answers need different ids")
        return self

    @property
    def pairwise(self) -> bool:
        """True when two answers are shown side by side."""
        return len(self.answers) == 2


class AnswerBackend(Protocol):
    """Produces the answers of the next query; safe to call from several threads."""

    needs_prompt: bool
    """True when the person types the prompt (and :meth:`next` requires it)."""

    name: str
    """Short name shown in the status (``replay``, ``openai``)."""

    def next(self, prompt: str | None) -> Answer:
        """The next query's prompt and answers; raises :class:`AnswerError` on failure."""
        ...


def _field_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "line"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if where == "line" and ": " in msg:
        return msg  # a model-level check names its field itself
    return f"{where}: {msg}"


def _with_replay_ids(raw: dict[str, Any], prompt_id: str) -> dict[str, Any]:
    """``raw`` (one replay line) with the derived ids where it gives none (module docstring)."""
    out = dict(raw)
    if out.get("answer_ids") is not None:
        return out  # given: checked as given (a missing prompt_id is the line's error)
    if out.get("prompt_id") is None:
        out["prompt_id"] = prompt_id
    answers = out.get("answers")
    if isinstance(out["prompt_id"], str) and isinstance(answers, list | tuple):
        out["answer_ids"] = [f"{out['prompt_id']}/{k}" for k in range(1, len(answers) + 1)]
    return out


class ReplayAnswers:
    """Replays the prompts and answers of a JSONL file in order; parsed fully up front.

    Raises :class:`AnswerError` naming ``file:line`` and the field for any bad line (not JSON,
    not an object, missing ``prompt``, ``answers`` not one or two strings, bad ``prompt_id`` or
    ``answer_ids``, unknown keys), so a broken study file fails at start, not in front of a
    participant. Lines without ids get the derived ones of the module docstring.
    """

    needs_prompt = False
    name = "replay"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._items = self._parse(self.path)
        self._next = 0
        self._lock = threading.Lock()

    @staticmethod
    def _parse(path: Path) -> tuple[Answer, ...]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise AnswerError(f"{path}: cannot read the replay file ({err})") from None
        items: list[Answer] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise AnswerError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(raw, dict):
                raise AnswerError(f"{path}:{number}: expected a JSON object")
            try:
                items.append(Answer.model_validate(_with_replay_ids(raw, f"{path.stem}:{number}")))
            except ValidationError as err:
                raise AnswerError(f"{path}:{number}: {_field_error(err)}") from None
        if not items:
            raise AnswerError(f"{path}: the replay file has no items")
        return tuple(items)

    def __len__(self) -> int:
        return len(self._items)

    def next(self, prompt: str | None = None) -> Answer:
        """The next item of the file (a typed ``prompt`` is ignored: the file sets it)."""
        with self._lock:
            if self._next >= len(self._items):
                raise ReplayExhausted(f"{self.path.name}: no more prompts to replay")
            item = self._items[self._next]
            self._next += 1
            return item


def write_replay(path: str | Path, items: Iterable[Answer]) -> Path:
    """Write ``items`` as a replay file that :class:`ReplayAnswers` reads (for study material
    prepared in code, and for tests); returns the path."""
    target = Path(path)
    lines = [item.model_dump_json(exclude_none=True) for item in items]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


class OpenAICompatibleAnswers:
    """Answers from a server speaking the OpenAI chat-completions API, via stdlib ``urllib``.

    ``base_url`` is the server root (``http://host:port``, with or without ``/v1``); the API key
    is read from the environment variable ``api_key_env`` at each call (so it is never stored
    or logged; empty or unset sends no ``Authorization`` header, as local servers need none).
    ``pairwise`` asks for two answers per prompt: ``n=2`` first, and a second call if the server
    ignored ``n``. Every call times out after ``timeout_s`` seconds.
    """

    needs_prompt = True
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str,
        *,
        pairwise: bool = True,
        timeout_s: float = 60.0,
        temperature: float = 1.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http(s) URL, got {base_url!r}")
        if not model:
            raise ValueError("model: must not be empty")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
        root = base_url.rstrip("/")
        self.url = root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.pairwise = pairwise
        self.timeout_s = timeout_s
        self.temperature = temperature

    def _call(self, prompt: str, n: int) -> tuple[str | None, list[tuple[int, str]]]:
        """One chat completion: its ``id`` (None when it has none) and its choices as
        ``(choice index, text)``."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "n": n,
            "temperature": self.temperature,
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload: Any = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AnswerError(f"{self.url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise AnswerError(f"{self.url}: request failed ({reason})") from None
        except json.JSONDecodeError:
            raise AnswerError(f"{self.url}: the reply is not JSON") from None
        if not isinstance(payload, dict):
            raise AnswerError(f"{self.url}: the reply is not a JSON object")
        return self._completion_id(payload), self._choices(payload)

    def _completion_id(self, payload: dict[str, Any]) -> str | None:
        """The completion's ``id``; None when it has none (absent, null or empty)."""
        raw = payload.get("id")
        if raw is None or raw == "":
            return None
        try:
            return _SERVED_ID.validate_python(raw)
        except ValidationError as err:
            reason = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise AnswerError(f"{self.url}: reply 'id' is not a usable id ({reason})") from None

    def _choices(self, payload: dict[str, Any]) -> list[tuple[int, str]]:
        """``(choice index, text)`` of each choice; the index is the choice's ``index`` field,
        its position when it has none."""
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise AnswerError(f"{self.url}: reply has no 'choices'")
        out = []
        for i, choice in enumerate(choices):
            content = (
                (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
            )
            if not isinstance(content, str):
                raise AnswerError(f"{self.url}: choices[{i}].message.content is not a string")
            index = choice.get("index")
            valid_index = isinstance(index, int) and not isinstance(index, bool) and index >= 0
            out.append((index if valid_index else i, content))
        return out

    def next(self, prompt: str | None) -> Answer:
        """Ask the server for the answer(s) to ``prompt``, with the ids it served them under
        (module docstring); raises :class:`AnswerError`."""
        if prompt is None or not prompt.strip():
            raise AnswerError("prompt: required by the OpenAI-compatible backend")
        want = 2 if self.pairwise else 1
        first_id, first = self._call(prompt, want)
        prompt_id = first_id or str(uuid.uuid4())
        choices = [(f"{prompt_id}/{index}", text) for index, text in first]
        if len(choices) < want:
            second_id, second = self._call(prompt, 1)
            if second_id is None or second_id == prompt_id:  # the answers need different ids
                second_id = str(uuid.uuid4())
            choices += [(f"{second_id}/{index}", text) for index, text in second]
        choices = choices[:want]
        try:
            return Answer(
                prompt=prompt,
                answers=tuple(text for _, text in choices),
                prompt_id=prompt_id,
                answer_ids=tuple(aid for aid, _ in choices),
            )
        except ValidationError as err:
            raise AnswerError(f"{self.url}: {_field_error(err)}") from None
