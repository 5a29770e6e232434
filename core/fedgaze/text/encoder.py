"""Frozen text encoders that run on the device: WordLlama by default, a local model optionally.

An encoder turns texts into fixed vectors and is never trained; prompts and answers are embedded
on the device and their embeddings never leave it. :class:`WordLlamaEncoder` (MIT) ships its
256-dimensional weights and tokenizer inside the ``wordllama`` wheel: it is loaded from the
package's own folder with downloads disabled (numpy and tokenizers, no torch).
:class:`SentenceTransformerEncoder` loads a sentence-transformers model from a local path (the
``sentence-transformers`` package must be installed; nothing is downloaded).

An encoder spec names one: ``wordllama`` or ``sentence-transformers:/path/to/model``. A saved
text model records its encoder's ``name`` and ``version`` and refuses to score with another.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_ENCODER = "wordllama"
ST_PREFIX = "sentence-transformers:"


class EncoderError(RuntimeError):
    """The encoder cannot be loaded or used; the message says which and why."""


class TextEncoder(Protocol):
    """A frozen text encoder: ``encode`` gives L2-normalised float32 rows of width ``dim``."""

    name: str
    version: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, shape (len(texts), dim)."""
        ...


def _normalised(vectors: Any, n: int, dim: int) -> np.ndarray:
    out = np.asarray(vectors, dtype=np.float32).reshape(n, dim)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class WordLlamaEncoder:
    """WordLlama's ``l2_supercat`` token embeddings, mean-pooled (256 dimensions)."""

    def __init__(self, dim: int = 256) -> None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as err:
            raise EncoderError(f"wordllama is not installed ({err})") from None
        folder = Path(wordllama.__file__).parent
        try:
            self._model = WordLlama.load(cache_dir=folder, disable_download=True, dim=dim)
        except Exception as err:  # missing bundled files surface as several error types
            raise EncoderError(f"cannot load WordLlama from {folder}: {err}") from None
        self.dim = dim
        self.name = f"wordllama/l2_supercat_{dim}"
        self.version = metadata.version("wordllama")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._model.embed(list(texts)), len(texts), self.dim)


class SentenceTransformerEncoder:
    """A sentence-transformers model read from a local folder (no download)."""

    def __init__(self, path: str | Path) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise EncoderError(f"{folder}: no sentence-transformers model folder here")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise EncoderError(
                f"sentence-transformers is not installed ({err}); pip install sentence-transformers"
            ) from None
        try:
            self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except Exception as err:  # the library raises many kinds for a bad folder
            raise EncoderError(
                f"{folder}: cannot load a sentence-transformers model ({err})"
            ) from None
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        self.name = f"{ST_PREFIX}{folder.resolve()}"
        self.version = metadata.version("sentence-transformers")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return _normalised(vectors, len(texts), self.dim)


@lru_cache(maxsize=4)
def load_encoder(spec: str = DEFAULT_ENCODER) -> TextEncoder:
    """The encoder named by ``spec`` (``wordllama`` or ``sentence-transformers:PATH``), loaded
    once per process."""
    if spec == DEFAULT_ENCODER:
        return WordLlamaEncoder()
    if spec.startswith(ST_PREFIX):
        return SentenceTransformerEncoder(spec.removeprefix(ST_PREFIX))
    raise EncoderError(f"unknown encoder {spec!r}: use {DEFAULT_ENCODER!r} or '{ST_PREFIX}PATH'")
