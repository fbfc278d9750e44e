"""TextCNN, the paper's supervised CNN competitor (LURM §3.3, Tables 2-4).

Kim (2014), "Convolutional Neural Networks for Sentence Classification", §2: word
embeddings, one convolution per window size h with ReLU, max-over-time pooling of each
filter's feature map (Kim's eq. 2-4), dropout on the pooled features and a fully connected
softmax layer. LURM §3.3 applies it "on the embedding sequence of all words appeared in
behaviors", trained together with the classifier on each task (§3.4: Adam 1e-3, batch 256,
the L = 50 most recent behaviours; training in :mod:`.supervised`).

Choices beyond the papers:

- the "sequence of all words" is the behaviours' titles concatenated oldest first with
  their padding dropped (:func:`concatenate_words`), so a window may span two adjacent
  titles, as Kim's windows span a sentence; the padding of titles and of missing
  behaviours is never read, so it cannot change the logits;
- a window sits only where it starts on a word and, unless the user has fewer words than
  the window is wide, ends on one; a user with fewer words than a window gets one window at
  position 0 completed with the zero padding vector, and a user without behaviours one all-zero
  window (finite logits: the filters' biases);
- sizes from ``CompetitorConfig`` (``word_dim``, ``cnn_windows``, ``cnn_filters``; Kim used
  300-d vectors and windows 3, 4, 5 of 100 filters each); the word table is learnt from
  scratch (Kim's CNN-rand) and Kim's l2 max-norm constraint on the output weights is not used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lurm_lite.config import CompetitorConfig

DROPOUT = 0.5  # Kim (2014) §3.1: dropout rate on the penultimate layer


def concatenate_words(tokens: torch.Tensor, lengths: torch.Tensor, min_width: int = 1
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """All words of each user's behaviours as one left-aligned sequence, padding dropped.

    ``tokens`` (B, L, Tr) word ids (0 = padding), ``lengths`` (B,) behaviours per user; the
    behaviours at or after a user's length are ignored whatever they hold. Returns
    ``(words (B, T) int64 padded with 0, n_words (B,) int64)`` with T = max(most words of a
    user, ``min_width``).
    """
    batch, n_behaviours, title_len = tokens.shape
    behaviour_valid = torch.arange(n_behaviours, device=tokens.device)[None, :] < lengths[:, None]  # (B, L)
    flat = tokens.reshape(batch, n_behaviours * title_len)  # (B, L*Tr)
    keep = (flat != 0) & behaviour_valid.repeat_interleave(title_len, dim=1)  # (B, L*Tr)
    n_words = keep.sum(dim=1)  # (B,)
    width = max(int(n_words.max()) if batch else 0, min_width)
    position = keep.cumsum(dim=1) - 1  # (B, L*Tr) the word's place in its user's sequence
    rows, cols = keep.nonzero(as_tuple=True)  # (n_kept,), (n_kept,)
    words = torch.zeros(batch, width, dtype=torch.long, device=tokens.device)  # (B, T)
    words[rows, position[rows, cols]] = flat[rows, cols]
    return words, n_words


class TextCNN(nn.Module):
    """Kim (2014)'s CNN over the concatenated titles of a user's behaviours -> K logits."""

    def __init__(self, vocab_size: int, n_classes: int, config: CompetitorConfig):
        super().__init__()
        self.windows = tuple(config.cnn_windows)
        self.embedding = nn.Embedding(vocab_size, config.word_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(config.word_dim, config.cnn_filters, h) for h in self.windows)
        self.dropout = nn.Dropout(DROPOUT)
        self.out = nn.Linear(config.cnn_filters * len(self.windows), n_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, L, Tr) word ids, ``lengths`` (B,) behaviours per user -> logits (B, K)."""
        words, n_words = concatenate_words(tokens, lengths, min_width=max(self.windows))  # (B, T), (B,)
        x = self.embedding(words).transpose(1, 2)  # (B, word_dim, T); padding rows are 0
        pooled = []
        for h, conv in zip(self.windows, self.convs):
            c = F.relu(conv(x))  # (B, filters, T-h+1) Kim's eq. (2)-(3), feature maps c
            starts = torch.arange(c.shape[2], device=c.device)  # (T-h+1,)
            n_windows = (n_words - h + 1).clamp(min=1)  # (B,) windows ending on a word, at least one
            valid = starts[None, :] < n_windows[:, None]  # (B, T-h+1)
            c = c.masked_fill(~valid[:, None, :], 0.0)  # (B, filters, T-h+1); ReLU output >= 0, so 0 never wins
            pooled.append(c.amax(dim=2))  # (B, filters) Kim's eq. (4), max-over-time pooling
        z = self.dropout(torch.cat(pooled, dim=1))  # (B, filters * n_windows)
        return self.out(z)  # (B, K)
