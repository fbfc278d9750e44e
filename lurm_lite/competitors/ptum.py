"""PTUM (Wu et al. 2020, "PTUM: Pre-training User Model from Unlabeled User Behaviors via
Self-supervision", arXiv 2010.01494), the BERT-like competitor of the LURM paper (§3.3, Tables 2-4).

Read top to bottom:

1. ``AdditiveAttention`` (:mod:`.encoders`): the additive attention of the PTUM / NRMS family,
   a_i = softmax_i(q^T tanh(V x_i + v)), pooled = sum_i a_i x_i;
2. ``TitleEncoder`` (:mod:`.encoders`; Wu et al.'s behaviour encoder): a behaviour is its item's
   title; word embeddings pooled by attention, then a linear map to the hidden size H;
3. ``PTUM`` (Wu et al.'s user encoder): learned position embeddings over the L
   behaviours, a Transformer encoder and attention pooling over behaviours give the user
   vector u; ``pretraining_losses`` holds the two self-supervision tasks of Wu et al.:
   "Masked Behavior Prediction" (MBP) and "Next K Behaviors Prediction" (NBP);
4. ``sample_batch``: the masks, the next-K targets and the sampled negatives of a batch;
5. ``pretrain_ptum`` (loss = MBP + NBP, unweighted, as in Wu et al. and their released code),
   with a resumable checkpoint; encoding, save and load are ``pretraining.encode / save / load``.

As in the LURM paper, PTUM is pre-trained once and then frozen: its user vectors u are
probed like LURM's (§3.4, "LURM, SUMN and PTUM are not fine-tuned").

Choices beyond Wu et al. (whose released code differs from the text in places):

- MBP predicts a masked behaviour from the Transformer's hidden state at its position
  (BERT's masked LM); the authors' code scores the candidates against the pooled user
  vector u plus the candidate's position embedding, and masks one behaviour per user.
  Here ``mask_prob`` of a user's behaviours are masked (at least one, never all), each
  replaced by a learned mask vector.
- NBP scores candidate e for the k-th next behaviour as u . (e + p_k) with K learned
  vectors p_k (the authors add the position embedding of slot L + k to the candidate); the
  input is the sequence without its last K' = min(K, n - 1) behaviours, so one is kept.
- Negatives are drawn uniformly from the catalogue, never the positive itself (the authors
  draw other users' behaviours, i.e. by popularity).
- The behaviour encoder has no word-level self-attention and the user encoder no
  time-interval embeddings (the authors' code has both); a linear map takes the pooled
  title (word_dim) to H. Dropout ``DROPOUT`` = 0.2 as in the authors' code; the Transformer's
  feed-forward width is ``FEEDFORWARD_FACTOR`` x H (BERT's 4). Word embeddings keep torch's
  N(0, 1) start: on ``tests/test_ptum.py``'s two planted groups (H = 16, lr 5e-3) the loss
  leaves chance level (2 log(1 + P)) within 3 epochs, where words started at N(0, 1/word_dim)
  (candidate scores near 0 at the start) stay at chance for about 10 epochs; the position,
  mask and next-slot vectors start at N(0, ``INIT_STD``^2).

Symbols: B users in a batch, L behaviours per user (L' <= L after trimming a batch to its
longest user), Tr words per title, H hidden size, P negatives, K next behaviours.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lurm_lite import io
from lurm_lite.competitors import pretraining
from lurm_lite.competitors.encoders import AdditiveAttention, TitleEncoder
from lurm_lite.competitors.sequences import BehaviourSequences, TitleTokens, behaviour_tokens
from lurm_lite.config import CompetitorConfig

DROPOUT = 0.2  # word and Transformer dropout (the authors' code)
FEEDFORWARD_FACTOR = 4  # Transformer feed-forward width / H (BERT)
INIT_STD = 0.02  # position, mask and next-slot vectors (BERT's initialisation)
CHECKPOINT_FORMAT = 1
# CompetitorConfig fields that change what a PTUM pre-training epoch computes (pretrain_epochs aside).
TRAINING_FIELDS = ("sequence_length", "word_dim", "hidden", "heads", "layers", "mask_prob", "next_k",
                   "negatives", "pretrain_batch_size", "lr")

# ---------------------------------------------------------------------------------------
# 1-2. Attention pooling and the behaviour encoder
# ---------------------------------------------------------------------------------------


# :class:`~lurm_lite.competitors.encoders.AdditiveAttention` pools words and behaviours;
# the behaviour encoder is ``TitleEncoder(vocab_size, word_dim, H, dropout=DROPOUT)``: word
# embeddings (dropout), attention pooling, a linear map to H, no activation.


# ---------------------------------------------------------------------------------------
# 3. The user encoder and the two pre-training tasks
# ---------------------------------------------------------------------------------------


@dataclass
class PretrainBatch:
    """One pre-training step's input (:func:`sample_batch`): B users, both tasks of Wu et al."""

    tokens: torch.Tensor  # (B, L', Tr) int64 word ids of each user's behaviours, oldest first, 0 at padding
    lengths: torch.Tensor  # (B,) int64 behaviours n of each user
    masked: torch.Tensor  # (B, L') bool: MBP, behaviours replaced by the mask vector
    mbp_candidates: torch.Tensor  # (n_masked, 1 + P, Tr) int64: per masked behaviour (row-major order
    #                               of `masked`) its own title first, then P negatives
    nbp_lengths: torch.Tensor  # (B,) int64 NBP input: the first n - K' behaviours, K' = min(K, n - 1)
    nbp_user: torch.Tensor  # (n_next,) int64 the row of each next behaviour to predict
    nbp_slot: torch.Tensor  # (n_next,) int64 its k, 0 = the first behaviour after the input
    nbp_candidates: torch.Tensor  # (n_next, 1 + P, Tr) int64 its own title first, then P negatives

    def to(self, device: torch.device | str) -> "PretrainBatch":
        return PretrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class PTUM(nn.Module):
    """Behaviour encoder + Transformer user encoder + attention pooling (Wu et al.'s user model).

    ``config`` (a :class:`CompetitorConfig`) gives L = ``sequence_length`` (positions),
    ``word_dim``, H = ``hidden``, ``heads``, ``layers`` and K = ``next_k``.
    """

    def __init__(self, vocab_size: int, config: CompetitorConfig):
        super().__init__()
        if config.next_k < 1:
            raise ValueError(f"PTUM's next-K behaviour prediction needs next_k >= 1, got {config.next_k}")
        self.vocab_size = int(vocab_size)
        self.config = config
        hidden = config.hidden
        self.behaviours = TitleEncoder(vocab_size, config.word_dim, hidden, dropout=DROPOUT)
        self.position = nn.Embedding(config.sequence_length, hidden)  # learned, over the L behaviours
        nn.init.normal_(self.position.weight, std=INIT_STD)
        self.mask_vector = nn.Parameter(INIT_STD * torch.randn(hidden))  # MBP: stands in for a masked behaviour
        layer = nn.TransformerEncoderLayer(hidden, config.heads, dim_feedforward=FEEDFORWARD_FACTOR * hidden,
                                           dropout=DROPOUT, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.user_pool = AdditiveAttention(hidden)
        self.next_slot = nn.Embedding(config.next_k, hidden)  # NBP: p_k added to the k-th next candidate
        nn.init.normal_(self.next_slot.weight, std=INIT_STD)

    def contextual(self, behaviours: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Behaviour vectors (B, L', H) + positions through the Transformer -> hidden states (B, L', H).

        Positions at or after a user's length are masked as keys. A user with no behaviour
        attends over its padding instead (finite, and pooled away by :meth:`pool`).
        """
        position = torch.arange(behaviours.shape[1], device=behaviours.device)  # (L',)
        padding = (position[None, :] >= lengths[:, None]) & (lengths[:, None] > 0)  # (B, L')
        return self.transformer(behaviours + self.position(position), src_key_padding_mask=padding)  # (B, L', H)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Attention pooling over a user's behaviours: (B, L', H) -> u (B, H); 0 for a user without one."""
        position = torch.arange(hidden.shape[1], device=hidden.device)  # (L',)
        return self.user_pool(hidden, position[None, :] < lengths[:, None])  # (B, H)

    def user_vectors(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, L', Tr) int64, lengths (B,) int64 -> u (B, H); L' <= L."""
        return self.pool(self.contextual(self.behaviours(tokens), lengths), lengths)  # (B, H)

    def mbp_logits(self, batch: PretrainBatch) -> torch.Tensor:
        """Wu et al.'s "Masked Behavior Prediction": scores of each masked behaviour's candidates.

        The masked behaviours are replaced by the mask vector; the hidden state h at a masked
        position scores candidate e by h . e. Returns (n_masked, 1 + P), the true one first.
        """
        x = self.behaviours(batch.tokens)  # (B, L', H)
        x = torch.where(batch.masked[..., None], self.mask_vector, x)  # (B, L', H)
        h = self.contextual(x, batch.lengths)[batch.masked]  # (n_masked, H), row-major order
        candidates = self.behaviours(batch.mbp_candidates)  # (n_masked, 1 + P, H)
        return torch.einsum("nh,nch->nc", h, candidates)  # (n_masked, 1 + P)

    def nbp_logits(self, batch: PretrainBatch) -> torch.Tensor:
        """Wu et al.'s "Next K Behaviors Prediction": scores of each next behaviour's candidates.

        u is the user vector of the first ``nbp_lengths`` behaviours (the later ones are
        masked as keys and in the pooling, so they do not reach u); candidate e of slot k
        scores u . (e + p_k). Returns (n_next, 1 + P), the true one first.
        """
        u = self.user_vectors(batch.tokens, batch.nbp_lengths)  # (B, H)
        slot = self.next_slot(batch.nbp_slot)  # (n_next, H) p_k
        candidates = self.behaviours(batch.nbp_candidates) + slot[:, None, :]  # (n_next, 1 + P, H)
        return torch.einsum("nh,nch->nc", u[batch.nbp_user], candidates)  # (n_next, 1 + P)

    def pretraining_losses(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        """{"mbp", "nbp"}: softmax cross-entropy of the true candidate (index 0), mean over predictions."""
        mbp = self.mbp_logits(batch)  # (n_masked, 1 + P)
        nbp = self.nbp_logits(batch)  # (n_next, 1 + P)
        return {"mbp": F.cross_entropy(mbp, mbp.new_zeros(len(mbp), dtype=torch.long)),
                "nbp": F.cross_entropy(nbp, nbp.new_zeros(len(nbp), dtype=torch.long))}


# ---------------------------------------------------------------------------------------
# 4. Sampling a pre-training batch
# ---------------------------------------------------------------------------------------


def _candidates(positive: np.ndarray, n_items: int, negatives: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) true items -> (n, 1 + P) item ids: the true one, then P drawn uniformly from the other items."""
    drawn = rng.integers(0, n_items - 1, size=(len(positive), negatives))  # (n, P) over n_items - 1 ids
    drawn += drawn >= positive[:, None]  # (n, P) skip the true item
    return np.concatenate([positive[:, None], drawn], axis=1)  # (n, 1 + P)


def sample_batch(items: np.ndarray, lengths: np.ndarray, titles: TitleTokens, config: CompetitorConfig,
                 rng: np.random.Generator) -> PretrainBatch:
    """Both tasks' inputs for users of >= 2 behaviours: items (B, L) item ids, lengths (B,), both tasks of Wu et al.

    MBP: m = round(``mask_prob`` x n) behaviours per user, clipped to [1, n - 1], at
    uniformly drawn positions. NBP: the last K' = min(``next_k``, n - 1) behaviours are the
    targets. Each target gets ``negatives`` items drawn uniformly from the other items. The
    batch is trimmed to its longest user (L' columns).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(lengths < 2):
        raise ValueError("PTUM pre-trains on users with at least 2 behaviours (one to predict, one as context)")
    width = int(lengths.max())
    items = np.asarray(items, dtype=np.int64)[:, :width]  # (B, L')
    n_items = len(titles.tokens)
    valid = np.arange(width)[None, :] < lengths[:, None]  # (B, L')
    keys = np.where(valid, rng.random(items.shape), 2.0)  # (B, L') padding sorts last
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # (B, L') rank of each position's key
    n_masked = np.clip(np.rint(config.mask_prob * lengths), 1, lengths - 1)  # (B,)
    masked = rank < n_masked[:, None]  # (B, L')
    mbp = _candidates(items[masked], n_items, config.negatives, rng)  # (n_masked, 1 + P)

    k = np.minimum(config.next_k, lengths - 1)  # (B,) K' per user
    nbp_lengths = lengths - k  # (B,)
    nbp_user = np.repeat(np.arange(len(lengths)), k)  # (n_next,)
    nbp_slot = np.arange(len(nbp_user)) - np.repeat(np.cumsum(k) - k, k)  # (n_next,) 0..K'-1 per user
    nbp_true = items[nbp_user, nbp_lengths[nbp_user] + nbp_slot]  # (n_next,) the behaviours after the input
    nbp = _candidates(nbp_true, n_items, config.negatives, rng)  # (n_next, 1 + P)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))

    return PretrainBatch(tokens=tensor(behaviour_tokens(items, titles)), lengths=tensor(lengths),
                         masked=tensor(masked), mbp_candidates=tensor(titles.tokens[mbp]),
                         nbp_lengths=tensor(nbp_lengths), nbp_user=tensor(nbp_user), nbp_slot=tensor(nbp_slot),
                         nbp_candidates=tensor(titles.tokens[nbp]))


# ---------------------------------------------------------------------------------------
# 5. Pre-training (resumable), encoding, saving
# ---------------------------------------------------------------------------------------


def pretrain_ptum(seqs: BehaviourSequences, titles: TitleTokens, config: CompetitorConfig,
                  device: torch.device | str | None, seed: int, checkpoint_path: str | Path | None = None,
                  progress: bool = True) -> tuple[PTUM, dict]:
    """Pre-train PTUM with loss = MBP + NBP (Wu et al. sum the two tasks' losses, unweighted).

    The loop is :func:`.pretraining.pretrain`'s: Adam (``config.lr``), ``pretrain_epochs``
    passes over the users with >= 2 behaviours (the others have nothing to predict; they are
    still encoded), ``pretrain_batch_size`` users per step; all sampling of epoch e (order,
    masks, negatives) uses ``np.random.default_rng([seed, e])``, so a run resumed from the
    checkpoint of epoch e continues exactly as an uninterrupted one.

    Args:
        device: passed to ``io.device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        checkpoint_path: written after every epoch (:mod:`.pretraining`); resumed when written
            from the same ``TRAINING_FIELDS`` of the config, seed and data, otherwise a line
            says why and training restarts.

    Returns:
        (model in eval mode, ``{"epoch": mean loss per epoch, "seconds": training time,
        resumed epochs included}``).
    """
    if seqs.length > config.sequence_length:
        raise ValueError(f"sequences of L = {seqs.length} exceed the config's sequence_length {config.sequence_length}")
    if len(titles.tokens) < 2:
        raise ValueError("PTUM needs at least 2 items (a negative other than the true behaviour)")
    trainable = np.flatnonzero(seqs.lengths >= 2)  # (n_train,) rows of seqs
    if len(trainable) == 0:
        raise ValueError("PTUM pre-training needs a user with at least 2 behaviours")
    dev = io.device(device)
    torch.manual_seed(seed)
    model = PTUM(titles.vocab_size, config).to(dev)
    inputs = (pretraining.checkpoint_inputs(seqs, titles, {f: getattr(config, f) for f in TRAINING_FIELDS}, seed,
                                            CHECKPOINT_FORMAT) if checkpoint_path is not None else None)

    def loss_of_batch(rows: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        batch = sample_batch(seqs.items[rows], seqs.lengths[rows], titles, config, rng).to(dev)
        parts = model.pretraining_losses(batch)
        return parts["mbp"] + parts["nbp"]

    return pretraining.pretrain("PTUM", model, loss_of_batch, trainable, config, dev, seed, checkpoint_path, inputs,
                                progress)
