"""The NRAM model: an NRMS-style news recommender built from two attention layers.

News encoder: word embeddings -> multi-head self-attention -> additive attention.
User encoder: multi-head self-attention over clicked-news vectors -> additive attention.
Click score: inner product of the user vector and the candidate news vector.

Every attention module returns ``(output, weights)``; weights are ``None`` unless asked
for, in which case the explicit (non-fused) path runs so that they can be returned.
Masks are boolean, True where a position is real, and padding never receives attention.

Shapes: B batch, L title length, H history length, C candidates, N news, E word dim,
h heads, d head dim, D = h*d news/user dim, Q additive query dim, V vocabulary.

This file is the model only. How it computes on a given machine (bf16 GEMMs, cheaper dropout
masks, titles in length-sorted chunks, projection tables for inference) is ``fastpath.py``, which
swaps in its own layer types and composes the encoders' steps (``contextualise``, ``pool``).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import EmptyHistory, word_embedding


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is False gets exactly zero weight.

    A row with no valid entry (an empty title or a cold user's history) would be
    ``softmax([-inf, ...]) = NaN``; it is given all-zero weights instead, and no NaN
    reaches the gradient because the -inf fill is skipped on such rows.
    """
    has_any = mask.any(dim=dim, keepdim=True)
    fill_mask = mask | ~has_any  # empty rows keep finite scores; their weights are zeroed below
    weights = scores.masked_fill(~fill_mask, float("-inf")).softmax(dim=dim)
    return weights.masked_fill(~has_any, 0.0)


class AdditiveAttention(nn.Module):
    """Pool a sequence into one vector: a_i = softmax_i(q . tanh(W x_i + b))."""

    def __init__(self, *, input_dim: int, query_dim: int):
        super().__init__()
        self.proj = nn.Linear(input_dim, query_dim)
        self.query = nn.Parameter(torch.empty(query_dim).uniform_(-0.1, 0.1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        scores = torch.tanh(self.proj(x)) @ self.query  # [B,S,D] -> [B,S]
        weights = masked_softmax(scores, mask)  # [B,S]
        pooled = torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # [B,1,S]@[B,S,D] -> [B,D]
        return pooled, (weights if need_weights else None)


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``num_heads`` heads and no output projection (as NRMS)."""

    def __init__(self, *, input_dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q = nn.Linear(input_dim, num_heads * head_dim)
        self.k = nn.Linear(input_dim, num_heads * head_dim)
        self.v = nn.Linear(input_dim, num_heads * head_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # [B,S,h*d] -> [B,h,S,d]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of each position: [...,E] -> 3 x [...,D]."""
        return self.q(x), self.k(x), self.v(x)  # [...,E] -> 3 x [...,D]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        return self.attend(*self.project(x), mask, need_weights)  # [B,S,E] -> [B,S,D]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               need_weights: bool = False):
        """Self-attention from projected positions: ``q`` [B,S,D]; ``k`` and ``v`` [B,P,D] with
        ``mask`` [B,P] over the keys (P = S, unless keys are padded past the end and masked)."""
        q = self._split_heads(q)  # [B,S,D] -> [B,h,S,d]
        k = self._split_heads(k)  # [B,P,D] -> [B,h,P,d]
        v = self._split_heads(v)  # [B,P,D] -> [B,h,P,d]
        key_mask = mask[:, None, None, :]  # [B,P] -> [B,1,1,P]
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B,h,S,d]@[B,h,d,P] -> [B,h,S,P]
            weights = masked_softmax(scores, key_mask.expand_as(scores))  # [B,h,S,P]
            out = weights @ v  # [B,h,S,P]@[B,h,P,d] -> [B,h,S,d]
        else:
            # Fused kernel. An all-padding row may see its (zero) padding keys so that it stays
            # finite; its output is never used, because every pooling step masks it out. In
            # inference a batch without padding goes without a mask, which the CPU kernel runs
            # about twice as fast; the weights are the same.
            if not self.training and not torch.compiler.is_compiling() and bool(mask.all()):
                safe_mask = None
            else:
                safe_mask = key_mask | ~mask.any(dim=-1)[:, None, None, None]  # [B,1,1,P]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask)  # [B,h,S,d]
        batch, _, seq, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)  # [B,h,S,d] -> [B,S,D]
        return out, weights


