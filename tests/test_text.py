import numpy as np
import pytest

from lurm_lite.text import (
    PAD_ID,
    UNKNOWN_ID,
    Vocabulary,
    encode_titles,
    title_lengths,
    tokenize,
    truncation_length,
    unique_title_share,
)


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Kindle Paperwhite, 6-inch (2018)!") == ["kindle", "paperwhite", "6", "inch", "2018"]
    assert tokenize("Café_au-lait") == ["café", "au", "lait"]
    assert tokenize("  --- ") == []


def test_vocabulary_ids_min_count_and_order():
    titles = ["red shoe", "red hat", "blue shoe", "red sock"]
    vocab = Vocabulary.build(titles, min_count=2)
    # red x3, shoe x2 survive; hat, blue, sock (x1) map to unknown.
    assert vocab.words == ["red", "shoe"]
    assert len(vocab) == 4  # pad, unknown, red, shoe
    assert vocab.word_id("red") == 2 and vocab.word_id("shoe") == 3
    assert vocab.word_id("hat") == UNKNOWN_ID
    assert Vocabulary.build(titles, min_count=1, max_vocab=1).words == ["red"]
    restored = Vocabulary.from_dict(vocab.to_dict())
    assert restored.words == vocab.words and restored.word_id("shoe") == 3


def test_truncation_length_covers_the_quantile():
    lengths = np.arange(1, 101)  # 1..100 words
    assert truncation_length(lengths, 0.95) == 95  # 95 of 100 titles have <= 95 words
    assert truncation_length(lengths, 1.0) == 100
    assert truncation_length([3, 3, 3, 50], 0.75) == 3
    assert truncation_length([0, 0, 0], 0.95) == 1  # never below one word


def test_encode_titles_pads_truncates_and_marks_unknown():
    vocab = Vocabulary(words=["red", "shoe"])
    tokens, lengths = encode_titles(["red shoe", "shoe red blue red", ""], vocab, max_len=3)
    np.testing.assert_array_equal(tokens, [[2, 3, PAD_ID], [3, 2, UNKNOWN_ID], [UNKNOWN_ID, PAD_ID, PAD_ID]])
    np.testing.assert_array_equal(lengths, [2, 3, 1])
    assert tokens.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(title_lengths(["red shoe", "shoe red blue red", ""]), [2, 4, 0])


@pytest.mark.parametrize("quantile", [0.5, 0.95])
def test_truncation_matches_numpy_inverted_cdf(quantile):
    lengths = np.random.default_rng(0).integers(1, 60, 1001)
    assert truncation_length(lengths, quantile) == int(np.quantile(lengths, quantile, method="inverted_cdf"))


def test_unique_title_share_tells_titled_from_fallback_titles():
    titles = [f"item {k}" for k in range(50)]  # an ids-only log's fallback titles
    vocab = Vocabulary.build(titles, min_count=2)  # every key is seen once: unknown
    tokens, _ = encode_titles(titles, vocab, max_len=2)
    assert unique_title_share(tokens) == 0.0
    tokens, _ = encode_titles(["red shoe", "blue shoe", "red shoe", "red hat"], Vocabulary(["red", "shoe", "blue", "hat"]), 2)
    assert unique_title_share(tokens) == 0.5  # "red shoe" twice
    assert unique_title_share(np.zeros((0, 3), np.int64)) == 1.0
