"""Item embedding module of Bag-of-Interests, §2.1.1, eq. (1)-(3).

An item x with words {w_1..w_|x|} (its title, truncated at Tr words, §3.4) is embedded as

    eq. (1)  e_x = proj( 1/|x| * sum_i W_i ),   proj = two residual blocks + L2 normalisation

and the word table W and proj are learned with the in-batch InfoNCE of eq. (2)-(3)
(:func:`lurm_lite.contrastive.info_nce`) on positive pairs (x, y): two behaviours of the same
user at most beta apart in time, |t_x - t_y| < beta (beta = 5 days, §3.4).

Items without text (ids-only logs, whose titles fall back to ``item <key> <category>``) are
beyond the paper, which is silent on them: :func:`use_item_ids` then gives the encoder an
item-id table V, e_x = proj(mean of W_i + V_x), learned by the same objective (item2vec-like).

Only HISTORY-window behaviours may be passed to :func:`train_item_encoder`
(``Dataset.history()``): the label window must not leak into any representation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lurm_lite import io
from lurm_lite.config import ItemEmbeddingConfig
from lurm_lite.contrastive import adam_optimizers, info_nce, optimizer_step
from lurm_lite.text import PAD_ID, unique_title_share

# Auto item-id path: on when fewer than this share of items have an encoded title no other item
# has. Titled catalogues sit near 1 (synthetic, MovieLens, Amazon: every title distinct); an
# ids-only log's fallback titles ``item <key> <category>`` (the key under the vocabulary's min
# count) sit near 0.
UNIQUE_TITLE_SHARE_FOR_TITLES_ONLY = 0.9
# Initial std of the item-id table V. Adam moves a row by ~lr per step whatever its size, so a
# small start lets co-occurrence shape V_x within a few hundred steps; with nn.Embedding's
# N(0, 1) the rows stay near their random start. Measured on the default synthetic data with
# ids-only titles (default scale, lr 1e-3, 292 steps, D = 1000): NMI of the interests against
# the true topics 0.73 with std 0.01, 0.55 with std 1 (the titled encoder: 0.88).
ITEM_ID_INIT_STD = 0.01


class ResidualBlock(nn.Module):
    """x + Linear(ReLU(Linear(x))), one of the two blocks of proj in eq. (1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.inner = nn.Linear(dim, dim)
        self.outer = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, H)
        return x + self.outer(F.relu(self.inner(x)))


class ItemEncoder(nn.Module):
    """The item encoder of eq. (1): e_x = proj(mean of the word embeddings W_i of x [+ V_x]).

    The word table W is an ``nn.EmbeddingBag`` (mode mean, padding id 0 left out of the
    mean). With ``sparse=True`` its gradient is sparse: a batch touches only the rows of the
    words it contains, which :func:`train_item_encoder` updates with ``SparseAdam``.

    Item-id path (``n_items > 0``; not in the paper, see :func:`use_item_ids`): a second table
    V of one row per item is added to the bag before proj, e_x = proj(1/|x| sum_i W_i + V_x).
    Trained by the same eq. (2)-(3) on the same beta-window pairs, V_x learns where item x
    co-occurs (item2vec-like), so items whose titles are identical (an ids-only log's
    ``item <key>`` fallback titles) still get distinct embeddings.
    """

    def __init__(self, vocab_size: int, dim: int, sparse: bool = True, n_items: int = 0):
        super().__init__()
        self.words = nn.EmbeddingBag(vocab_size, dim, mode="mean", sparse=sparse, padding_idx=PAD_ID)  # W
        self.items = nn.Embedding(n_items, dim, sparse=sparse) if n_items else None  # V (id path) or None
        if self.items is not None:
            nn.init.normal_(self.items.weight, std=ITEM_ID_INIT_STD)
        self.proj = nn.Sequential(ResidualBlock(dim), ResidualBlock(dim))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None,
                item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """e_x of eq. (1) for a batch of titles.

        Args:
            tokens: (B, L) word ids padded with 0 (from :func:`lurm_lite.text.encode_titles`).
            lengths: (B,) number of real ids per row; unused (padding is left out of the
                mean by ``padding_idx``), accepted so callers can pass the encoded pair.
            item_ids: (B,) the items' ids; required when the encoder has the item-id path.

        Returns:
            (B, H) unit-norm item embeddings e_x.
        """
        bag = self.words(tokens)  # (B, H): 1/|x| sum_i W_i
        if self.items is not None:
            if item_ids is None:
                raise ValueError("this item encoder has an item-id path (n_items > 0); pass item_ids")
            bag = bag + self.items(item_ids)  # (B, H): + V_x
        return F.normalize(self.proj(bag), dim=1)  # (B, H), ||e_x|| = 1