@dataclass(frozen=True)
class EncoderAttention:
    """The attention weights of one encoder call: self-attention per head, then additive pooling."""

    self_attention: torch.Tensor | None  # [B,h,S,S]; None when the model has no self-attention
    pooling: torch.Tensor  # [B,S]
    views: torch.Tensor | None = None  # [B,3] title/category/subcategory weights (use_categories only)


class Encoder(nn.Module):
    """What both encoders share: self-attention over a sequence, then dropout (and the residual)."""

    self_attention: MultiHeadSelfAttention | None
    dropout: nn.Dropout
    residual: bool

    def contextualise(self, x: torch.Tensor | None, mask: torch.Tensor, need_weights: bool = False, *,
                      qkv: tuple[torch.Tensor, ...] | None = None):
        """Self-attention over the sequence: [B,S,E] -> [B,S,D] (the h_i that the pooling weighs);
        without self-attention, ``x`` itself (weights None). ``qkv``: the attention's (q, k, v,
        key mask), when computed elsewhere (``fastpath.Projected``); ``x`` may then be None,
        unless the encoder has a residual."""
        if self.self_attention is None:
            return x, None
        q, k, v, key_mask = qkv if qkv is not None else (*self.self_attention.project(x), mask)  # 3 x [B,S,D], [B,S]
        context, weights = self.self_attention.attend(q, k, v, key_mask, need_weights)  # [B,S,D]
        context = self.dropout(context)
        return (x + context if self.residual else context), weights  # [B,S,D], D == E with a residual


class NewsEncoder(Encoder):
    """Title tokens (and, with ``use_categories``, category ids) -> news vector."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = word_embedding(config)
        self.dropout = nn.Dropout(config.dropout)
        self.self_attention = MultiHeadSelfAttention(
            input_dim=config.word_dim, num_heads=config.num_heads, head_dim=config.head_dim
        ) if config.self_attention else None
        self.residual = config.residual
        self.pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)
        self.use_categories = config.use_categories
        if config.use_categories:  # id 0 is the unknown category: a zero vector that the view pooling masks out
            self.category_embedding = nn.Embedding(config.num_categories, config.news_dim, padding_idx=0)
            self.subcategory_embedding = nn.Embedding(config.num_subcategories, config.news_dim, padding_idx=0)
            self.view_pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None):
        """``tokens`` [N,L] int; ``mask`` [N,L] bool, by default ``tokens != 0``; ``categories`` and
        ``subcategories`` [N] ids of the train split's category vocabulary (``use_categories`` only)."""
        if mask is None:
            mask = tokens != 0  # [N,L]
        embedded = self.dropout(self.embedding(tokens))  # [N,L] -> [N,L,E]
        context, self_weights = self.contextualise(embedded, mask, need_weights)  # [N,L,E] -> [N,L,D]
        news, word_weights, view_weights = self.pool(context, mask, need_weights, categories,
                                                     subcategories)  # [N,L,D] -> [N,D]
        return news, (EncoderAttention(self_weights, word_weights, view_weights) if need_weights else None)

    def pool(self, context: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
             categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None):
        """Additive attention over the words, then (``use_categories``) over the title, category and
        subcategory views: [N,L,D] -> (news [N,D], word weights [N,L], view weights [N,3])."""
        news, word_weights = self.pooling(context, mask, need_weights)  # [N,L,D] -> [N,D]
        view_weights = None
        if self.use_categories:
            if categories is None or subcategories is None:
                raise ValueError("this model fuses categories: pass the news' category and subcategory ids")
            views = torch.stack([news, self.category_embedding(categories),
                                 self.subcategory_embedding(subcategories)], dim=1)  # 3 x [N,D] -> [N,3,D]
            view_mask = torch.stack([torch.ones_like(categories, dtype=torch.bool), categories != 0,
                                     subcategories != 0], dim=1)  # [N,3]
            news, view_weights = self.view_pooling(views, view_mask, need_weights)  # [N,3,D] -> [N,D]
        return news, word_weights, view_weights


