"""NAML: neural news recommendation with attentive multi-view learning (Wu et al., IJCAI 2019,
ijcai.org/proceedings/2019/0536).

News encoder, four views of one news, each ``filters`` wide:
* title: word embeddings -> dropout -> CNN -> dropout -> additive attention over the words;
* body (the abstract): the same with its own CNN and attention, on the same word embeddings;
* category and subcategory: an embedding -> a dense layer with ReLU to ``filters``;
then additive attention over the views gives the news vector [N,F] (``news_dim == filters``).
User encoder: additive attention over the clicked news vectors, u = sum_i a_i n_i (``model.UserEncoder``
without self-attention: NRAM's user encoder, reused).
Click score: the inner product of the user vector and the candidate's news vector.

Sizes (config.FAMILY_SIZES["naml"], "paper"): microsoft/recommenders' naml.yaml, which are the
paper's own (§4.1): 300-d words, 400 filters, window 3, attention queries 200, 100-d category and
subcategory embeddings, abstracts cut to 50 words (``abstract_len``), dropout 0.2. The run's
vocabulary covers the train titles and abstracts (``data.split.build_vocab(abstracts=True)``).

Choices where the paper and the references differ:
* A view whose input is empty is masked out of the view attention (weight exactly 0): an empty
  abstract, an unknown category (id 0: a name that train lacks) or an empty title. Neither the paper
  nor the references mask views: recommenders' NAML embeds category id 0 like any other (a learned
  vector), and an all-padding abstract pools to the zero vector, which still takes a view weight
  and dilutes the others. yusanshi/news-recommendation does the same. Here no view stands for
  what is missing, so a news without an abstract is its title and categories.
* Without ``use_categories`` the two category views are always masked (the view weights stay
  four wide, with zeros in the category columns).
* A history with no click gets a learned user vector (``layers.EmptyHistory``, with
  ``config.empty_history``); the paper's attention over no click is the zero vector, which ties
  every candidate of a cold user.
* Initialisation with ``init="glorot"``: Glorot-uniform dense layers, CNNs with a convolution's
  fans (Keras' Conv1D, as recommenders' NAML), zero biases; word and category embeddings
  N(0, embedding_std) with row 0 zero.

The user vector is a weighted sum of the clicked news vectors, so a score splits exactly over the
clicks: u . n_c = sum_i a_i (n_i . n_c) (``explain``). News and users are encoded apart, so
``scoring`` encodes every news once (with its abstract and categories) and scores by dot products.

Shapes: B batch, L title length, A abstract length, H history length, C candidates, N news,
U unique news of a batch, E word dim, F filters, Dc category dim, V = 4 views.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import ModelConfig
from .layers import TitleCNN
from .model import AdditiveAttention, UserEncoder, evaluating, glorot_init

VIEWS = ("title", "abstract", "category", "subcategory")  # the columns of the view weights


class TextView(nn.Module):
    """One text view (title or abstract): embedded tokens -> CNN -> additive attention -> [N,F]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.cnn = TitleCNN(word_dim=config.word_dim, filters=config.filters, window=config.window)
        self.pooling = AdditiveAttention(input_dim=config.filters, query_dim=config.query_dim)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        """``embedded`` [N,S,E] word vectors, ``mask`` [N,S] bool -> (view [N,F], word weights [N,S] or None)."""
        context = self.dropout(self.cnn(self.dropout(embedded), mask))  # [N,S,E] -> [N,S,F]
        return self.pooling(context, mask, need_weights)  # [N,S,F] -> [N,F]


class CategoryView(nn.Module):
    """A category id -> its embedding -> a dense layer with ReLU, [N] -> [N,F]."""

    def __init__(self, *, num_categories: int, category_dim: int, filters: int):
        super().__init__()
        self.embedding = nn.Embedding(num_categories, category_dim, padding_idx=0)  # id 0: unknown
        self.dense = nn.Linear(category_dim, filters)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(self.embedding(ids)))  # [N] -> [N,Dc] -> [N,F]


