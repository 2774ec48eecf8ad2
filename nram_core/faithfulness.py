"""Is the word attention a faithful explanation? The removal test of Jain and Wallace ("Attention is not
Explanation", NAACL 2019): remove the words an explanation points to and see how far the click score falls,
against removing random words.

For each scored (user, candidate) pair of a split's first impressions, the candidate title's top 1, 2 and
3 words are taken three ways:

* ``attention``: the news encoder's additive attention over the title's words (what the studio shades);
* ``gradients``: integrated gradients (Sundararajan et al. 2017, Captum's ``IntegratedGradients``) of the
  click score ``u . n(title)`` with respect to the title's word embeddings, the user vector ``u`` held
  fixed (encoded from the history); the baseline is all-zero embeddings (the padding embedding, which
  is zero) at the same real positions, and a word's attribution is the sum over its embedding of
  (embedding - baseline) x the path-averaged gradient. Words are ranked by the signed attribution: the
  words that raise this user's score most come first;
* ``random``: a uniformly random choice among the title's real words (a seeded generator).

Removing a word masks it out of the title: its mask entry is False, so it is neither a key of the
self-attention nor a position of the additive pooling, exactly as padding. Its vector is not zeroed
(a zero vector would still be attended to). The drop is ``score(title) - score(title without the
words)``, a logit difference, averaged over the pairs (``drop_*``); its absolute value, averaged, says
how far the score moves either way (``change_*``: removing the words that make a disliked title
disliked raises its score, a negative drop, and still shows that they matter). A title needs at least
k + 1 real words for the removal of k (one word always stays), so pairs with shorter titles are left
out of that k alone (``pairs`` counts the pairs behind each k).

``rank_agreement`` is the mean Spearman correlation (average ranks for ties) between a pair's attention
weights and the magnitudes of its attributions over the title's real words: attention has no sign, so
it is compared with how much each word moves the score, either way. ``rank_agreement_signed`` compares
it with the signed attributions instead (a word the model attends to in a title the user is steered
away from lowers the score: a negative agreement there). Pairs whose title has fewer than two real
words, or where either ranking is constant, are left out.

Shapes: P pairs, L title length, E word dim, D news dim, K = 3 removal sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.split import Split
from .families import require_nram
from .model import NRAM, NewsEncoder, evaluating
from .scoring import category_ids, encode_all_news, encode_impression_users, model_device

SIZES = (1, 2, 3)  # words removed
METHODS = ("attention", "gradients", "random")
PAIR_CHUNK = 512  # pairs per step: bounds the integrated-gradients batch to PAIR_CHUNK * steps titles
DEFAULT_STEPS = 8  # Gauss-Legendre points of the integrated-gradients path integral
DEFAULT_IMPRESSIONS = 300  # first impressions whose candidates are tested


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ascending, with tied values given the mean of their ranks.

    >>> average_ranks(np.array([10.0, 30.0, 20.0, 30.0])).tolist()
    [1.0, 3.5, 2.0, 3.5]
    """
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(group.reshape(-1), weights=ranks)
    return sums[group.reshape(-1)] / counts[group.reshape(-1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long vectors: the Pearson correlation of their
    average ranks (``average_ranks``). NaN when either is constant or has fewer than two entries.

    >>> spearman(np.array([0.1, 0.5, 0.4]), np.array([1.0, 3.0, 2.0]))
    1.0
    >>> spearman(np.array([0.1, 0.5, 0.4]), np.array([3.0, 1.0, 2.0]))
    -1.0
    >>> round(spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])), 4)
    0.9487
    """
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a) - (len(a) + 1) / 2, average_ranks(b) - (len(b) + 1) / 2
    norm = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / norm) if norm > 0 else float("nan")


def top_words(weights: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Per row, the positions of the ``k`` largest ``weights`` [P,L] among the real positions of
    ``mask`` [P,L], largest first; among equal weights the earlier position first. [P,k].

    >>> top_words(np.array([[0.2, 0.5, 0.2, 0.9]]), np.array([[True, True, True, False]]), 2).tolist()
    [[1, 0]]
    """
    keyed = np.where(mask, np.asarray(weights, dtype=np.float64), -np.inf)  # [P,L]
    return np.argsort(-keyed, axis=1, kind="stable")[:, :k]  # [P,k]


