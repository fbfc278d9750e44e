"""Competitor user representations of §3.3 and the BoI row of Table 5.

Every function gives one vector per user from the behaviours it is handed (the history
window, ``Dataset.history()``), with rows in the order of the ``user_ids`` it is given; a
user without behaviours there gets a zero row (except RFM, see :func:`rfm_features`).

- TF-IDF and Doc2Vec (§3.3) "view the whole user behavior sequence as a document": the
  titles of all the user's behaviours, concatenated in time order.
- BoI (Table 5, first row): the raw whole-life Bag-of-Interests b_T of eq. (4), the
  D-dimensional sparse input that SMEN compresses.
- RFM (not in the paper): the classic recency / frequency / tenure summary of user
  modelling, three numbers per user that measure how active a user is and say nothing of
  what they like: the floor any preference representation has to beat.
- MeanItemEmb: the mean of the item embeddings (§2.1.1) of the user's behaviours, a simple
  dense summary of the same item space LURM builds on.
- LURM(2M) (§3.2): the trained SMEN fed only the last two months before the history end,
  the input length the paper's competitors are limited to on the industrial dataset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer

from lurm_lite.boi import BoISequences, whole_life_boi
from lurm_lite.periods import MONTH_SECONDS
from lurm_lite.smen import SMEN
from lurm_lite.user_training import encode_users, rows_of

# gensim's training routines silently drop the words of a document after the first 10000;
# longer documents are fed as several pieces that share the user's tag.
GENSIM_MAX_WORDS = 10_000


def user_documents(behaviors: pd.DataFrame, titles: np.ndarray, user_ids: np.ndarray) -> list[str]:
    """The document of each user (§3.3): the titles of their behaviours joined by spaces.

    Args:
        behaviors: behaviours with ``user_id`` and ``item_id``, sorted by (user_id, ts), so
            each document follows the user's time order.
        titles: (n_items,) title of each item id.
        user_ids: (n_users,) users, any order; a user without behaviours gets ``""``.

    Grouping is vectorised (one pandas group-by over all behaviours, one ``str.join`` per
    user), so a user with 1e4+ behaviours costs one long join, not a Python loop.
    """
    rows = rows_of(user_ids, behaviors["user_id"].to_numpy())
    kept = rows >= 0
    words = pd.Series(np.asarray(titles, dtype=object)[behaviors["item_id"].to_numpy()[kept]])
    joined = words.groupby(rows[kept], sort=False).agg(" ".join)
    documents = np.full(len(user_ids), "", dtype=object)
    documents[joined.index.to_numpy()] = joined.to_numpy()
    return documents.tolist()


def tfidf_features(behaviors: pd.DataFrame, items: pd.DataFrame, user_ids: np.ndarray,
                   max_features: int | None = None) -> sp.csr_matrix:
    """TF-IDF of each user's document (§3.3): (n_users, V) float32 CSR, rows L2-normalised.

    Exactly scikit-learn's ``TfidfVectorizer(max_features=..., dtype=float32)`` fitted on the
    user documents of :func:`user_documents` (lower case, words of 2+ letters/digits;
    unsupervised, no label is seen; ``max_features`` keeps the V most frequent words, None:
    all), computed without writing the documents: a document's word counts are the sum of
    its behaviours' title word counts, so each title is tokenised once
    (``CountVectorizer`` on the item titles, the same analyzer) and the users' counts are
    the (users x items) behaviour counts times the (items x words) title counts. The word
    selection (alphabetical vocabulary of the words the documents hold, then
    ``max_features`` by total count with scikit-learn's own ordering) and the weighting
    (``TfidfTransformer``) are scikit-learn's, so the matrix is the same to the bit (each row's
    columns sorted); on the demo's 830k behaviours it takes ~1 s instead of ~10 s, and memory
    no longer holds every user's document as one string. The matrix stays sparse into the probe
    (``lurm_lite.downstream.MLPProbe``'s ``nn.EmbeddingBag`` first layer,
    ``downstream.SparseStandardScaler``), so a 1e5-word vocabulary is never densified.
    """
    user_ids = np.asarray(user_ids)
    no_word = ("TF-IDF: no item title that the users' behaviours touch holds a word of 2+ letters or "
               "digits (items.title, e.g. {!r}); give the items titles, or leave TF-IDF out of METHODS")
    titles = items["title"].to_numpy()
    try:  # (n_items, V_all) word counts of each title, vocabulary in alphabetical order
        title_counts = CountVectorizer(dtype=np.float32).fit_transform(titles).tocsr()
    except ValueError:  # scikit-learn's "empty vocabulary"
        raise ValueError(no_word.format(titles[0] if len(titles) else "")) from None
    rows = rows_of(user_ids, behaviors["user_id"].to_numpy())  # (n_behaviours,) user row, -1 if not asked
    kept = rows >= 0
    behaviour_counts = sp.csr_matrix(  # (n_users, n_items) behaviours of each user on each item
        (np.ones(int(kept.sum()), dtype=np.float32), (rows[kept], behaviors["item_id"].to_numpy()[kept])),
        shape=(len(user_ids), len(items)))
    counts = (behaviour_counts @ title_counts).tocsr()  # (n_users, V_all) word counts of each document, exact
    in_documents = np.flatnonzero(counts.getnnz(axis=0))  # the words some document holds: the vectorizer's vocabulary
    if len(in_documents) == 0:
        touched = behaviors["item_id"].to_numpy()[kept]
        raise ValueError(no_word.format(titles[touched[0]] if len(touched) else ""))
    counts = counts[:, in_documents]
    if max_features is not None and counts.shape[1] > max_features:
        totals = np.asarray(counts.sum(axis=0)).ravel()  # (V,) as CountVectorizer._limit_features orders them
        counts = counts[:, np.sort((-totals).argsort()[:max_features])]
    counts.sort_indices()
    return TfidfTransformer().fit_transform(counts).astype(np.float32).tocsr()


def doc2vec_features(behaviors: pd.DataFrame, items: pd.DataFrame, user_ids: np.ndarray, dim: int,
                     epochs: int, seed: int, min_count: int = 2) -> np.ndarray:
    """Doc2Vec of each user's document (§3.3): (n_users, dim) float32.

    gensim's PV-DBOW (``dm=0``: the document vector alone predicts words sampled from the
    document; no word vectors are trained), tokenised like :func:`tfidf_features`. Trained
    with one worker thread and ``seed``, which makes it deterministic: the same inputs give
    the same vectors (several workers would not). Documents longer than gensim's 10000-word
    limit are fed in pieces that share the user's tag. Users without behaviours get a zero
    row. Words seen fewer than ``min_count`` times are ignored.
    """
    documents = user_documents(behaviors, items["title"].to_numpy(), user_ids)
    tokenize = TfidfVectorizer().build_analyzer()
    ascending = np.argsort(np.asarray(user_ids), kind="stable")  # train in user-id order: rows then
    corpus = []                                                  # do not depend on the order asked for
    for tag, row in enumerate(ascending):
        words = tokenize(documents[row])
        corpus += [TaggedDocument(words[start:start + GENSIM_MAX_WORDS], [tag])
                   for start in range(0, len(words), GENSIM_MAX_WORDS)]
    vectors = np.zeros((len(user_ids), dim), dtype=np.float32)
    if not corpus:
        return vectors
    model = Doc2Vec(corpus, vector_size=dim, dm=0, epochs=epochs, seed=seed, workers=1, min_count=min_count)
    trained = np.unique([doc.tags[0] for doc in corpus])
    vectors[ascending[trained]] = model.dv.vectors[trained]
    return vectors


def align_sparse_rows(matrix: sp.spmatrix, row_user_ids: np.ndarray, user_ids: np.ndarray) -> sp.csr_matrix:
    """Rows of ``matrix`` (one per ``row_user_ids``) re-ordered to ``user_ids``; absent users -> zero rows."""
    rows = rows_of(row_user_ids, user_ids)
    found = np.flatnonzero(rows >= 0)
    selection = sp.csr_matrix((np.ones(len(found), dtype=np.float32), (found, rows[found])),
                              shape=(len(user_ids), matrix.shape[0]))
    return (selection @ matrix).tocsr()


def boi_features(behaviors: pd.DataFrame, item_interest: np.ndarray | sp.spmatrix, n_interests: int,
                 user_ids: np.ndarray) -> sp.csr_matrix:
    """The raw whole-life BoI b_T of eq. (4) (Table 5, row "BoI"): (n_users, D) float32 CSR.

    b_T = log(1 + count of the user's behaviours on each interest) over the whole history,
    from :func:`lurm_lite.boi.whole_life_boi`; ``item_interest`` is the hard (n_items,) or
    soft (n_items, D) assignment of §2.1.2. Sparse, it reaches the probe like TF-IDF.
    """
    b_T: BoISequences = whole_life_boi(behaviors["user_id"].to_numpy(), behaviors["item_id"].to_numpy(),
                                       behaviors["ts"].to_numpy(), item_interest, n_interests)
    return align_sparse_rows(b_T.matrix, b_T.user_ids, np.asarray(user_ids)).astype(np.float32)


def rfm_features(behaviors: pd.DataFrame, user_ids: np.ndarray, history_end_ts: int) -> np.ndarray:
    """Classic RFM of each user's history (not in the paper): (n_users, 3) float32.

    Columns, with months of 30.4375 days (:data:`lurm_lite.periods.MONTH_SECONDS`):

    - recency: months from the user's last behaviour to ``history_end_ts``;
    - frequency: log(1 + number of the user's behaviours);
    - tenure: months from the user's first behaviour to ``history_end_ts``.

    It measures activity only (how recent, how much, how long), not preference: the
    baseline that tells a task answered by activity from one that needs the user's
    interests. A user without behaviours gets frequency 0 and recency = tenure = the
    largest tenure among the given users (as if their last behaviour were as old as the
    oldest seen; 0 when no given user has a behaviour). ``behaviors`` needs ``user_id`` and
    ``ts``, in any order; one pandas group-by computes every user's first and last ``ts``
    and count.
    """
    user_ids = np.asarray(user_ids)
    rows = rows_of(user_ids, behaviors["user_id"].to_numpy())
    kept = rows >= 0
    per_user = pd.Series(behaviors["ts"].to_numpy()[kept]).groupby(rows[kept]).agg(["min", "max", "size"])
    seen = per_user.index.to_numpy()  # rows of the users with behaviours
    end = float(history_end_ts)
    tenure = (end - per_user["min"].to_numpy(np.float64)) / MONTH_SECONDS  # (n_seen,)
    recency = (end - per_user["max"].to_numpy(np.float64)) / MONTH_SECONDS  # (n_seen,)
    features = np.zeros((len(user_ids), 3), dtype=np.float32)
    features[:, [0, 2]] = tenure.max() if len(seen) else 0.0
    features[seen, 0] = recency
    features[seen, 1] = np.log1p(per_user["size"].to_numpy(np.float64))
    features[seen, 2] = tenure
    return features


def mean_item_embedding(behaviors: pd.DataFrame, item_embeddings: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """Mean item embedding (§2.1.1 embeddings) of each user's behaviours: (n_users, H) float32.

    One sparse (n_users, n_items) count matrix C (a repeated item counts each time) and one
    product: C @ E / row counts.
    """
    rows = rows_of(user_ids, behaviors["user_id"].to_numpy())
    kept = rows >= 0
    counts = sp.csr_matrix((np.ones(kept.sum(), dtype=np.float32), (rows[kept], behaviors["item_id"].to_numpy()[kept])),
                           shape=(len(user_ids), item_embeddings.shape[0]))
    n_behaviors = np.asarray(counts.sum(axis=1)).ravel()  # (n_users,)
    sums = np.asarray(counts @ item_embeddings, dtype=np.float32)  # (n_users, H)
    return sums / np.maximum(n_behaviors, 1)[:, None].astype(np.float32)


def lurm_last_months(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray, history_end_ts: int,
                     device: torch.device | str | None, months: int = 2) -> np.ndarray:
    """LURM(2M) of §3.2: the frozen SMEN fed only the last ``months`` months: (n_users, M*H).

    Every scale is built from the behaviours of [history_end - months, history_end) only, as
    in the paper (the BoI of the 2-month window itself): the month rows inside the window
    and a year row summed from them, never the whole-year row (``encode_users``). Users
    without a behaviour in the window get the encoding of an empty sequence.
    """
    return encode_users(model, boi, np.asarray(user_ids, dtype=np.int64), device, last_months=months,
                        history_end_ts=history_end_ts)
