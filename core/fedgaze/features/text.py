"""Text features of one answer, computed on the device from the response text alone.

Length and Markdown structure are what a text-only reward model picks up (longer, formatted
answers tend to win), so they are the baseline the implicit-feedback features must beat, and
the reward model needs them to tell "read longer because it is longer" from "read longer
because it is better". All counts are ``log1p``:

- ``text_chars_log1p``, ``text_lines_log1p`` (newlines + 1, 0 for empty text),
  ``text_words_log1p`` (whitespace-separated);
- ``text_code_blocks_log1p``: fenced code blocks (lines starting with three backticks, two
  fences per block; an unclosed fence still opens a block);

and, on the text with fenced code blocks removed (so that ``# comment`` lines in code are not
headings):

- ``text_list_items_log1p``: lines starting (after indentation) with ``-``, ``*`` or digits and
  ``.``, followed by whitespace;
- ``text_headings_log1p``: lines starting with one to six ``#`` and whitespace;
- ``text_bold_log1p``: ``**...**`` spans on one line;
- ``text_inline_code_log1p``: single-backtick spans on one line;
- ``text_paragraphs_log1p``: prose lines: non-blank lines that are neither list items nor
  headings. LLM answers do not hard-wrap, so one prose line is one paragraph; counting blocks
  between blank lines would not work here, because IFLLM's copy of the answers lost the blank
  lines (no answer has one) and would give one paragraph almost everywhere.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

__all__ = ["TEXT_NAMES", "text_features"]

F64 = npt.NDArray[np.float64]

TEXT_NAMES = (
    "text_chars_log1p",
    "text_lines_log1p",
    "text_words_log1p",
    "text_list_items_log1p",
    "text_code_blocks_log1p",
    "text_inline_code_log1p",
    "text_headings_log1p",
    "text_bold_log1p",
    "text_paragraphs_log1p",
)

_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)
_FENCED_BLOCK = re.compile(r"^[ \t]*```.*?(?:^[ \t]*```[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*]|\d+\.)[ \t]+\S", re.MULTILINE)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_PROSE_LINE = re.compile(r"^[ \t]*(?![-*][ \t]|\d+\.[ \t]|#{1,6}[ \t])\S", re.MULTILINE)


def text_features(text: str) -> F64:
    """Text features of one answer, shape (len(TEXT_NAMES),); see the module."""
    lines = text.count("\n") + 1 if text else 0
    fences = len(_FENCE.findall(text))
    prose = _FENCED_BLOCK.sub("\n", text)
    counts = [
        len(text),
        lines,
        len(text.split()),
        len(_LIST_ITEM.findall(prose)),
        (fences + 1) // 2,
        len(_INLINE_CODE.findall(prose)),
        len(_HEADING.findall(prose)),
        len(_BOLD.findall(prose)),
        len(_PROSE_LINE.findall(prose)),
    ]
    return np.log1p(np.array(counts, dtype=np.float64))
