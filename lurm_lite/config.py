"""Hyper-parameters of every stage in one place, with the paper's defaults and named scales.

Paper §3.4: word/item embeddings and all hidden layers H = 128, interest vocabulary
D = 1e5, M = 10 anchors (user representation of M*H = 1280), Adam lr 1e-3, batch 256,
temperature tau = 0.1, positive-pair window beta = 5 days, titles truncated at the length
covering 95% of titles (Tr). The downstream probe is an MLP with one hidden layer of 64,
Adam lr 1e-3, batch 128.

Three scales (DESIGN.md, "Scales"):

- ``tiny``: for tests; each stage runs in seconds on one CPU core.
- ``default``: what ``make demo`` runs; the whole chain in minutes on a 2-core CPU.
- ``paper``: the paper's sizes; meant for a GPU and a large dataset.

Each stage module reads only its own dataclass; ``for_scale(name)`` gives all of them.
``clustering_for_data`` and ``item_config_for_data`` fit a scale's sizes to the data (D at most
one interest per 8 items, ...), reporting every cap; a ``-p`` value that cannot run is a
:class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lurm_lite.periods import DAY_SECONDS

SCALES = ("tiny", "default", "paper")


@dataclass
class TextConfig:
    """§3.4: titles truncated at the length covering ``truncation_quantile`` of titles (Tr)."""

    min_count: int = 2  # words seen fewer times map to the unknown token
    truncation_quantile: float = 0.95  # Tr = this quantile of title lengths in words
    max_vocab: int | None = None  # keep only the most frequent words (None: all)


@dataclass
class ItemEmbeddingConfig:
    """§2.1.1, eq. (1)-(3): contrastive item encoder."""

    dim: int = 128  # H: word and item embedding size
    tau: float = 0.1  # temperature of eq. (2)
    beta_seconds: int = 5 * DAY_SECONDS  # positive pair window beta (|t_x - t_y| < beta)
    beta_behaviors: int | None = None  # alternative window counted in behaviours (coarse timestamps)
    batch_size: int = 1024  # n pairs per mini-batch (2n items)
    lr: float = 1e-3
    epochs: int = 3
    pairs_per_epoch: int = 200_000  # positive pairs sampled per epoch
    sparse_word_grad: bool = True  # sparse gradients for the word table (fast on CPU)
    item_ids: bool | None = None  # item-id path V_x (ids-only logs); None: on when titles tell < 90% of items apart


@dataclass
class ClusteringConfig:
    """§2.1.2: k-means of item embeddings into D interests."""

    n_interests: int = 1000  # D
    niter: int = 20
    sample_size: int = 200_000  # items sampled for training the centroids
    max_points_per_centroid: int = 256  # faiss subsamples to D * this many training points
    soft_top_k: int = 3  # soft assignment: clusters per item
    large_d_threshold: int = 20_000  # from this D on, use the two-level large-D path
    init: str = "random"  # centroid seeding: "random" (cheap at any D), "kmeans++" (O(n D H), robust), "afk_mc2"
    coarse_clusters: int | None = None  # large-D path: first-level clusters (None: round(sqrt(D)))
    assign_nprobe: int = 32  # large-D path: IVF lists of centroids scanned per item when assigning


@dataclass
class BoIConfig:
    """Eq. (4): b_t = log(1 + count) per user and period."""

    granularities: tuple[str, ...] = ("month", "year")  # multi-scale (§2.2.3)
    assignment: str = "hard"  # "hard" or "soft"
    chunk_users: int = 50_000  # users per streamed chunk (bounds memory)


@dataclass
class SMENConfig:
    """§2.2, eq. (5)-(9): multi-anchor encoder, GRU and multi-scale switch."""

    hidden: int = 128  # H
    anchors: int = 10  # M
    scales: tuple[str, ...] = ("month", "year")  # one or two granularities, finest first
    sparse_grad: bool = True  # sparse gradient for W^e (D x H), stepped by SparseAdam: no O(D H) step


@dataclass
class UserTrainingConfig:
    """§2.2.4: self-supervised training of SMEN on pairs of sub-sequences of one user.

    The two views of a user are disjoint continuous spans of the finest scale's periods
    (``scales[0]``, months by default), one on each side of a cut between two consecutive
    behaviour periods: x ends just after a behaviour, y starts at the next one. Each length
    is drawn uniformly in [min_subseq_periods, max_subseq_fraction x life span] (capped at
    max_periods when set) and clipped by the room on its side of the cut. Every scale of a
    view is built from the behaviours inside its span only (``user_training.PairSampler``).
    """

    tau: float = 0.1
    batch_size: int = 256  # users per step: n positive pairs, 2n views
    lr: float = 1e-3
    epochs: int = 10  # one epoch = every user once as the anchor of a pair
    min_subseq_periods: int = 6  # shortest drawn span, in periods of the finest scale (before clipping)
    max_subseq_fraction: float = 0.8  # longest span as a fraction of the life span
    max_periods: int | None = None  # cap on the span in periods of the finest scale (None: the whole life)
    period_dropout: float = 0.1  # each period of a view dropped with this probability (one always kept)
    amp: bool = False  # bfloat16 autocast on cuda
    encode_batch_size: int = 512


@dataclass
class DownstreamConfig:
    """§3.2-3.4: MLP probe on frozen representations, 80/20 split."""

    hidden: int = 64
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200
    # early stopping on a validation part of the training 80% (the paper is silent). 5, not 10:
    # on the demo run (split seeds 0 and 1, every task) LURM's and raw BoI's AUCs were identical
    # with either (their best epoch never followed a 5-epoch plateau), RFM's moved by at most
    # 0.6 points (mean 0.0), and the probes took 37% less time (22.6 s against 35.7 s)
    patience: int = 5
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    bootstrap: int = 1000  # bootstrap resamples of the test set for auc_ci95
    tfidf_max_features: int | None = 100_000  # TF-IDF vocabulary: the most frequent words (None: all)
    doc2vec_dim: int = 128  # PV-DBOW document vector size
    doc2vec_epochs: int = 10
    workers: int | None = None  # processes probing tasks side by side on the CPU (None: one per core; 1: in-process)


@dataclass
class CompetitorConfig:
    """§3.3-3.4: the sequence competitors (``lurm_lite.competitors``) on the L most recent behaviours.

    PTUM and SUMN are pre-trained once (self-supervised, Adam ``lr``) and probed frozen like
    LURM; TextCNN and HAN train end to end per task with Adam 1e-3, batch 256 (§3.4), early
    stopping on the probe's validation share. Sizes beyond the paper's statement are ours.
    """

    sequence_length: int = 50  # L: most recent history behaviours per user (paper, Amazon: 50)
    title_words: int | None = None  # words kept per title (None: notebook 01's Tr)
    word_dim: int = 128  # word embedding size of the title encoders
    hidden: int = 128  # behaviour and user vector size
    heads: int = 4  # PTUM: self-attention heads
    layers: int = 2  # PTUM: Transformer layers
    mask_prob: float = 0.15  # PTUM: share of behaviours masked (masked behaviour prediction)
    next_k: int = 2  # PTUM: behaviours predicted after the input (next-K behaviour prediction)
    negatives: int = 4  # PTUM / SUMN: sampled negatives per positive in the candidate softmax
    hops: int = 3  # SUMN: steps of multi-hop aggregation
    pretrain_epochs: int = 5  # PTUM / SUMN passes over all users
    pretrain_batch_size: int = 128
    lr: float = 1e-3
    supervised_batch_size: int = 256  # TextCNN / HAN (§3.4)
    supervised_max_epochs: int = 20  # TextCNN / HAN, with early stopping
    supervised_patience: int = 3
    cnn_filters: int = 128  # TextCNN: filters per window size
    cnn_windows: tuple[int, ...] = (3,)  # TextCNN: window sizes in words


# Fig. 3's history lengths in months: 2 months, 6 months, 1, 2, 3, 4, 5 years (then the whole life).
PAPER_LENGTHS_MONTHS = (2, 6, 12, 24, 36, 48, 60)


@dataclass
class AnalysisConfig:
    """§3.6-3.7: the ablations of notebooks 06-08 and Fig. 5's sample (``lurm_lite.analysis``).

    The paper's sweeps: Fig. 3's lengths, Table 5's four retrained variants, Fig. 4's D
    from 1e3 to 2e5 (§3.6), Fig. 5's 100 users (§3.7).
    """

    lengths_months: tuple[int, ...] = PAPER_LENGTHS_MONTHS  # Fig. 3: windows before the history end (+ whole life)
    ablation_epochs: int = 10  # epochs of every retrained variant of Table 5 / Fig. 4 and of its LURM reference
    variants: tuple[str, ...] = ("monthly", "yearly", "1anchor-H", "1anchor-MH")  # Table 5's retrained rows
    n_interests_sweep: tuple[int, ...] = (1000, 10_000, 100_000, 200_000)  # Fig. 4's values of D
    tsne_users: int = 100  # Fig. 5: users drawn for the t-SNE of the anchor outputs r^i


@dataclass
class LURMConfig:
    text: TextConfig = field(default_factory=TextConfig)
    item: ItemEmbeddingConfig = field(default_factory=ItemEmbeddingConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    boi: BoIConfig = field(default_factory=BoIConfig)
    smen: SMENConfig = field(default_factory=SMENConfig)
    user_training: UserTrainingConfig = field(default_factory=UserTrainingConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    competitors: CompetitorConfig = field(default_factory=CompetitorConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def for_scale(scale: str) -> LURMConfig:
    """All hyper-parameters for a named scale (``tiny``, ``default`` or ``paper``)."""
    if scale not in SCALES:
        raise ValueError(f"Unknown scale {scale!r}; choose one of {', '.join(SCALES)}.")
    config = LURMConfig()
    if scale == "tiny":
        config.item = dataclasses.replace(config.item, dim=32, batch_size=128, epochs=1, pairs_per_epoch=4_000)
        config.clustering = dataclasses.replace(config.clustering, n_interests=50, niter=10, sample_size=20_000)
        config.smen = dataclasses.replace(config.smen, hidden=16, anchors=4)
        config.user_training = dataclasses.replace(config.user_training, batch_size=64, epochs=4)
        config.downstream = dataclasses.replace(config.downstream, max_epochs=30, bootstrap=100,
                                                doc2vec_dim=32, doc2vec_epochs=5)
        config.analysis = dataclasses.replace(config.analysis, lengths_months=(2, 12, 36), ablation_epochs=1,
                                              n_interests_sweep=(25, 50))
        config.competitors = dataclasses.replace(config.competitors, sequence_length=20, word_dim=16, hidden=16,
                                                 heads=2, layers=1, hops=2, pretrain_epochs=1, pretrain_batch_size=64,
                                                 supervised_max_epochs=3, supervised_patience=1, cnn_filters=16)
    elif scale == "default":
        config.item = dataclasses.replace(config.item, dim=64, epochs=2, pairs_per_epoch=150_000)
        config.clustering = dataclasses.replace(config.clustering, n_interests=1000, niter=20)
        # The paper's H and M; training views up to the whole life (no max_periods), as long as
        # the whole-life timelines encoded. Measured on the demo data (seed 0, age / baby_age /
        # future_Books AUC, 6 epochs, ~75 s an epoch on 2 CPU cores): 84.5 / 78.1 / 77.6
        # (raw BoI 92.2 / 79.6 / 66.4); the loss still falls at 6 epochs (2.47 -> 1.41).
        config.smen = dataclasses.replace(config.smen, hidden=128, anchors=10)
        config.user_training = dataclasses.replace(config.user_training, batch_size=256, epochs=6)
        config.downstream = dataclasses.replace(config.downstream, doc2vec_dim=64, doc2vec_epochs=5)
        # Ablations on 2 CPU cores, measured on synthetic default (~4,900 trainable users,
        # fixed-interval timelines, disjoint views, the packed GRU): an epoch costs 26-28 s for a
        # month + year SMEN (M = 10, H = 128, D = 100, 300 or 1000), 23 s monthly only, 5.4 s
        # yearly only, 3.1 s for 1anchor-128; 1anchor-1280 took 841 s an epoch with the earlier
        # views and GRU (a GRU of H = 1280 does 10x the arithmetic of ten H = 128 anchors). So
        # 1anchor-MH is left out (30x the epoch time of LURM then; -p VARIANTS adds it), and
        # every variant and its equal-budget LURM reference train 1 epoch. Measured on the demo
        # run (seed 0): notebook 04's learning curve has age AUC 83.1 after 1 epoch, 82.9 after 2
        # and 84.5 after 6 (an untrained SMEN's R^ scores 84.0 with a linear probe, LURM's 85.6:
        # the architecture carries most of it), and notebook 08 drew the same conclusion in every
        # finding with 1 and with 2 epochs (one scale below the reference on 5 / 2 of 10 tasks
        # monthly, 8 / 7 yearly; 1anchor-128 below on 5 / 3; Fig. 4's LURM rising from D = 100 to
        # 1000 on 5 / 4; hard and soft at most 2.1 / 2.6 points apart), every Table 5 row within
        # 4.5 AUC points; 08 took 5.8 minutes with its 1-epoch reference trained (04 kept no such
        # snapshot then) instead of 7.4.
        config.analysis = dataclasses.replace(config.analysis, ablation_epochs=1,
                                              variants=("monthly", "yearly", "1anchor-H"),
                                              n_interests_sweep=(100, 300, 1000, 3000, 10_000))
        # The competitors at a size that fits the 2-core demo; the paper's L = 50 behaviours, but
        # 8 words a title (synthetic Tr is 28) and vectors of 32. The paper scale is
        # CompetitorConfig's defaults (sizes 128, Tr words).
        config.competitors = dataclasses.replace(config.competitors, title_words=8, word_dim=32, hidden=32, heads=2,
                                                 layers=1, pretrain_epochs=2, supervised_max_epochs=4,
                                                 supervised_patience=1, cnn_filters=32)
    else:  # paper, §3.4
        config.item = dataclasses.replace(config.item, dim=128, epochs=5, pairs_per_epoch=10_000_000)
        config.clustering = dataclasses.replace(config.clustering, n_interests=100_000, niter=20,
                                                sample_size=1_000_000)
        config.smen = dataclasses.replace(config.smen, hidden=128, anchors=10)
        config.user_training = dataclasses.replace(config.user_training, batch_size=256, epochs=20, amp=True)
    return config


def with_overrides(section, **values):
    """A copy of the dataclass ``section`` with the non-None ``values`` replaced.

    Notebook parameters default to ``None``, meaning "the scale's default"; this turns
    them into a stage config in one line: ``with_overrides(config.item, epochs=ITEM_EPOCHS)``.
    """
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(section)})
    if unknown:
        raise TypeError(f"{type(section).__name__} has no field(s) {', '.join(unknown)}")
    return dataclasses.replace(section, **{k: v for k, v in values.items() if v is not None})


# Presets keep D <= (items k-means sees) / ITEMS_PER_INTEREST: an interest of one or two items
# is a copy of those items, and BoI over such interests is a bag of items with extra steps.
ITEMS_PER_INTEREST = 8


class ConfigError(ValueError):
    """A hyper-parameter the data cannot support; the message names the notebook's ``-p`` parameter."""


