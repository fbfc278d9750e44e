"""SUMN, the Self-supervised User Modeling Network (Gu, Wang, Sun et al., "Exploiting Behavioral
Consistence for Universal User Representation", AAAI 2021; arXiv 2012.06146), a competitor of
LURM in §3.3 (Tables 2-4), pre-trained once and probed frozen like LURM (§3.4).

SUMN as its abstract describes it has two parts:

- a **multi-hop aggregation layer**: attention over the user's behaviour vectors whose query is
  the current user vector, repeated ``hops`` times, each hop refining the user vector (the
  memory-network read of Sukhbaatar et al. 2015, which SUMN's layer follows);
- a **behavioural consistency loss**: a user's behaviours are consistent, so the
  representation of one set of them must predict the words that occur in a disjoint set.

Read top to bottom:

1. ``behaviour_encoder``: a behaviour is its item's title (word ids from
   :func:`~lurm_lite.competitors.sequences.behaviour_tokens`) -> one vector h_j;
2. ``MultiHopAggregation``: h_1..h_L -> u_K, the user representation;
3. ``SUMN``: both, plus the word-prediction head and the consistency loss;
4. ``pretrain_sumn`` (checkpointed, resumable); encoding, save and load are ``pretraining.encode / save / load``.

Symbols: B users in a batch, L behaviours per user (``CompetitorConfig.sequence_length``),
Tr words per title, E word size (``word_dim``), H hidden size (``hidden``), K hops (``hops``),
V vocabulary size. The full text of SUMN was not at hand, only its abstract and summaries
(word-occurrence prediction across disjoint behaviour sets, multi-hop attention that refines
the user vector): every formula below beyond that is our choice and says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lurm_lite import io
from lurm_lite.competitors import pretraining
from lurm_lite.competitors.encoders import TitleEncoder, attention_pool
from lurm_lite.competitors.sequences import BehaviourSequences, TitleTokens, behaviour_tokens
from lurm_lite.config import CompetitorConfig

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes: older ones are not resumed
MIN_TRAIN_BEHAVIOURS = 2  # the consistency loss needs two disjoint non-empty behaviour sets
SPECIAL_WORDS = 2  # word ids 0 (padding) and 1 (unknown) are never prediction targets


# ---------------------------------------------------------------------------------------
# 1. Behaviour encoder: a title -> h_j
# ---------------------------------------------------------------------------------------


def behaviour_encoder(vocab_size: int, word_dim: int, hidden: int) -> TitleEncoder:
    """A behaviour's title -> h_j = tanh(W^b sum_w a_w e_w + b^b), (..., Tr) -> (..., H).

    SUMN embeds a behaviour (a search query there, a title here) from its words; we pool the
    word embeddings e_w with additive attention a_w = softmax_w(q^T tanh(W^w e_w + b^w)) over
    the title's words (HAN's word level, Yang et al. 2016), W^w of width H, our choice: the
    paper's word encoder was not at hand. A title of padding only (a padding behaviour) pools
    to 0. The shared :class:`~lurm_lite.competitors.encoders.TitleEncoder` with tanh and no
    dropout; its ``pool.key``, ``pool.query`` and ``project`` are W^w, q and W^b.
    """
    return TitleEncoder(vocab_size, word_dim, hidden, activation=nn.Tanh(), attention_dim=hidden)


# ---------------------------------------------------------------------------------------
# 2. Multi-hop aggregation: h_1..h_L -> u_K
# ---------------------------------------------------------------------------------------


class MultiHopAggregation(nn.Module):
    """SUMN's multi-hop aggregation layer: K attention reads, each refining the user vector.

    Start: u_0 = mean_j h_j over the user's behaviours. Hop k = 1..K:

        e_kj = v_k^T tanh(W_k h_j + U_k u_{k-1} + b_k)     (attention query: the current u)
        alpha_kj = softmax_j(e_kj)                           (over the user's behaviours)
        c_k = sum_j alpha_kj h_j
        u_k = H_k u_{k-1} + c_k                              (memory-network update)

    The user representation is the last hop's u_K (d = H): SUMN's abstract and summaries
    speak of refining one user representation hop after hop, not of concatenating the hops.
    The form of the score (additive), u_0 (the mean), the per-hop weights and the linear
    update (Sukhbaatar et al. 2015's ``u^{k+1} = H u^k + o^k``) are our choices.
    H_k has no bias, so a user without behaviours (u_0 = 0, every c_k = 0) gets u_K = 0.
    """

    def __init__(self, hidden: int, hops: int):
        super().__init__()
        if hops < 1:
            raise ValueError(f"SUMN needs at least one hop, got {hops}")
        self.behaviour_key = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(hops))  # W_k, b_k
        self.user_query = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(hops))  # U_k
        self.score = nn.ModuleList(nn.Linear(hidden, 1, bias=False) for _ in range(hops))  # v_k
        self.update = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(hops))  # H_k

    @property
    def hops(self) -> int:
        return len(self.score)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h (B, L, H) behaviour vectors, mask (B, L) bool (the behaviours to read) -> u_K (B, H)."""
        m = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        u = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H) u_0
        for key, query, score, update in zip(self.behaviour_key, self.user_query, self.score, self.update):
            e = score(torch.tanh(key(h) + query(u).unsqueeze(1))).squeeze(-1)  # (B, L) e_kj
            c = attention_pool(e, h, mask)  # (B, H) c_k = sum_j alpha_kj h_j, alpha_kj = softmax_j(e_kj)
            u = update(u) + c  # (B, H) u_k
        return u


# ---------------------------------------------------------------------------------------
# 3. SUMN: encoder, aggregation, and the behavioural consistency loss
# ---------------------------------------------------------------------------------------


def word_distribution(tokens: torch.Tensor, part: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """p(w): the share of word w among the words of the behaviours in ``part``.

    tokens (B, L, Tr), part (B, L) bool -> (B, V) float32; padding and unknown words are not
    counted; a row with no known word is all zeros.
    """
    ids = (tokens * part.unsqueeze(-1)).flatten(1)  # (B, L*Tr) word ids, 0 outside the part
    counts = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)  # (B, V)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))  # (B, V) word counts
    counts[:, :SPECIAL_WORDS] = 0.0  # (B, V)
    return counts / counts.sum(1, keepdim=True).clamp(min=1.0)  # (B, V)


class SUMN(nn.Module):
    """The user encoder (behaviour encoder + multi-hop aggregation) and its word-prediction head.

    ``user_vectors(tokens, lengths) -> (B, H)`` is the representation the probes read;
    ``consistency_loss`` is the self-supervised objective; ``word_head`` (W^o, b^o: H -> V)
    serves the loss only.
    """

    def __init__(self, vocab_size: int, config: CompetitorConfig):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.config = config
        self.encoder = behaviour_encoder(self.vocab_size, config.word_dim, config.hidden)
        self.aggregation = MultiHopAggregation(config.hidden, config.hops)
        self.word_head = nn.Linear(config.hidden, self.vocab_size)  # W^o, b^o

    @property
    def dim(self) -> int:
        """d, the size of a user vector (= hidden: the last hop's u_K)."""
        return self.config.hidden

    def user_vectors(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, Tr) int64, lengths (B,) int64 (behaviours 0..L, left-aligned) -> u_K (B, H)."""
        mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)  # (B, L)
        return self.aggregation(self.encoder(tokens), mask)  # (B, H)

    def consistency_loss(self, tokens: torch.Tensor, part_a: torch.Tensor, part_b: torch.Tensor) -> torch.Tensor:
        """SUMN's behavioural consistency loss on two disjoint behaviour sets A, B of each user.

        The user vector of A predicts the words occurring in B and that of B those of A:

            loss = mean over (user, direction) of  - sum_w p_B(w) log softmax_w(W^o u_A + b^o)

        i.e. the cross-entropy from the word distribution p_B of the other set (word counts
        normalised to sum 1) to a softmax over the vocabulary. SUMN predicts "word
        occurrences in disjoint behaviour sets"; the softmax cross-entropy on the normalised
        counts, both directions, is our choice. A direction whose target set has no known
        word is left out of the mean.

        tokens (B, L, Tr) int64; part_a, part_b (B, L) bool, disjoint -> scalar.
        """
        h = self.encoder(tokens)  # (B, L, H) h_j, shared by both sets
        u = torch.cat([self.aggregation(h, part_a), self.aggregation(h, part_b)])  # (2B, H) u_A; u_B
        target = torch.cat([word_distribution(tokens, part_b, self.vocab_size),
                            word_distribution(tokens, part_a, self.vocab_size)])  # (2B, V) p_B; p_A
        log_q = F.log_softmax(self.word_head(u), dim=-1)  # (2B, V)
        ce = -(target * log_q).sum(1)  # (2B,)
        valid = (target.sum(1) > 0).to(ce.dtype)  # (2B,)
        return (ce * valid).sum() / valid.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------------------
# 4. Pre-training, encoding, files
# ---------------------------------------------------------------------------------------


def split_halves(lengths: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of each user's behaviours: floor(n/2) in A, the rest in B.

    lengths (b,) int64 (each >= 2) -> (part_a, part_b), both (b, L) bool. The split is drawn
    at random, not by time: SUMN's sets are disjoint, their order is our choice.
    """
    position = np.arange(length)  # (L,)
    valid = position[None, :] < lengths[:, None]  # (b, L)
    keys = np.where(valid, rng.random((len(lengths), length)), 2.0)  # (b, L) padding sorts last
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # (b, L) random rank of each behaviour
    part_a = rank < (lengths // 2)[:, None]  # (b, L)
    return part_a, valid & ~part_a


def pretrain_sumn(seqs: BehaviourSequences, titles: TitleTokens, config: CompetitorConfig,
                  device: torch.device | str | None, seed: int, checkpoint_path: str | Path | None = None,
                  progress: bool = True) -> tuple[SUMN, dict]:
    """Pre-train SUMN with the behavioural consistency loss (:meth:`SUMN.consistency_loss`).

    The loop is :func:`.pretraining.pretrain`'s: an epoch visits every user with at least
    ``MIN_TRAIN_BEHAVIOURS`` behaviours once, in a random order, ``config.pretrain_batch_size``
    users a step, Adam(``config.lr``); each step splits each user's behaviours into two random
    disjoint halves (:func:`split_halves`). Users with fewer behaviours are not trained on
    (they are still encoded). All sampling in epoch e uses ``np.random.default_rng([seed, e])``,
    so a run resumed from the checkpoint of epoch e continues exactly as an uninterrupted one.

    ``checkpoint_path``: written after every epoch (:mod:`.pretraining`); continued when
    written from the same data, seed and config (``pretrain_epochs`` aside) with at most
    ``pretrain_epochs`` epochs done; otherwise a line says why and training starts from scratch.

    Returns (model in eval mode, ``{"epoch": mean loss per epoch, "seconds": training time,
    summed over resumed runs}``).
    """
    dev = io.device(device)
    torch.manual_seed(seed)
    model = SUMN(titles.vocab_size, config).to(dev)
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "pretrain_epochs"}
    inputs = (pretraining.checkpoint_inputs(seqs, titles, settings, seed, CHECKPOINT_FORMAT)
              if checkpoint_path is not None else None)
    users = np.flatnonzero(seqs.lengths >= MIN_TRAIN_BEHAVIOURS)  # (n_train,) rows of seqs
    if len(users) == 0:
        raise ValueError(f"SUMN pre-training needs a user with at least {MIN_TRAIN_BEHAVIOURS} behaviours")

    def loss_of_batch(rows: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        part_a, part_b = split_halves(seqs.lengths[rows], seqs.length, rng)  # (b, L) each
        tokens = torch.from_numpy(behaviour_tokens(seqs.items[rows], titles)).to(dev)  # (b, L, Tr)
        return model.consistency_loss(tokens, torch.from_numpy(part_a).to(dev), torch.from_numpy(part_b).to(dev))

    return pretraining.pretrain("SUMN", model, loss_of_batch, users, config, dev, seed, checkpoint_path, inputs,
                                progress)
