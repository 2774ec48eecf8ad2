"""Baselines for the NRAM experiments: Wide&Deep, DKN, popularity and random.

The trained baselines are ``nn.Module``s with ``score_batch(batch) -> [B,C]`` logits, so the
``Trainer`` trains them exactly like NRAM (the same click + K non-click samples and the same
(K+1)-way softmax). They are built from NRAM's own blocks (``masked_softmax`` and the
``NewsEncoder`` word-embedding initialisation) and expose ``news_encoder.embedding`` so that
``Trainer(word_vectors=...)`` fills their word vectors too. Their layers are plain ``nn.Linear``
and ``nn.Dropout``, so the Trainer's fast paths (``fastpath.install``) apply to them as to NRAM.

Their scores do not factor into ``user . news``, so ``nram_core.scoring.score_impressions``
scores them impression by impression through ``score_batch``; the count-based floors score a
split themselves (``score_split``), and the same entry point calls that.

Shapes: B batch, C candidates, H history, U unique news of the batch, L title length,
E word dim, G entity dim, F filters per kernel width, D news dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .data.split import Split
from .model import NewsEncoder, masked_softmax


@dataclass(frozen=True)
class BaselineConfig:
    """Sizes of the neural baselines (the word dim, title and history lengths come from ModelConfig)."""

    deep_hidden: tuple[int, ...] = (256, 128)  # Wide&Deep's MLP
    category_dim: int = 50  # Wide&Deep's category embeddings in the deep part
    filters: int = 100  # DKN: filters per kernel width
    kernel_sizes: tuple[int, ...] = (1, 2, 3)
    entity_dim: int = 100  # DKN: learned entity vectors (a vector file sets its own width)
    hidden: int = 100  # DKN: width of the attention and click MLPs

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad field (every config runs this when it is made, as ``config.py``'s do)."""
        if not self.deep_hidden or min(self.deep_hidden) < 1:
            raise ValueError(f"deep_hidden must be positive widths, got {self.deep_hidden}")
        if not self.kernel_sizes or min(self.kernel_sizes) < 1:
            raise ValueError(f"kernel_sizes must be positive, got {self.kernel_sizes}")
        for name in ("category_dim", "filters", "entity_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


BASELINE_PRESETS: dict[str, BaselineConfig] = {
    # DKN's paper: window sizes 1-3 with 100 filters each, 100-d TransE entities (MIND's vectors).
    "paper": BaselineConfig(),
    # Widths comparable to the demo NRAM (64-d news vectors).
    "demo": BaselineConfig(deep_hidden=(128, 64), category_dim=16, filters=32, entity_dim=32, hidden=64),
}


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [B,S,D] over the positions where ``mask`` [B,S] is True; zeros for empty rows."""
    weights = mask.to(x.dtype)  # [B,S]
    total = (weights.unsqueeze(-1) * x).sum(1)  # [B,S,D] -> [B,D]
    return total / weights.sum(1, keepdim=True).clamp(min=1.0)  # [B,D]


def mlp(widths: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout layers through ``widths`` and a final linear layer to one logit."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*layers)


def word_embedding(config: ModelConfig) -> nn.Embedding:
    """NRAM's word embedding, initialised exactly as NRAM initialises it."""
    return NewsEncoder(config).embedding


# ---- Wide&Deep -------------------------------------------------------------------------------
class PooledTitleEncoder(nn.Module):
    """Title tokens -> mean of the word embeddings (the deep part's news representation)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = word_embedding(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        words = self.dropout(self.embedding(tokens))  # [N,L] -> [N,L,E]
        return masked_mean(words, tokens != 0)  # [N,L,E] -> [N,E]


class WideDeep(nn.Module):
    """Wide&Deep for MIND.

    Wide: a linear model over sparse binary cross features "the user clicked category i" x
    "the candidate is of category j" (a weight per pair), the same for subcategories, plus a
    weight per candidate category and subcategory. Deep: an MLP over the mean word embedding
    of the candidate title, the mean over the clicked titles, the candidate's category and
    subcategory embeddings and the mean category embedding of the clicks. Logit = wide + deep.

    Category ids must be those of the train split's vocabulary (``align_categories``).
    """

    def __init__(self, *, config: ModelConfig, baseline: BaselineConfig, num_categories: int,
                 num_subcategories: int):
        super().__init__()
        if num_categories < 2 or num_subcategories < 2:
            raise ValueError("Wide&Deep needs the train split's category vocabulary (>= 2 names each)")
        self.config, self.baseline = config, baseline
        self.num_categories, self.num_subcategories = num_categories, num_subcategories
        self.news_encoder = PooledTitleEncoder(config)
        self.category_embedding = nn.Embedding(num_categories, baseline.category_dim, padding_idx=0)
        self.subcategory_embedding = nn.Embedding(num_subcategories, baseline.category_dim, padding_idx=0)
        self.wide_category = nn.Parameter(torch.zeros(num_categories, num_categories))
        self.wide_subcategory = nn.Parameter(torch.zeros(num_subcategories, num_subcategories))
        self.wide_candidate_category = nn.Embedding(num_categories, 1)
        self.wide_candidate_subcategory = nn.Embedding(num_subcategories, 1)
        nn.init.zeros_(self.wide_candidate_category.weight)
        nn.init.zeros_(self.wide_candidate_subcategory.weight)
        deep_in = 2 * config.word_dim + 4 * baseline.category_dim
        self.deep = mlp((deep_in, *baseline.deep_hidden), config.dropout)

    @staticmethod
    def _clicked(ids: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
        """Multi-hot [B,size] of the ids of the clicked news; the unknown id 0 is left out."""
        clicked = torch.where(mask, ids[history], 0)  # [B,H]
        hot = torch.zeros(history.shape[0], size, device=ids.device)  # [B,size]
        hot.scatter_(1, clicked, 1.0)
        hot[:, 0] = 0.0
        return hot

    def score_batch(self, batch) -> torch.Tensor:
        cats, subs = batch.categories, batch.subcategories  # [U]
        hist, mask, cand = batch.history, batch.history_mask, batch.candidates
        # wide
        cat_hot = self._clicked(cats, hist, mask, self.num_categories)  # [B,nc]
        sub_hot = self._clicked(subs, hist, mask, self.num_subcategories)  # [B,ns]
        cand_cat, cand_sub = cats[cand], subs[cand]  # [B,C]
        wide = (torch.gather(cat_hot @ self.wide_category, 1, cand_cat)  # [B,nc]@[nc,nc] -> [B,nc] -> [B,C]
                + torch.gather(sub_hot @ self.wide_subcategory, 1, cand_sub)  # [B,ns] -> [B,C]
                + self.wide_candidate_category(cand_cat).squeeze(-1)  # [B,C,1] -> [B,C]
                + self.wide_candidate_subcategory(cand_sub).squeeze(-1))  # [B,C,1] -> [B,C]
        # deep
        titles = self.news_encoder(batch.titles)  # [U,L] -> [U,E]
        news = torch.cat([titles, self.category_embedding(cats), self.subcategory_embedding(subs)], -1)  # [U,E+2c]
        user = masked_mean(news[hist], mask)  # [B,H,E+2c] -> [B,E+2c]
        candidates = news[cand]  # [B,C,E+2c]
        user = user.unsqueeze(1).expand(-1, candidates.shape[1], -1)  # [B,E+2c] -> [B,C,E+2c]
        deep = self.deep(torch.cat([user, candidates], -1)).squeeze(-1)  # [B,C,2E+4c] -> [B,C]
        return wide + deep


# ---- DKN -------------------------------------------------------------------------------------
class KCNN(nn.Module):
    """DKN's knowledge-aware CNN: word and transformed entity embeddings of each title position
    as two channels, convolutions of several widths over whole positions, max over time."""

    def __init__(self, *, config: ModelConfig, baseline: BaselineConfig, num_entities: int,
                 entity_vectors: np.ndarray | None = None):
        super().__init__()
        if max(baseline.kernel_sizes) > config.title_len:
            raise ValueError(f"kernel width {max(baseline.kernel_sizes)} exceeds title_len {config.title_len}")
        self.embedding = word_embedding(config)
        entity_dim = entity_vectors.shape[1] if entity_vectors is not None else baseline.entity_dim
        self.entity_embedding = nn.Embedding(num_entities, entity_dim, padding_idx=0)
        if entity_vectors is not None:  # pretrained (TransE in MIND): kept fixed, as in DKN
            with torch.no_grad():
                self.entity_embedding.weight.copy_(torch.from_numpy(entity_vectors))
            self.entity_embedding.weight.requires_grad_(False)
        else:
            nn.init.normal_(self.entity_embedding.weight, std=0.1)
            with torch.no_grad():
                self.entity_embedding.weight[0].zero_()
        self.entity_transform = nn.Linear(entity_dim, config.word_dim)  # g(e) = tanh(M e + b)
        self.kernel_sizes = tuple(baseline.kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv2d(2, baseline.filters, (k, config.word_dim)) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.output_dim = baseline.filters * len(self.kernel_sizes)

    def forward(self, tokens: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        """``tokens`` and ``entities`` [N,L] (entity 0: none) -> [N,D]; an empty title gives zeros."""
        # The trainer may cut the all-padding title columns (Batch.trim); entities sit only
        # on real tokens, so the same cut loses none. Keep at least the widest kernel's columns.
        width = max(tokens.shape[1], max(self.kernel_sizes))
        tokens = F.pad(tokens, (0, width - tokens.shape[1]))  # [N,L'] -> [N,L]
        entities = F.pad(entities[:, :width], (0, width - min(width, entities.shape[1])))  # [N,L_full] -> [N,L]
        mask = tokens != 0  # [N,L]
        words = self.embedding(tokens)  # [N,L] -> [N,L,E]
        has_entity = (entities != 0).unsqueeze(-1)  # [N,L,1]
        ents = torch.tanh(self.entity_transform(self.entity_embedding(entities))) * has_entity  # [N,L] -> [N,L,E]
        channels = self.dropout(torch.stack([words, ents], dim=1))  # [N,L,E] x2 -> [N,2,L,E]
        lengths = mask.sum(1)  # [N]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            feature = F.relu(conv(channels)).squeeze(-1)  # [N,2,L,E] -> [N,F,L-k+1,1] -> [N,F,L-k+1]
            starts = torch.arange(feature.shape[-1], device=tokens.device)  # [L-k+1]
            # Windows that start inside the title and end inside it (a title shorter than k keeps one).
            valid = starts[None, :] < (lengths - k + 1).clamp(min=1)[:, None]  # [N,L-k+1]
            best = feature.masked_fill(~valid[:, None, :], float("-inf")).amax(-1)  # [N,F,L-k+1] -> [N,F]
            pooled.append(torch.where((lengths > 0)[:, None], best, torch.zeros_like(best)))  # [N,F]
        return torch.cat(pooled, dim=-1)  # [N,F*len(kernel_sizes)]


class CandidateAttention(nn.Module):
    """DKN's attention: each clicked news is weighed by an MLP of (clicked, candidate)."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, clicked: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor,
                need_weights: bool = False):
        """``clicked`` [B,H,D], ``candidates`` [B,C,D], ``mask`` [B,H] -> user vector per candidate [B,C,D]."""
        b, c, h = clicked.shape[0], candidates.shape[1], clicked.shape[1]
        pairs = torch.cat([clicked.unsqueeze(1).expand(b, c, h, -1),
                           candidates.unsqueeze(2).expand(b, c, h, -1)], dim=-1)  # [B,C,H,2D]
        scores = self.score(pairs).squeeze(-1)  # [B,C,H,2D] -> [B,C,H]
        weights = masked_softmax(scores, mask.unsqueeze(1).expand(b, c, h))  # [B,C,H]
        user = weights @ clicked  # [B,C,H]@[B,H,D] -> [B,C,D]
        return user, (weights if need_weights else None)


