"""SUMN (lurm_lite.competitors.sumn): shapes, the multi-hop read and the loss against loops, learning, resume, files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lurm_lite.competitors import pretraining
from lurm_lite.competitors.sequences import PAD_ITEM, BehaviourSequences, TitleTokens
from lurm_lite.competitors.sumn import SUMN, pretrain_sumn, split_halves
from lurm_lite.config import CompetitorConfig

TINY = CompetitorConfig(sequence_length=6, word_dim=8, hidden=8, hops=3, pretrain_epochs=2,
                        pretrain_batch_size=8, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on tensors this small, handing each op to a second thread costs more
    than the op (30x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_groups(n_per_group: int = 16, seed: int = 0) -> tuple[BehaviourSequences, TitleTokens, np.ndarray]:
    """Users of group g draw only items of g (5 each), whose titles use only g's 10 words.

    Also one user without behaviours and one with a single behaviour (encoded, not trained on).
    Returns (sequences, titles, group per user, -1 for the two extra users).
    """
    rng = np.random.default_rng(seed)
    L, Tr = TINY.sequence_length, 4
    tokens = np.zeros((10, Tr), dtype=np.int64)  # items 0-4: group 0, 5-9: group 1
    for item in range(10):
        words = 2 + 10 * (item // 5) + rng.choice(10, size=3, replace=False)  # group 0: 2..11, 1: 12..21
        tokens[item, :3] = words
    titles = TitleTokens(tokens, np.full(10, 3, dtype=np.int64), vocab_size=22)
    n = 2 * n_per_group + 2
    items = np.full((n, L), PAD_ITEM, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    groups = np.full(n, -1)
    for u in range(2 * n_per_group):
        groups[u] = u % 2
        lengths[u] = rng.integers(2, L + 1)
        items[u, :lengths[u]] = 5 * groups[u] + rng.integers(0, 5, size=lengths[u])
    lengths[-1] = 1
    items[-1, 0] = 3
    return BehaviourSequences(np.arange(n, dtype=np.int64) * 7, items, lengths), titles, groups


def test_user_vectors_have_shape_b_by_hidden_and_a_user_without_behaviours_is_zero():
    torch.manual_seed(0)
    model = SUMN(30, TINY)
    tokens = torch.randint(1, 30, (3, TINY.sequence_length, 5))  # (3, L, Tr)
    lengths = torch.tensor([0, 1, TINY.sequence_length])
    u = model.user_vectors(tokens, lengths)
    assert u.shape == (3, TINY.hidden) and model.dim == TINY.hidden
    assert torch.isfinite(u).all()
    assert torch.equal(u[0], torch.zeros(TINY.hidden))
    assert u[1:].abs().sum(1).gt(0).all()
    u.sum().backward()  # the empty user's masked softmax sends no NaN into the gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_padding_behaviours_do_not_change_a_users_vector():
    torch.manual_seed(0)
    model = SUMN(30, TINY)
    tokens = torch.randint(1, 30, (1, TINY.sequence_length, 5))  # (1, L, Tr)
    other = tokens.clone()
    other[0, 2:] = torch.randint(1, 30, (TINY.sequence_length - 2, 5))
    lengths = torch.tensor([2])
    assert torch.allclose(model.user_vectors(tokens, lengths), model.user_vectors(other, lengths), atol=0, rtol=0)


def reference_user_vector(model: SUMN, tokens: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """The encoder and K hops written out with loops, for one user reading behaviours ``keep``."""
    enc, agg = model.encoder, model.aggregation
    h = []
    for j in range(tokens.shape[0]):
        words = [w for w in tokens[j].tolist() if w > 0]
        e = [enc.words.weight[w] for w in words]
        s = [float(enc.pool.query.weight[0] @ torch.tanh(enc.pool.key.weight @ x + enc.pool.key.bias)) for x in e]
        a = np.exp(np.array(s) - max(s)) / np.exp(np.array(s) - max(s)).sum() if s else []
        pooled = sum((float(a[i]) * e[i] for i in range(len(e))), torch.zeros(enc.words.weight.shape[1]))
        h.append(torch.tanh(enc.project.weight @ pooled + enc.project.bias))
    u = sum((h[j] for j in keep), torch.zeros(model.dim)) / max(len(keep), 1)
    for k in range(agg.hops):
        scores = {j: float(agg.score[k].weight[0] @ torch.tanh(agg.behaviour_key[k].weight @ h[j]
                                                               + agg.behaviour_key[k].bias
                                                               + agg.user_query[k].weight @ u)) for j in keep}
        top = max(scores.values()) if scores else 0.0
        z = sum(np.exp(s - top) for s in scores.values())
        c = sum((float(np.exp(scores[j] - top) / z) * h[j] for j in keep), torch.zeros(model.dim))
        u = agg.update[k].weight @ u + c
    return u


def test_multi_hop_aggregation_and_consistency_loss_match_written_out_loops():
    torch.manual_seed(1)
    model = SUMN(12, dataclasses.replace(TINY, sequence_length=4, word_dim=5, hidden=6, hops=2))
    tokens = torch.tensor([
        [[2, 3, 0], [4, 1, 0], [5, 5, 6], [0, 0, 0]],  # 3 behaviours; word 1 is unknown
        [[7, 8, 9], [10, 0, 0], [11, 2, 0], [3, 4, 7]],  # 4 behaviours
    ])  # (2, L=4, Tr=3)
    part_a = torch.tensor([[True, False, False, False], [False, True, False, True]])
    part_b = torch.tensor([[False, True, True, False], [True, False, True, False]])
    with torch.no_grad():
        got = model.user_vectors(tokens, torch.tensor([3, 4]))
        want = torch.stack([reference_user_vector(model, tokens[0], [0, 1, 2]),
                            reference_user_vector(model, tokens[1], [0, 1, 2, 3])])
        assert torch.allclose(got, want, atol=1e-5)

        loss = model.consistency_loss(tokens, part_a, part_b)
        terms = []
        for user in range(2):
            for src, dst in ((part_a, part_b), (part_b, part_a)):
                keep = [j for j in range(4) if src[user, j]]
                counts = {}
                for j in range(4):
                    if dst[user, j]:
                        for w in tokens[user, j].tolist():
                            if w > 1:
                                counts[w] = counts.get(w, 0) + 1
                u = reference_user_vector(model, tokens[user], keep)
                logits = model.word_head.weight @ u + model.word_head.bias
                log_q = logits - torch.logsumexp(logits, 0)
                total = sum(counts.values())
                terms.append(-sum(c / total * float(log_q[w]) for w, c in counts.items()))
        assert abs(float(loss) - np.mean(terms)) < 1e-5


def test_a_target_set_without_known_words_is_left_out_of_the_loss():
    torch.manual_seed(0)
    model = SUMN(12, dataclasses.replace(TINY, sequence_length=2))
    tokens = torch.tensor([[[2, 3], [1, 0]]])  # (1, 2, 2): behaviour 1 holds only the unknown word
    a, b = torch.tensor([[True, False]]), torch.tensor([[False, True]])
    with torch.no_grad():
        u_b = model.aggregation(model.encoder(tokens), b)  # (1, H)
        log_q = torch.log_softmax(model.word_head(u_b), -1)[0]
        want = -(log_q[2] + log_q[3]) / 2  # only B -> A has a target
        assert torch.allclose(model.consistency_loss(tokens, a, b), want, atol=1e-6)


def test_split_halves_are_disjoint_cover_the_behaviours_and_depend_on_the_rng():
    lengths = np.array([2, 3, 6, 5])
    a, b = split_halves(lengths, 6, np.random.default_rng(0))
    valid = np.arange(6)[None, :] < lengths[:, None]
    assert not (a & b).any() and np.array_equal(a | b, valid)
    assert np.array_equal(a.sum(1), lengths // 2) and b.sum(1).min() >= 1
    a2, _ = split_halves(lengths, 6, np.random.default_rng(1))
    assert not np.array_equal(a, a2)


def test_pretraining_lowers_the_loss_and_separates_users_with_consistent_items():
    seqs, titles, groups = two_groups()
    config = dataclasses.replace(TINY, pretrain_epochs=8)
    model, history = pretrain_sumn(seqs, titles, config, "cpu", seed=0, progress=False)
    assert len(history["epoch"]) == 8 and history["seconds"] > 0 and not model.training
    assert history["epoch"][-1] < 0.8 * history["epoch"][0]
    reps = pretraining.encode(model, seqs, titles, "cpu", batch_size=5)
    assert reps.shape == (len(seqs.user_ids), TINY.hidden) and reps.dtype == np.float32
    assert np.array_equal(reps[-2], np.zeros(TINY.hidden)) and np.isfinite(reps).all()
    grouped = groups >= 0
    centroids = np.stack([reps[groups == g].mean(0) for g in (0, 1)])  # (2, H)
    nearest = np.linalg.norm(reps[grouped, None, :] - centroids[None], axis=2).argmin(1)
    assert (nearest == groups[grouped]).mean() > 0.8
    torch.manual_seed(0)  # the initial weights of the run above
    initial = pretraining.encode(SUMN(titles.vocab_size, config), seqs, titles, "cpu")
    assert separation(reps, groups) > 3 * separation(initial, groups)  # measured: 3.4 -> 29


def separation(reps: np.ndarray, groups: np.ndarray) -> float:
    """Distance between the two groups' centroids over the mean distance of a user to its own."""
    centroids = np.stack([reps[groups == g].mean(0) for g in (0, 1)])  # (2, H)
    within = np.mean([np.linalg.norm(reps[groups == g] - centroids[g], axis=1).mean() for g in (0, 1)])
    return float(np.linalg.norm(centroids[0] - centroids[1]) / within)


