"""Scoring and evaluation of any model on a split: the one entry point is ``score_impressions``
(and ``evaluate_split`` on top of it), used by the trainer, the CLI, the experiment suites and
the app.

It picks a path by what the model can do:
* a model that encodes news and users apart (``encode_news`` and ``encode_users``, as NRAM and
  NAML do) is scored the ``run_fast_eval`` way: every news encoded once (with its categories and,
  for a model that reads them, its abstract), every distinct user history once, then dot products;
  LSTUR the same, with one user vector per distinct (history, user id) (``encodes_users_by_id``);
* any other trained model (``score_batch``: DKN and Wide&Deep, whose user side depends on the
  candidate) is scored impression by impression, in batches of whole impressions;
* a count-based model (``score_split``: popularity, random) scores the split itself.

Fast paths (each exact up to float rounding, checked by tests/test_fastpath.py):
* news are encoded once per split, in large batches sorted by title length, each batch cut
  to its longest title: padding columns cost attention work but never
  change a vector, because padding is masked out everywhere;
* impressions that share a history (a MIND user's history is fixed) share one user vector;
  distinct histories are encoded sorted by length, each batch cut to its longest;
* in eval mode a Linear projection of a word or a news vector does not depend on its context,
  so the self-attention projections of every vocabulary word and of every news vector are
  computed once (``fastpath.word_table``/``news_table``) and gathered, instead of once per
  position: these GEMMs were 60% of an evaluation;
* candidate scores are batched matrix-vector products over impressions of similar size, in
  bounded chunks, so a 70k-impression dev split never materialises gigabytes at once;
* on CUDA, ``amp=True`` runs the encoders under bf16 autocast; vectors are returned in fp32.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data.batching import gather_histories, make_batch, trim_titles
from .data.split import Split
from .fileio import DataError
from .metrics import EvalResult, impression_ranks, mean_metrics, ranked_metrics, segment_metrics
from .fastpath import autocast_for, by_length, lengths_of, news_from_table, news_table, users_from_table, word_table
from .model import NRAM, NewsEncoder, UserEncoder, evaluating

SCORE_CHUNK = 1 << 16  # candidates scored per step: bounds the [chunk,D] temporaries
DOT_CHUNK = 1 << 13  # cells per batched product in dot_scores: its [b,w,D] gather stays in cache (4x faster)
SCORE_BLOCK = 1 << 17  # impressions per block of the fast path (a user met in two blocks is encoded twice)
PER_IMPRESSION_SLOTS = 4096  # impression x candidate cells per batch on the per-impression path
MIN_BATCH_ROWS = 64  # a title or history length with fewer rows joins the next ones in one batch


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def title_lengths(tokens: np.ndarray) -> np.ndarray:
    """Per row, one past the last non-padding position (0 for an empty title): [N,L] -> [N]."""
    return lengths_of(torch.from_numpy(np.ascontiguousarray(tokens) != 0)).numpy()  # [N,L] -> [N]


def category_ids(news, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[R] category and subcategory ids of news ``rows``, for a model with ``use_categories``; they are
    ids of the run's train category vocabulary (``run_info.RunInfo.load_split`` maps a split onto it)."""
    return (torch.from_numpy(news.category[rows].astype(np.int64)).to(device),
            torch.from_numpy(news.subcategory[rows].astype(np.int64)).to(device))


@torch.inference_mode()
def encode_all_news(model: NRAM, split: Split, *, batch_size: int = 1024, amp: bool = False,
                    precompute: bool = True) -> torch.Tensor:
    """Vectors of every news of the split, [N+1,D] fp32; row 0 (padding news) is zero.

    ``precompute``: when the split has more title tokens than the vocabulary has words, every
    word's self-attention projections are computed once (``fastpath.word_table``) and gathered; and
    titles go through the encoder in batches of one length each, which need no attention mask."""
    device = model_device(model)
    news = split.news
    lengths = title_lengths(news.tokens)  # [N+1]
    with_categories = getattr(model.config, "use_categories", False)
    abstracts = abstract_tokens(model, split)  # [N+1,A] or None
    encoder = getattr(model, "news_encoder", None)
    words = None
    if (precompute and not model.training and isinstance(encoder, NewsEncoder)
            and encoder.embedding.num_embeddings < lengths.sum()):
        words = word_table(encoder)

    def encode(rows: torch.Tensor, width: int) -> torch.Tensor:
        picked = rows.numpy()
        chunk = torch.from_numpy(news.tokens[picked, :width]).to(device)  # [b,width]
        categories = category_ids(news, picked, device) if with_categories else ()  # 2 x [b] or none
        if words is not None:
            return news_from_table(encoder, words, chunk, *categories).float()  # [b,width] -> [b,D]
        if abstracts is not None:  # each chunk cut to its longest abstract
            body = trim_titles(torch.from_numpy(abstracts[picked])).to(device)  # [b,A] -> [b,A']
            return model.encode_news(chunk, *categories, abstracts=body).float()  # [b,width], [b,A'] -> [b,D]
        return model.encode_news(chunk, *categories).float()  # [b,width] -> [b,D]

    with autocast_for(device, amp):
        vectors = by_length(torch.from_numpy(lengths), batch_size, encode, equal_lengths=precompute,
                            min_rows=MIN_BATCH_ROWS).to(device)  # [N+1,D]
    vectors[0] = 0.0
    return vectors


