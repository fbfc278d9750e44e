"""Synthetic Amazon-like behaviour logs with ground truth: the kit's embedded default dataset.

THIS IS NOT REAL DATA. It is a generative model, written so that the parts of LURM have
something to find, and so that a tutorial can check what they found against the truth
(``ground_truth/`` beside the contract files). What it models:

Catalogue
    ``n_topics`` latent fine interests ("topics"; tiny 100, default 1000, paper 3000), each
    inside one of 10-20 top-level categories with readable names (Books, Electronics,
    ..., Baby). Every topic owns a few characteristic pronounceable words ("Kelimo",
    "Bodaru"); every category has shared words (its own name among them); a global list
    of filler words ("set", "pro", "zuta") is shared by all. An item belongs to one topic
    and its title (3-60 words, long-tailed, so the 95th-percentile truncation Tr matters)
    mixes the three word sources. Item ids are shuffled: an id says nothing about a topic.

Users (``ground_truth/user_profile.parquet`` holds every latent parameter)
    - register between 2008-01-01 and 2017-07-01 (more of them in later years); 20 % churn
      at a random time, the rest stay active until 2018-11-01.
    - heavy-tailed activity: a log-normal number of behaviours (most tens to hundreds), plus
      one user in a thousand with up to ``max_behaviors`` (1e4 default, 1e5 paper).
    - ``age_group`` (6 classes) tilts which topics the user favours, weakly: every topic's
      weight is multiplied by ``exp(A[age, topic])`` with a small ``A``, so a couple of
      months of behaviour say little about age while years of it say more. Age also sets
      the chance of having a child.
    - long-term interests: 10 favourite topics per year of membership, each kept from one
      year to the next with probability 0.75 (slow drift).
    - short-term interests: one topic per phase of 20-90 days (kept into the next phase
      with probability 0.3), drawn from the same age-tilted popularity.
    - ``baby_age`` (7 classes, null for the 60 % without a child): the child's age on
      2018-01-01. Baby topics each cover a window of child ages (e.g. 0.5-2.5 years), so a
      parent's Baby interests move as the child grows: the label is visible in *how* the
      Baby interests shifted over the years, not in any single month.

Behaviours come in sessions: a burst of 1 + Poisson(lambda_u) behaviours within 0.5-4 days
on one topic (a baby topic when the child is the reason, else a favourite with probability
p_long, else the current short-term topic); 12 % of behaviours are noise from global
popularity. So items bought within beta = 5 days by one user mostly share a topic: this
is what the item-embedding stage (§2.1.1) learns from. Items within a topic are picked by
a log-normal popularity.

Tasks (dataset.json): ``age`` and ``baby_age`` (multiclass, profile rule) and, for each of
four categories, two binary tasks: ``future_<Category>`` (any behaviour in the category in
the label window 2018-01-01..2018-10-31, over every user with history), which depends on
long-term favourites and on recent short-term interests alike, and
``future_<Category>_active``, the same label over the users active in the label window
only (population ``active_in_label_window``). Users without a label-window behaviour
(churned or quiet) are negatives of the first, so it can be answered partly from activity
(did the user stop?); the second leaves them out and asks for preference alone.

Scales: ``tiny`` (300 users, ~30k behaviours, 2k items; tests), ``default`` (5,000 users,
~1e6 behaviours, 20k items), ``paper`` (100,000 users, ~2e7 behaviours, 200k items,
written chunk by chunk of users so memory stays bounded). ``seed`` makes the output
bit-for-bit deterministic.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.schema import behavior_writer, date_to_ts, format_summary, write_dataset
from lurm_lite.io import atomic_path, save_json, save_npy
from lurm_lite.periods import DAY_SECONDS, YEAR_SECONDS

HISTORY_START = "2008-01-01"
HISTORY_END = "2018-01-01"
LABEL_END = "2018-11-01"
REGISTER_END = "2017-07-01"

# Top-level categories in catalogue-share order, with their relative share. Baby is always
# present (baby_age needs it); tiny uses the first 10, default 16, paper all 20.
CATEGORIES = (
    ("Books", 3.0), ("Electronics", 2.2), ("Home", 2.0), ("Clothing", 1.8), ("Sports", 1.5),
    ("Toys", 1.3), ("Baby", 1.2), ("Beauty", 1.0), ("Movies", 1.0), ("Music", 0.9),
    ("Games", 0.8), ("Grocery", 0.8), ("Pets", 0.7), ("Automotive", 0.6), ("Garden", 0.6),
    ("Office", 0.5), ("Tools", 0.5), ("Health", 0.5), ("Instruments", 0.4), ("Crafts", 0.4),
)
FUTURE_TASK_CATEGORIES = ("Books", "Sports", "Movies", "Toys")

AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARE = (0.12, 0.28, 0.24, 0.17, 0.12, 0.07)
CHILD_RATE_BY_AGE = (0.25, 0.6, 0.55, 0.3, 0.1, 0.05)
# baby_age classes: the child's age in years on HISTORY_END lies in [lo, hi).
BABY_AGES = ("expecting", "0-1y", "1-2y", "2-3y", "3-4y", "4-6y", "6-12y")
BABY_AGE_EDGES = (-0.75, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 12.0)
CHILD_AGE_BIN = 0.25  # years; baby topics are looked up per bin of the child's age

FILLER_WORDS = (
    "set", "pack", "new", "with", "for", "and", "of", "the", "edition", "deluxe", "mini",
    "pro", "classic", "black", "white", "large", "small", "kit", "plus", "original",
)
CONSONANTS = "bdfghjklmnprstvz"
VOWELS = "aeiou"


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and behaviour parameters of one scale."""

    n_users: int
    n_items: int
    n_topics: int
    n_categories: int
    median_behaviors: float  # median of the log-normal behaviour count per user
    max_behaviors: int  # cap; power users (1 in 1000) get 30-100 % of it
    chunk_users: int  # users simulated (and written) per chunk
    sigma_behaviors: float = 1.1
    n_favorites: int = 10  # long-term favourite topics per year
    favorite_keep: float = 0.75  # P(a favourite survives into the next year)
    short_keep: float = 0.3  # P(the short-term topic survives into the next phase)
    noise_rate: float = 0.12  # share of behaviours drawn from global popularity
    age_topic_tilt: float = 0.6  # std of A[age, topic], log scale
    age_category_tilt: float = 0.3  # std of A[age, category], log scale
    churn_rate: float = 0.2
    baby_gift_weight: float = 0.1  # popularity factor of baby topics in general (non-child) interests
    topic_words_per_topic: int = 8  # characteristic words per topic
    category_words: int = 15  # shared words per category (besides its name)
    noise_words: int = 150  # synthetic filler words (besides FILLER_WORDS)