class NAMLNewsEncoder(nn.Module):
    """Title and abstract tokens (and, with ``use_categories``, category ids) -> news vector [N,F]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)  # shared by both texts
        self.title = TextView(config)
        self.body = TextView(config)
        self.use_categories = config.use_categories
        if config.use_categories:
            self.category = CategoryView(num_categories=config.num_categories, category_dim=config.category_dim,
                                         filters=config.filters)
            self.subcategory = CategoryView(num_categories=config.num_subcategories,
                                            category_dim=config.category_dim, filters=config.filters)
        self.view_pooling = AdditiveAttention(input_dim=config.filters, query_dim=config.query_dim)
        for table in self.modules():  # words and categories: N(0, embedding_std), row 0 (padding, unknown) zero
            if isinstance(table, nn.Embedding):
                nn.init.normal_(table.weight, std=config.embedding_std)
                with torch.no_grad():
                    table.weight[0].zero_()

    def forward(self, titles: torch.Tensor, abstracts: torch.Tensor, need_weights: bool = False,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None):
        """``titles`` [N,L] and ``abstracts`` [N,A] tokens (0: padding); ``categories`` and ``subcategories``
        [N] ids of the train split's category vocabulary (``use_categories`` only). Returns (news [N,F],
        ``NAMLAttention`` when ``need_weights``, else None)."""
        title_mask, body_mask = titles != 0, abstracts != 0  # [N,L], [N,A]
        title, title_weights = self.title(self.embedding(titles), title_mask, need_weights)  # [N,L] -> [N,F]
        body, body_weights = self.body(self.embedding(abstracts), body_mask, need_weights)  # [N,A] -> [N,F]
        body = body.to(title.dtype)
        if self.use_categories:
            if categories is None or subcategories is None:
                raise ValueError("this model reads categories: pass the news' category and subcategory ids")
            category = self.category(categories).to(title.dtype)  # [N] -> [N,F]
            subcategory = self.subcategory(subcategories).to(title.dtype)  # [N] -> [N,F]
            known = (categories != 0, subcategories != 0)  # 2 x [N]
        else:  # no category views: always masked out
            category = subcategory = torch.zeros_like(title)  # [N,F]
            known = (title_mask.new_zeros(title_mask.shape[0]),) * 2  # 2 x [N]
        views = torch.stack([title, body, category, subcategory], dim=1)  # 4 x [N,F] -> [N,4,F]
        view_mask = torch.stack([title_mask.any(dim=1), body_mask.any(dim=1), *known], dim=1)  # [N,4]
        news, view_weights = self.view_pooling(views, view_mask, need_weights)  # [N,4,F] -> [N,F]
        attention = NAMLAttention(title_weights, body_weights, view_weights) if need_weights else None
        return news, attention


@dataclass(frozen=True)
class NAMLAttention:
    """The attention weights of one news-encoder call."""

    title: torch.Tensor  # [N,L] over each title's words
    abstract: torch.Tensor  # [N,A] over each abstract's words
    views: torch.Tensor  # [N,4] over the views, in ``VIEWS`` order


@dataclass(frozen=True)
class NAMLExplanation:
    """What NAML attended to for one history and a set of candidates (NumPy, on CPU).

    ``scores[c] == contributions[c].sum()`` exactly when the history has a click: the user vector is
    the weighted sum u = sum_i click_weights[i] * n_i, so u . n_c = sum_i click_weights[i] * (n_i . n_c).
    A history with no click scores with the learned empty-history vector, and ``contributions`` is [C,0].
    """

    history_title_weights: np.ndarray  # [H,L] additive attention over each clicked title's words
    history_abstract_weights: np.ndarray  # [H,A]
    history_view_weights: np.ndarray  # [H,4] title/abstract/category/subcategory (``VIEWS``)
    candidate_title_weights: np.ndarray  # [C,L]
    candidate_abstract_weights: np.ndarray  # [C,A]
    candidate_view_weights: np.ndarray  # [C,4]
    click_weights: np.ndarray  # [H] additive attention of the user encoder over the clicks
    contributions: np.ndarray  # [C,H] per-click share of each candidate's score
    scores: np.ndarray  # [C]
    kind: str = "naml"
    click_attention: bool = True  # per-click weights exist (``click_weights``)


class NAML(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.check_buildable("naml")
        self.config = config
        self.news_encoder = NAMLNewsEncoder(config)
        # The user encoder is NRAM's without self-attention: additive attention over the clicks, and the
        # learned empty-history vector (``config.empty_history``).
        self.user_encoder = UserEncoder(dataclasses.replace(config, self_attention=False))
        if config.init == "glorot":
            glorot_init(self)
            self.news_encoder.title.cnn.glorot_()
            self.news_encoder.body.cnn.glorot_()

    def encode_news(self, titles: torch.Tensor, categories: torch.Tensor | None = None,
                    subcategories: torch.Tensor | None = None, *,
                    abstracts: torch.Tensor | None = None) -> torch.Tensor:
        """[N,L] title and [N,A] abstract tokens (plus [N] category ids when ``use_categories``) -> [N,F]."""
        if abstracts is None:
            raise ValueError("NAML reads abstracts: pass the news' abstract tokens (News.abstract_tokens)")
        return self.news_encoder(titles, abstracts, categories=categories,
                                 subcategories=subcategories)[0]  # [N,L], [N,A] -> [N,F]

    def encode_users(self, clicked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B,H,F] clicked news vectors, [B,H] mask -> [B,F] user vectors."""
        return self.user_encoder(clicked, mask)[0]  # [B,H,F] -> [B,F]

    def forward(self, titles: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor,
                candidates: torch.Tensor, *, abstracts: torch.Tensor, categories: torch.Tensor | None = None,
                subcategories: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits [B,C]. ``titles`` [U,L] and ``abstracts`` [U,A] are the batch's unique news, each
        encoded once; ``history`` [B,H] and ``candidates`` [B,C] index their rows; ``categories`` and
        ``subcategories`` [U] with ``use_categories`` only."""
        news = self.encode_news(titles, categories, subcategories, abstracts=abstracts)  # [U,L] -> [U,F]
        user = self.encode_users(news[history], history_mask)  # [B,H] -> [B,H,F] -> [B,F]
        return (news[candidates] @ user.to(news.dtype).unsqueeze(-1)).squeeze(-1)  # [B,C,F]@[B,F,1] -> [B,C]

    def score_batch(self, batch) -> torch.Tensor:
        """Logits [B,C] of a ``nram_core.data.batching.Batch`` made from a split that carries abstract
        tokens (``load_split(abstract_len=...)``). With ``use_categories`` its category ids must be the
        train vocabulary's (``nram_core.data.split.align_categories``)."""
        if batch.abstracts is None:
            raise ValueError("NAML reads abstracts: the batch has none (load the split with abstract_len)")
        categories = (batch.categories, batch.subcategories) if self.config.use_categories else (None, None)
        return self(batch.titles, batch.history, batch.history_mask, batch.candidates, abstracts=batch.abstracts,
                    categories=categories[0], subcategories=categories[1])

    @torch.no_grad()
    def explain(self, history_titles: torch.Tensor, candidate_titles: torch.Tensor, *,
                history_abstracts: torch.Tensor, candidate_abstracts: torch.Tensor,
                history_categories: tuple[torch.Tensor, torch.Tensor] | None = None,
                candidate_categories: tuple[torch.Tensor, torch.Tensor] | None = None) -> NAMLExplanation:
        """Word, view and click attention for one history (``history_titles`` [H,L] and
        ``history_abstracts`` [H,A]) and candidates ([C,L], [C,A]), and each click's share of each score.

        With ``use_categories``, ``*_categories`` are the news' (category ids, subcategory ids), [H] or [C]
        each. Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        with evaluating(self):
            hist_cat, hist_sub = history_categories or (None, None)
            cand_cat, cand_sub = candidate_categories or (None, None)
            hist_vecs, hist_att = self.news_encoder(history_titles, history_abstracts, True, hist_cat,
                                                    hist_sub)  # [H,L], [H,A] -> [H,F]
            cand_vecs, cand_att = self.news_encoder(candidate_titles, candidate_abstracts, True, cand_cat,
                                                    cand_sub)  # [C,L], [C,A] -> [C,F]
            mask = torch.ones(1, hist_vecs.shape[0], dtype=torch.bool, device=hist_vecs.device)  # [1,H]
            user, click_weights = self.user_encoder.pool(hist_vecs.unsqueeze(0), mask, True)  # [1,H,F] -> [1,F]
            contributions = (cand_vecs @ hist_vecs.T) * click_weights  # [C,F]@[F,H] -> [C,H]
            scores = cand_vecs @ user[0]  # [C,F]@[F] -> [C]

        def cpu(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        return NAMLExplanation(
            history_title_weights=cpu(hist_att.title), history_abstract_weights=cpu(hist_att.abstract),
            history_view_weights=cpu(hist_att.views), candidate_title_weights=cpu(cand_att.title),
            candidate_abstract_weights=cpu(cand_att.abstract), candidate_view_weights=cpu(cand_att.views),
            click_weights=cpu(click_weights[0]), contributions=cpu(contributions), scores=cpu(scores),
        )