def abstract_tokens(model: torch.nn.Module, split: Split) -> np.ndarray | None:
    """The split's abstract tokens [N+1,A] for a model that reads abstracts (NAML), None for any other;
    a DataError when such a model meets a split read without them."""
    if not getattr(getattr(model, "config", None), "reads_abstracts", False):
        return None
    if split.news.abstract_tokens is None:
        raise DataError(f"{split.folder}: this model reads abstracts, but the {split.name} split was read without "
                        "them (load it with the run's abstract_len: RunInfo.load_split)")
    return split.news.abstract_tokens


@torch.inference_mode()
def encode_histories(model: NRAM, news_vectors: torch.Tensor, history: np.ndarray, mask: np.ndarray, *,
                     batch_size: int = 1024, amp: bool = False, precompute: bool = True,
                     user_ids: np.ndarray | None = None) -> torch.Tensor:
    """User vectors [B,D] fp32 from history rows [B,H] and mask [B,H]; an empty history gives NRAM's
    zeros (or the learned empty-history vector). ``user_ids`` [B]: each row's id in the run's train user
    vocabulary, for a model that reads them (``encodes_users_by_id``: LSTUR's ``encode_users_with_ids``).

    ``precompute``: histories go through the encoder in chunks of one length each (no padding,
    so no attention mask); and when they hold more clicks than there are news, every news
    vector's user-encoder projections are computed once (``fastpath.news_table``) and gathered."""
    device = news_vectors.device
    if len(history) == 0:
        return torch.zeros(0, news_vectors.shape[1], device=device)
    encoder = getattr(model, "user_encoder", None)
    table = None
    if precompute and not model.training and isinstance(encoder, UserEncoder) and mask.sum() > len(news_vectors):
        table = news_table(encoder, news_vectors)
    if precompute:
        lengths = lengths_of(torch.from_numpy(mask))  # [B]
    else:  # every history at full width, in its own order
        lengths = torch.full((len(mask),), mask.shape[1], dtype=torch.long)  # [B]

    def encode(rows: torch.Tensor, width: int) -> torch.Tensor:
        picked = rows.numpy()
        clicked = torch.from_numpy(history[picked, :width]).to(device)  # [b,width]
        hist_mask = torch.from_numpy(mask[picked, :width]).to(device)  # [b,width]
        if table is not None:
            return users_from_table(encoder, table, clicked, hist_mask).float()  # [b,width] -> [b,D]
        if user_ids is not None:
            ids = torch.from_numpy(user_ids[picked]).to(device)  # [b]
            return model.encode_users_with_ids(news_vectors[clicked], hist_mask, ids).float()  # [b,width,D] -> [b,D]
        return model.encode_users(news_vectors[clicked], hist_mask).float()  # [b,width] -> [b,width,D] -> [b,D]

    with autocast_for(device, amp):
        return by_length(lengths, batch_size, encode, equal_lengths=precompute,
                         min_rows=MIN_BATCH_ROWS).to(device)  # [B,D]


@torch.inference_mode()
def encode_impression_users(model: NRAM, split: Split, news_vectors: torch.Tensor, impressions: np.ndarray, *,
                            batch_size: int = 1024, amp: bool = False, precompute: bool = True) -> torch.Tensor:
    """User vector [I,D] of each impression; impressions with the same history (and, for a model that
    reads user ids, the same user) are encoded once."""
    history, mask = gather_histories(split, impressions, model.config.history_len)  # [I,H], [I,H]
    if len(history) == 0:
        return encode_histories(model, news_vectors, history, mask, batch_size=batch_size, amp=amp)
    user_ids = impression_user_ids(split, impressions) if encodes_users_by_id(model) else None  # [I] or None
    first, inverse = distinct_histories(history, mask, user_ids)  # [I'], [I]
    users = encode_histories(model, news_vectors, history[first], mask[first], batch_size=batch_size,
                             amp=amp, precompute=precompute,
                             user_ids=None if user_ids is None else user_ids[first])  # [I',D]
    return users[torch.from_numpy(inverse).to(users.device)]  # [I',D] -> [I,D]