class UserEncoder(Encoder):
    """Clicked-news vectors -> user vector."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attention = MultiHeadSelfAttention(
            input_dim=config.news_dim, num_heads=config.num_heads, head_dim=config.head_dim
        ) if config.self_attention else None
        self.dropout = nn.Dropout(config.dropout)
        self.residual = config.residual
        self.pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)
        self.empty_history = EmptyHistory(config.news_dim) if config.empty_history else None

    def forward(self, clicked: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        """``clicked`` [B,H,D] news vectors, ``mask`` [B,H] bool. An empty history gives the learned
        empty-history vector (``config.empty_history``), else a zero vector."""
        context, self_weights = self.contextualise(clicked, mask, need_weights)  # [B,H,D]
        user, click_weights = self.pool(context, mask, need_weights)  # [B,H,D] -> [B,D]
        return user, (EncoderAttention(self_weights, click_weights) if need_weights else None)

    def pool(self, context: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        """Additive attention over the clicks, [B,H,D] -> (user [B,D], click weights [B,H])."""
        user, click_weights = self.pooling(context, mask, need_weights)  # [B,H,D] -> [B,D]
        if self.empty_history is not None:
            user = self.empty_history(user, mask)  # [B,D]
        return user, click_weights


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def glorot_init(module: nn.Module) -> None:
    """The reference NRMS initialisation: Glorot-uniform dense weights and additive-attention
    queries (a [Q,1] matrix there), zero biases. Embeddings keep their own initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, AdditiveAttention):
            bound = math.sqrt(6.0 / (layer.query.numel() + 1))
            nn.init.uniform_(layer.query, -bound, bound)


@dataclass(frozen=True)
class Explanation:
    """Everything the model attended to for one user and a set of candidates (NumPy, on CPU).

    ``scores[c] == contributions[c].sum()`` because the user vector is the weighted sum
    ``u = sum_i click_weights[i] * h_i``, so ``u . n_c = sum_i click_weights[i] * (h_i . n_c)``.
    """

    history_word_weights: np.ndarray  # [H,L] additive attention over each clicked title's words
    history_self_attention: np.ndarray  # [H,h,L,L]
    candidate_word_weights: np.ndarray  # [C,L]
    candidate_self_attention: np.ndarray  # [C,h,L,L]
    click_weights: np.ndarray  # [H] additive attention of the user encoder over the clicks
    click_self_attention: np.ndarray  # [h,H,H]
    contributions: np.ndarray  # [C,H] per-click share of each candidate's score
    scores: np.ndarray  # [C]
    history_view_weights: np.ndarray  # [H,3] title/category/subcategory pooling ([0] without use_categories)
    candidate_view_weights: np.ndarray  # [C,3]


