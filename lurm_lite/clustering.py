"""Large-scale clustering module of Bag-of-Interests, §2.1.2.

The item embeddings E = {e_i} are clustered into D 'interests' c_1..c_D (D = 1e5 in the
paper, §3.4) trained on a sampled subset E' of E; every item is then attributed to one
(hard) or several (soft) interests. The paper uses HDSC [30]; here faiss k-means stands in.
Embeddings are unit norm (eq. 1), so k-means is spherical: cosine similarity = inner
product, centroids renormalised to the unit sphere after each iteration.

Two paths:

- flat (D < ``large_d_threshold``): one ``faiss.Kmeans``; each iteration compares every
  sampled point with every centroid, O(n * D * H).
- large-D (two levels): at the paper's size (1e6 points into D = 1e5) a flat iteration costs
  ~11 minutes on 2 CPU cores. Instead, k-means into D1 ~ sqrt(D) coarse clusters, then each
  coarse cluster is split by its own k-means into a share of the D centroids proportional
  to its size: O(n * (D1 + D / D1) * H) per iteration, ~150x less at D = 1e5. Assigning
  items to 1e5 centroids uses an inverted-file index over the centroids (``nprobe``).

The faiss GPU index is used only when ``faiss.get_num_gpus() > 0``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from typing import Sequence

import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from lurm_lite.config import ITEMS_PER_INTEREST, ClusteringConfig
from lurm_lite.text import tokenize


def _use_gpu() -> bool:
    return faiss.get_num_gpus() > 0


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return _as_float32(x / np.maximum(norms, 1e-12))


_INIT_METHODS = {
    "random": faiss.ClusteringInitMethod_RANDOM,
    "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    "afk_mc2": faiss.ClusteringInitMethod_AFK_MC2,
}


def _spherical_kmeans(points: np.ndarray, k: int, config: ClusteringConfig, seed: int) -> np.ndarray:
    """faiss spherical k-means of ``points`` (n, H) into k unit-norm centroids (k, H).

    ``max_points_per_centroid``: faiss trains on at most k * max_points_per_centroid points
    (a random subset beyond that); 256 is faiss' default, enough for stable centroids while
    keeping the cost bounded. ``min_points_per_centroid = 1`` because at the paper's size
    the sample holds only ~10 points per centroid (1e6 into 1e5), which is intended.
    ``config.init``: random seeding is free but can put two seeds in one true cluster (a local
    optimum k-means does not leave); k-means++ avoids that at the cost of ~one extra pass
    per centroid (O(n D H)), affordable for small D.
    """
    if k == 1:
        return _normalise(points.mean(axis=0, keepdims=True))
    if k == len(points):  # every point is its own cluster
        return _normalise(points)
    kmeans = faiss.Kmeans(points.shape[1], k, niter=config.niter, spherical=True, seed=seed,
                          max_points_per_centroid=config.max_points_per_centroid, min_points_per_centroid=1,
                          init_method=_INIT_METHODS[config.init], gpu=_use_gpu(), verbose=False)
    kmeans.train(_as_float32(points))
    return _normalise(kmeans.centroids)


def _split_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """Centroids per coarse cluster: ~proportional to its size, >= 1 if non-empty, <= its size,
    summing to ``total`` (needs #non-empty <= total <= sizes.sum())."""
    quota = sizes * (total / sizes.sum())  # (D1,) fractional share
    counts = np.minimum(np.maximum(np.floor(quota), sizes > 0), sizes).astype(np.int64)
    while (missing := total - int(counts.sum())) != 0:
        if missing > 0:  # add one to the clusters furthest below their quota that have room
            room = np.flatnonzero(counts < sizes)
            chosen = room[np.argsort(counts[room] - quota[room], kind="stable")[:missing]]
            counts[chosen] += 1
        else:  # take one from the clusters furthest above their quota that keep >= 1
            spare = np.flatnonzero(counts > 1)
            chosen = spare[np.argsort(quota[spare] - counts[spare], kind="stable")[:-missing]]
            counts[chosen] -= 1
    return counts


def two_level_centroids(points: np.ndarray, n_interests: int, config: ClusteringConfig, seed: int) -> np.ndarray:
    """The large-D path of §2.1.2: hierarchical k-means into D = ``n_interests`` centroids.

    Level 1: spherical k-means into D1 = ``config.coarse_clusters`` (default round(sqrt(D)))
    coarse clusters. Level 2: the points of coarse cluster j are clustered into D_j centroids,
    D_j proportional to its size (as faiss.contrib.clustering.two_level_clustering with
    rebalance; written out here so that clusters smaller than their share and the
    sampling parameters are handled), sum_j D_j = D.

    Returns:
        (D, H) float32 unit-norm centroids, grouped by coarse cluster.
    """
    n_coarse = config.coarse_clusters or max(1, round(math.sqrt(n_interests)))
    coarse = _spherical_kmeans(points, n_coarse, config, seed)  # (D1, H)
    coarse_of_point = assign_hard(points, coarse)  # (n,)
    sizes = np.bincount(coarse_of_point, minlength=n_coarse)  # (D1,)
    counts = _split_counts(sizes, n_interests)  # (D1,), D_j
    order = np.argsort(coarse_of_point, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]

    def sub_centroids(j: int) -> np.ndarray:  # (D_j, H) centroids of coarse cluster j
        return _spherical_kmeans(points[order[bounds[j] : bounds[j + 1]]], int(counts[j]), config, seed + 1 + j)

    def sub_centroids_one_thread(j: int) -> np.ndarray:
        faiss.omp_set_num_threads(1)  # for this worker thread only
        return sub_centroids(j)

    non_empty = [j for j in range(n_coarse) if counts[j] > 0]
    if _use_gpu():
        return np.concatenate([sub_centroids(j) for j in non_empty])
    # The sub-problems are small (~n / D1 points each), where faiss' own threads cost more
    # than they save; single-threaded k-means side by side, one per core, keep every core busy.
    with ThreadPoolExecutor(max_workers=faiss.omp_get_max_threads()) as pool:
        return np.concatenate(list(pool.map(sub_centroids_one_thread, non_empty)))


def train_centroids(embeddings: np.ndarray, n_interests: int, config: ClusteringConfig, seed: int = 0) -> np.ndarray:
    """The 'interest' vocabulary C of §2.1.2: D cluster centres of a sample E' of E.

    E' holds ``config.sample_size`` items drawn without replacement (the paper samples a
    million-level subset of billions of items); on top of that faiss keeps at most
    D * ``config.max_points_per_centroid`` of them per iteration. D >= ``config.large_d_threshold``
    takes the two-level path (:func:`two_level_centroids`), otherwise flat spherical k-means.

    Args:
        embeddings: (n, H) item embeddings e_i (unit norm; renormalised here anyway).
        n_interests: D.
        config: :class:`~lurm_lite.config.ClusteringConfig`.
        seed: seeds the sample and faiss.

    Returns:
        centroids (D, H) float32, unit norm.
    """
    embeddings = _normalise(embeddings)
    rng = np.random.default_rng(seed)
    n_sample = min(config.sample_size, len(embeddings))
    if n_sample < n_interests:
        raise ValueError(f"cannot train D={n_interests} interests on {n_sample} sampled items; choose D <= "
                         f"{n_sample} (notebook 03: -p N_INTERESTS {max(1, n_sample // ITEMS_PER_INTEREST)})")
    sample = embeddings[np.sort(rng.choice(len(embeddings), n_sample, replace=False))]  # E' (n_sample, H)
    if n_interests >= config.large_d_threshold:
        return two_level_centroids(sample, n_interests, config, seed)
    return _spherical_kmeans(sample, n_interests, config, seed)


def _centroid_index(centroids: np.ndarray, nprobe: int | None) -> faiss.Index:
    """Inner-product index over the centroids: exact (flat) or, with ``nprobe``, an IVF index
    that partitions the D centroids into ~sqrt(D) lists and scans ``nprobe`` of them per query."""
    centroids = _normalise(centroids)
    dim, n_centroids = centroids.shape[1], centroids.shape[0]
    if nprobe is None:
        index = faiss.IndexFlatIP(dim)
    else:
        n_lists = max(1, round(math.sqrt(n_centroids)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1
        index.train(centroids)
        index.nprobe = min(nprobe, n_lists)
    index.add(centroids)
    if _use_gpu():
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def _search(embeddings: np.ndarray, centroids: np.ndarray, k: int, nprobe: int | None):
    index = _centroid_index(centroids, nprobe)
    return index.search(_normalise(embeddings), k)  # (n, k) similarities, (n, k) centroid ids


def assign_hard(embeddings: np.ndarray, centroids: np.ndarray, nprobe: int | None = None) -> np.ndarray:
    """Hard cluster assignment of §2.1.2: x_i in c_j for j = argmax_j e_i^T c_j.

    Args:
        embeddings: (n, H); centroids: (D, H).
        nprobe: None for exact search over all D centroids; an int for the large-D fast path
            (IVF over the centroids, ``nprobe`` of ~sqrt(D) lists scanned; ``config.assign_nprobe``).

    Returns:
        (n,) int64 interest of each item.
    """
    _, labels = _search(embeddings, centroids, 1, nprobe)
    return labels[:, 0].astype(np.int64)


def assign_soft(embeddings: np.ndarray, centroids: np.ndarray, top_k: int, nprobe: int | None = None) -> sp.csr_matrix:
    """Soft cluster assignment, the paper's alternative to hard assignment (§2.1.2).

    Each item belongs to its ``top_k`` most similar interests, weighted by cosine similarity
    (negative similarities count as 0; an item with no positive one goes wholly to its
    nearest interest), weights normalised to sum to 1.

    Returns:
        (n, D) float32 CSR, rows sum to 1.
    """
    similarity, labels = _search(embeddings, centroids, top_k, nprobe)  # (n, k), (n, k)
    weights = np.maximum(similarity, 0.0).astype(np.float64)  # (n, k)
    found = labels >= 0  # an IVF search may return fewer than k centroids (-1)
    weights[~found] = 0.0
    labels = np.where(found, labels, labels[:, :1])
    empty = weights.sum(axis=1) == 0
    weights[empty, 0] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    n = len(embeddings)
    rows = np.repeat(np.arange(n), top_k)
    matrix = sp.csr_matrix((weights.ravel(), (rows, labels.ravel())), shape=(n, len(centroids)), dtype=np.float32)
    matrix.eliminate_zeros()
    return matrix


def mean_cosine_to_centroid(embeddings: np.ndarray, centroids: np.ndarray, assignment: np.ndarray) -> float:
    """Spherical k-means objective: mean cosine between each e_i and its assigned centroid."""
    e, c = _normalise(embeddings), _normalise(centroids)
    return float(np.einsum("nh,nh->n", e, c[assignment]).mean())


def cluster_report(assignment: np.ndarray | sp.spmatrix, n_interests: int) -> dict:
    """Sizes of the D interests: items per interest (summed weights for a soft assignment),
    the empty interests, the share of the items in the largest interest (near 1 when the item
    embeddings hardly differ, e.g. items without text embedded by their titles alone), and the
    imbalance factor D * sum(size^2) / n^2 (1 = perfectly even)."""
    if sp.issparse(assignment):
        sizes = np.asarray(assignment.sum(axis=0)).ravel()  # (D,) float
    else:
        sizes = np.bincount(np.asarray(assignment), minlength=n_interests)  # (D,) int
    n = float(sizes.sum())
    empty = np.flatnonzero(sizes == 0)
    return {
        "n_items": n,
        "n_interests": n_interests,
        "sizes": sizes,
        "n_empty": int(empty.size),
        "empty_clusters": empty,
        "size_min": float(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_mean": float(sizes.mean()),
        "size_max": float(sizes.max()),
        "largest_share": float(sizes.max() / n) if n else float("nan"),
        "imbalance": float(n_interests * np.square(sizes, dtype=np.float64).sum() / n**2) if n else float("nan"),
    }


def example_interests(sizes: np.ndarray, n: int, rng: np.random.Generator, min_size: int = 3) -> np.ndarray:
    """Up to ``n`` interests to show as examples: drawn at random among those holding at least
    ``min_size`` items, topped up with the largest remaining non-empty ones when too few are
    that big (few or tiny clusters: show what exists). Empty interests are never returned."""
    sizes = np.asarray(sizes)
    sizeable = np.flatnonzero(sizes >= min_size)
    chosen = rng.choice(sizeable, size=min(n, sizeable.size), replace=False)
    rest = np.setdiff1d(np.flatnonzero(sizes > 0), chosen)
    rest = rest[np.argsort(-sizes[rest], kind="stable")][: n - chosen.size]
    return np.concatenate([chosen, rest]).astype(np.int64)


def report_summary(report: dict) -> dict:
    """The scalar entries of :func:`cluster_report` (no per-interest arrays): what is printed and saved."""
    return {k: v for k, v in report.items() if not isinstance(v, (list, np.ndarray))}


def collapse_warning(report: dict, threshold: float = 0.5) -> str | None:
    """A warning when one interest holds more than ``threshold`` of the items (D > 1), else None.

    That happens when the item embeddings hardly differ, e.g. items without text embedded by
    their fallback titles: notebook 02's item-id path (``ITEM_IDS``) is the remedy.
    """
    if report["n_interests"] > 1 and report["largest_share"] > threshold:
        return (f"WARNING: one interest holds {report['largest_share']:.0%} of the items: the item embeddings "
                "hardly differ (items without text? see notebook 02's item-id path, ITEM_IDS)")
    return None


def topic_recovery(embeddings: np.ndarray, item_interest: np.ndarray, item_topic: np.ndarray,
                   config: ClusteringConfig, seed: int) -> dict[str, float]:
    """NMI of the interests against known item topics (synthetic ground truth), and its floor.

    ``nmi_learned``: NMI(item_topic, item_interest). ``nmi_random_embeddings``: the same
    clustering (``config.n_interests`` centroids, ``seed``) of random unit vectors of the
    embeddings' shape, what an embedding that learned nothing would score.
    """
    from sklearn.metrics import normalized_mutual_info_score

    n_interests = config.n_interests
    random_vectors = _normalise(np.random.default_rng(seed).standard_normal(np.shape(embeddings)))  # (n, H)
    random_assignment = assign_hard(random_vectors, train_centroids(random_vectors, n_interests, config, seed=seed))
    return {"nmi_learned": float(normalized_mutual_info_score(item_topic, item_interest)),
            "nmi_random_embeddings": float(normalized_mutual_info_score(item_topic, random_assignment))}


def assignment_matrix(item_interest: np.ndarray | sp.spmatrix, n_interests: int | None = None) -> sp.csr_matrix:
    """Hard (n,) -> one-hot (n, D) CSR; a soft (n, D) sparse or dense matrix -> CSR float64."""
    if sp.issparse(item_interest) or np.ndim(item_interest) == 2:
        return sp.csr_matrix(item_interest, dtype=np.float64)
    labels = np.asarray(item_interest, dtype=np.int64)
    n_interests = int(labels.max()) + 1 if n_interests is None else n_interests
    return sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), n_interests))


def _category_shares(categories: Sequence) -> tuple[sp.csr_matrix, list[str]]:
    """(n_items, L) shares of each item's categories ('A|B' -> 1/2 each; none: a zero row), L names."""
    parts = [[c.strip() for c in v.split("|") if c.strip()] if isinstance(v, str) else [] for v in categories]
    names = sorted({c for cs in parts for c in cs})
    index = {c: k for k, c in enumerate(names)}
    rows = np.repeat(np.arange(len(parts)), [len(cs) for cs in parts])
    cols = np.array([index[c] for cs in parts for c in cs], dtype=np.int64)
    values = np.concatenate([[1.0 / len(cs)] * len(cs) for cs in parts if cs] or [np.zeros(0)])
    return sp.csr_matrix((values, (rows, cols)), shape=(len(parts), len(names))), names


def _word_matrix(titles: Sequence) -> tuple[sp.csr_matrix, list[str]]:
    """(n_items, V) 0/1 matrix: does the title hold the word (``text.tokenize``; digit-only words left out)."""
    words = [sorted({w for w in tokenize(t) if not w.isdigit()}) if isinstance(t, str) else [] for t in titles]
    vocab = sorted({w for ws in words for w in ws})
    index = {w: k for k, w in enumerate(vocab)}
    rows = np.repeat(np.arange(len(words)), [len(ws) for ws in words])
    cols = np.array([index[w] for ws in words for w in ws], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(words), len(vocab))), vocab