def impression_user_ids(split: Split, impressions: np.ndarray) -> np.ndarray:
    """[I] each impression's user as an id of the run's train user vocabulary (``Split.model_users``); 0, the
    unknown user, for all when the split carries none, as ``score_batch`` reads a batch without users."""
    if split.model_users is None:
        return np.zeros(len(impressions), dtype=np.int64)
    return split.model_users[impressions].astype(np.int64)


def distinct_histories(history: np.ndarray, mask: np.ndarray,
                       user_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): the row of each distinct (history, mask) pair's first occurrence, [I'],
    and each row's distinct pair, [I], so that ``history[first][inverse] == history``; with
    ``user_ids`` [I], of each distinct (history, mask, user) triple.

    >>> first, inverse = distinct_histories(np.array([[1, 2], [3, 0], [1, 2]]), np.array([[1, 1], [1, 0], [1, 1]]) > 0)
    >>> first.tolist(), inverse.tolist()
    ([0, 1], [0, 1, 0])
    """
    columns = [history, mask.astype(np.int64)]  # [I,H], [I,H]
    if user_ids is not None:
        columns.append(user_ids.astype(np.int64)[:, None])  # [I] -> [I,1]
    key = np.concatenate(columns, axis=1)  # [I,2H] (or [I,2H+1] with the user ids)
    # One 64-bit hash per row, then the distinct hashes: ten times faster than np.unique(axis=0).
    # The rows are compared once afterwards, so a hash collision costs time, never a wrong user.
    _, first, inverse = np.unique(_row_hashes(key), return_index=True, return_inverse=True)
    if not np.array_equal(key[first][inverse.reshape(-1)], key):
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    by_appearance = np.argsort(first)  # distinct rows in the order they first occur
    renumber = np.empty_like(by_appearance)
    renumber[by_appearance] = np.arange(len(by_appearance))
    return first[by_appearance], renumber[inverse]


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each int64 row, [I,W] -> [I]: a wrapping dot product with fixed odd weights."""
    weights = np.random.default_rng(0).integers(1, 1 << 62, rows.shape[1], dtype=np.int64) | 1  # [W]
    with np.errstate(over="ignore"):
        return (rows * weights).sum(axis=1)  # [I,W] -> [I]


def encodes_apart(model: torch.nn.Module) -> bool:
    """Whether the model encodes news and users from their content alone (``encode_news``, ``encode_users``:
    NRAM, NAML). A model that also reads user ids is not: one user vector per history is right only when
    the history is all the user is (LSTUR: ``encodes_users_by_id``; ``encodes_news_apart`` covers both)."""
    config = getattr(model, "config", None)
    if getattr(config, "reads_users", False):
        return False
    return callable(getattr(model, "encode_news", None)) and callable(getattr(model, "encode_users", None))


def encodes_users_by_id(model: torch.nn.Module) -> bool:
    """Whether the model's user vector is a function of the user's id and history alone, with news
    vectors of their own (LSTUR: ``encode_users_with_ids``): the fast path scores it with one user
    vector per distinct (history, user). NPA is not: its news vectors depend on the reader."""
    config = getattr(model, "config", None)
    return (bool(getattr(config, "reads_users", False)) and callable(getattr(model, "encode_news", None))
            and callable(getattr(model, "encode_users_with_ids", None)))


def encodes_news_apart(model: torch.nn.Module) -> bool:
    """Whether the model has news vectors apart from the reader, so that the fast path scores it with
    dot products and its news vectors can be compared (NRAM, NAML, LSTUR; not NPA, DKN or Wide&Deep)."""
    return encodes_apart(model) or encodes_users_by_id(model)