def use_item_ids(config: ItemEmbeddingConfig, tokens: np.ndarray) -> bool:
    """Whether the encoder gets the item-id path V of :class:`ItemEncoder`.

    The paper (§2.1.1) embeds an item by its words only and is silent about items without
    text; there, every title falls back to ``item <key> <category>`` (data_prep), the key is
    rarer than the vocabulary's min count, and every item of a category embeds identically,
    so k-means puts them all in one interest. ``config.item_ids`` forces the path on (True)
    or off (False); None (default) turns it on only when fewer than
    ``UNIQUE_TITLE_SHARE_FOR_TITLES_ONLY`` of the items have a title of their own
    (:func:`lurm_lite.text.unique_title_share`), so a titled catalogue keeps the paper's
    encoder unchanged. The path costs n_items x H parameters (and SparseAdam's two moments of
    the rows a batch touches), fine for public catalogues of up to millions of items.
    """
    if config.item_ids is not None:
        return bool(config.item_ids)
    return unique_title_share(tokens) < UNIQUE_TITLE_SHARE_FOR_TITLES_ONLY


def sample_positive_pairs(
    user_ids: np.ndarray,
    ts: np.ndarray,
    n_pairs: int,
    beta_seconds: int | None = None,
    beta_behaviors: int | None = None,
    rng: np.random.Generator | None = None,
    max_rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive pairs of §2.1.1: two behaviours of one user with |t_x - t_y| < beta.

    Vectorised over behaviour arrays sorted by (user, ts): draw random anchor rows a; the rows
    of the same user within the window form one contiguous range [lo, hi), found with
    ``np.searchsorted`` on the composite key (user rank, ts); the partner is uniform in that
    range with a itself left out. Anchors without a partner are dropped and more anchors are
    drawn (at most ``max_rounds`` rounds), so users are sampled in proportion to their number
    of behaviours that have a partner.

    Args:
        user_ids, ts: (n,) behaviours sorted by (user_id, ts); ts in seconds.
        n_pairs: pairs wanted.
        beta_seconds: beta of §2.1.1: partners satisfy |t_x - t_y| < beta_seconds.
        beta_behaviors: alternative for coarse timestamps (one date per review, ratings in
            bulk): partners are at most ``beta_behaviors`` positions apart in the user's
            sorted sequence. Exactly one of the two windows must be given.
        rng: numpy Generator (seeded by the caller).

    Returns:
        (idx_x, idx_y): (m,) int64 row indices into the sorted arrays, m = n_pairs unless the
        data has too few anchors with a partner; x != y row-wise, same user, inside the window.
    """
    if (beta_seconds is None) == (beta_behaviors is None):
        raise ValueError("give exactly one of beta_seconds and beta_behaviors")
    rng = rng if rng is not None else np.random.default_rng()
    user_ids = np.asarray(user_ids)
    n = user_ids.size
    if n < 2:
        raise ValueError("need at least two behaviours to sample positive pairs")
    if beta_seconds is not None:
        ts = np.asarray(ts, dtype=np.int64)
        # Composite key: user rank * span + time offset, span wide enough that a window
        # [t - beta, t + beta] never reaches into the next or previous user.
        user_rank = np.cumsum(np.r_[0, user_ids[1:] != user_ids[:-1]], dtype=np.int64)  # (n,)
        t_min = int(ts.min())
        span = int(ts.max()) - t_min + 2 * int(beta_seconds) + 1
        if (int(user_rank[-1]) + 1) * span >= np.iinfo(np.int64).max:
            raise OverflowError("too many users x time span for an int64 (user, ts) key")
        key = user_rank * span + (ts - t_min)  # (n,) ascending

    idx_x, idx_y, found = [], [], 0
    for _ in range(max_rounds):
        anchors = rng.integers(0, n, size=2 * (n_pairs - found) + 16)  # (A,)
        if beta_seconds is not None:
            lo = np.searchsorted(key, key[anchors] - beta_seconds, side="right")  # first row with t > t_a - beta
            hi = np.searchsorted(key, key[anchors] + beta_seconds, side="left")  # first row with t >= t_a + beta
        else:
            anchor_users = user_ids[anchors]
            lo = np.maximum(anchors - beta_behaviors, np.searchsorted(user_ids, anchor_users, side="left"))
            hi = np.minimum(anchors + beta_behaviors + 1, np.searchsorted(user_ids, anchor_users, side="right"))
        has_partner = hi - lo >= 2
        anchors, lo, hi = anchors[has_partner], lo[has_partner], hi[has_partner]
        partner = lo + rng.integers(0, hi - lo - 1)  # uniform over the range minus one slot
        partner += partner >= anchors  # skip the anchor itself
        take = min(n_pairs - found, anchors.size)
        idx_x.append(anchors[:take])
        idx_y.append(partner[:take])
        found += take
        if found == n_pairs:
            break
    if found == 0:
        raise ValueError("no behaviour has a partner of the same user within beta; widen beta "
                         "(notebook 02: e.g. -p BETA_DAYS 30)")
    return np.concatenate(idx_x).astype(np.int64), np.concatenate(idx_y).astype(np.int64)


def train_item_encoder(
    tokens: np.ndarray,
    lengths: np.ndarray,
    behaviors_df: pd.DataFrame,
    config: ItemEmbeddingConfig,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    vocab_size: int | None = None,
) -> tuple[ItemEncoder, list[float]]:
    """Learn the encoder of eq. (1) with the contrastive loss of eq. (2)-(3), §2.1.1.

    Each epoch draws ``config.pairs_per_epoch`` positive pairs (:func:`sample_positive_pairs`
    with ``config.beta_seconds`` or ``config.beta_behaviors``) and walks them in mini-batches
    of n = ``config.batch_size`` pairs; the other 2n - 2 items of a batch are the negatives.
    The word table (sparse gradient) is updated with ``torch.optim.SparseAdam``, proj with
    ``Adam``, both at ``config.lr``. When :func:`use_item_ids` says so, the encoder also has
    the item-id table V (one row per item, updated like the word table), so an ids-only log
    learns co-occurrence embeddings through the same objective.

    Args:
        tokens, lengths: (n_items, Tr) and (n_items,) from :func:`lurm_lite.text.encode_titles`.
        behaviors_df: HISTORY-window behaviours only (``Dataset.history()``), columns
            ``user_id``, ``item_id``, ``ts``, sorted by (user_id, ts).
        config: :class:`~lurm_lite.config.ItemEmbeddingConfig` (H = ``dim``, tau, beta, ...).
        device: passed to :func:`lurm_lite.io.device` ("auto", "cpu", "cuda", ...).
        seed: seeds the pair sampler and the model initialisation.
        vocab_size: rows of the word table, ``len(vocab)``; default: the largest id in
            ``tokens`` + 1.

    Returns:
        The trained encoder (in eval mode; ``encoder.items`` is the table V when the id path is
        on, else None) and the loss of every mini-batch.
    """
    io.seed_everything(seed)
    rng = np.random.default_rng(seed)
    dev = io.device(device)
    vocab_size = vocab_size if vocab_size is not None else int(tokens.max()) + 1
    n_id_rows = len(tokens) if use_item_ids(config, tokens) else 0
    encoder = ItemEncoder(vocab_size, config.dim, sparse=config.sparse_word_grad, n_items=n_id_rows).to(dev)
    # W_i (and V_x): sparse gradients with sparse_word_grad
    word_table = list(encoder.words.parameters()) + ([] if encoder.items is None else list(encoder.items.parameters()))
    optimizers = adam_optimizers(list(encoder.proj.parameters()) + ([] if config.sparse_word_grad else word_table),
                                 word_table if config.sparse_word_grad else [], config.lr)

    all_tokens = torch.as_tensor(tokens, dtype=torch.long, device=dev)  # (n_items, Tr)
    user_ids = behaviors_df["user_id"].to_numpy()
    item_ids = behaviors_df["item_id"].to_numpy()
    ts = behaviors_df["ts"].to_numpy()
    beta_seconds = None if config.beta_behaviors is not None else config.beta_seconds

    losses: list[float] = []
    encoder.train()
    with io.deterministic_kernels(dev):  # the same bits for the same seed on CUDA too
        for epoch in range(config.epochs):
            idx_x, idx_y = sample_positive_pairs(user_ids, ts, config.pairs_per_epoch, beta_seconds=beta_seconds,
                                                 beta_behaviors=config.beta_behaviors, rng=rng)
            items_x = torch.as_tensor(item_ids[idx_x], dtype=torch.long, device=dev)  # (P,)
            items_y = torch.as_tensor(item_ids[idx_y], dtype=torch.long, device=dev)  # (P,)
            starts = range(0, len(items_x) - 1, config.batch_size)  # a batch needs >= 2 pairs
            bar = tqdm(starts, desc=f"item encoder epoch {epoch + 1}/{config.epochs}", disable=not progress)
            for start in bar:
                batch_x = items_x[start : start + config.batch_size]  # (n,)
                batch_y = items_y[start : start + config.batch_size]  # (n,)
                batch_items = torch.cat([batch_x, batch_y])  # (2n,)
                e = encoder(all_tokens[batch_items], item_ids=batch_items)  # (2n, H)
                loss = info_nce(e[: len(batch_x)], e[len(batch_x) :], tau=config.tau)
                optimizer_step(loss, optimizers)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    encoder.eval()
    return encoder, losses


@torch.no_grad()
def embed_items(
    encoder: ItemEncoder,
    tokens: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = 4096,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """e_x of eq. (1) for every item: (n_items, H) float32, unit norm, in item-id order."""
    dev = io.device(device)
    encoder = encoder.to(dev).eval()
    out = np.empty((len(tokens), encoder.words.embedding_dim), dtype=np.float32)  # (n_items, H)
    for start in range(0, len(tokens), batch_size):
        batch = torch.as_tensor(tokens[start : start + batch_size], dtype=torch.long, device=dev)  # (B, Tr)
        ids = torch.arange(start, start + len(batch), device=dev)  # (B,) item ids, for the id path
        out[start : start + batch_size] = encoder(batch, item_ids=ids).float().cpu().numpy()
    return out
