"""Text of the synthetic queries: answer lengths, and answers and prompts cut from a corpus.

Pair lengths as geometric mean and |log ratio| (Gaussian copula, as short pairs differ more),
pointwise and prompt lengths from the real quantile tables; text is cut from a corpus built from
an embedded word list (no downloads).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from fedgaze.data.synthetic.arrays import BoolArray, IntArray
from fedgaze.data.synthetic.params import SyntheticParams

#: Vocabulary of the synthetic answers (plain, topic-neutral English).
_WORD_TEXT = """
the model answer data time people system example value using first result often also
important different process simple common provide support include consider approach
method source energy water health history science language research design market
network program learning training quality feature number change level power local
public general specific practical better several however because while which when
where these those their other many most some each every small large high low new old
good best key main clear useful easy strong early recent typical popular modern classic
game player story city travel food recipe budget plan goal step option choice benefit
risk cost price service product customer team project skill practice habit routine
sleep exercise diet weather season culture music movie book author country region
economy policy law rule right question idea theory evidence study report analysis
factor effect cause growth rate range type form structure function role impact
"""


#: Words in the per-cohort text corpus (~270k characters: far more than the longest answer).
CORPUS_WORDS = 40_000


def make_corpus(rng: np.random.Generator, n_words: int) -> str:
    """Plausible answer-like text: capitalised sentences, some bullet lines and paragraphs."""
    vocab = _WORD_TEXT.split()
    words = np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), n_words)]
    sentence_end = rng.random(n_words) < 1.0 / 12.0
    starts = np.r_[True, sentence_end[:-1]]
    words[starts] = np.char.capitalize(words[starts].astype(str)).astype(object)
    kind = rng.random(n_words)
    # after a sentence end: mostly a space, sometimes a bullet line or a paragraph break
    sep = np.where(
        sentence_end,
        np.where(kind < 0.75, ". ", np.where(kind < 0.9, ".\n- ", ".\n\n")),
        np.where(kind < 0.04, ", ", " "),
    )
    return "".join((words + sep).tolist())


def response_lengths(
    rng: np.random.Generator, p: SyntheticParams, pairwise: BoolArray
) -> tuple[IntArray, IntArray]:
    """Answer lengths (right is 0 for pointwise), from the real pair and pointwise tables.

    A pair is its geometric mean and |log ratio| (Gaussian copula with their real correlation)
    plus which side is longer; a pointwise answer is one draw from its own table.
    """
    n = len(pairwise)
    rho = p.pair_ratio_corr
    z1 = rng.standard_normal(n)
    z2 = rho * z1 + math.sqrt(max(1.0 - rho * rho, 0.0)) * rng.standard_normal(n)
    mean = p.pair_mean_chars.ppf(ndtr(z1))
    half = 0.5 * p.pair_abs_log_ratio.ppf(ndtr(z2))
    half = np.where(rng.random(n) < p.pair_right_longer_share, half, -half)
    left = np.where(pairwise, mean * np.exp(-half), p.pointwise_chars.sample(rng, n))
    right = np.where(pairwise, mean * np.exp(half), 0.0)
    as_int = np.maximum(np.rint(left), 1).astype(np.int64), np.rint(right).astype(np.int64)
    return as_int[0], np.where(pairwise, np.maximum(as_int[1], 1), 0)


def sentence_starts(corpus: str) -> IntArray:
    """Offsets of the corpus's sentences (a capital letter after whitespace, or offset 0)."""
    b = np.frombuffer(corpus.encode("ascii"), np.uint8)
    upper = (b >= ord("A")) & (b <= ord("Z"))
    return np.flatnonzero(upper & np.r_[True, b[:-1] <= 32])


def cut_texts(
    corpus: str, starts_at: IntArray, rng: np.random.Generator, lengths: IntArray
) -> list[str]:
    """Texts of exactly the given lengths, cut from the corpus at random ``starts_at`` offsets."""
    lengths = np.minimum(lengths, len(corpus))
    last = np.searchsorted(starts_at, len(corpus) - lengths, side="right")
    starts = starts_at[(rng.random(len(lengths)) * np.maximum(last, 1)).astype(np.int64)]
    return [corpus[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]


_QUESTION_STARTS = (
    "What is",
    "How do I",
    "Why does",
    "Can you explain",
    "What are the best",
    "How to improve",
    "Tell me about",
    "Compare",
)


def make_prompts(
    corpus: str, starts_at: IntArray, rng: np.random.Generator, lengths: IntArray
) -> list[str]:
    """Question-like prompts of about the given lengths: an opener, corpus words, '?'."""
    openers = rng.integers(0, len(_QUESTION_STARTS), len(lengths)).tolist()
    out = []
    for k, text in zip(openers, cut_texts(corpus, starts_at, rng, lengths), strict=True):
        opener = _QUESTION_STARTS[k]
        words = "".join(c for c in text.lower() if c.isalpha() or c.isspace()).split()
        ends = np.cumsum([len(w) + 1 for w in words]) - 1  # length of the first k+1 words
        body = " ".join(words[: int(np.searchsorted(ends, len(text) - len(opener) - 2, "right"))])
        out.append(f"{opener} {body}?" if body else f"{opener}?")
    return out
