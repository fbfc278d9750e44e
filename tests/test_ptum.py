"""PTUM (Wu et al. 2020), the pre-trained sequence competitor: shapes, both losses against
written-out references, learning on planted groups, checkpoint resume, save/load."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lurm_lite.competitors import pretraining
from lurm_lite.competitors.ptum import PTUM, PretrainBatch, pretrain_ptum, sample_batch
from lurm_lite.competitors.sequences import PAD_ITEM, BehaviourSequences, TitleTokens
from lurm_lite.config import CompetitorConfig

TINY = dataclasses.replace(CompetitorConfig(), sequence_length=8, word_dim=8, hidden=16, heads=2, layers=1,
                           mask_prob=0.3, next_k=2, negatives=3, pretrain_epochs=2, pretrain_batch_size=16)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tests share two cores with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_groups(n_users: int = 48, seed: int = 0) -> tuple[BehaviourSequences, TitleTokens, np.ndarray]:
    """Users of group g draw their behaviours from items 5g..5g+4; item i's title is the one word 2 + i.

    User 0 has no behaviour and user 1 a single one (encoded, not trained on).
    """
    rng = np.random.default_rng(seed)
    group = np.arange(n_users) % 2  # (n,)
    lengths = rng.integers(4, TINY.sequence_length + 1, n_users)  # (n,)
    lengths[:2] = (0, 1)
    items = np.full((n_users, TINY.sequence_length), PAD_ITEM, dtype=np.int64)  # (n, L)
    for u in range(n_users):
        items[u, :lengths[u]] = 5 * group[u] + rng.integers(0, 5, lengths[u])
    tokens = np.zeros((10, 3), dtype=np.int64)  # (n_items, Tr)
    tokens[:, 0] = 2 + np.arange(10)
    titles = TitleTokens(tokens, np.ones(10, dtype=np.int64), vocab_size=12)
    return BehaviourSequences(np.arange(n_users, dtype=np.int64) * 10, items, lengths.astype(np.int64)), titles, group


def _model(seed: int = 0) -> PTUM:
    torch.manual_seed(seed)
    return PTUM(12, TINY).eval()


def test_user_vectors_shapes_and_an_empty_user_is_finite():
    model = _model()
    tokens = torch.randint(1, 12, (3, 5, 4))  # (B, L', Tr)
    lengths = torch.tensor([5, 2, 0])
    tokens[1, 2:] = 0
    tokens[2] = 0
    model.train()  # gradients through the empty user must be finite as well
    u = model.user_vectors(tokens, lengths)  # (B, H)
    assert u.shape == (3, TINY.hidden)
    u.sum().backward()
    assert torch.isfinite(u).all() and torch.equal(u[2], torch.zeros(TINY.hidden))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():  # padding beyond a user's length does not reach u
        changed = tokens.clone()
        changed[1, 2:] = 7
        assert torch.allclose(model.user_vectors(changed, lengths)[1], model.user_vectors(tokens, lengths)[1],
                              atol=1e-6)


def test_sample_batch_masks_targets_and_negatives():
    seqs, titles, _ = two_groups()
    rows = np.arange(2, 20)
    batch = sample_batch(seqs.items[rows], seqs.lengths[rows], titles, TINY, np.random.default_rng(0))
    lengths = seqs.lengths[rows]
    masked = batch.masked.numpy()
    n_masked = masked.sum(1)
    assert np.array_equal(n_masked, np.clip(np.rint(TINY.mask_prob * lengths), 1, lengths - 1))
    assert not np.any(masked & (np.arange(masked.shape[1])[None, :] >= lengths[:, None]))
    k = np.minimum(TINY.next_k, lengths - 1)
    assert np.array_equal(batch.nbp_lengths.numpy(), lengths - k)
    # the true candidate is the behaviour itself; negatives are other items
    true_mbp = batch.tokens.numpy()[masked]  # (n_masked, Tr)
    assert np.array_equal(batch.mbp_candidates.numpy()[:, 0], true_mbp)
    assert np.all(batch.mbp_candidates.numpy()[:, 1:, 0] != true_mbp[:, None, 0])
    user, slot = batch.nbp_user.numpy(), batch.nbp_slot.numpy()
    true_nbp = batch.tokens.numpy()[user, lengths[user] - k[user] + slot]  # (n_next, Tr)
    assert np.array_equal(batch.nbp_candidates.numpy()[:, 0], true_nbp)
    assert np.all(batch.nbp_candidates.numpy()[:, 1:, 0] != true_nbp[:, None, 0])
    with pytest.raises(ValueError, match="at least 2"):
        sample_batch(seqs.items[:3], seqs.lengths[:3], titles, TINY, np.random.default_rng(0))


def _hand_batch() -> PretrainBatch:
    """Two users (4 and 3 behaviours), masks and candidates written by hand."""
    t = lambda *ids: [[i, 0] for i in ids]  # noqa: E731 titles of one word
    tokens = torch.tensor([t(2, 3, 4, 5), t(6, 7, 8, 0)])  # (2, 4, 2)
    tokens[1, 3] = 0
    return PretrainBatch(
        tokens=tokens, lengths=torch.tensor([4, 3]),
        masked=torch.tensor([[False, True, False, True], [True, False, False, False]]),
        mbp_candidates=torch.tensor([t(3, 9, 10), t(5, 2, 11), t(6, 3, 4)]),
        nbp_lengths=torch.tensor([2, 1]), nbp_user=torch.tensor([0, 0, 1, 1]), nbp_slot=torch.tensor([0, 1, 0, 1]),
        nbp_candidates=torch.tensor([t(4, 9, 2), t(5, 6, 7), t(7, 2, 3), t(8, 9, 10)]))


def _cross_entropy(scores: list[float]) -> float:
    """-log softmax of the first score."""
    return -(scores[0] - math.log(sum(math.exp(s) for s in scores)))


def test_mbp_loss_equals_a_written_out_reference():
    model, batch = _model(), _hand_batch()
    with torch.no_grad():
        loss = model.pretraining_losses(batch)["mbp"].item()
        terms = []
        for b in range(2):
            x = model.behaviours(batch.tokens[b:b + 1]).clone()  # (1, 4, H)
            for pos in range(4):
                if batch.masked[b, pos]:
                    x[0, pos] = model.mask_vector
            n = int(batch.lengths[b])
            h = model.contextual(x[:, :n], batch.lengths[b:b + 1])[0]  # (n, H) this user alone, unpadded
            for pos in range(n):
                if batch.masked[b, pos]:
                    i = int(batch.masked[:b].sum() + batch.masked[b, :pos].sum())  # row-major index
                    candidates = model.behaviours(batch.mbp_candidates[i])  # (1 + P, H)
                    terms.append(_cross_entropy([float(h[pos] @ c) for c in candidates]))
    assert len(terms) == 3
    assert loss == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_nbp_loss_equals_a_written_out_reference():
    model, batch = _model(), _hand_batch()
    with torch.no_grad():
        loss = model.pretraining_losses(batch)["nbp"].item()
        terms = []
        for i in range(len(batch.nbp_user)):
            b, k = int(batch.nbp_user[i]), int(batch.nbp_slot[i])
            n_in = int(batch.nbp_lengths[b])
            u = model.user_vectors(batch.tokens[b:b + 1, :n_in], torch.tensor([n_in]))[0]  # (H,) the past only
            candidates = model.behaviours(batch.nbp_candidates[i]) + model.next_slot.weight[k]  # (1 + P, H)
            terms.append(_cross_entropy([float(u @ c) for c in candidates]))
    assert loss == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_pretraining_loss_falls_and_separates_planted_groups():
    seqs, titles, group = two_groups()
    config = dataclasses.replace(TINY, pretrain_epochs=8, pretrain_batch_size=8, lr=5e-3)
    model, history = pretrain_ptum(seqs, titles, config, "cpu", seed=0, progress=False)
    assert len(history["epoch"]) == 8 and history["seconds"] > 0
    chance = 2 * math.log(1 + TINY.negatives)  # MBP + NBP when every candidate scores alike
    assert history["epoch"][-1] < 0.85 * min(history["epoch"][0], chance)
    X = pretraining.encode(model, seqs, titles, "cpu", batch_size=20)  # (n, H) over three batches
    assert X.shape == (len(seqs.user_ids), TINY.hidden) and X.dtype == np.float32 and np.isfinite(X).all()
    assert np.array_equal(X[0], np.zeros(TINY.hidden))  # no behaviour: the zero vector
    users = seqs.lengths >= 2
    centroids = np.stack([X[users & (group == g)].mean(0) for g in (0, 1)])  # (2, H)
    nearest = ((X[users][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == group[users]).mean() > 0.8


def _same_parameters(a: PTUM, b: PTUM) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, capsys):
    seqs, titles, _ = two_groups(24)
    ckpt = tmp_path / "ptum_ckpt.pt"
    straight, straight_history = pretrain_ptum(seqs, titles, TINY, "cpu", seed=1, progress=False)
    pretrain_ptum(seqs, titles, dataclasses.replace(TINY, pretrain_epochs=1), "cpu", seed=1,
                  checkpoint_path=ckpt, progress=False)  # "killed" after epoch 1
    resumed, resumed_history = pretrain_ptum(seqs, titles, TINY, "cpu", seed=1, checkpoint_path=ckpt,
                                             progress=False)
    assert "not resuming" not in capsys.readouterr().out
    assert _same_parameters(straight, resumed)
    assert resumed_history["epoch"] == straight_history["epoch"]
    # another seed does not reuse the checkpoint: it starts over and says why
    other, _ = pretrain_ptum(seqs, titles, TINY, "cpu", seed=2, checkpoint_path=ckpt, progress=False)
    assert "seed 1, not 2" in capsys.readouterr().out
    assert not _same_parameters(other, straight)


def test_pretraining_runs_inside_deterministic_kernels(deterministic_entries):
    seqs, titles, _ = two_groups(12)
    pretrain_ptum(seqs, titles, dataclasses.replace(TINY, pretrain_epochs=1), "cpu", seed=1, progress=False)
    assert deterministic_entries == [torch.device("cpu")]


def test_save_load_round_trip_gives_identical_encodings(tmp_path):
    seqs, titles, _ = two_groups(12)
    model = _model(3)
    path = pretraining.save(tmp_path / "ptum.pt", model)
    loaded = pretraining.load(PTUM, path)
    assert loaded.config == TINY and not loaded.training
    assert np.array_equal(pretraining.encode(loaded, seqs, titles, "cpu"),
                          pretraining.encode(model, seqs, titles, "cpu"))