SCALES = {
    "tiny": SyntheticConfig(n_users=300, n_items=2_000, n_topics=100, n_categories=10,
                            median_behaviors=52, max_behaviors=2_000, chunk_users=300),
    "default": SyntheticConfig(n_users=5_000, n_items=20_000, n_topics=1_000, n_categories=16,
                               median_behaviors=105, max_behaviors=10_000, chunk_users=5_000),
    "paper": SyntheticConfig(n_users=100_000, n_items=200_000, n_topics=3_000, n_categories=20,
                             median_behaviors=80, max_behaviors=100_000, chunk_users=5_000),
}


# ---------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------


@dataclass
class World:
    """The latent catalogue shared by all users (kept in ``ground_truth/``)."""

    category_names: list[str]
    topic_category: np.ndarray  # (T,) int64
    topic_pop: np.ndarray  # (T,) float64, popularity of each topic (baby topics before the gift factor)
    age_cdf: np.ndarray  # (6, T) float64, row g: CDF of the age-tilted topic distribution
    pop_cdf: np.ndarray  # (T,) float64, CDF of general popularity (noise behaviours)
    item_topic: np.ndarray  # (n_items,) int64
    item_cdf: np.ndarray  # (n_items,) float64 over items sorted by topic: topic k + within-topic CDF
    item_by_topic: np.ndarray  # (n_items,) int64, item ids sorted by topic
    baby_topics: np.ndarray  # (B,) int64 topic ids of the Baby category
    baby_window: np.ndarray  # (B, 2) float64 child-age window [lo, hi) in years
    bin_topics: np.ndarray  # (n_bins, B) int64, eligible baby topics per child-age bin, padded
    bin_count: np.ndarray  # (n_bins,) int64
    titles: list[str]
    topic_words: list[list[str]]