class NRAM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.check_buildable("nram")
        self.config = config
        self.news_encoder = NewsEncoder(config)
        self.user_encoder = UserEncoder(config)
        if config.init == "glorot":
            glorot_init(self)

    def encode_news(self, titles: torch.Tensor, categories: torch.Tensor | None = None,
                    subcategories: torch.Tensor | None = None) -> torch.Tensor:
        """[N,L] tokens (plus [N] category ids when ``use_categories``) -> [N,D] news vectors."""
        return self.news_encoder(titles, categories=categories, subcategories=subcategories)[0]  # [N,L] -> [N,D]

    def encode_users(self, clicked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B,H,D] clicked-news vectors, [B,H] mask -> [B,D] user vectors."""
        return self.user_encoder(clicked, mask)[0]  # [B,H,D] -> [B,D]

    def forward(
        self,
        titles: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        candidates: torch.Tensor,
        categories: torch.Tensor | None = None,
        subcategories: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits for a batch.

        ``titles`` [U,L] holds the tokens of the batch's unique news, each encoded once;
        ``history`` [B,H] and ``candidates`` [B,C] index rows of ``titles``; ``categories`` and
        ``subcategories`` [U] are needed only with ``use_categories``.
        """
        news = self.encode_news(titles, categories, subcategories)  # [U,L] -> [U,D]
        user = self.encode_users(news[history], history_mask)  # [B,H] -> [B,H,D] -> [B,D]
        return (news[candidates] @ user.unsqueeze(-1)).squeeze(-1)  # [B,C,D]@[B,D,1] -> [B,C]

    def score_batch(self, batch) -> torch.Tensor:
        """Logits [B,C] of a ``nram_core.data.batching.Batch``. With ``use_categories`` the batch's
        category ids must be those of the train split's category vocabulary (see
        ``nram_core.data.split.align_categories``), not the per-split ids."""
        if self.config.use_categories:
            return self(batch.titles, batch.history, batch.history_mask, batch.candidates,
                        batch.categories, batch.subcategories)
        return self(batch.titles, batch.history, batch.history_mask, batch.candidates)

    @torch.no_grad()
    def explain(self, history_titles: torch.Tensor, candidate_titles: torch.Tensor, *,
                history_categories: tuple[torch.Tensor, torch.Tensor] | None = None,
                candidate_categories: tuple[torch.Tensor, torch.Tensor] | None = None) -> Explanation:
        """Attention and score decomposition for one user (``history_titles`` [H,L]) and candidates [C,L].

        With ``use_categories``, ``*_categories`` are the news' (category ids, subcategory ids), [H] or [C]
        each. Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        with evaluating(self):
            hist_cat, hist_sub = history_categories or (None, None)
            cand_cat, cand_sub = candidate_categories or (None, None)
            hist_vecs, hist_att = self.news_encoder(history_titles, need_weights=True, categories=hist_cat,
                                                    subcategories=hist_sub)  # [H,L] -> [H,D]
            cand_vecs, cand_att = self.news_encoder(candidate_titles, need_weights=True, categories=cand_cat,
                                                    subcategories=cand_sub)  # [C,L] -> [C,D]
            mask = torch.ones(1, hist_vecs.shape[0], dtype=torch.bool, device=hist_vecs.device)  # [1,H]
            context, click_self = self.user_encoder.contextualise(hist_vecs.unsqueeze(0), mask, True)  # [1,H,D]
            user, click_pool = self.user_encoder.pool(context, mask, True)  # [1,H,D] -> [1,D]
            per_click = cand_vecs @ context[0].T  # [C,D]@[D,H] -> [C,H]
            contributions = per_click * click_pool[0]  # [C,H]
            scores = cand_vecs @ user[0]  # [C,D]@[D] -> [C]

        def cpu(t: torch.Tensor | None) -> np.ndarray:
            if t is None:  # a model without self-attention has no self-attention weights
                return np.zeros((0,), dtype=np.float32)
            return t.detach().float().cpu().numpy()

        return Explanation(
            history_word_weights=cpu(hist_att.pooling),
            history_self_attention=cpu(hist_att.self_attention),
            candidate_word_weights=cpu(cand_att.pooling),
            candidate_self_attention=cpu(cand_att.self_attention),
            click_weights=cpu(click_pool[0]),
            click_self_attention=cpu(click_self[0] if click_self is not None else None),
            contributions=cpu(contributions),
            scores=cpu(scores),
            history_view_weights=cpu(hist_att.views),
            candidate_view_weights=cpu(cand_att.views),
        )
