"""What a recommender does beyond accuracy: catalog-level figures of the top-N lists it gives the dev users.

The lists (``top_lists``): MIND ranks each impression's own candidates, so a list is the top N of one
impression's candidates by the model's score (ties: the earlier-listed candidate first, the rule of
``metrics.impression_ranks``). Each dev user gets one list, from their latest impression with more than
N candidates (with N or fewer every model gives the same set, and all seven figures are of sets); users
with no such impression are left out. The catalog is the pool those lists were chosen from: every
distinct news among the candidates of the chosen impressions. The same impressions serve every model,
so two models' figures (and popularity's) are of the same users and the same pool.

The figures, each a pure NumPy function below on ``lists`` [U,N] of news rows:

* ``coverage``: the share of the catalog that is in anyone's list;
* ``gini``: the Gini coefficient of how often each catalog news is recommended (0: all equally, towards 1:
  a few news take every slot);
* ``intra_list_diversity``: the mean pairwise cosine distance (1 - cosine) of the news vectors in a list;
* ``category_entropy``: the Shannon entropy (bits) of the categories in a list;
* ``calibration_kl``: KL(p || q~) between the category distribution p of a user's clicked history and q of
  their list, with q smoothed as q~ = (1 - a) q + a p, a = 0.01 (Steck, "Calibrated recommendations",
  RecSys 2018), in nats; users with an empty history are left out;
* ``novelty``: the mean self-information -log2 p(i) of the listed news, p(i) = (clicks of i in the train
  impressions + 1) / (train impressions + 1): a news no train impression clicked is the most novel;
* ``personalisation``: 1 minus the mean Jaccard overlap of two users' lists, over every pair of lists
  (over a seeded sample of ``max_lists`` lists when there are more).

Per-list figures (diversity, entropy, calibration, novelty) are means over the lists.
"""
from __future__ import annotations

import numpy as np
import torch

from .baselines import Popularity
from .data.split import Split
from .fileio import DataError
from .metrics import impression_ranks
from .scoring import encode_all_news, encodes_news_apart, score_impressions

CALIBRATION_SMOOTHING = 0.01  # Steck's alpha
MAX_LISTS = 2000  # lists compared pairwise for personalisation (a seeded sample beyond)
FIGURES = ("coverage", "gini", "intra_list_diversity", "category_entropy", "calibration_kl", "novelty",
           "personalisation")


# ---- the formulas -------------------------------------------------------------------------------
def coverage(lists: np.ndarray, catalog: np.ndarray) -> float:
    """The share of ``catalog`` (news rows) that appears in at least one of ``lists`` [U,N].

    >>> coverage(np.array([[1, 2], [2, 3]]), np.array([1, 2, 3, 4, 5]))
    0.6
    """
    return float(np.isin(catalog, lists).mean()) if len(catalog) else float("nan")


def recommendation_counts(lists: np.ndarray, catalog: np.ndarray) -> np.ndarray:
    """How many of ``lists`` [U,N] hold each news of ``catalog`` [C] (0 for one never recommended).

    >>> recommendation_counts(np.array([[1, 2], [2, 3]]), np.array([1, 2, 3, 4])).tolist()
    [1, 2, 1, 0]
    """
    listed, counts = np.unique(lists, return_counts=True)
    at = np.searchsorted(listed, catalog)
    found = (at < len(listed)) & (listed[np.minimum(at, len(listed) - 1)] == catalog)
    return np.where(found, counts[np.minimum(at, len(listed) - 1)], 0)