def test_a_resumed_run_equals_an_uninterrupted_one_and_another_seed_restarts(tmp_path, capsys):
    seqs, titles, _ = two_groups(n_per_group=6)
    straight, h_straight = pretrain_sumn(seqs, titles, TINY, "cpu", seed=3, progress=False)
    ckpt = tmp_path / "sumn_ckpt.pt"
    pretrain_sumn(seqs, titles, dataclasses.replace(TINY, pretrain_epochs=1), "cpu", seed=3,
                  checkpoint_path=ckpt, progress=False)
    resumed, h_resumed = pretrain_sumn(seqs, titles, TINY, "cpu", seed=3, checkpoint_path=ckpt, progress=False)
    assert "not resuming" not in capsys.readouterr().out
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert h_resumed["epoch"] == h_straight["epoch"]

    other, _ = pretrain_sumn(seqs, titles, TINY, "cpu", seed=4, checkpoint_path=ckpt, progress=False)
    assert "seed 3, not 4" in capsys.readouterr().out
    fresh, _ = pretrain_sumn(seqs, titles, TINY, "cpu", seed=4, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(other.state_dict().values(), fresh.state_dict().values()))


def test_save_and_load_give_identical_encodings(tmp_path):
    seqs, titles, _ = two_groups(n_per_group=4)
    torch.manual_seed(0)
    model = SUMN(titles.vocab_size, TINY)
    path = pretraining.save(tmp_path / "sumn.pt", model)
    loaded = pretraining.load(SUMN, path)
    assert loaded.config == TINY and loaded.vocab_size == titles.vocab_size and not loaded.training
    assert np.array_equal(pretraining.encode(model, seqs, titles, "cpu"), pretraining.encode(loaded, seqs, titles, "cpu"))


def test_pretraining_refuses_data_without_a_trainable_user():
    seqs = BehaviourSequences(np.array([1, 2]), np.array([[0, PAD_ITEM], [PAD_ITEM, PAD_ITEM]]), np.array([1, 0]))
    titles = TitleTokens(np.array([[2, 3]]), np.array([2]), vocab_size=4)
    with pytest.raises(ValueError, match="at least 2 behaviours"):
        pretrain_sumn(seqs, titles, TINY, "cpu", seed=0, progress=False)
