"""Where the capture page's answers come from: a replay file or an OpenAI-compatible server.

The capture service shows a prompt and one answer (pointwise) or two (pairwise) and records how
the person reads them. Which answers it shows is pluggable (:class:`AnswerBackend`):

- :class:`ReplayAnswers` replays a JSONL file, one item per line:
  ``{"prompt": str, "answers": [str] or [str, str], "task_id": int (optional)}``. Used for
  studies with fixed material and for tests. A bad line is an error naming ``file:line``.
- :class:`OpenAICompatibleAnswers` asks any server speaking ``POST /v1/chat/completions``
  (OpenAI, vLLM, llama.cpp, Ollama...) for the answers to the prompt the person typed; two
  answers for pairwise comparison (``n=2``, or a second call when the server returns one).

Answer texts stay on the device: they go to the device store with the query, never elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Answer",
    "AnswerBackend",
    "AnswerError",
    "OpenAICompatibleAnswers",
    "ReplayAnswers",
    "ReplayExhausted",
    "write_replay",
]


class AnswerError(RuntimeError):
    """The backend could not produce answers; the message says which input or server and why."""


class ReplayExhausted(AnswerError):
    """The replay file has no more prompts."""


class Answer(BaseModel):
    """One prompt and the one (pointwise) or two (pairwise, left then right) answers to show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    answers: tuple[str, ...] = Field(min_length=1, max_length=2)
    task_id: int | None = None

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
    return f"{where}: {first['msg']}"


class ReplayAnswers:
    """Replays the prompts and answers of a JSONL file in order; parsed fully up front.

    Raises :class:`AnswerError` naming ``file:line`` and the field for any bad line (not JSON,
    not an object, missing ``prompt``, ``answers`` not one or two strings, unknown keys), so a
    broken study file fails at start, not in front of a participant.
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
                items.append(Answer.model_validate(raw))
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

    def _call(self, prompt: str, n: int) -> list[str]:
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
        return self._texts(payload)

    def _texts(self, payload: Any) -> list[str]:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise AnswerError(f"{self.url}: reply has no 'choices'")
        texts = []
        for i, choice in enumerate(choices):
            content = (
                (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
            )
            if not isinstance(content, str):
                raise AnswerError(f"{self.url}: choices[{i}].message.content is not a string")
            texts.append(content)
        return texts

    def next(self, prompt: str | None) -> Answer:
        """Ask the server for the answer(s) to ``prompt``; raises :class:`AnswerError`."""
        if prompt is None or not prompt.strip():
            raise AnswerError("prompt: required by the OpenAI-compatible backend")
        want = 2 if self.pairwise else 1
        texts = self._call(prompt, want)
        if len(texts) < want:
            texts += self._call(prompt, 1)
        return Answer(prompt=prompt, answers=tuple(texts[:want]))
