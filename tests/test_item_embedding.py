import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lurm_lite import clustering, text
from lurm_lite.config import (
    ClusteringConfig,
    ItemEmbeddingConfig,
    TextConfig,
    clustering_for_data,
    for_scale,
)
from lurm_lite.contrastive import info_nce
from lurm_lite.item_embedding import (
    ItemEncoder,
    embed_items,
    sample_positive_pairs,
    train_item_encoder,
    use_item_ids,
)
from lurm_lite.periods import DAY_SECONDS


def _sorted_log(rng, n_users=40, n=3000, days=60):
    user_ids = np.sort(rng.integers(0, n_users, n)).astype(np.int64) * 7 + 3  # sparse, non-dense ids
    ts = rng.integers(0, days * DAY_SECONDS, n).astype(np.int64)
    order = np.lexsort((ts, user_ids))
    return user_ids[order], ts[order]


def _all_valid_pairs(user_ids, ts, beta_seconds=None, beta_behaviors=None):
    """Brute force: every ordered (x, y), x != y, same user, inside the window."""
    valid = set()
    for x in range(len(user_ids)):
        for y in range(len(user_ids)):
            if x == y or user_ids[x] != user_ids[y]:
                continue
            if beta_seconds is not None and abs(ts[x] - ts[y]) < beta_seconds:
                valid.add((x, y))
            if beta_behaviors is not None and abs(x - y) <= beta_behaviors:
                valid.add((x, y))
    return valid


def test_pairs_same_user_within_beta_seconds():
    rng = np.random.default_rng(0)
    user_ids, ts = _sorted_log(rng)
    beta = 5 * DAY_SECONDS
    x, y = sample_positive_pairs(user_ids, ts, 5000, beta_seconds=beta, rng=rng)
    assert len(x) == 5000
    assert np.all(x != y)
    assert np.all(user_ids[x] == user_ids[y])
    assert np.all(np.abs(ts[x] - ts[y]) < beta)


def test_pairs_respect_beta_behaviors():
    rng = np.random.default_rng(1)
    user_ids, ts = _sorted_log(rng)
    x, y = sample_positive_pairs(user_ids, ts, 5000, beta_behaviors=2, rng=rng)
    assert np.all(x != y) and np.all(user_ids[x] == user_ids[y])
    assert np.abs(x - y).max() == 2


@pytest.mark.parametrize("window", [{"beta_seconds": 5 * DAY_SECONDS}, {"beta_behaviors": 1}])
def test_sampled_pairs_are_exactly_the_valid_pairs(window):
    # user 10: days 0, 1, 2, 10 (the last has no partner within 5 days); user 11: one behaviour;
    # user 12: days 0 and 5 (exactly beta apart: not a pair, |t_x - t_y| < beta is strict).
    user_ids = np.array([10, 10, 10, 10, 11, 12, 12])
    ts = np.array([0, 1, 2, 10, 3, 0, 5]) * DAY_SECONDS
    x, y = sample_positive_pairs(user_ids, ts, 3000, rng=np.random.default_rng(2), **window)
    sampled = set(zip(x.tolist(), y.tolist()))
    assert sampled == _all_valid_pairs(user_ids, ts, **window)


def test_sampler_rejects_data_without_pairs():
    with pytest.raises(ValueError, match="no behaviour has a partner .* -p BETA_DAYS"):
        sample_positive_pairs(np.array([1, 2, 3]), np.array([0, 0, 0]), 10, beta_seconds=DAY_SECONDS)


def test_encoder_is_eq1_mean_of_words_then_proj_then_unit_norm():
    torch.manual_seed(0)
    encoder = ItemEncoder(vocab_size=10, dim=8)
    tokens = torch.tensor([[2, 3, 0, 0], [5, 5, 7, 0]])  # (B, L), 0 = padding
    e = encoder(tokens, torch.tensor([2, 3]))  # (B, H)
    W = encoder.words.weight.detach()
    mean_words = torch.stack([(W[2] + W[3]) / 2, (2 * W[5] + W[7]) / 3])  # 1/|x| sum_i W_i
    torch.testing.assert_close(e, F.normalize(encoder.proj(mean_words), dim=1))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))


