"""The input of the sequence competitors (§3.3): each user's L most recent history behaviours.

The paper feeds TextCNN, HAN, PTUM and SUMN "the length of input behaviors ... limited to
50" on Amazon and two months of behaviours on the industrial data (§3.4); LURM reads the
whole life. A behaviour is its item, and an item is its title as the item encoder reads it
(``text.json``: the vocabulary and the truncation length Tr of notebook 01).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lurm_lite import text
from lurm_lite.config import CompetitorConfig
from lurm_lite.io import load_json
from lurm_lite.runs import RunPaths

PAD_ITEM = -1  # item id of a padding position in BehaviourSequences.items


@dataclass
class BehaviourSequences:
    """The L most recent behaviours of each user, oldest first, left-aligned."""

    user_ids: np.ndarray  # (n,) int64 ascending
    items: np.ndarray  # (n, L) int64 item ids; PAD_ITEM after the user's last behaviour
    lengths: np.ndarray  # (n,) int64 behaviours kept, 0..L (0: no behaviour in the window)

    @property
    def length(self) -> int:
        """L."""
        return int(self.items.shape[1])


@dataclass
class TitleTokens:
    """Every item's title as word ids (``text.encode_titles``)."""

    tokens: np.ndarray  # (n_items, Tr) int64 word ids, 0 = padding, 1 = unknown
    lengths: np.ndarray  # (n_items,) int64 words kept, >= 1 (an empty title is one unknown word)
    vocab_size: int  # |V|, word ids are 0..|V|-1


def recent_behaviours(history: pd.DataFrame, user_ids: np.ndarray, length: int = 50,
                      since_ts: int | None = None) -> BehaviourSequences:
    """The ``length`` = L most recent behaviours of each of ``user_ids`` (§3.4).

    ``history`` holds ``user_id, item_id, ts`` sorted by (user_id, ts) (``Dataset.history()``);
    ``since_ts`` keeps only behaviours at or after it (the paper's "two months" input: the
    window of ``periods.window_start_ts(history_end_ts, 2)``). Ties in ts keep the file order.
    A user of ``user_ids`` without a behaviour gets length 0 (a row of PAD_ITEM).
    """
    if length < 1:
        raise ValueError(f"sequence length L must be at least 1, got {length}")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if len(user_ids) and np.any(np.diff(user_ids) <= 0):
        raise ValueError("user_ids must be ascending and unique")
    if since_ts is not None:
        history = history[history["ts"].to_numpy() >= since_ts]
    users = history["user_id"].to_numpy(np.int64)  # (N,)
    items = history["item_id"].to_numpy(np.int64)  # (N,)
    if len(users) and np.any(np.diff(users) < 0):
        raise ValueError("history must be sorted by (user_id, ts), as Dataset.history() returns it")
    starts = np.searchsorted(users, user_ids, side="left")  # (n,) first behaviour of each user
    ends = np.searchsorted(users, user_ids, side="right")  # (n,) one past the last
    lengths = np.minimum(ends - starts, length).astype(np.int64)  # (n,)
    out = np.full((len(user_ids), length), PAD_ITEM, dtype=np.int64)  # (n, L)
    position = np.arange(length)  # (L,)
    valid = position[None, :] < lengths[:, None]  # (n, L)
    source = (ends - lengths)[:, None] + position[None, :]  # (n, L) index into history, oldest kept first
    out[valid] = items[source[valid]]
    return BehaviourSequences(user_ids, out, lengths)


def title_tokens(titles: list[str], text_info: dict, max_words: int | None = None) -> TitleTokens:
    """Items' titles as word ids with notebook 01's vocabulary and Tr (``text_info`` = ``text.json``).

    ``max_words`` keeps only a title's first words when below Tr (``CompetitorConfig.title_words``:
    the sequence models read L x Tr words per user, the cost that bounds them in §3.4).
    """
    vocab = text.Vocabulary.from_dict(text_info["vocabulary"])
    truncation = text_info["truncation_length"] if max_words is None else min(max_words, text_info["truncation_length"])
    tokens, lengths = text.encode_titles(titles, vocab, truncation)
    return TitleTokens(tokens, lengths, len(vocab))


def run_title_tokens(run: RunPaths, items: pd.DataFrame, config: CompetitorConfig) -> TitleTokens:
    """:func:`title_tokens` of a dataset's items with the run's ``text.json`` (notebook 01) and
    ``config.title_words``."""
    run.require(run.text, notebook="01_data")
    return title_tokens(items["title"].tolist(), load_json(run.text), config.title_words)


def behaviour_tokens(items: np.ndarray, titles: TitleTokens) -> np.ndarray:
    """Word ids of a batch of behaviour sequences: items (B, L) -> (B, L, Tr), all 0 at PAD_ITEM."""
    out = titles.tokens[np.maximum(items, 0)]  # (B, L, Tr)
    out[items == PAD_ITEM] = 0
    return out


def data_fingerprint(seqs: BehaviourSequences, titles: TitleTokens) -> str:
    """SHA-256 over every array of the sequences and the titles: what a pre-trained competitor saw.

    PTUM's and SUMN's checkpoints keep it, so a checkpoint is resumed only on the same input.
    """
    digest = hashlib.sha256(f"vocab:{titles.vocab_size}".encode())
    for array in (seqs.user_ids, seqs.items, seqs.lengths, titles.tokens, titles.lengths):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