def _words(rng: np.random.Generator, n: int, syllables: int, taken: set[str]) -> list[str]:
    """``n`` distinct pronounceable tokens of ``syllables`` consonant-vowel syllables."""
    sylls = np.array([c + v for c in CONSONANTS for v in VOWELS])
    space = len(sylls) ** syllables
    codes = rng.choice(space, size=min(space, n + len(taken) + 16), replace=False)
    out: list[str] = []
    for code in codes:
        parts = []
        for _ in range(syllables):
            code, r = divmod(int(code), len(sylls))
            parts.append(sylls[r])
        word = "".join(parts)
        if word not in taken:
            taken.add(word)
            out.append(word)
            if len(out) == n:
                return out
    raise ValueError(f"cannot draw {n} distinct {syllables}-syllable words")


def _topic_counts(weights: np.ndarray, n_topics: int, baby: int) -> np.ndarray:
    """Topics per category proportional to weights, >= 2 each and >= 14 for Baby."""
    counts = np.maximum(2, np.round(weights / weights.sum() * n_topics)).astype(np.int64)
    counts[baby] = max(counts[baby], 14)
    counts[np.argmax(counts)] += n_topics - counts.sum()
    return counts


def _inverse_cdf(cdf_rows: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Sample column indices: for each draw, row ``row[i]`` of row-wise CDFs at ``u[i]``."""
    n_rows, n_cols = cdf_rows.shape
    flat = (cdf_rows + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(flat, row + u, side="right") - row * n_cols
    return np.minimum(idx, n_cols - 1)


def build_world(cfg: SyntheticConfig, rng: np.random.Generator) -> World:
    """Categories, topics, vocabularies, items and titles."""
    names = [name for name, _ in CATEGORIES[: cfg.n_categories]]
    weights = np.array([w for _, w in CATEGORIES[: cfg.n_categories]])
    baby = names.index("Baby")
    counts = _topic_counts(weights, cfg.n_topics, baby)
    topic_category = np.repeat(np.arange(len(names)), counts)
    n_topics = topic_category.size
    topic_pop = rng.lognormal(0.0, 0.8, n_topics)
    # Baby topics come mostly from the child (below); outside it only as rare gifts
    general_pop = np.where(topic_category == baby, cfg.baby_gift_weight, 1.0) * topic_pop

    # age tilt A[age, topic] = category part + topic part (log scale, weak)
    tilt = (rng.normal(0.0, cfg.age_category_tilt, (len(AGE_GROUPS), len(names)))[:, topic_category]
            + rng.normal(0.0, cfg.age_topic_tilt, (len(AGE_GROUPS), n_topics)))
    age_p = general_pop[None, :] * np.exp(tilt)
    age_cdf = np.cumsum(age_p / age_p.sum(axis=1, keepdims=True), axis=1)
    pop_cdf = np.cumsum(general_pop / general_pop.sum())

    # items: every topic has one, the rest by sqrt popularity; ids shuffled
    extra = rng.choice(n_topics, cfg.n_items - n_topics, p=np.sqrt(topic_pop) / np.sqrt(topic_pop).sum())
    item_topic = rng.permutation(np.concatenate([np.arange(n_topics), extra]))
    item_pop = rng.lognormal(0.0, 1.2, cfg.n_items)
    item_by_topic = np.argsort(item_topic, kind="stable")
    sorted_topic = item_topic[item_by_topic]
    csum = np.cumsum(item_pop[item_by_topic])
    topic_start = np.searchsorted(sorted_topic, np.arange(n_topics))
    before = np.where(topic_start > 0, csum[np.maximum(topic_start - 1, 0)], 0.0)
    topic_total = np.bincount(sorted_topic, weights=item_pop[item_by_topic], minlength=n_topics)
    item_cdf = sorted_topic + (csum - before[sorted_topic]) / topic_total[sorted_topic]

    # baby topics: windows of child age evenly covering [-0.75, 12)
    baby_topics = np.flatnonzero(topic_category == baby)
    lo_edge, hi_edge = BABY_AGE_EDGES[0], BABY_AGE_EDGES[-1]
    centers = np.linspace(lo_edge, hi_edge, baby_topics.size) + rng.uniform(-0.3, 0.3, baby_topics.size)
    half = rng.uniform(0.6, 1.5, baby_topics.size)
    baby_window = np.stack([centers - half, centers + half], axis=1)
    bin_mid = np.arange(lo_edge, hi_edge, CHILD_AGE_BIN) + CHILD_AGE_BIN / 2
    eligible = (baby_window[None, :, 0] <= bin_mid[:, None]) & (bin_mid[:, None] < baby_window[None, :, 1])
    nearest = np.argmin(np.abs(centers[None, :] - bin_mid[:, None]), axis=1)
    eligible[np.arange(bin_mid.size), nearest] = True  # no bin without a topic
    bin_count = eligible.sum(axis=1)
    bin_topics = np.zeros_like(eligible, dtype=np.int64)
    order = np.argsort(~eligible, axis=1, kind="stable")  # eligible columns first
    bin_topics[:] = baby_topics[order]

    titles, topic_words = _titles(cfg, rng, names, topic_category, item_topic)
    return World(names, topic_category, topic_pop, age_cdf, pop_cdf, item_topic, item_cdf, item_by_topic,
                 baby_topics, baby_window, bin_topics, bin_count, titles, topic_words)


def _titles(cfg: SyntheticConfig, rng: np.random.Generator, names: list[str], topic_category: np.ndarray,
            item_topic: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """Item titles from topic, category and filler words; 3-60 words, long-tailed."""
    n_topics, n_cat, n_items = topic_category.size, len(names), item_topic.size
    taken = set(FILLER_WORDS) | {n.lower() for n in names}
    per_topic = cfg.topic_words_per_topic
    topic_vocab = np.array(_words(rng, n_topics * per_topic, 3, taken)).reshape(n_topics, per_topic)
    cat_vocab = np.array(_words(rng, n_cat * cfg.category_words, 3, taken)).reshape(n_cat, cfg.category_words)
    cat_vocab = np.concatenate([np.array([n.lower() for n in names])[:, None], cat_vocab], axis=1)
    noise_vocab = np.array(list(FILLER_WORDS) + _words(rng, cfg.noise_words, 2, taken))

    length = np.clip(np.round(rng.lognormal(np.log(9.0), 0.55, n_items)), 3, 60).astype(np.int64)
    long_tail = rng.random(n_items) < 0.03
    length[long_tail] = rng.integers(30, 61, long_tail.sum())
    item = np.repeat(np.arange(n_items), length)
    first = np.r_[0, np.cumsum(length)[:-1]]
    source = rng.choice(3, size=item.size, p=(0.45, 0.2, 0.35))
    source[first] = 0  # titles open with a topic word
    zipf = lambda k: np.cumsum(1.0 / np.arange(1, k + 1)) / np.sum(1.0 / np.arange(1, k + 1))  # noqa: E731
    u = rng.random(item.size)
    topic = item_topic[item]
    words = np.where(
        source == 0,
        topic_vocab[topic, np.minimum(np.searchsorted(zipf(cfg.topic_words_per_topic), u), cfg.topic_words_per_topic - 1)],
        np.where(
            source == 1,
            cat_vocab[topic_category[topic], np.minimum((u * cat_vocab.shape[1]).astype(np.int64), cat_vocab.shape[1] - 1)],
            noise_vocab[np.minimum(np.searchsorted(zipf(noise_vocab.size), u), noise_vocab.size - 1)],
        ),
    )
    words = np.char.capitalize(words.astype(str))
    titles = [" ".join(chunk) for chunk in np.split(words, np.cumsum(length)[:-1])]
    return titles, topic_vocab.tolist()


# ---------------------------------------------------------------------------------------
# Users and behaviours
# ---------------------------------------------------------------------------------------


def draw_users(cfg: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Every user's latent parameters (one row each), ``user_id`` 0..n_users-1."""
    n = cfg.n_users
    start, reg_end, label_end = date_to_ts(HISTORY_START), date_to_ts(REGISTER_END), date_to_ts(LABEL_END)
    register = start + (reg_end - start) * rng.random(n) ** 0.7
    churned = rng.random(n) < cfg.churn_rate
    end = np.where(churned, register + (label_end - register) * rng.uniform(0.3, 0.95, n), label_end)

    n_beh = np.clip(np.round(rng.lognormal(np.log(cfg.median_behaviors), cfg.sigma_behaviors, n)), 5, cfg.max_behaviors)
    power = rng.choice(n, max(1, n // 1000), replace=False)
    n_beh[power] = np.round(cfg.max_behaviors * rng.uniform(0.3, 1.0, power.size))
    extra_size = rng.uniform(1.5, 4.0, n)  # session size is 1 + Poisson(extra_size)

    age = rng.choice(len(AGE_GROUPS), n, p=AGE_SHARE)
    has_child = rng.random(n) < np.array(CHILD_RATE_BY_AGE)[age]
    baby_class = rng.integers(0, len(BABY_AGES), n)
    edges = np.array(BABY_AGE_EDGES)
    child_age_at_end = rng.uniform(edges[baby_class], edges[baby_class + 1])
    birth = date_to_ts(HISTORY_END) - child_age_at_end * YEAR_SECONDS

    return pd.DataFrame({
        "user_id": np.arange(n, dtype=np.int64),
        "age_group": age,
        "has_child": has_child,
        "baby_age": np.where(has_child, baby_class, -1),
        "child_birth_ts": np.where(has_child, birth, np.nan),
        "register_ts": register.astype(np.int64),
        "end_ts": end.astype(np.int64),
        "churned": churned,
        "n_behaviors_target": n_beh.astype(np.int64),
        "session_extra_size": extra_size,
        "p_long": rng.uniform(0.5, 0.8, n),
        "p_baby": rng.uniform(0.15, 0.4, n),
        "phase_days": rng.uniform(20.0, 90.0, n),
    })


def _forward_fill(new: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Along axis 1: position j repeats the value of j-1 where ``keep``, else takes ``new``."""
    shape = [1] * new.ndim
    shape[1] = new.shape[1]
    j = np.arange(new.shape[1]).reshape(shape)
    src = np.maximum.accumulate(np.where(keep, 0, j), axis=1)
    return np.take_along_axis(new, src, axis=1)


def simulate_chunk(cfg: SyntheticConfig, world: World, users: pd.DataFrame,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Behaviours of a chunk of users: (user_id, item_id, ts) sorted by (user_id, ts)."""
    m = len(users)
    uid = users["user_id"].to_numpy()
    age = users["age_group"].to_numpy()
    reg = users["register_ts"].to_numpy().astype(np.float64)
    end = users["end_ts"].to_numpy().astype(np.float64)
    extra = users["session_extra_size"].to_numpy()

    # long-term favourites per year of membership and short-term topic per phase (m, E, K) / (m, P)
    n_epochs = int(np.ceil((date_to_ts(LABEL_END) - date_to_ts(HISTORY_START)) / YEAR_SECONDS)) + 1
    fav_new = _inverse_cdf(world.age_cdf, np.repeat(age, n_epochs * cfg.n_favorites),
                           rng.random(m * n_epochs * cfg.n_favorites)).reshape(m, n_epochs, cfg.n_favorites)
    fav = _forward_fill(fav_new, rng.random(fav_new.shape) < cfg.favorite_keep)
    phase_sec = users["phase_days"].to_numpy() * DAY_SECONDS
    n_phases = int(np.ceil((date_to_ts(LABEL_END) - date_to_ts(HISTORY_START)) / (20 * DAY_SECONDS))) + 1
    short_new = _inverse_cdf(world.age_cdf, np.repeat(age, n_phases), rng.random(m * n_phases)).reshape(m, n_phases)
    short = _forward_fill(short_new, rng.random(short_new.shape) < cfg.short_keep)

    # sessions
    n_sess = np.maximum(1, np.round(users["n_behaviors_target"].to_numpy() / (1.0 + extra))).astype(np.int64)
    su = np.repeat(np.arange(m), n_sess)
    start = reg[su] + rng.random(su.size) * np.maximum(end[su] - reg[su] - 4 * DAY_SECONDS, DAY_SECONDS)
    since = start - reg[su]
    epoch = np.minimum((since / YEAR_SECONDS).astype(np.int64), n_epochs - 1)
    k = np.minimum(np.searchsorted(np.cumsum(0.75 ** np.arange(cfg.n_favorites)) / np.sum(0.75 ** np.arange(cfg.n_favorites)),
                                   rng.random(su.size)), cfg.n_favorites - 1)
    topic_long = fav[su, epoch, k]
    phase = np.minimum((since / phase_sec[su]).astype(np.int64), n_phases - 1)
    topic_short = short[su, phase]
    topic = np.where(rng.random(su.size) < users["p_long"].to_numpy()[su], topic_long, topic_short)

    birth = users["child_birth_ts"].to_numpy()[su]
    child_age = (start - birth) / YEAR_SECONDS  # NaN without a child
    lo, hi = BABY_AGE_EDGES[0], BABY_AGE_EDGES[-1]
    with np.errstate(invalid="ignore"):
        baby = (child_age >= lo) & (child_age < hi) & (rng.random(su.size) < users["p_baby"].to_numpy()[su])
    age_bin = np.clip(((np.nan_to_num(child_age, nan=lo) - lo) / CHILD_AGE_BIN).astype(np.int64), 0, world.bin_count.size - 1)
    pick = (rng.random(su.size) * world.bin_count[age_bin]).astype(np.int64)
    topic = np.where(baby, world.bin_topics[age_bin, pick], topic)

    # behaviours: 1 + Poisson(extra) per session within 0.5-4 days
    size = 1 + rng.poisson(extra[su])
    bs = np.repeat(np.arange(su.size), size)
    duration = rng.uniform(0.5, 4.0, su.size) * DAY_SECONDS
    ts = (start[bs] + rng.random(bs.size) * duration[bs]).astype(np.int64)
    b_topic = topic[bs]
    noise = rng.random(bs.size) < cfg.noise_rate
    b_topic[noise] = np.minimum(np.searchsorted(world.pop_cdf, rng.random(int(noise.sum())), side="right"),
                                world.pop_cdf.size - 1)
    pos = np.searchsorted(world.item_cdf, b_topic + rng.random(bs.size), side="right")
    item = world.item_by_topic[np.minimum(pos, world.item_cdf.size - 1)]
    user = uid[su[bs]]
    order = np.lexsort((ts, user))
    return user[order], item[order].astype(np.int32), ts[order]


# ---------------------------------------------------------------------------------------
# Generate a dataset folder
# ---------------------------------------------------------------------------------------


def generate(out: str | Path, scale: str = "default", seed: int = 0, quiet: bool = True) -> Path:
    """Write the synthetic dataset of ``scale`` (tiny|default|paper) to ``out``.

    Deterministic for a given ``seed``. Besides the contract files it writes
    ``out/ground_truth/``: ``item_topic.npy`` (n_items,) the latent fine interest of each
    item, ``topic_category.npy`` (n_topics,) index into ``world.json["categories"]``,
    ``user_profile.parquet`` (every user's latent parameters) and ``world.json``
    (category names, topic words, baby-topic child-age windows, the generator config).
    Returns ``out``.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    cfg = SCALES[scale]
    out = Path(out)
    t0 = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    world = build_world(cfg, rng)
    profile = draw_users(cfg, rng)

    with behavior_writer(out) as write:
        for c, lo in enumerate(range(0, cfg.n_users, cfg.chunk_users)):
            chunk_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, c]))
            write(*simulate_chunk(cfg, world, profile.iloc[lo: lo + cfg.chunk_users], chunk_rng))

    items = pd.DataFrame({
        "item_id": np.arange(cfg.n_items, dtype=np.int32),
        "title": world.titles,
        "category": np.array(world.category_names)[world.topic_category[world.item_topic]],
    })
    baby = profile["baby_age"].to_numpy()
    users = pd.DataFrame({
        "user_id": profile["user_id"],
        "age_group": np.array(AGE_GROUPS)[profile["age_group"].to_numpy()],
        "baby_age": pd.Series(np.where(baby >= 0, np.array(BABY_AGES)[np.maximum(baby, 0)], None), dtype="str"),
    })
    tasks = [task for c in FUTURE_TASK_CATEGORIES for task in (
        {"name": f"future_{c}", "kind": "binary", "rule": {"future_category": c}},
        {"name": f"future_{c}_active", "kind": "binary",
         "rule": {"future_category": c, "population": "active_in_label_window"}},
    )]
    tasks += [
        {"name": "age", "kind": "multiclass", "rule": {"profile": "age_group"}},
        {"name": "baby_age", "kind": "multiclass", "rule": {"profile": "baby_age"}},
    ]
    meta = {
        "name": f"synthetic-{scale}",
        "source": "synthetic",
        "history_start": HISTORY_START,
        "history_end": HISTORY_END,
        "label_end": LABEL_END,
        "tasks": tasks,
        "notes": (
            "SYNTHETIC data from data_prep.synthetic (see its docstring): latent topics inside "
            "top-level categories, session bursts on one topic, weak age tilt, baby interests "
            "that follow the child's age. Ground truth in ground_truth/. Label window "
            f"{HISTORY_END}..{LABEL_END} (exclusive), like the paper's Amazon split."
        ),
        "generator": {"scale": scale, "seed": seed, "config": asdict(cfg)},
    }
    dataset = write_dataset(out, items, None, users, meta)

    gt = out / "ground_truth"
    save_npy(gt / "item_topic.npy", world.item_topic.astype(np.int64))
    save_npy(gt / "topic_category.npy", world.topic_category.astype(np.int64))
    with atomic_path(gt / "user_profile.parquet") as tmp:
        profile.to_parquet(tmp, index=False)
    save_json(gt / "world.json", {
        "categories": world.category_names,
        "age_groups": list(AGE_GROUPS),
        "baby_ages": list(BABY_AGES),
        "topic_words": world.topic_words,
        "baby_topics": world.baby_topics,
        "baby_topic_child_age_window": world.baby_window.round(3),
        "config": asdict(cfg),
        "seed": seed,
    })
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
        print(f"generated in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def ground_truth_topics(dataset_dir: str | Path) -> tuple[np.ndarray, list[str]] | None:
    """The latent topics :func:`generate` wrote: (item_topic (n_items,) int64, topic names), or None
    when ``dataset_dir`` has no ``ground_truth/`` (a dataset not made by this generator).

    Topic k is named ``"topic k (<category>)"``, with ``", baby"`` for the Baby topics that
    carry the ``baby_age`` signal.
    """
    gt = Path(dataset_dir) / "ground_truth"
    if not (gt / "item_topic.npy").exists():
        return None
    world = json.loads((gt / "world.json").read_text())
    baby = set(world.get("baby_topics", []))
    names = [f"topic {k} ({world['categories'][c]}{', baby' if k in baby else ''})"
             for k, c in enumerate(np.load(gt / "topic_category.npy"))]
    return np.load(gt / "item_topic.npy"), names