def test_word_gradient_is_sparse_and_touches_only_batch_words():
    encoder = ItemEncoder(vocab_size=50, dim=8, sparse=True)
    e = encoder(torch.tensor([[2, 3, 0], [4, 0, 0], [5, 6, 7], [8, 9, 0]]))
    info_nce(e[:2], e[2:], tau=0.1).backward()
    grad = encoder.words.weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == set(range(2, 10))


def _topic_problem(seed=0, n_topics=8, items_per_topic=40, words_per_topic=12, n_users=200):
    """Items of a topic share topic words; each user only interacts with one topic."""
    rng = np.random.default_rng(seed)
    n_items = n_topics * items_per_topic
    item_topic = np.repeat(np.arange(n_topics), items_per_topic)
    tokens = 2 + item_topic[:, None] * words_per_topic + rng.integers(0, words_per_topic, (n_items, 6))
    lengths = np.full(n_items, 6)
    user_topic = rng.integers(0, n_topics, n_users)
    rows = []
    for user, topic in enumerate(user_topic):
        items = rng.choice(np.flatnonzero(item_topic == topic), 20)
        rows += [(user, item, day * DAY_SECONDS) for day, item in enumerate(items)]
    behaviors = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    return tokens, lengths, behaviors, item_topic


def test_training_lowers_the_loss_and_groups_items_of_a_topic():
    tokens, lengths, behaviors, item_topic = _topic_problem()
    config = ItemEmbeddingConfig(dim=16, batch_size=64, epochs=2, pairs_per_epoch=1024, lr=1e-2)
    encoder, losses = train_item_encoder(tokens, lengths, behaviors, config, device="cpu", seed=0, progress=False)
    assert len(losses) == 2 * 1024 // 64
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    e = embed_items(encoder, tokens, lengths, batch_size=100, device="cpu")
    assert e.shape == (len(tokens), 16) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    similarity = e @ e.T
    np.fill_diagonal(similarity, -np.inf)
    nearest_same_topic = (item_topic[similarity.argmax(axis=1)] == item_topic).mean()
    assert nearest_same_topic > 0.95


def test_training_is_seeded():
    tokens, lengths, behaviors, _ = _topic_problem(n_users=50)
    config = ItemEmbeddingConfig(dim=8, batch_size=32, epochs=1, pairs_per_epoch=256, beta_behaviors=3)
    _, first = train_item_encoder(tokens, lengths, behaviors, config, device="cpu", seed=3, progress=False)
    _, second = train_item_encoder(tokens, lengths, behaviors, config, device="cpu", seed=3, progress=False)
    assert first == second


def test_training_runs_inside_deterministic_kernels(deterministic_entries):
    tokens, lengths, behaviors, _ = _topic_problem(n_users=20)
    config = ItemEmbeddingConfig(dim=8, batch_size=32, epochs=1, pairs_per_epoch=64)
    train_item_encoder(tokens, lengths, behaviors, config, device="cpu", seed=0, progress=False)
    assert deterministic_entries == [torch.device("cpu")]


def test_titled_catalogue_keeps_the_papers_encoder_without_item_ids():
    tokens, lengths, behaviors, _ = _topic_problem(n_users=50)
    config = ItemEmbeddingConfig(dim=8, batch_size=32, epochs=1, pairs_per_epoch=256)
    assert not use_item_ids(config, tokens)  # every title distinct
    encoder, _ = train_item_encoder(tokens, lengths, behaviors, config, device="cpu", seed=0, progress=False)
    assert encoder.items is None
    forced, _ = train_item_encoder(tokens, lengths, behaviors, ItemEmbeddingConfig(
        dim=8, batch_size=32, epochs=1, pairs_per_epoch=256, item_ids=True), device="cpu", seed=0, progress=False)
    assert forced.items.num_embeddings == len(tokens)


