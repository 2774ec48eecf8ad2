"""How peaked a trained model's attention is: the figures behind "the Attention page tells you something".

* ``word_entropy``: the mean normalised entropy of the news encoder's additive attention over the
  words of each title (1.0 = uniform over the real words, 0.0 = all weight on one word);
* ``click_entropy``: the same for the user encoder's attention over each history's clicks;
* ``topical_common_ratio`` (synthetic corpora only, from ``truth.json``): the mean word weight of
  topical words over that of common filler words ("the", "a", ...). Above 1 the model looks at
  the words that carry the topic.

Titles and histories with fewer than two real positions are left out: their attention is fixed.

And what each head of the news encoder's self-attention looks at across a split
(``head_summaries``): the words that receive most of its weight, with a head that gives most of it
to one common token ("the", ",") said to be such.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data.batching import gather_histories
from .data.split import Split
from .data.text import Vocab
from .families import require_nram
from .metrics import normalized_entropy
from .model import EncoderAttention, evaluating
from .scoring import category_ids, encode_all_news, model_device


def _news_encoder_attention(model, split: Split, rows: np.ndarray, batch_size: int
                            ) -> Iterator[tuple[torch.Tensor, EncoderAttention]]:
    """The news encoder's attention for news ``rows``, batch by batch: (tokens [b,L], weights)."""
    device = model_device(model)
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        tokens = torch.from_numpy(split.news.tokens[chunk]).to(device)  # [b,L]
        extra = {}
        if getattr(model.config, "use_categories", False):
            extra = dict(zip(("categories", "subcategories"), category_ids(split.news, chunk, device)))
        _, att = model.news_encoder(tokens, need_weights=True, **extra)
        yield tokens, att


