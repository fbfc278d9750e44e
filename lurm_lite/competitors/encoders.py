"""The attention pieces the sequence competitors share (§3.3).

- :func:`masked_softmax` and :func:`attention_pool`: softmax over the valid positions of a
  row, then the weighted sum of the positions' vectors (padding gets weight exactly 0, a row
  without a valid position pools to 0);
- :class:`AdditiveAttention`: the additive attention of the NRMS / PTUM family and HAN's word
  level, a_i = softmax_i(q^T tanh(W x_i + b)), pooled = sum_i a_i x_i (PTUM over words and
  behaviours, SUMN over words); HAN keeps its own parameters (Yang et al.'s context vector)
  and pools with :func:`attention_pool`;
- :class:`TitleEncoder`: a behaviour's title -> one vector: word embeddings, additive
  attention over the title's words, a linear map to H and an optional activation. PTUM
  uses it with word dropout and no activation, SUMN with tanh and an attention of width H.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis among ``mask``'s True entries; a row without one gives zeros.

    Masked scores become the dtype's minimum, so their exp underflows to exactly 0 beside any
    real score; multiplying by the mask then zeroes the uniform row of an all-masked input,
    which would otherwise be NaN with -inf.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # (..., n)
    return torch.softmax(filled, dim=-1) * mask  # (..., n)


def attention_pool(scores: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_i softmax_i(scores) x_i over the valid positions.

    scores (..., T), x (..., T, d), mask (..., T) bool -> (..., d).
    """
    weights = masked_softmax(scores, mask)  # (..., T)
    return (weights.unsqueeze(-1) * x).sum(-2)  # (..., d)


class AdditiveAttention(nn.Module):
    """Additive attention pooling: a_i = softmax_i(q^T tanh(W x_i + b)), sum_i a_i x_i.

    ``key`` is W, b (dim -> ``attention_dim``, default dim), ``query`` is q. Only valid
    positions take part; a row without one pools to the zero vector (no NaN).
    """

    def __init__(self, dim: int, attention_dim: int | None = None):
        super().__init__()
        attention_dim = dim if attention_dim is None else attention_dim
        self.key = nn.Linear(dim, attention_dim)  # W, b
        self.query = nn.Linear(attention_dim, 1, bias=False)  # q

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (..., T, dim), valid (..., T) bool -> (..., dim)."""
        scores = self.query(torch.tanh(self.key(x))).squeeze(-1)  # (..., T)
        return attention_pool(scores, x, valid)  # (..., dim)


class TitleEncoder(nn.Module):
    """A behaviour's title -> activation(W^p sum_w a_w e_w + b^p): (..., Tr) word ids, 0 = padding -> (..., H).

    e_w: word embeddings (``word_dim``; ``dropout`` on them while training, none at 0);
    a_w: :class:`AdditiveAttention` over the title's words (width ``attention_dim``, default
    ``word_dim``); W^p, b^p (``project``): ``word_dim`` -> ``hidden``; ``activation``: a module
    applied last (None: the linear map alone). An all-padding title (a padding behaviour)
    pools to 0 and gives activation(b^p).
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, activation: nn.Module | None = None,
                 attention_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)  # e_w
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.pool = AdditiveAttention(word_dim, attention_dim)  # a_w
        self.project = nn.Linear(word_dim, hidden)  # W^p, b^p
        self.activation = nn.Identity() if activation is None else activation

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(-1, tokens.shape[-1])  # (N, Tr)
        words = self.dropout(self.words(flat))  # (N, Tr, word_dim)
        title = self.pool(words, flat != 0)  # (N, word_dim)
        return self.activation(self.project(title)).reshape(*tokens.shape[:-1], -1)  # (..., H)
