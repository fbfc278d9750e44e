"""Item titles as word ids: tokenizer, vocabulary and title truncation (§2.1.1, §3.4).

An item x is its content {w_1, ..., w_|x|}, words of a vocabulary V (§2.1.1). Titles are
truncated at Tr words, the length that covers 95% of titles (§3.4: Tr = 35 on Amazon, 24 on
the industrial data; Table 1). Word ids: 0 pads a title up to Tr, 1 stands for every word
outside V (seen fewer than ``min_count`` times, or cut by ``max_vocab``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

PAD_ID = 0
UNKNOWN_ID = 1
_WORD = re.compile(r"[^\W_]+")  # runs of letters or digits, any script


def tokenize(title: str) -> list[str]:
    """Lower-cased words of letters/digits: ``"Kindle Paperwhite, 6-inch"`` -> kindle paperwhite 6 inch."""
    return _WORD.findall(title.lower())


@dataclass
class Vocabulary:
    """The word vocabulary V of §2.1.1; word k of ``words`` has id k + 2 (0 = pad, 1 = unknown)."""

    words: list[str]
    min_count: int = 1
    max_vocab: int | None = None

    def __post_init__(self) -> None:
        self._ids = {word: i + 2 for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, titles: Iterable[str], min_count: int = 2, max_vocab: int | None = None) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical),
        at most ``max_vocab`` of them (None: all)."""
        counts = Counter(word for title in titles for word in tokenize(title))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            kept = kept[:max_vocab]
        return cls(words=kept, min_count=min_count, max_vocab=max_vocab)

    def __len__(self) -> int:
        """Size of the id space, padding and unknown included (the embedding table's rows)."""
        return len(self.words) + 2

    def word_id(self, word: str) -> int:
        return self._ids.get(word, UNKNOWN_ID)

    def to_dict(self) -> dict:
        return {"words": list(self.words), "min_count": self.min_count, "max_vocab": self.max_vocab}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(words=list(data["words"]), min_count=data["min_count"], max_vocab=data["max_vocab"])


def title_lengths(titles: Iterable[str]) -> np.ndarray:
    """(n,) int64 number of words of each title, before truncation."""
    return np.fromiter((len(tokenize(t)) for t in titles), dtype=np.int64)


def truncation_length(lengths: Sequence[int] | np.ndarray, quantile: float = 0.95) -> int:
    """Tr of §3.4: the smallest length L such that at least ``quantile`` of titles have <= L words.

    Never below 1, so that every item keeps at least one word.
    """
    lengths = np.sort(np.asarray(lengths, dtype=np.int64))
    if lengths.size == 0:
        raise ValueError("truncation_length needs at least one title length")
    rank = max(math.ceil(quantile * lengths.size), 1)  # number of titles that must fit
    return max(int(lengths[rank - 1]), 1)


def encode_titles(titles: Sequence[str], vocab: Vocabulary, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of each title, truncated to its first ``max_len`` (= Tr) words.

    Returns ``tokens`` (n, max_len) int64 padded with 0 and ``lengths`` (n,) int64, the number
    of real ids per row. A title without any word becomes one unknown word (length 1), so that
    eq. (1)'s mean is defined for every item.
    """
    tokens = np.zeros((len(titles), max_len), dtype=np.int64)  # (n, Tr)
    lengths = np.empty(len(titles), dtype=np.int64)  # (n,)
    for row, title in enumerate(titles):
        ids = [vocab.word_id(w) for w in tokenize(title)[:max_len]] or [UNKNOWN_ID]
        tokens[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return tokens, lengths


def unique_title_share(tokens: np.ndarray) -> float:
    """Share of items whose encoded title (row of ``tokens``, from :func:`encode_titles`) no
    other item has: ~1 for a titled catalogue, ~0 when titles are fallbacks such as
    ``item <key>`` whose key falls outside the vocabulary (every row the same few ids)."""
    if len(tokens) == 0:
        return 1.0
    _, inverse, counts = np.unique(tokens, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] == 1).mean())
