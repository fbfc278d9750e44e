"""TextCNN and HAN (§3.3): shapes, padding, HAN's attention written out, and end-to-end training on the probe's split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lurm_lite import downstream
from lurm_lite.competitors import supervised
from lurm_lite.competitors.han import HAN, unique_rows
from lurm_lite.competitors.sequences import PAD_ITEM, BehaviourSequences, TitleTokens
from lurm_lite.competitors.supervised import SUPERVISED_MODELS, train_and_score
from lurm_lite.competitors.textcnn import TextCNN
from lurm_lite.config import CompetitorConfig, DownstreamConfig

VOCAB = 30
ZEBRA = 7  # the word id whose presence in a user's titles is the planted label
TINY = CompetitorConfig(word_dim=12, hidden=10, cnn_filters=8, cnn_windows=(2, 3), lr=1e-2,
                        supervised_batch_size=32, supervised_max_epochs=12, supervised_patience=3)
FAST_DOWNSTREAM = DownstreamConfig(bootstrap=50)


def _model(cls, n_classes=3, seed=0):
    torch.manual_seed(seed)
    return cls(VOCAB, n_classes, TINY).eval()


def _tokens(rng, batch, n_behaviours, title_len, lengths):
    """Left-aligned titles of 1..title_len words (ids >= 1), all 0 after each user's length."""
    tokens = np.zeros((batch, n_behaviours, title_len), dtype=np.int64)
    for b in range(batch):
        for i in range(lengths[b]):
            n_words = rng.integers(1, title_len + 1)
            tokens[b, i, :n_words] = rng.integers(1, VOCAB, n_words)
    return torch.from_numpy(tokens), torch.as_tensor(lengths, dtype=torch.long)


@pytest.mark.parametrize("cls", [TextCNN, HAN])
def test_logits_shape_and_a_user_without_behaviours_is_finite(cls):
    tokens, lengths = _tokens(np.random.default_rng(0), 4, 5, 4, [2, 0, 5, 1])
    logits = _model(cls)(tokens, lengths)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    alone = _model(cls)(tokens[1:2], lengths[1:2])  # a batch of one empty user only
    assert alone.shape == (1, 3) and torch.isfinite(alone).all()


@pytest.mark.parametrize("cls", [TextCNN, HAN])
def test_padding_and_the_rest_of_the_batch_do_not_change_a_users_logits(cls):
    model = _model(cls)
    tokens, lengths = _tokens(np.random.default_rng(1), 3, 4, 3, [2, 1, 4])
    with torch.no_grad():
        reference = model(tokens, lengths)
        padded = torch.nn.functional.pad(tokens, (0, 2, 0, 3))  # (3, 7, 5): padding words and behaviours
        torch.testing.assert_close(model(padded, lengths), reference, rtol=0, atol=1e-6)
        garbage = tokens.clone()
        garbage[0, 2:] = 5  # words in behaviours at or after the user's length are never read
        torch.testing.assert_close(model(garbage, lengths), reference, rtol=0, atol=1e-6)
        # user 1 (one short title) alone, and beside a user of 20 long titles: the wide
        # batch pads user 1's sequence far beyond its words, and padding must not win
        long_tokens, long_lengths = _tokens(np.random.default_rng(2), 1, 20, 5, [20])
        wide = torch.cat([torch.nn.functional.pad(tokens[1:2], (0, 2, 0, 16)), long_tokens])
        beside = model(wide, torch.cat([lengths[1:2], long_lengths]))[0]
        torch.testing.assert_close(beside, model(tokens[1:2], lengths[1:2])[0], rtol=0, atol=1e-6)


def _attention_loops(attention, h):
    """Yang et al.'s eq. (5)-(7) / (8)-(10) over the rows of h (T, dim), one position at a time."""
    W, b, context = attention.project.weight, attention.project.bias, attention.context
    scores = []
    for t in range(h.shape[0]):
        u_t = torch.tanh(W @ h[t] + b)  # eq. (5)
        scores.append(torch.dot(u_t, context))
    total = sum(torch.exp(s) for s in scores)
    out = torch.zeros(h.shape[1])
    for t in range(h.shape[0]):
        out = out + torch.exp(scores[t]) / total * h[t]  # eq. (6)-(7)
    return out


def _han_loops(model: HAN, tokens, lengths):
    """HAN's logits user by user, behaviour by behaviour: each title's real words alone through the word GRU."""
    logits = []
    for b in range(tokens.shape[0]):
        behaviour_vectors = []
        for i in range(int(lengths[b])):
            words = tokens[b, i][tokens[b, i] != 0]
            h_words = model.word_gru(model.embedding(words)[None])[0][0]  # (n_words, hidden)
            behaviour_vectors.append(_attention_loops(model.word_attention, h_words))
        v = torch.zeros(model.hidden)
        if behaviour_vectors:
            h_behaviours = model.behaviour_gru(torch.stack(behaviour_vectors)[None])[0][0]  # (n, hidden)
            v = _attention_loops(model.behaviour_attention, h_behaviours)
        logits.append(model.out(v))
    return torch.stack(logits)