@torch.inference_mode()
def word_weights(model, split: Split, rows: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """The news encoder's word attention [R,L] for news ``rows`` (zero on padding)."""
    out = [att.pooling.float().cpu().numpy()  # [b,L]
           for _, att in _news_encoder_attention(model, split, rows, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, split.news.tokens.shape[1]), np.float32)


@torch.inference_mode()
def click_weights(model, split: Split, impressions: np.ndarray, *,
                  batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The user encoder's click attention [I,H] for the histories of ``impressions``, and the
    histories' mask [I,H] (True on real clicks)."""
    history, mask = gather_histories(split, impressions, model.config.history_len)  # [I,H], [I,H]
    news_vectors = encode_all_news(model, split)  # [N+1,D]
    device = news_vectors.device
    out = []
    for i in range(0, len(history), batch_size):
        rows = torch.from_numpy(history[i: i + batch_size]).to(device)  # [b,H]
        hist_mask = torch.from_numpy(mask[i: i + batch_size]).to(device)  # [b,H]
        _, att = model.user_encoder(news_vectors[rows], hist_mask, need_weights=True)
        out.append(att.pooling.float().cpu().numpy())  # [b,H]
    weights = np.concatenate(out) if out else np.zeros((0, model.config.history_len), np.float32)
    return weights, mask


def attention_stats(model, split: Split, vocab: Vocab, *, truth: dict[str, Any] | None = None,
                    max_news: int = 5000, max_impressions: int = 5000) -> dict[str, Any]:
    """Peakedness of ``model``'s word and click attention on ``split`` (first ``max_news`` news and
    ``max_impressions`` impressions); ``vocab`` is the model's. ``truth``: a synthetic corpus's
    truth.json, for the topical/common ratio."""
    require_nram(model, "the attention figures")
    with evaluating(model):
        rows = np.arange(1, min(len(split.news), max_news + 1))
        words = word_weights(model, split, rows)  # [R,L]
        tokens = split.news.tokens[rows]  # [R,L]
        impressions = np.arange(min(split.num_impressions, max_impressions))
        clicks, click_mask = click_weights(model, split, impressions)  # [I,H], [I,H]
    word_mask = tokens != 0
    stats: dict[str, Any] = {
        "word_entropy": _mean_or_none(normalized_entropy(words, word_mask)),
        "click_entropy": _mean_or_none(normalized_entropy(clicks, click_mask)),
        "titles": int((word_mask.sum(1) >= 2).sum()), "histories": int((click_mask.sum(1) >= 2).sum()),
    }
    if truth is not None and "topical_words" in truth:
        stats["topical_common_ratio"] = topical_common_ratio(words, tokens, vocab, truth)
    return stats


def topical_common_ratio(weights: np.ndarray, tokens: np.ndarray, vocab: Vocab, truth: dict[str, Any]
                         ) -> float | None:
    """Mean attention on topical words over the mean on common words (None if either is absent,
    or if truth.json does not list them as ``synth`` writes them: a dict of word lists and a list)."""
    groups, common = truth.get("topical_words"), truth.get("common_words")
    if not (isinstance(groups, dict) and all(isinstance(g, list) for g in groups.values())
            and isinstance(common, list)):
        return None
    words = np.asarray(vocab.words, dtype=object)[tokens]  # [R,L]
    topical = [w for group in groups.values() for w in group if isinstance(w, str)]
    is_topical = np.isin(words, topical) & (tokens != 0)
    is_common = np.isin(words, [w for w in common if isinstance(w, str)]) & (tokens != 0)
    if not is_topical.any() or not is_common.any():
        return None
    return float(weights[is_topical].mean() / weights[is_common].mean())


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


# ---- what each self-attention head looks at ------------------------------------------------------------
# A small English stop-word list, built in (no download, no extra package), plus the punctuation
# tokens the tokenizer keeps (``data.text.tokenize``) and the "s" it splits off "'s": words that
# carry no topic, so a head that attends to them tells little about a title.
STOP_WORDS: frozenset[str] = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself yourselves
s t d ll m re ve
""".split()) | frozenset(". , ! ? ; |".split())


@dataclass(frozen=True)
class HeadSummary:
    """One self-attention head over a split. Shares are of all the attention the head's queries
    give (each real word of a title gives 1 in total), so a head's shares sum to 1."""

    head: int  # 0-based
    top_words: tuple[tuple[str, float], ...]  # (word, share), largest first
    top_content_words: tuple[tuple[str, float], ...]  # the same, stop words left out
    dominant: str | None  # the common token the head mostly attends to (``summarise_heads``), else None
    dominant_share: float  # share of that token (of the top word when there is none)
    uniform_share: float  # that word's share under uniform attention: its share of the tokens

    def label(self) -> str:
        """One line: "head 2: mostly 'the' (71% of its weight; 9% if uniform) · besides: storm, rain",
        or "head 1: 'storm' 12%, 'rain' 9%, ..." for a head that is not dominated."""
        content = ", ".join(w for w, _ in self.top_content_words[:4]) or "nothing else"
        if self.dominant is not None:
            return (f"head {self.head + 1}: mostly '{self.dominant}' ({self.dominant_share:.0%} of its weight; "
                    f"{self.uniform_share:.0%} if uniform) · besides: {content}")
        line = f"head {self.head + 1}: " + ", ".join(f"'{w}' {share:.0%}" for w, share in self.top_words[:4])
        return line if self.top_words[:4] == self.top_content_words[:4] else f"{line} · besides stop words: {content}"


def summarise_heads(received: np.ndarray, token_counts: np.ndarray, words: tuple[str, ...] | list[str], *,
                    top: int = 5, most: float = 1 / 3, lift: float = 2.0, common_share: float = 0.05,
                    stop_words: frozenset[str] = STOP_WORDS) -> list[HeadSummary]:
    """Per head, the words with the largest share of its attention. ``received`` [h,V]: attention
    each head gave to each vocabulary word, summed over a split's titles (``head_word_attention``);
    ``token_counts`` [V]: how often each word occurs there; ``words``: the vocabulary.

    A head is *dominated* when its top word is common (a stop word, or at least ``common_share`` of
    the split's tokens) and takes at least ``most`` of the head's weight and ``lift`` times its
    share under uniform attention (so that a head spreading its weight evenly over titles full of
    "the" is not called dominated). Such a head is named by that word; its ``top_content_words``
    say what it looks at besides.

    >>> words = ("<pad>", "<unk>", "the", "storm", "rain")
    >>> received = np.array([[0, 0, 8.0, 1.0, 1.0],    # head 1: almost all on "the"
    ...                      [0, 0, 2.0, 5.0, 3.0]])   # head 2: half on "storm", not a common word
    >>> counts = np.array([0, 0, 4, 3, 3])
    >>> one, two = summarise_heads(received, counts, words, top=2, common_share=0.35)
    >>> one.dominant, round(one.dominant_share, 2), round(one.uniform_share, 2), one.top_content_words
    ('the', 0.8, 0.4, (('storm', 0.1), ('rain', 0.1)))
    >>> two.dominant, two.top_words   # half its weight, but on a word that is not common
    (None, (('storm', 0.5), ('rain', 0.3)))
    >>> one.label()
    "head 1: mostly 'the' (80% of its weight; 40% if uniform) · besides: storm, rain"
    >>> two.label()
    "head 2: 'storm' 50%, 'rain' 30%"
    """
    received = np.asarray(received, dtype=np.float64)  # [h,V]
    counts = np.asarray(token_counts, dtype=np.float64)  # [V]
    vocab = np.asarray(words, dtype=object)
    totals = received.sum(axis=1, keepdims=True)  # [h,1]
    shares = np.divide(received, totals, out=np.zeros_like(received), where=totals > 0)  # [h,V]
    token_share = counts / counts.sum() if counts.sum() > 0 else np.zeros_like(counts)  # [V]
    is_stop = np.isin(vocab, list(stop_words))  # [V]
    is_common = is_stop | (token_share >= common_share)  # [V]
    order = np.argsort(-shares, axis=1, kind="stable")  # [h,V], largest share first

    summaries = []
    for h, ranked in enumerate(order):
        ranked = ranked[shares[h, ranked] > 0]  # words the head never saw are no answer
        content = ranked[~is_stop[ranked]]
        best = int(ranked[0]) if len(ranked) else 0
        dominated = (bool(len(ranked)) and bool(is_common[best]) and shares[h, best] >= most
                     and shares[h, best] >= lift * token_share[best])
        summaries.append(HeadSummary(
            head=h,
            top_words=tuple((str(vocab[i]), float(shares[h, i])) for i in ranked[:top]),
            top_content_words=tuple((str(vocab[i]), float(shares[h, i])) for i in content[:top]),
            dominant=str(vocab[best]) if dominated else None,
            dominant_share=float(shares[h, best]), uniform_share=float(token_share[best])))
    return summaries


@torch.inference_mode()
def head_word_attention(model, split: Split, rows: np.ndarray, *, batch_size: int = 512
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Attention each self-attention head of the news encoder gives to each vocabulary word [h,V],
    summed over the titles of news ``rows`` and over every real query word, and how often each word
    occurs in those titles [V]. A title of n words gives n in total to each head, 1 per query word."""
    vocab_size, heads = model.config.vocab_size, model.config.num_heads
    received = torch.zeros(heads, vocab_size, dtype=torch.float64, device=model_device(model))  # [h,V]
    for tokens, att in _news_encoder_attention(model, split, rows, batch_size):
        queries = (tokens != 0).to(att.self_attention.dtype)  # [b,L]; padded queries attend too: drop them
        per_key = (att.self_attention * queries[:, None, :, None]).sum(dim=2)  # [b,h,L,L] -> [b,h,L]
        per_key = per_key.permute(1, 0, 2).reshape(heads, -1).double()  # [b,h,L] -> [h,b*L]
        received.index_add_(1, tokens.reshape(-1), per_key)  # padding keys got 0: row 0 stays 0
    counts = np.bincount(split.news.tokens[rows].ravel(), minlength=vocab_size)  # [V]
    counts[0] = 0
    return received.cpu().numpy(), counts


HEAD_SAMPLE = 5000  # titles read for the per-head summary: a seeded sample of a larger split


def sample_rows(num_news: int, max_news: int, *, seed: int = 0) -> np.ndarray:
    """News rows 1..num_news-1 (row 0 is padding), or a seeded sample of ``max_news`` of them in
    row order when there are more: enough titles to say what a head looks at, in a fraction of a
    second at MIND scale.

    >>> sample_rows(5, 10).tolist(), len(sample_rows(100_001, 5000)), sample_rows(9, 3, seed=1).tolist()
    ([1, 2, 3, 4], 5000, [3, 4, 7])
    """
    rows = np.arange(1, num_news)
    if len(rows) <= max_news:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=max_news, replace=False))


def head_summaries(model, split: Split, vocab: Vocab, *, max_news: int = HEAD_SAMPLE, seed: int = 0, top: int = 5
                   ) -> list[HeadSummary]:
    """``summarise_heads`` of ``model``'s news encoder over the titles of ``split`` (a seeded sample
    of ``max_news`` of them, ``sample_rows``); [] for a model without self-attention."""
    require_nram(model, "a per-head summary")
    if model.news_encoder.self_attention is None:
        return []
    with evaluating(model):
        received, counts = head_word_attention(model, split, sample_rows(len(split.news), max_news, seed=seed))
    return summarise_heads(received, counts, vocab.words, top=top)


def without_stop_words(matrix: np.ndarray, words: list[str], *, stop_words: frozenset[str] = STOP_WORDS
                       ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A title's self-attention [n,n] (row = query, column = key) without its stop words: their rows
    and columns are dropped and each remaining row is rescaled to sum to 1 (the share of that
    word's attention among the words kept). Returns the matrix, the words kept and their positions.

    >>> m = np.array([[0.6, 0.2, 0.2], [0.5, 0.25, 0.25], [0.4, 0.4, 0.2]])
    >>> kept, kept_words, where = without_stop_words(m, ["the", "storm", "rain"])
    >>> kept.round(2).tolist(), kept_words, where.tolist()
    ([[0.5, 0.5], [0.67, 0.33]], ['storm', 'rain'], [1, 2])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    keep = np.flatnonzero([w.lower() not in stop_words for w in words])
    kept = matrix[np.ix_(keep, keep)]  # [k,k]
    sums = kept.sum(axis=1, keepdims=True)  # [k,1]
    kept = np.divide(kept, sums, out=np.zeros_like(kept), where=sums > 0)
    return kept, [words[i] for i in keep], keep
