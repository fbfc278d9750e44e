"""The shared input of the sequence competitors: the L most recent behaviours, titles as word ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lurm_lite.competitors.sequences import PAD_ITEM, TitleTokens, behaviour_tokens, recent_behaviours, title_tokens
from lurm_lite.text import Vocabulary


def _history():
    return pd.DataFrame({"user_id": [1, 1, 1, 1, 3, 3, 7], "item_id": [10, 11, 12, 13, 20, 21, 30],
                         "ts": [100, 200, 300, 400, 150, 250, 500]})


def test_recent_behaviours_keeps_the_last_L_oldest_first_and_pads():
    seqs = recent_behaviours(_history(), np.array([1, 2, 3, 7]), length=3)
    assert seqs.items.tolist() == [[11, 12, 13], [PAD_ITEM] * 3, [20, 21, PAD_ITEM], [30, PAD_ITEM, PAD_ITEM]]
    assert seqs.lengths.tolist() == [3, 0, 2, 1] and seqs.length == 3


def test_recent_behaviours_since_a_time_and_bad_input():
    seqs = recent_behaviours(_history(), np.array([1, 3]), length=5, since_ts=250)
    assert seqs.items[:, :2].tolist() == [[12, 13], [21, PAD_ITEM]] and seqs.lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="at least 1"):
        recent_behaviours(_history(), np.array([1]), length=0)
    with pytest.raises(ValueError, match="ascending"):
        recent_behaviours(_history(), np.array([3, 1]))
    with pytest.raises(ValueError, match="sorted by"):
        recent_behaviours(_history().iloc[::-1], np.array([1, 3]))


def test_titles_as_word_ids_and_behaviour_tokens():
    vocab = Vocabulary.build(["red car", "red bus", "car"], min_count=1)
    titles = title_tokens(["red car", "", "blue bus"], {"vocabulary": vocab.to_dict(), "truncation_length": 2})
    assert isinstance(titles, TitleTokens) and titles.vocab_size == len(vocab)
    assert titles.tokens[0].tolist() == [vocab.word_id("red"), vocab.word_id("car")]
    assert titles.lengths.tolist() == [2, 1, 2]  # the empty title is one unknown word
    tokens = behaviour_tokens(np.array([[2, 0, PAD_ITEM]]), titles)  # (1, 3, Tr)
    assert tokens.shape == (1, 3, 2) and tokens[0, 2].tolist() == [0, 0]
    assert tokens[0, 1].tolist() == titles.tokens[0].tolist()
    first_word = title_tokens(["red car"], {"vocabulary": vocab.to_dict(), "truncation_length": 2}, max_words=1)
    assert first_word.tokens.tolist() == [[vocab.word_id("red")]] and first_word.lengths.tolist() == [1]