class DKN(nn.Module):
    """DKN (Wang et al., 2018): KCNN news encoder over title words and their aligned entities,
    candidate-aware attention over the clicked news, MLP click predictor on (user, candidate).

    Batches must carry ``entities`` (``nram_core.data.entities.with_entities`` on the split).
    """

    def __init__(self, *, config: ModelConfig, baseline: BaselineConfig, num_entities: int,
                 entity_vectors: np.ndarray | None = None):
        super().__init__()
        if entity_vectors is not None and entity_vectors.shape[0] != num_entities:
            raise ValueError(f"entity_vectors has {entity_vectors.shape[0]} rows for {num_entities} entities")
        self.config, self.baseline = config, baseline
        self.news_encoder = KCNN(config=config, baseline=baseline, num_entities=num_entities,
                                 entity_vectors=entity_vectors)
        dim = self.news_encoder.output_dim
        self.attention = CandidateAttention(dim=dim, hidden=baseline.hidden)
        self.click = mlp((2 * dim, baseline.hidden), config.dropout)

    def score_batch(self, batch) -> torch.Tensor:
        if batch.entities is None:
            raise ValueError("DKN needs batches with entities: prepare the split with data.entities.with_entities")
        news = self.news_encoder(batch.titles, batch.entities)  # [U,L] -> [U,D]
        clicked, candidates = news[batch.history], news[batch.candidates]  # [B,H,D], [B,C,D]
        user, _ = self.attention(clicked, candidates, batch.history_mask)  # [B,C,D]
        return self.click(torch.cat([user, candidates], -1)).squeeze(-1)  # [B,C,2D] -> [B,C]


# ---- count-based floors ------------------------------------------------------------------------
class Popularity:
    """Score = log(1 + clicks of the news in the train impressions). No training."""

    def __init__(self, train: Split):
        b = train.behaviors
        counts = np.bincount(b.candidates[b.labels == 1], minlength=len(train.news))
        self.clicks = {news_id: int(counts[row]) for row, news_id in enumerate(train.news.ids) if row}

    def score_split(self, split: Split, *, max_impressions: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        per_row = np.log1p([0] + [self.clicks.get(n, 0) for n in split.news.ids[1:]])  # [N+1]
        offsets, end = split.impression_range(max_impressions)
        return per_row[split.behaviors.candidates[:end]], split.behaviors.labels[:end], offsets


class RandomScores:
    """Uniform random scores (seeded): the floor every model must clear (AUC about 0.5)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score_split(self, split: Split, *, max_impressions: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offsets, end = split.impression_range(max_impressions)
        return np.random.default_rng(self.seed).random(end), split.behaviors.labels[:end], offsets
