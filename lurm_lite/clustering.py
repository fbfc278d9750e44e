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

import faiss
import numpy as np
import scipy.sparse as sp

from lurm_lite.config import ITEMS_PER_INTEREST, ClusteringConfig


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