@dataclass(frozen=True)
class DataLimit:
    """How far the data lets one hyper-parameter go.

    A scale's preset above ``preset_max`` is lowered to it (and reported); a value the user
    set through ``-p parameter`` is kept unless it lies outside [minimum, hard_max], where the
    stage cannot run at all.
    """

    field: str  # field of the stage's dataclass
    parameter: str  # the notebook parameter that sets it (papermill -p NAME VALUE)
    preset_max: int  # largest value a preset may take on this data
    reason: str  # why, with the data's numbers
    hard_max: int | None = None  # largest value that can run at all (None: any)
    minimum: int = 1


def fit_to_data(section, limits: list[DataLimit], user_set: dict) -> tuple[object, list[dict]]:
    """Apply ``limits`` to the dataclass ``section`` (a stage config after :func:`with_overrides`).

    ``user_set`` holds the fields the user set (non-None notebook parameters). Returns the
    fitted copy and one record per capped preset, ``{"parameter", "field", "preset", "used",
    "reason"}``, for the notebook's output and its stage JSON. Raises :class:`ConfigError`
    naming the ``-p`` parameter when a user-set value cannot run.
    """
    caps = []
    for limit in limits:
        value = getattr(section, limit.field)
        if user_set.get(limit.field) is not None:
            if value < limit.minimum:
                raise ConfigError(f"{limit.parameter} = {value} cannot run: it must be at least {limit.minimum}; "
                                  f"set e.g. -p {limit.parameter} {max(limit.minimum, limit.preset_max)}")
            if limit.hard_max is not None and value > limit.hard_max:
                raise ConfigError(f"{limit.parameter} = {value} cannot run on this data ({limit.reason}): it must "
                                  f"be at most {limit.hard_max}; set e.g. -p {limit.parameter} {limit.preset_max}, "
                                  f"or leave it unset for the data-fitted preset")
        elif value > limit.preset_max:
            section = dataclasses.replace(section, **{limit.field: limit.preset_max})
            caps.append({"parameter": limit.parameter, "field": limit.field, "preset": value,
                         "used": limit.preset_max, "reason": limit.reason})
    return section, caps


