"""How peaked a trained model's attention is: the figures behind "the Attention page tells you something".

* ``word_entropy``: the mean normalised entropy of the news encoder's additive attention over the
  words of each title (1.0 = uniform over the real words, 0.0 = all weight on one word);
* ``click_entropy``: the same for the user encoder's attention over each history's clicks;
* ``topical_common_ratio`` (synthetic corpora only, from ``truth.json``): the mean word weight of
  topical words over that of common filler words ("the", "a", ...). Above 1 the model looks at
  the words that carry the topic.

Titles and histories with fewer than two real positions are left out: their attention is fixed.
Each family reports the attention it has (``attention_stats``):

* NRAM: the word pooling over each title and the click pooling over each history;
* NAML: the title view's word attention as ``word_entropy`` (titles are what every family attends
  over), and besides ``abstract_entropy`` (the abstract view's word attention) and ``view_entropy``
  (the attention over each news' title, abstract, category and subcategory views that exist);
* LSTUR: the CNN encoder's word attention; its user encoder is a GRU with no per-click attention,
  so ``click_entropy`` is None and ``histories`` 0;
* NPA: personalized attention, whose queries come from the reader's id, so weights exist only for
  a (reader, news) pair: each impression is read by its own user (``Split.model_users``; unknown
  user 0 when the split carries none). ``word_entropy`` is over the candidate titles of the first
  impressions (at most ``max_news`` (impression, candidate) pairs, in order), each pooled with its
  impression's user's word query (``titles`` counts those pairs); ``click_entropy`` over each
  impression's history, its clicks encoded and pooled with the same user's word and news queries.

And what each head of the news encoder's self-attention looks at across a split
(``head_summaries``): the words that receive most of its weight, with a head that gives most of it
to one common token ("the", ",") said to be such.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .config import KINDS
from .data.batching import gather_histories
from .data.split import Split
from .data.text import Vocab
from .families import model_class, require_nram
from .fileio import DataError
from .metrics import normalized_entropy
from .model import evaluating
from .naml import VIEWS
from .scoring import abstract_tokens, category_ids, encode_all_news, impression_user_ids, model_device

# NPA reads a title anew for each reader: per step, the (impression, candidate) pairs of the word attention
# and the histories of the click attention (128 x 50 clicks x 30 words x 400 filters: 300 MB of CNN output)
NPA_PAIRS, NPA_HISTORIES = 1024, 128


def family_of(model) -> str:
    """The model's family (``config.KINDS``); a DataError for a model without this module's attention
    (DKN, Wide&Deep, popularity, random)."""
    kind = getattr(getattr(model, "config", None), "kind", None)
    if kind not in KINDS or not isinstance(model, model_class(kind)):
        raise DataError(f"the attention figures: built for the NRAM, NAML, LSTUR and NPA families; "
                        f"a {type(model).__name__} model has no such attention")
    return kind


def _news_encoder_attention(model, split: Split, rows: np.ndarray, batch_size: int
                            ) -> Iterator[tuple[torch.Tensor, Any]]:
    """The news encoder's attention for news ``rows``, batch by batch: (tokens [b,L], weights as the
    family returns them: NRAM's ``EncoderAttention``, NAML's ``NAMLAttention``, LSTUR's word weights)."""
    device = model_device(model)
    abstracts = abstract_tokens(model, split)  # [N+1,A] for NAML, else None
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        tokens = torch.from_numpy(split.news.tokens[chunk]).to(device)  # [b,L]
        extra = {}
        if getattr(model.config, "use_categories", False):
            extra = dict(zip(("categories", "subcategories"), category_ids(split.news, chunk, device)))
        if abstracts is not None:
            extra["abstracts"] = torch.from_numpy(abstracts[chunk]).to(device)  # [b,A]
        _, att = model.news_encoder(tokens, need_weights=True, **extra)
        yield tokens, att


def _attention_parts(kind: str, att) -> dict[str, torch.Tensor]:
    """The pooling weights of one news-encoder call by name: "words" [b,L] over the title, and NAML's
    "abstract" [b,A] and "views" [b,4]."""
    if kind == "naml":
        return {"words": att.title, "abstract": att.abstract, "views": att.views}
    return {"words": att if kind == "lstur" else att.pooling}