def interest_labels(item_interest: np.ndarray | sp.spmatrix, items: pd.DataFrame, top_words: int = 2,
                    n_interests: int | None = None, item_weight: np.ndarray | None = None) -> list[str]:
    """A name a person can read for each interest c_j of §2.1.2: ``"876 Books: thriller, murder"``.

    The name is the interest's index j, its dominant category and its ``top_words`` most
    distinctive title words:

    - **mass**: every item counts with its assignment weight a(x, j) (hard: 1 on its interest;
      soft: the row of the (n_items, D) matrix), times ``item_weight`` (x) when given (e.g. its
      behaviours in the history: then the label says what people *do* in the interest);
      by default 1 per item, i.e. the dominant category **by item count**;
    - **dominant category**: the category with the largest mass; an item listed in several
      categories (``"Drama|War"``) shares its mass equally among them; items without a
      category (empty or null) count for none. No categorised item: no category part;
    - **top words**: by a TF-IDF-like distinctiveness, p_j(w) * log(n_items / df(w)), with
      p_j(w) the share of the interest's mass whose title holds w (``text.tokenize``) and
      df(w) the number of items whose title holds it. Left out: words of fewer than 2 titles
      (item keys of fallback titles ``item <key> <category>``), words of more than half of
      the titles (``item`` of those fallbacks), English stop words (scikit-learn's list:
      ``and``, ``the``, ``of``...), digit-only words and the words of the label's own
      category; so an ids-only or empty title adds no word. No word left: no word part.

    Returns a list of D strings: ``"j Category: w1, w2"``, ``"j: w1, w2"`` (no category),
    ``"j Category"`` (no word), ``"j"``, or ``"j (empty)"`` for an interest without items.
    """
    A = assignment_matrix(item_interest, n_interests)  # (n_items, D) a(x, j)
    if item_weight is not None:
        A = sp.diags(np.asarray(item_weight, dtype=np.float64)) @ A
    A = A.T.tocsr()  # (D, n_items) mass of each item in each interest
    interest_mass = np.asarray(A.sum(axis=1)).ravel()  # (D,)
    C, categories = _category_shares(items["category"] if "category" in items else [None] * len(items))
    category_mass = (A @ C).toarray() if C.shape[1] else np.zeros((A.shape[0], 0))  # (D, L)
    W, vocab = _word_matrix(items["title"])  # (n_items, V)
    df = np.asarray(W.sum(axis=0)).ravel()  # (V,) titles holding each word
    kept = (df >= 2) & (df <= len(items) / 2)  # (V,) neither an item key nor a word of most titles
    kept &= ~np.isin(np.asarray(vocab, dtype=object), list(ENGLISH_STOP_WORDS))  # (V,) nor a stop word
    idf = np.where(kept, np.log(len(items) / np.maximum(df, 1)), 0.0)  # (V,) 0 for left-out words
    score = (A @ W).tocsr()  # (D, V) mass of the interest's items holding w
    labels = []
    for j in range(A.shape[0]):
        if interest_mass[j] <= 0:
            labels.append(f"{j} (empty)")
            continue
        category = categories[int(np.argmax(category_mass[j]))] if category_mass[j].sum() > 0 else None
        own = set(tokenize(category)) if category else set()
        row = score.getrow(j)
        ranked = sorted(((-(m / interest_mass[j]) * idf[w], vocab[w]) for w, m in zip(row.indices, row.data)
                         if idf[w] > 0 and vocab[w] not in own))  # best first, ties alphabetical
        words = ", ".join(w for _, w in ranked[:top_words])
        labels.append(f"{j}{' ' + category if category else ''}{': ' + words if words else ''}")
    return labels


def interest_members(item_interest: np.ndarray, items: pd.DataFrame, interest: int, n: int = 5,
                     width: int = 80) -> pd.DataFrame:
    """The first ``n`` items of a hard-assigned interest: category and title (cut at ``width`` characters)."""
    members = np.flatnonzero(np.asarray(item_interest) == interest)[:n]
    return pd.DataFrame({"category": items["category"].to_numpy()[members] if "category" in items else None,
                         "title": [str(t)[:width] for t in items["title"].to_numpy()[members]]}, index=members)