@torch.inference_mode()
def score_impressions(model, split: Split, *, max_impressions: int = 0, batch_size: int = 1024,
                      news_vectors: torch.Tensor | None = None, amp: bool = False,
                      fast: bool | None = None, precompute: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every candidate of the first ``max_impressions`` impressions (all when 0).

    Returns flat ``scores`` and ``labels`` and the ``offsets`` [I+1] that delimit each impression.
    ``fast``: None picks the path by the model (see the module docstring); False forces the
    per-impression path on a model that could take the fast one (the tests compare both).
    ``news_vectors`` passes the fast path's news vectors when they are already encoded.
    ``precompute=False``: the fast path without projection tables, length-sorted histories and
    batched dot products (the plain fp32 path that bench.evaluate times against).
    """
    if callable(getattr(model, "score_split", None)):  # count-based: no torch module
        return model.score_split(split, max_impressions=max_impressions)
    abstract_tokens(model, split)  # a model that reads abstracts refuses a split without them, in one line
    with evaluating(model):
        if (encodes_news_apart(model) if fast is None else fast):
            scores = _fast_scores(model, split, max_impressions=max_impressions, batch_size=batch_size,
                                  news_vectors=news_vectors, amp=amp, precompute=precompute)
        else:
            scores = _per_impression_scores(model, split, max_impressions=max_impressions)
    check_finite_scores(scores)
    offsets, end = split.impression_range(max_impressions)
    return scores, split.behaviors.labels[:end], offsets


def check_finite_scores(scores: np.ndarray) -> None:
    """Refuse NaN or infinite scores: ranked, they would fall into the tie rule's listed order and
    look like a result.

    >>> check_finite_scores(np.array([0.5, np.nan], dtype=np.float32))
    Traceback (most recent call last):
    nram_core.fileio.DataError: the model gives non-finite scores (1 of 2 are NaN or infinite): its weights or inputs overflow
    """
    finite = np.isfinite(scores)
    if not finite.all():
        raise DataError(f"the model gives non-finite scores ({int((~finite).sum())} of {len(scores)} are NaN or "
                        "infinite): its weights or inputs overflow")


def _fast_scores(model: NRAM, split: Split, *, max_impressions: int, batch_size: int,
                 news_vectors: torch.Tensor | None, amp: bool, precompute: bool) -> np.ndarray:
    offsets, end = split.impression_range(max_impressions)
    n = len(offsets) - 1
    if news_vectors is None:
        news_vectors = encode_all_news(model, split, batch_size=batch_size, amp=amp, precompute=precompute)
    dot = dot_scores if precompute else rowwise_dot_scores
    scores = np.empty(end, dtype=np.float32)  # [M] (offsets start at 0)
    for lo in range(0, n, SCORE_BLOCK):  # blocks of impressions: bounded histories, keys and user vectors
        hi = min(lo + SCORE_BLOCK, n)
        users = encode_impression_users(model, split, news_vectors, np.arange(lo, hi), batch_size=batch_size,
                                        amp=amp, precompute=precompute)  # [b,D]
        block = split.behaviors.candidates[offsets[lo]: offsets[hi]]  # [m]
        scores[offsets[lo]: offsets[hi]] = dot(users, news_vectors, offsets[lo: hi + 1], block)  # [m]
    return scores


def _per_impression_scores(model, split: Split, *, max_impressions: int) -> np.ndarray:
    """``model.score_batch`` on batches of whole impressions, about PER_IMPRESSION_SLOTS
    (impression x candidate) cells each, every impression padded to its batch's widest."""
    offsets, end = split.impression_range(max_impressions)
    b = split.behaviors
    sizes = np.diff(offsets)
    device = model_device(model)
    scores = np.zeros(end, dtype=np.float32)
    start = 0
    while start < len(sizes):
        stop, widest = start, 0
        while stop < len(sizes) and (stop == start
                                     or max(widest, sizes[stop]) * (stop + 1 - start) <= PER_IMPRESSION_SLOTS):
            widest = max(widest, int(sizes[stop]))
            stop += 1
        impressions = np.arange(start, stop)
        history, mask = gather_histories(split, impressions, model.config.history_len)  # [b,H], [b,H]
        lo = b.candidate_offsets[impressions]
        width = np.arange(widest)
        valid = width[None, :] < sizes[impressions][:, None]  # [b,C]
        candidates = np.where(valid, b.candidates[np.where(valid, lo[:, None] + width, 0)], 0).astype(np.int64)
        users = split.model_users[impressions] if split.model_users is not None else None  # [b] or None
        logits = model.score_batch(make_batch(split, history, mask, candidates, users=users).to(device))  # [b,C]
        scores[offsets[start]: offsets[stop]] = logits.float().cpu().numpy()[valid]  # [b,C] -> [m]
        start = stop
    return scores


@torch.inference_mode()
def dot_scores(users: torch.Tensor, news_vectors: torch.Tensor, offsets: np.ndarray,
               candidates: np.ndarray) -> np.ndarray:
    """Score of each candidate: its news vector . its impression's user vector, [M] fp32 NumPy.

    Impression ``i`` owns ``candidates[offsets[i]:offsets[i+1]]`` and ``users[i]``. Impressions
    of similar size go together, each padded to its chunk's largest (padding is news row 0),
    so that a chunk is one batched matrix-vector product and no user vector is copied per
    candidate; a chunk holds about ``DOT_CHUNK`` cells, so that its gathered news vectors are
    still in the CPU's cache when the product reads them. Every chunk gathers into one reused
    buffer: a fresh 10 MB tensor per chunk cost more in page faults than its product."""
    device = news_vectors.device
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)  # [I]
    order = np.argsort(sizes, kind="stable")  # [I] smallest first
    ordered = sizes[order]
    scores = np.empty(int(offsets[-1] - offsets[0]) if len(offsets) else 0, dtype=np.float32)  # [M]
    if not len(scores):
        return scores
    gathered = news_vectors.new_empty(max(DOT_CHUNK, int(ordered[-1])), news_vectors.shape[1])  # [cells,D]
    start = 0
    while start < len(order):
        cells = np.arange(1, len(order) - start + 1) * np.maximum(ordered[start:], 1)  # rising: sizes are sorted
        stop = start + max(1, int(np.searchsorted(cells, DOT_CHUNK, side="right")))
        rows = order[start:stop]  # [b]
        width = max(1, int(ordered[stop - 1]))
        index = offsets[rows][:, None] + np.arange(width)[None, :]  # [b,w]
        valid = np.arange(width)[None, :] < sizes[rows][:, None]  # [b,w]
        picked = torch.from_numpy(np.where(valid, candidates[np.where(valid, index - offsets[0], 0)], 0)
                                  .astype(np.int64)).to(device)  # [b,w]
        who = torch.from_numpy(rows).to(device)  # [b]
        news = torch.index_select(news_vectors, 0, picked.view(-1), out=gathered[: picked.numel()])  # [b*w,D]
        news = news.view(len(rows), width, -1).transpose(1, 2)  # [b*w,D] -> [b,D,w]
        chunk = torch.bmm(users[who].unsqueeze(1), news).squeeze(1)  # [b,1,D]@[b,D,w] -> [b,w]
        scores[index[valid] - offsets[0]] = chunk.float().cpu().numpy()[valid]  # [b,w] -> [m]
        start = stop
    return scores


