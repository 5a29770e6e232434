"""Features v2: the text family pinned on a hand-written markdown answer.

Expected values are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedgaze.features.text import TEXT_NAMES, text_features
from fedgaze.features.v2 import side_features
from hand_traces import COL, close, query

# ---------------------------------------------------------------------------------------------
# text


def test_text_features_by_hand():
    text = (
        "# Title\n"  # heading
        "Some **bold** and `code` here.\n"  # prose line, 1 bold, 1 inline code
        "- a\n"  # list item
        "-b is not a list item\n"  # prose line (no space after the dash)
        "1. one\n"  # list item
        "  * nested\n"  # list item
        "```python\n"  # fence 1: the block's content is not counted below
        "# not a heading\n"
        "- not a list item\n"
        "x = `y` **z**\n"
        "```\n"  # fence 2: one code block
        "\n"
        "Para **x** **y**\n"  # prose line, 2 bold
        "## Sub"  # heading
    )
    got = dict(zip(TEXT_NAMES, np.expm1(text_features(text)), strict=True))
    expected = {
        "text_chars_log1p": len(text),
        "text_lines_log1p": 14,  # 13 newlines + 1
        "text_words_log1p": len(text.split()),
        "text_list_items_log1p": 3,
        "text_code_blocks_log1p": 1,
        "text_inline_code_log1p": 1,
        "text_headings_log1p": 2,
        "text_bold_log1p": 3,
        "text_paragraphs_log1p": 3,
    }
    assert got == pytest.approx(expected)
    assert not text_features("").any()
    # An unclosed fence still opens a block, and hides the rest from the prose counts.
    got = dict(zip(TEXT_NAMES, np.expm1(text_features("intro\n```\n# x\n- y")), strict=True))
    assert got["text_code_blocks_log1p"] == pytest.approx(1)
    assert got["text_headings_log1p"] == got["text_list_items_log1p"] == 0
    assert got["text_paragraphs_log1p"] == pytest.approx(1)
    f = side_features(query(left=text, right=""))
    close(f[:, COL["text_headings_log1p"]], np.log1p([2, 0]))