@torch.inference_mode()
def news_weights(model, split: Split, rows: np.ndarray, *, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """The news encoder's pooling weights for news ``rows`` (zero on padding), by ``_attention_parts``
    name: "words" [R,L] for every family but NPA, and NAML's "abstract" [R,A] and "views" [R,4]."""
    kind = family_of(model)
    parts: dict[str, list[np.ndarray]] = {}
    for _, att in _news_encoder_attention(model, split, rows, batch_size):
        for name, weights in _attention_parts(kind, att).items():
            parts.setdefault(name, []).append(weights.float().cpu().numpy())  # [b,S]
    if not parts:  # no rows: each part empty, as wide as what it weighs
        widths = {"words": split.news.tokens.shape[1]}
        if kind == "naml":
            widths.update(abstract=split.news.abstract_tokens.shape[1], views=len(VIEWS))
        return {name: np.zeros((0, width), np.float32) for name, width in widths.items()}
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def word_weights(model, split: Split, rows: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """The news encoder's word attention [R,L] over the titles of news ``rows`` (zero on padding)."""
    return news_weights(model, split, rows, batch_size=batch_size)["words"]


def naml_view_mask(model, split: Split, rows: np.ndarray) -> np.ndarray:
    """Which of NAML's views (``naml.VIEWS``) of news ``rows`` exist, [R,4]: a title or abstract with a
    word, a known category or subcategory (with ``use_categories``); the model gives the others no weight."""
    news = split.news
    known = getattr(model.config, "use_categories", False)
    return np.stack([(news.tokens[rows] != 0).any(1), (news.abstract_tokens[rows] != 0).any(1),
                     known & (news.category[rows] != 0), known & (news.subcategory[rows] != 0)], axis=1)  # [R,4]


@torch.inference_mode()
def click_weights(model, split: Split, impressions: np.ndarray, *,
                  batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The user encoder's click attention [I,H] for the histories of ``impressions``, and the
    histories' mask [I,H] (True on real clicks): NRAM's and NAML's additive attention over the clicks."""
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


class PersonalizedWeights(NamedTuple):
    """NPA's attention over the first impressions of a split, each read by its own user."""

    pairs: np.ndarray  # [P,2] (impression, candidate news row) of each row of ``words``
    words: np.ndarray  # [P,L] word attention over each candidate's title, with its impression's user's query
    clicks: np.ndarray  # [I,H] click attention over each impression's history
    click_mask: np.ndarray  # [I,H] True on real clicks


def _npa_read(model, split: Split, news: np.ndarray, real: np.ndarray, users: np.ndarray):
    """NPA's encoders on news rows ``news`` [B,N] (``real`` [B,N]: the pairs to encode), row b read by
    user ``users[b]``: (news vectors [B,N,D], word weights [B,N,L], news queries [B,Q])."""
    device = model_device(model)
    unique, inverse = np.unique(news, return_inverse=True)  # [U], [B*N]: each title through the CNN once
    titles = torch.from_numpy(split.news.tokens[unique].astype(np.int64)).to(device)  # [U,L]
    index = torch.from_numpy(inverse.reshape(news.shape)).to(device)  # [B*N] -> [B,N]
    return model.read(titles, index, torch.from_numpy(real).to(device), torch.from_numpy(users).to(device),
                      need_weights=True)  # [B,N] -> [B,N,D], [B,N,L], [B,Q]


@torch.inference_mode()
def personalized_weights(model, split: Split, impressions: np.ndarray, *, max_pairs: int) -> PersonalizedWeights:
    """NPA's word attention over the candidate titles of ``impressions`` (the first ``max_pairs``
    (impression, candidate) pairs, in order) and its click attention over their histories, each
    impression read by its own user (``scoring.impression_user_ids``). Run it under ``evaluating``: in
    training mode dropout and user masking would change the weights."""
    b, users = split.behaviors, impression_user_ids(split, impressions)
    lo, counts = b.candidate_offsets[impressions], np.diff(b.candidate_offsets)[impressions]  # [I], [I]
    owner = np.repeat(np.arange(len(impressions)), counts)[:max_pairs]  # [P] position in ``impressions``
    starts = np.cumsum(counts) - counts  # [I] where each impression's pairs start
    candidates = b.candidates[lo[owner] + np.arange(len(owner)) - starts[owner]].astype(np.int64)  # [P]
    words = []
    for i in range(0, len(candidates), NPA_PAIRS):
        news = candidates[i: i + NPA_PAIRS, None]  # [p,1]: a pair a row, read by its own user
        _, weights, _ = _npa_read(model, split, news, np.ones_like(news, dtype=bool), users[owner[i: i + NPA_PAIRS]])
        words.append(weights[:, 0].float().cpu().numpy())  # [p,1,L] -> [p,L]
    history, mask = gather_histories(split, impressions, model.config.history_len)  # [I,H], [I,H]
    clicks = []
    for i in range(0, len(history), NPA_HISTORIES):
        hist_mask = mask[i: i + NPA_HISTORIES]  # [b,H]
        vectors, _, news_query = _npa_read(model, split, history[i: i + NPA_HISTORIES], hist_mask,
                                           users[i: i + NPA_HISTORIES])  # [b,H] -> [b,H,D]
        real = torch.from_numpy(hist_mask).to(vectors.device)  # [b,H]
        _, weights = model.user_encoder(vectors, real, news_query, need_weights=True)  # [b,H,D] -> [b,H]
        clicks.append(weights.float().cpu().numpy())
    return PersonalizedWeights(
        pairs=np.stack([impressions[owner], candidates], axis=1),  # 2 x [P] -> [P,2]
        words=np.concatenate(words) if words else np.zeros((0, split.news.tokens.shape[1]), np.float32),
        clicks=np.concatenate(clicks) if clicks else np.zeros((0, model.config.history_len), np.float32),
        click_mask=mask)


def attention_stats(model, split: Split, vocab: Vocab, *, truth: dict[str, Any] | None = None,
                    max_news: int = 5000, max_impressions: int = 5000) -> dict[str, Any]:
    """Peakedness of ``model``'s word and click attention on ``split`` (first ``max_news`` news and
    ``max_impressions`` impressions); ``vocab`` is the model's. ``truth``: a synthetic corpus's
    truth.json, for the topical/common ratio. What each family measures: the module docstring
    (NPA: the candidates of those impressions, at most ``max_news`` pairs, each read by its
    impression's user). NAML adds ``abstract_entropy`` and ``view_entropy``; a family without click
    attention (LSTUR) has ``click_entropy`` None and ``histories`` 0."""
    kind = family_of(model)
    impressions = np.arange(min(split.num_impressions, max_impressions))
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # NAML's other attention: name -> (weights, mask)
    clicks = click_mask = None
    with evaluating(model):
        if kind == "npa":
            personal = personalized_weights(model, split, impressions, max_pairs=max_news)
            words, tokens = personal.words, split.news.tokens[personal.pairs[:, 1]]  # [P,L], [P,L]
            clicks, click_mask = personal.clicks, personal.click_mask  # [I,H], [I,H]
        else:
            rows = np.arange(1, min(len(split.news), max_news + 1))
            parts = news_weights(model, split, rows)
            words, tokens = parts["words"], split.news.tokens[rows]  # [R,L], [R,L]
            if kind == "naml":
                extra = {"abstract_entropy": (parts["abstract"], split.news.abstract_tokens[rows] != 0),
                         "view_entropy": (parts["views"], naml_view_mask(model, split, rows))}
            if kind != "lstur":  # LSTUR's GRU has no per-click attention
                clicks, click_mask = click_weights(model, split, impressions)  # [I,H], [I,H]
    word_mask = tokens != 0
    stats: dict[str, Any] = {
        "word_entropy": _mean_or_none(normalized_entropy(words, word_mask)),
        "click_entropy": None if clicks is None else _mean_or_none(normalized_entropy(clicks, click_mask)),
        "titles": int((word_mask.sum(1) >= 2).sum()),
        "histories": 0 if click_mask is None else int((click_mask.sum(1) >= 2).sum()),
    }
    stats.update({name: _mean_or_none(normalized_entropy(w, m)) for name, (w, m) in extra.items()})
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