@torch.inference_mode()
def rowwise_dot_scores(users: torch.Tensor, news_vectors: torch.Tensor, offsets: np.ndarray,
                       candidates: np.ndarray) -> np.ndarray:
    """``dot_scores`` as one row-wise product per candidate (both vectors gathered per candidate):
    the plain path that ``precompute=False`` keeps, for comparison."""
    device = news_vectors.device
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # [M] impression of each candidate
    scores = np.empty(len(owner), dtype=np.float32)  # [M]
    for lo in range(0, len(owner), SCORE_CHUNK):
        hi = min(lo + SCORE_CHUNK, len(owner))
        who = torch.from_numpy(owner[lo:hi]).to(device)  # [m]
        rows = torch.from_numpy(candidates[lo:hi].astype(np.int64)).to(device)  # [m]
        scores[lo:hi] = (users[who] * news_vectors[rows]).sum(-1).float().cpu().numpy()  # [m,D]*[m,D] -> [m]
    return scores


def evaluate_split(model, split: Split, *, max_impressions: int = 0, batch_size: int = 1024, amp: bool = False,
                   segments: tuple[tuple[str, int, int], ...] = (), precompute: bool = True) -> EvalResult:
    """The official metrics of ``model`` on the first ``max_impressions`` impressions of ``split``
    (all when 0), scored by ``score_impressions``; with ``segments`` (e.g.
    ``metrics.HISTORY_SEGMENTS``), also per user segment of history length.

    Equal scores are ordered by ``metrics.impression_ranks``'s tie rule, the one ``predict`` writes,
    so where every candidate has a news row (as in MIND itself) these figures are the official
    scorer's on ``predict``'s file. (A candidate without a news row is dropped here, whereas
    ``predict`` ranks it as an empty title.) Unlabelled (test) impressions count as skipped."""
    scores, labels, offsets = score_impressions(model, split, max_impressions=max_impressions,
                                                batch_size=batch_size, amp=amp, precompute=precompute)
    per = ranked_metrics(labels, impression_ranks(scores, offsets), offsets)  # [I,4]
    result = mean_metrics(per)
    if segments:
        by_segment = segment_metrics(per, split.history_lengths(max_impressions), segments)
        result = dataclasses.replace(result, segments=by_segment)
    return result