def without(mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``mask`` [P,L] with ``positions`` [P,k] set False: those words removed from each title.

    >>> without(np.array([[True, True, True]]), np.array([[2, 0]])).tolist()
    [[False, True, False]]
    """
    removed = mask.copy()
    np.put_along_axis(removed, positions, False, axis=1)
    return removed


@dataclass(frozen=True)
class Pairs:
    """(user, candidate) pairs to test: the candidate's title tokens and the user vector."""

    tokens: np.ndarray  # [P,L] candidate title tokens
    rows: np.ndarray  # [P] candidate news rows of the split
    users: torch.Tensor  # [P,D] user vectors, encoded from each impression's history


def scored_pairs(model: NRAM, split: Split, *, impressions: int) -> Pairs:
    """Every candidate of the first ``impressions`` impressions whose title has two or more real words
    (fewer leaves nothing to remove), with its impression's user vector."""
    b = split.behaviors
    count = min(impressions, split.num_impressions) if impressions else split.num_impressions
    offsets = b.candidate_offsets[: count + 1]
    rows = b.candidates[offsets[0]: offsets[-1]].astype(np.int64)  # [M]
    owner = np.repeat(np.arange(count), np.diff(offsets))  # [M] impression of each candidate
    tokens = split.news.tokens[rows]  # [M,L]
    keep = (tokens != 0).sum(1) >= 2
    news_vectors = encode_all_news(model, split)
    users = encode_impression_users(model, split, news_vectors, np.arange(count))  # [I,D]
    # A normal tensor, so that autograd may keep it (inference tensors cannot be saved for backward).
    users = users.clone()
    picked = torch.from_numpy(owner[keep]).to(users.device)
    return Pairs(tokens=tokens[keep], rows=rows[keep], users=users[picked])  # [P,L], [P], [P,D]


class PairScorer:
    """The click score of a batch of pairs as a function of the titles' word embeddings and masks: what
    both the removals and the attribution take. ``categories``: the pairs' (category ids, subcategory
    ids), [P] each, for a model that fuses them (held fixed), else empty."""

    def __init__(self, encoder: NewsEncoder, categories: tuple[torch.Tensor, ...] = ()):
        self.encoder = encoder
        self.categories = categories

    def __call__(self, embedded: torch.Tensor, mask: torch.Tensor, users: torch.Tensor, *,
                 repeat: int = 1) -> torch.Tensor:
        """``embedded`` [R*P,L,E], ``mask`` [R*P,L], ``users`` [R*P,D] -> scores [R*P] (``repeat``: how
        many copies of the P pairs the batch stacks, as the integrated-gradients path does)."""
        categories = tuple(c.repeat(repeat) for c in self.categories)  # 2 x [R*P] or none
        context, _ = self.encoder.contextualise(embedded, mask)  # [R*P,L,E] -> [R*P,L,D]
        news, _, _ = self.encoder.pool(context, mask, False, *categories)  # [R*P,L,D] -> [R*P,D]
        return (news * users).sum(-1)  # [R*P,D] -> [R*P]


def integrated_gradients(scorer: PairScorer, embedded: torch.Tensor, mask: torch.Tensor, users: torch.Tensor, *,
                         steps: int = DEFAULT_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's integrated gradients of the click score w.r.t. the word embeddings [P,L,E], from the
    zero-embedding baseline, with the mask and user vectors [P,D] held fixed: (attributions per word
    [P,L], convergence delta [P], the gap between the attributions' sum and score(x) - score(0))."""
    from captum.attr import IntegratedGradients  # imported here: only this analysis needs Captum

    pairs = embedded.shape[0]

    def forward(inputs: torch.Tensor, path_mask: torch.Tensor, path_users: torch.Tensor) -> torch.Tensor:
        return scorer(inputs, path_mask, path_users, repeat=inputs.shape[0] // pairs)  # [S*P,L,E] -> [S*P]

    attributions, delta = IntegratedGradients(forward).attribute(
        embedded, baselines=torch.zeros_like(embedded), additional_forward_args=(mask, users), n_steps=steps,
        return_convergence_delta=True)  # [P,L,E], [P]
    return attributions.sum(-1).detach(), delta.detach()  # [P,L,E] -> [P,L]


@dataclass(frozen=True)
class ChunkResult:
    """What ``measure_chunk`` finds for a chunk of P pairs."""

    drops: dict[str, list[np.ndarray]]  # method -> per k, the drops of the pairs with > k real words
    orders: dict[str, np.ndarray]  # method -> [P,3] the title positions it removes first, second, third
    attention: np.ndarray  # [P,L] word attention (zero on padding)
    gradients: np.ndarray  # [P,L] integrated-gradients attribution per word (zero on padding)
    agreement: np.ndarray  # [P,2] Spearman per pair with the attributions' magnitudes, and signed (NaN: left out)
    scores: np.ndarray  # [P] the unaltered click scores
    delta: np.ndarray  # [P] integrated gradients' completeness gap


def measure_chunk(model: NRAM, tokens_np: np.ndarray, users: torch.Tensor, categories: tuple[torch.Tensor, ...],
                  *, rng: np.random.Generator, steps: int) -> ChunkResult:
    """The removal test and the attribution for P pairs: candidate title tokens [P,L], user vectors [P,D]
    and, for a model that fuses them, the titles' (category ids, subcategory ids) [P] each."""
    device = model_device(model)
    mask_np = tokens_np != 0  # [P,L]
    tokens = torch.from_numpy(tokens_np.astype(np.int64)).to(device)  # [P,L]
    mask = torch.from_numpy(mask_np).to(device)  # [P,L]
    scorer = PairScorer(model.news_encoder, categories)
    embedded = model.news_encoder.embedding(tokens).detach()  # [P,L] -> [P,L,E]
    with torch.no_grad():
        extra = dict(zip(("categories", "subcategories"), categories))
        _, att = model.news_encoder(tokens, mask, need_weights=True, **extra)
        attention = att.pooling.float().cpu().numpy()  # [P,L]
        scores = scorer(embedded, mask, users).float().cpu().numpy()  # [P]
    gradients, delta = integrated_gradients(scorer, embedded, mask, users, steps=steps)
    gradients = gradients.float().cpu().numpy()  # [P,L]
    weights = {"attention": attention, "gradients": gradients,
               "random": rng.random(mask_np.shape)}  # [P,L] each; random keys give a uniform k-subset
    real = mask_np.sum(1)  # [P]
    orders = {method: top_words(weights[method], mask_np, max(SIZES)) for method in METHODS}  # [P,3] each
    removals, owners = [], []
    for method in METHODS:
        for k in SIZES:
            kept = np.flatnonzero(real >= k + 1)
            removals.append(without(mask_np[kept], orders[method][kept, :k]))  # [p,L]
            owners.append((method, k, kept))
    stacked = torch.from_numpy(np.concatenate(removals)).to(device)  # [9P',L]
    index = torch.from_numpy(np.concatenate([kept for _, _, kept in owners])).to(device)  # [9P']
    with torch.no_grad():
        repeated = PairScorer(model.news_encoder, tuple(c[index] for c in categories))
        removed = repeated(embedded[index], stacked, users[index]).float().cpu().numpy()  # [9P',L,E] -> [9P']
    drops: dict[str, list[np.ndarray]] = {}
    at = 0
    for method, k, kept in owners:
        drops.setdefault(method, []).append(scores[kept] - removed[at: at + len(kept)])
        at += len(kept)
    agreement = np.array([[spearman(attention[p, mask_np[p]], np.abs(gradients[p, mask_np[p]])),
                           spearman(attention[p, mask_np[p]], gradients[p, mask_np[p]])]
                          for p in range(len(real))]).reshape(-1, 2)  # [P,2]: magnitudes, signed
    return ChunkResult(drops=drops, orders=orders, attention=attention, gradients=gradients, agreement=agreement,
                       scores=scores, delta=delta.float().cpu().numpy())


def faithfulness(model: NRAM, split: Split, *, impressions: int = DEFAULT_IMPRESSIONS, seed: int = 0,
                 steps: int = DEFAULT_STEPS) -> dict:
    """The removal test on the first ``impressions`` impressions of ``split`` (all when 0): a dict with
    ``drop_attention``, ``drop_gradients``, ``drop_random`` (mean score drops for k = 1, 2, 3),
    ``change_attention``, ``change_gradients``, ``change_random`` (mean absolute score changes),
    ``pairs`` (the pairs behind each k), ``rank_agreement`` and ``rank_agreement_signed``, ``titles``
    (pairs scored: a candidate title in its user's context), ``news`` (distinct candidate titles),
    ``agreement_titles``,
    ``score_std`` (the spread of the unaltered scores, for scale) and ``ig_delta`` (the mean
    absolute completeness gap of integrated gradients). Deterministic for a ``seed``."""
    require_nram(model, "the faithfulness test")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    rng = np.random.default_rng(seed)  # the only randomness: the model runs in eval mode
    with evaluating(model):
        pairs = scored_pairs(model, split, impressions=impressions)
        chunks = []
        for lo in range(0, len(pairs.rows), PAIR_CHUNK):
            rows = pairs.rows[lo: lo + PAIR_CHUNK]
            categories = category_ids(split.news, rows, model_device(model)) if model.config.use_categories else ()
            chunks.append(measure_chunk(model, pairs.tokens[lo: lo + PAIR_CHUNK], pairs.users[lo: lo + PAIR_CHUNK],
                                        categories, rng=rng, steps=steps))
    result: dict = {"titles": int(len(pairs.rows)), "news": int(len(np.unique(pairs.rows))),
                    "impressions": int(min(impressions, split.num_impressions) if impressions
                                       else split.num_impressions),
                    "seed": int(seed), "ig_steps": int(steps)}
    for method in METHODS:
        per_k = [np.concatenate([c.drops[method][i] for c in chunks]) if chunks else np.zeros(0)
                 for i in range(len(SIZES))]
        result[f"drop_{method}"] = [_mean(values) for values in per_k]
        result[f"change_{method}"] = [_mean(np.abs(values)) for values in per_k]
        result["pairs"] = [int(len(values)) for values in per_k]
    agreement = np.concatenate([c.agreement for c in chunks]) if chunks else np.zeros((0, 2))  # [P,2]
    magnitude, signed = agreement[:, 0][~np.isnan(agreement[:, 0])], agreement[:, 1][~np.isnan(agreement[:, 1])]
    result["rank_agreement"] = _mean(magnitude)
    result["rank_agreement_signed"] = _mean(signed)
    result["agreement_titles"] = int(len(magnitude))
    scores = np.concatenate([c.scores for c in chunks]) if chunks else np.zeros(0)
    result["score_std"] = float(scores.std()) if len(scores) else None
    result["ig_delta"] = _mean(np.abs(np.concatenate([c.delta for c in chunks]))) if chunks else None
    return result


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values, dtype=np.float64)) if len(values) else None


@dataclass(frozen=True)
class PairRemoval:
    """The removal test for one (user, candidate) pair: what the studio's Attention page states."""

    attention: np.ndarray  # [L] word attention of the candidate title (zero on padding)
    gradients: np.ndarray  # [L] integrated-gradients attribution per word (zero on padding)
    score: float  # the unaltered click score
    k: int  # words removed
    removed: dict[str, list[int]]  # method -> the k title positions it removes
    without: dict[str, float | None]  # method -> the score without them (None: the title has <= k words)


def pair_removal(model: NRAM, tokens: np.ndarray, user: torch.Tensor, *, categories: tuple[torch.Tensor, ...] = (),
                 k: int = 2, seed: int = 0, steps: int = DEFAULT_STEPS) -> PairRemoval:
    """The removal test of one candidate title ``tokens`` [L] for one user vector ``user`` [D] (e.g.
    ``Recommender.user_vector``): its attention, its attributions, and its score without its top ``k``
    words by each method. ``categories``: the title's (category id, subcategory id) as [1] tensors, for a
    model that fuses them."""
    require_nram(model, "the faithfulness test")
    if k not in SIZES:
        raise ValueError(f"k must be one of {SIZES}, got {k}")
    with evaluating(model):
        # a normal tensor: an inference-mode user vector cannot be saved for the attribution's backward pass
        chunk = measure_chunk(model, np.asarray(tokens)[None, :], user.detach().clone()[None, :], categories,
                              rng=np.random.default_rng(seed), steps=steps)
    score = float(chunk.scores[0])
    fits = int((np.asarray(tokens) != 0).sum()) >= k + 1
    return PairRemoval(attention=chunk.attention[0], gradients=chunk.gradients[0], score=score, k=k,
                       removed={m: chunk.orders[m][0, :k].tolist() for m in METHODS},
                       without={m: (score - float(chunk.drops[m][k - 1][0]) if fits else None) for m in METHODS})