def test_synthetic_titles_keep_the_title_only_encoder(tiny_dataset):
    from data_prep import schema

    titles = schema.load_dataset(tiny_dataset).items["title"].tolist()
    vocab = text.Vocabulary.build(titles, TextConfig().min_count)
    tokens, _ = text.encode_titles(titles, vocab, text.truncation_length(text.title_lengths(titles)))
    assert not use_item_ids(for_scale("tiny").item, tokens)


def test_item_id_path_is_eq1_plus_the_items_own_row():
    torch.manual_seed(0)
    encoder = ItemEncoder(vocab_size=10, dim=8, n_items=5)
    tokens, item_ids = torch.tensor([[2, 3, 0], [2, 3, 0]]), torch.tensor([1, 4])  # same title, two items
    e = encoder(tokens, item_ids=item_ids)  # (B, H)
    W, V = encoder.words.weight.detach(), encoder.items.weight.detach()
    bag = (W[2] + W[3]) / 2 + V[item_ids]  # (B, H): 1/|x| sum_i W_i + V_x
    torch.testing.assert_close(e, F.normalize(encoder.proj(bag), dim=1))
    assert not torch.allclose(e[0], e[1])  # identical titles, distinct items
    with pytest.raises(ValueError, match="pass item_ids"):
        encoder(tokens)
    info_nce(e[:1], e[1:], tau=0.1).backward()
    assert encoder.items.weight.grad.is_sparse  # a batch updates only its items' rows
    assert set(encoder.items.weight.grad.coalesce().indices()[0].tolist()) == {1, 4}


def _ids_only_log(seed=0, n_items=300, n_groups=20, n_users=400, per_user=30, loyalty=0.9):
    """An ids-only log: items in hidden co-consumption groups, each user buying mostly from one
    group, one behaviour a day; titles are data_prep's fallback ``item <key>``."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.repeat(np.arange(n_groups), n_items // n_groups))
    rows = []
    for user, user_group in enumerate(rng.integers(0, n_groups, n_users)):
        own = rng.choice(np.flatnonzero(group == user_group), per_user)
        items = np.where(rng.random(per_user) < loyalty, own, rng.integers(0, n_items, per_user))
        rows += [(user, item, day * DAY_SECONDS) for day, item in enumerate(items)]
    titles = [f"item {key}" for key in range(n_items)]
    return titles, pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]), group


def test_ids_only_log_learns_distinct_co_occurrence_embeddings_and_spread_interests():
    titles, behaviors, group = _ids_only_log()
    vocab = text.Vocabulary.build(titles, TextConfig().min_count)  # "item" only: every key is rare
    tokens, lengths = text.encode_titles(titles, vocab, text.truncation_length(text.title_lengths(titles)))
    config = ItemEmbeddingConfig(dim=32, batch_size=128, epochs=2, pairs_per_epoch=4000)  # the paper's lr, tau
    assert use_item_ids(config, tokens)

    def embeddings(item_config):
        encoder, _ = train_item_encoder(tokens, lengths, behaviors, item_config, device="cpu", seed=0,
                                        progress=False, vocab_size=len(vocab))
        return embed_items(encoder, tokens, lengths, device="cpu")

    # Without the id path (the paper's encoder), every item is "item <unk>": one vector.
    assert len(np.unique(embeddings(dataclasses.replace(config, item_ids=False)), axis=0)) == 1

    e = embeddings(config)
    assert len(np.unique(e, axis=0)) >= len(titles) / 2
    similarity = e @ e.T
    np.fill_diagonal(similarity, -np.inf)
    assert (group[similarity.argmax(axis=1)] == group).mean() > 0.9  # learned co-consumption, not noise

    clustering_config, _ = clustering_for_data(ClusteringConfig(), n_items=len(titles))  # D = 300 / 8
    centroids = clustering.train_centroids(e, clustering_config.n_interests, clustering_config, seed=0)
    sizes = np.bincount(clustering.assign_hard(e, centroids), minlength=clustering_config.n_interests)
    assert sizes.max() <= 0.10 * len(titles)