@pytest.mark.parametrize("shape", [(500, 8), (7, 3), (1, 4), (0, 5)])
def test_unique_rows_is_torchs_unique_over_rows(shape):
    """Rows with repeats, shared prefixes and zero padding; ids past 2**31 (int64 order kept)."""
    g = torch.Generator().manual_seed(shape[0])
    pool = torch.randint(0, 6, (max(shape[0] // 3, 1), shape[1]), generator=g)  # few values: many shared prefixes
    pool[:, -1] += torch.randint(0, 2, (len(pool),), generator=g) * 2**40
    x = pool[torch.randint(0, len(pool), (shape[0],), generator=g)]  # (N, T) rows repeated
    expected, expected_inverse = torch.unique(x, dim=0, return_inverse=True)
    rows, inverse = unique_rows(x)
    assert torch.equal(rows, expected) and torch.equal(inverse, expected_inverse)


def test_han_word_and_behaviour_attention_match_a_written_out_reference():
    """Also with titles repeated across behaviours and users (HAN reads each distinct title
    once per batch): the same logits and the same gradient for every parameter."""
    model = _model(HAN, seed=3)
    tokens, lengths = _tokens(np.random.default_rng(3), 5, 4, 5, [4, 0, 1, 3, 2])
    tokens[3, 2] = tokens[0, 1]  # one title in two users
    tokens[4, 1] = tokens[4, 0]  # and twice in one user
    weights = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))  # (B, K)
    (model(tokens, lengths) * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    reference = _han_loops(model, tokens, lengths)
    (reference * weights).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, lengths), reference, rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


def _planted_task(n_users=400, seed=0):
    """Users of 1..6 behaviours on 60 items of 2-4 words; label 1 iff one of their titles holds ZEBRA."""
    rng = np.random.default_rng(seed)
    n_items, title_len, length = 60, 4, 6
    tokens = np.zeros((n_items, title_len), dtype=np.int64)
    title_lengths = rng.integers(2, title_len + 1, n_items)
    for item, n_words in enumerate(title_lengths):
        tokens[item, :n_words] = rng.choice(np.setdiff1d(np.arange(1, VOCAB), [ZEBRA]), n_words)
    zebra_items = np.arange(8)
    tokens[zebra_items, rng.integers(0, 2, len(zebra_items))] = ZEBRA
    titles = TitleTokens(tokens, title_lengths, VOCAB)
    y = rng.integers(0, 2, n_users)
    lengths = rng.integers(1, length + 1, n_users)
    items = np.full((n_users, length), PAD_ITEM, dtype=np.int64)
    for u in range(n_users):
        items[u, :lengths[u]] = rng.integers(len(zebra_items), n_items, lengths[u])
        if y[u]:
            items[u, rng.integers(0, lengths[u])] = rng.choice(zebra_items)
    return BehaviourSequences(np.arange(n_users, dtype=np.int64) * 3, items, lengths), titles, y


@pytest.mark.parametrize("name", sorted(SUPERVISED_MODELS))
def test_a_planted_word_is_learnt(name):
    seqs, titles, y = _planted_task()
    result = train_and_score(name, seqs, titles, y, TINY, FAST_DOWNSTREAM, seed=0)
    assert result["auc"] > 0.9, result
    assert result["auc_ci95"][0] <= result["auc"] <= result["auc_ci95"][1]
    assert 1 <= result["epochs"] <= TINY.supervised_max_epochs and result["train_seconds"] > 0


def test_the_split_is_the_probes_and_multiclass_tasks_work(monkeypatch):
    seqs, titles, _ = _planted_task(n_users=150, seed=1)
    y = np.random.default_rng(1).integers(0, 3, 150)
    seen = []  # rows of every no-grad pass: validation after each epoch, then the test users
    logits = supervised._logits

    def recording_logits(model, seqs, titles, rows, *rest):
        seen.append(rows)
        return logits(model, seqs, titles, rows, *rest)

    monkeypatch.setattr(supervised, "_logits", recording_logits)
    config = CompetitorConfig(**{**vars(TINY), "supervised_max_epochs": 2})
    result = train_and_score("TextCNN", seqs, titles, y, config, FAST_DOWNSTREAM, seed=5)
    train_idx, test_idx = downstream.split_indices(y, 5, FAST_DOWNSTREAM.test_fraction)
    _, val_idx = downstream.validation_split(train_idx, y[train_idx], FAST_DOWNSTREAM.validation_fraction, 5)
    assert seen[-1].tolist() == test_idx.tolist()
    assert all(rows.tolist() == val_idx.tolist() for rows in seen[:-1]) and len(seen) == 1 + result["epochs"]
    probe = downstream.evaluate_task(np.random.default_rng(0).normal(size=(150, 4)), y, FAST_DOWNSTREAM, seed=5)
    assert result["n_test"] == probe["n_test"] == len(test_idx)
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["acc"] <= 1.0


def test_training_runs_inside_deterministic_kernels(deterministic_entries):
    seqs, titles, y = _planted_task(n_users=60, seed=1)
    train_and_score("TextCNN", seqs, titles, y, CompetitorConfig(**{**vars(TINY), "supervised_max_epochs": 1}),
                    FAST_DOWNSTREAM, seed=0)
    assert deterministic_entries == [torch.device("cpu")]


def test_seeded_runs_agree_and_leave_the_global_rng_alone():
    seqs, titles, y = _planted_task(n_users=120, seed=2)
    config = CompetitorConfig(**{**vars(TINY), "supervised_max_epochs": 3})
    state = torch.random.get_rng_state()
    runs = [train_and_score("HAN", seqs, titles, y, config, FAST_DOWNSTREAM, seed=4) for _ in range(2)]
    assert torch.equal(torch.random.get_rng_state(), state)
    for run in runs:
        run.pop("train_seconds")
    assert runs[0] == runs[1]
    other = train_and_score("HAN", seqs, titles, y, config, FAST_DOWNSTREAM, seed=5)
    assert other["auc"] != runs[0]["auc"]  # the seed reaches the split and the weights


def test_bad_input_is_refused():
    seqs, titles, y = _planted_task(n_users=50)
    with pytest.raises(ValueError, match="unknown supervised competitor"):
        train_and_score("BERT", seqs, titles, y, TINY, FAST_DOWNSTREAM, seed=0)
    with pytest.raises(ValueError, match="one row per labelled user"):
        train_and_score("HAN", seqs, titles, y[:-1], TINY, FAST_DOWNSTREAM, seed=0)
    with pytest.raises(ValueError, match="even hidden size"):
        HAN(VOCAB, 2, CompetitorConfig(hidden=9))


def test_train_on_tasks_trains_each_task_on_its_users_rows_and_skips_with_a_reason(monkeypatch):
    seqs, titles, y = _planted_task(n_users=150, seed=3)
    config = CompetitorConfig(**{**vars(TINY), "supervised_max_epochs": 1})
    task_rows = np.sort(np.random.default_rng(0).choice(150, 100, replace=False))  # (100,) a task's users
    labels = {"planted": (seqs.user_ids[task_rows], y[task_rows]),
              "one class": (seqs.user_ids[:30], np.zeros(30, dtype=np.int64))}
    calls = []
    train = supervised.train_and_score

    def recording(name, task_seqs, task_titles, task_y, *rest, **kwargs):
        calls.append((task_seqs, task_y))
        return train(name, task_seqs, task_titles, task_y, *rest, **kwargs)

    monkeypatch.setattr(supervised, "train_and_score", recording)
    per_task, seconds = supervised.train_on_tasks("TextCNN", seqs, titles, labels, config, FAST_DOWNSTREAM,
                                                  seed=0)
    assert per_task.skipped == {"one class": downstream.skip_reason(labels["one class"][1])}
    assert list(per_task) == ["planted"] and list(seconds) == ["planted"] and seconds["planted"] > 0
    assert per_task["planted"]["train_seconds"] == seconds["planted"]
    (task_seqs, task_y), = calls
    assert task_seqs.user_ids.tolist() == labels["planted"][0].tolist()
    assert np.array_equal(task_seqs.items, seqs.items[task_rows])
    assert np.array_equal(task_seqs.lengths, seqs.lengths[task_rows]) and task_y is labels["planted"][1]
    with pytest.raises(ValueError, match="without a behaviour sequence"):
        supervised.train_on_tasks("TextCNN", seqs, titles, {"planted": (labels["planted"][0] + 1, labels["planted"][1])},
                                  config, FAST_DOWNSTREAM, seed=0)


def test_tasks_trained_side_by_side_equal_the_in_process_ones():
    seqs, titles, y = _planted_task(n_users=150, seed=4)
    config = CompetitorConfig(**{**vars(TINY), "supervised_max_epochs": 1})
    labels = {"planted": (seqs.user_ids, y), "first half": (seqs.user_ids[:120], y[:120])}

    def scores(workers):
        downstream_config = DownstreamConfig(bootstrap=50, workers=workers)
        per_task, _ = supervised.train_on_tasks("HAN", seqs, titles, labels, config, downstream_config, seed=0,
                                                device="auto")  # the notebooks' default, on this CPU machine
        return {task: {k: v for k, v in m.items() if k != "train_seconds"} for task, m in per_task.items()}

    assert downstream.probe_workers(DownstreamConfig(workers=2), "cpu", n_tasks=2) == 2
    assert scores(2) == scores(1)