def gini(counts: np.ndarray) -> float:
    """The Gini coefficient of non-negative ``counts``: sum_i (2i - n - 1) x_(i) / (n sum x), the x sorted
    ascending and i from 1. 0 when all are equal; (n - 1) / n when one holds everything.

    >>> gini(np.array([5, 5, 5, 5])), gini(np.array([0, 0, 0, 4])), round(gini(np.array([1, 2, 3])), 4)
    (0.0, 0.75, 0.2222)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def intra_list_diversity(lists: np.ndarray, vectors: np.ndarray) -> float:
    """The mean over ``lists`` [U,N] of the mean pairwise cosine distance (1 - cosine similarity) of
    their news' ``vectors`` [rows,D] (a zero vector counts as orthogonal to every other).

    >>> v = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    >>> intra_list_diversity(np.array([[1, 2], [1, 3]]), v)  # distances 1 and 0
    0.5
    >>> round(intra_list_diversity(np.array([[1, 2, 3]]), v), 4)  # pairs: 1, 0, 1
    0.6667
    """
    if lists.shape[1] < 2:
        return float("nan")
    unit = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = unit / np.where(norms > 0, norms, 1.0)
    picked = unit[lists]  # [U,N,D]
    cosine = picked @ picked.transpose(0, 2, 1)  # [U,N,D]@[U,D,N] -> [U,N,N]
    upper = np.triu_indices(lists.shape[1], k=1)
    return float((1.0 - cosine[:, upper[0], upper[1]]).mean())


def _category_shares(rows_of: list[np.ndarray], category: np.ndarray, num_categories: int) -> np.ndarray:
    """[U,K] category distribution of each group of news rows (all zeros for an empty group)."""
    shares = np.zeros((len(rows_of), num_categories))
    for user, rows in enumerate(rows_of):
        if len(rows):
            shares[user] = np.bincount(category[rows], minlength=num_categories) / len(rows)
    return shares


def category_entropy(lists: np.ndarray, category: np.ndarray) -> float:
    """The mean over ``lists`` [U,N] of the Shannon entropy, in bits, of their news' categories
    (``category`` [rows]: each news row's category id).

    >>> category = np.array([0, 0, 0, 1, 2])
    >>> category_entropy(np.array([[1, 2, 3, 4]]), category)  # shares 1/2, 1/4, 1/4
    1.5
    >>> category_entropy(np.array([[1, 2], [3, 4]]), category)  # 0 bits, then 1 bit
    0.5
    """
    shares = _category_shares(list(lists), category, int(category.max()) + 1)  # [U,K]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, -shares * np.log2(np.where(shares > 0, shares, 1.0)), 0.0)
    return float(terms.sum(1).mean()) if len(lists) else float("nan")


def calibration_kl(histories: list[np.ndarray], lists: np.ndarray, category: np.ndarray, *,
                   alpha: float = CALIBRATION_SMOOTHING) -> float:
    """The mean over users of KL(p || q~) in nats: p the category distribution of the user's clicked
    ``histories`` (news rows), q that of their list in ``lists`` [U,N], q~ = (1 - alpha) q + alpha p.
    Users with an empty history are left out.

    >>> category = np.array([0, 0, 0, 1, 1])
    >>> round(calibration_kl([np.array([1, 3])], np.array([[1, 2]]), category, alpha=0.5), 6)  # q~=(3/4,1/4)
    0.143841
    >>> calibration_kl([np.array([1, 3]), np.array([])], np.array([[2, 4], [1, 2]]), category)
    0.0
    """
    k = int(category.max()) + 1
    keep = [u for u, h in enumerate(histories) if len(h)]
    if not keep:
        return float("nan")
    p = _category_shares([np.asarray(histories[u], dtype=np.int64) for u in keep], category, k)  # [U',K]
    q = _category_shares([lists[u] for u in keep], category, k)  # [U',K]
    smoothed = (1 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(p > 0, smoothed, 1.0)), 0.0)
    return float(terms.sum(1).mean())


def novelty(lists: np.ndarray, clicks: np.ndarray, impressions: int) -> float:
    """The mean self-information -log2 p(i) of the news in ``lists`` [U,N], with ``clicks`` [rows] each
    news row's click count in ``impressions`` train impressions and p(i) = (clicks + 1) / (impressions + 1).

    >>> novelty(np.array([[1, 2]]), np.array([0, 3, 0]), 3)  # p = 1 and 1/4: 0 and 2 bits
    1.0
    """
    p = (np.asarray(clicks, dtype=np.float64)[lists] + 1.0) / (impressions + 1.0)  # [U,N]
    return float((-np.log2(p)).mean()) if lists.size else float("nan")


def personalisation(lists: np.ndarray) -> float:
    """1 minus the mean Jaccard overlap |A & B| / |A | B| over every pair of ``lists`` [U,N] (rows
    are sets: no news twice in a list). 0: everyone gets the same list; 1: no two lists share a news.

    >>> personalisation(np.array([[1, 2], [1, 2], [3, 4]]))  # overlaps 1, 0, 0
    0.6666666666666667
    >>> personalisation(np.array([[1, 2], [2, 3]]))  # overlap 1/3
    0.6666666666666667
    """
    u = len(lists)
    if u < 2:
        return float("nan")
    listed, slot = np.unique(lists, return_inverse=True)
    hot = np.zeros((u, len(listed)), dtype=np.float32)  # [U,C'] which news each list holds
    np.put_along_axis(hot, slot.reshape(lists.shape), 1.0, axis=1)
    sizes = hot.sum(1, dtype=np.float64)  # [U]
    total, chunk = 0.0, max(1, (1 << 22) // u)
    for lo in range(0, u, chunk):
        shared = (hot[lo: lo + chunk] @ hot.T).astype(np.float64)  # [c,C']@[C',U] -> [c,U], exact counts
        union = sizes[lo: lo + chunk, None] + sizes[None, :] - shared  # [c,U]
        jaccard = np.where(union > 0, shared / np.where(union > 0, union, 1.0), 0.0)
        upper = np.arange(lo, lo + len(shared))[:, None] < np.arange(u)[None, :]  # pairs i < j
        total += float(jaccard[upper].sum(dtype=np.float64))
    return 1.0 - total / (u * (u - 1) / 2)


# ---- the lists of a split -----------------------------------------------------------------------
def list_impressions(split: Split, top: int) -> np.ndarray:
    """Per dev user, their latest impression (by time, then by row) with more than ``top`` candidates:
    the impressions whose top lists are compared, sorted."""
    sizes = np.diff(split.behaviors.candidate_offsets)  # [I]
    eligible = np.flatnonzero(sizes > top)
    if not len(eligible):
        return eligible
    # latest first: by user, then time descending, then row descending; keep each user's first
    order = np.lexsort((-eligible, -split.behaviors.times[eligible], split.users[eligible]))
    chosen = eligible[order]
    first = np.ones(len(chosen), dtype=bool)
    first[1:] = split.users[chosen[1:]] != split.users[chosen[:-1]]
    return np.sort(chosen[first])


def top_lists(scores: np.ndarray, offsets: np.ndarray, split: Split, impressions: np.ndarray,
              top: int) -> np.ndarray:
    """The news rows [U,top] ranked first in each of ``impressions`` by ``scores`` (all candidates of
    the split, delimited by ``offsets``), best first."""
    ranks = impression_ranks(scores, offsets)  # [M]
    candidates = split.behaviors.candidates
    lists = np.empty((len(impressions), top), dtype=np.int64)
    for user, impression in enumerate(impressions):
        lo, hi = offsets[impression], offsets[impression + 1]
        rank = ranks[lo:hi]
        picked = np.flatnonzero(rank <= top)
        lists[user] = candidates[lo:hi][picked[np.argsort(rank[picked])]]
    return lists


def train_clicks(train: Split, dev: Split) -> np.ndarray:
    """Each dev news row's clicks in the train impressions (matched by news id; 0 for news new in dev)."""
    clicks = Popularity(train).clicks
    return np.array([0] + [clicks.get(news_id, 0) for news_id in dev.news.ids[1:]], dtype=np.int64)


def figures(lists: np.ndarray, *, catalog: np.ndarray, vectors: np.ndarray | None, histories: list[np.ndarray],
            category: np.ndarray, clicks: np.ndarray, train_impressions: int, max_lists: int = MAX_LISTS,
            seed: int = 0) -> dict:
    """The seven figures of ``lists`` [U,N] (``FIGURES``), each a float (None where undefined;
    ``intra_list_diversity`` without ``vectors``)."""
    sample = lists
    if len(lists) > max_lists:
        sample = lists[np.sort(np.random.default_rng(seed).choice(len(lists), max_lists, replace=False))]
    values = {
        "coverage": coverage(lists, catalog),
        "gini": gini(recommendation_counts(lists, catalog)),
        "intra_list_diversity": intra_list_diversity(lists, vectors) if vectors is not None else float("nan"),
        "category_entropy": category_entropy(lists, category),
        "calibration_kl": calibration_kl(histories, lists, category),
        "novelty": novelty(lists, clicks, train_impressions),
        "personalisation": personalisation(sample),
    }
    return {name: (value if np.isfinite(value) else None) for name, value in values.items()}


def beyond_accuracy(model, dev_split: Split, train_split: Split, *, top: int = 10,
                    vectors: np.ndarray | None = None, news_vectors: torch.Tensor | None = None,
                    max_lists: int = MAX_LISTS, seed: int = 0) -> dict:
    """The seven beyond-accuracy figures (``FIGURES``) of ``model``'s top-``top`` lists for the dev users
    (see the module docstring), plus ``lists`` (users), ``catalog`` (news in the pool),
    ``personalisation_lists`` (lists compared pairwise) and ``top``.

    ``model``: anything ``scoring.score_impressions`` scores (NRAM, the comparators, the baselines,
    ``baselines.Popularity``). ``vectors`` [N+1,D]: the news vectors for ``intra_list_diversity``, by
    dev news row; by default the model's own (``scoring.encode_all_news``); for a model that does not
    encode news apart from the reader (``scoring.encodes_news_apart``: popularity, DKN, Wide&Deep, NPA)
    ``intra_list_diversity`` is None unless given. Pass
    one model's vectors to compare several models on one ruler. ``news_vectors`` [N+1,D]: the model's
    own, already encoded (a ``recommend.Recommender``'s): scoring reuses them, and so does the diversity
    when no ``vectors`` are given.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    impressions = list_impressions(dev_split, top)
    if not len(impressions):
        raise DataError(f"{dev_split.folder}: no impression has more than {top} candidates to choose a top {top} "
                        "from", settings=("top",))
    if vectors is None and encodes_news_apart(model):
        vectors = news_vectors if news_vectors is not None else encode_all_news(model, dev_split)
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.float().cpu().numpy()
    scores, _labels, offsets = score_impressions(model, dev_split, news_vectors=news_vectors)
    lists = top_lists(scores, offsets, dev_split, impressions, top)
    b = dev_split.behaviors
    catalog = np.unique(np.concatenate([b.candidates[b.candidate_offsets[i]: b.candidate_offsets[i + 1]]
                                        for i in impressions]))
    result = figures(lists, catalog=catalog, vectors=vectors,
                     histories=[dev_split.history_of(int(i)) for i in impressions],
                     category=dev_split.news.category.astype(np.int64), clicks=train_clicks(train_split, dev_split),
                     train_impressions=train_split.num_impressions, max_lists=max_lists, seed=seed)
    return {**result, "lists": int(len(lists)), "catalog": int(len(catalog)),
            "personalisation_lists": int(min(len(lists), max_lists)), "top": int(top)}