def clustering_for_data(section: ClusteringConfig, n_items: int, **overrides) -> tuple[ClusteringConfig, list[dict]]:
    """Notebook 03's clustering config: :func:`with_overrides` (``n_interests`` = N_INTERESTS,
    ``sample_size`` = KMEANS_SAMPLE_SIZE, ``niter``, ``soft_top_k`` = SOFT_TOP_K) fitted to a
    catalogue of ``n_items`` items.

    The sample E' holds at most the n_items items there are. D: a preset keeps at most
    n / ITEMS_PER_INTEREST interests, n = the items k-means trains on; a user's D must not
    exceed n (one item per centroid). The soft assignment's top k cannot exceed D. Returns the
    config and the caps applied (:func:`fit_to_data`).
    """
    config = with_overrides(section, **overrides)
    config, caps = fit_to_data(config, [DataLimit(
        "sample_size", "KMEANS_SAMPLE_SIZE", preset_max=max(1, n_items),
        reason=f"the catalogue holds {n_items:,} items")], overrides)
    n_sample = min(config.sample_size, n_items)
    config, d_caps = fit_to_data(config, [DataLimit(
        "n_interests", "N_INTERESTS", preset_max=max(1, n_sample // ITEMS_PER_INTEREST),
        hard_max=n_sample, reason=f"k-means trains on {n_sample:,} items, {ITEMS_PER_INTEREST} per interest "
                                  f"in a preset and at least 1 per interest")], overrides)
    config, top_k_caps = fit_to_data(config, [DataLimit(
        "soft_top_k", "SOFT_TOP_K", preset_max=config.n_interests, hard_max=config.n_interests,
        reason=f"an item can join at most the D = {config.n_interests} interests")], overrides)
    return config, caps + d_caps + top_k_caps


def item_config_for_data(section: ItemEmbeddingConfig, n_items: int, **overrides) -> tuple[ItemEmbeddingConfig, list[dict]]:
    """Notebook 02's item-encoder config: :func:`with_overrides` fitted to ``n_items`` items.

    A preset batch of n pairs holds at most n_items / 2 pairs (2n items, so a batch's
    in-batch negatives are not mostly copies of its own items) and at most
    ``pairs_per_epoch`` pairs; a batch needs at least 2 pairs (else it has no negatives).
    Returns the config and the caps applied (:func:`fit_to_data`).
    """
    config = with_overrides(section, **overrides)
    most = max(2, min(n_items // 2, config.pairs_per_epoch))
    return fit_to_data(config, [DataLimit(
        "batch_size", "ITEM_BATCH_SIZE", preset_max=most, minimum=2,
        reason=f"{n_items:,} items and {config.pairs_per_epoch:,} pairs per epoch allow batches of at most "
               f"{most:,} pairs")], overrides)
