"""LSTUR: news recommendation with long- and short-term user representations (An et al., ACL 2019,
aclweb.org/anthology/P19-1033).

News encoder: word embeddings -> dropout -> title CNN -> dropout -> additive attention over the words
-> title vector e_t, concatenated with the topic (category) and subtopic (subcategory) embeddings:
e = [e_t ; e_v ; e_sv], of width ``news_dim = filters + 2 * category_dim`` (``filters`` without
``use_categories``).
User encoder: a GRU over the clicked news vectors, oldest to newest, gives the short-term vector (its
last hidden state); a user-id embedding gives the long-term vector u_l, masked to zero with probability
``user_mask`` in training. "ini": u_l is the GRU's initial state and the user vector is the last
hidden state, width news_dim. "con": the GRU and u_l are news_dim / 2 wide each, and the user vector
is their concatenation [h ; u_l].
Click score: the inner product of the user vector and the candidate's news vector.

Choices where the paper and the references differ (document the numbers in config.py's presets):
* Word attention: the paper weighs words by a_i = tanh(v . c_i + b), one vector v. Here it is the
  two-layer additive attention q . tanh(W c_i + b) (``model.AdditiveAttention``, hidden ``query_dim``),
  as microsoft/recommenders' (AttLayer2, 200) and yusanshi/news-recommendation's LSTUR do; the
  paper's form is its special case with a one-wide hidden layer.
* Topic embeddings are concatenated as in the paper; recommenders' LSTUR reads the title only.
* "con" is the bare concatenation, as in the paper; recommenders adds a Dense layer after it.
  Its dot product pairs the halves: the GRU state meets the news vector's first D/2 entries (title
  filters) and u_l the rest, which holds the topic embeddings whenever ``filters >= 2 * category_dim``
  (demo, paper): only the long-term vector scores the topics, so a masked or unknown user scores none.
* The long-term vector is masked whole, without rescale (the paper's rule); yusanshi uses dropout,
  which rescales the kept vectors by 1/(1-p). Unknown users (id 0) get the zero vector, the state a
  masked user trains in.
* Initialisation with ``init="glorot"``: Glorot-uniform dense layers, CNN (with a convolution's fans)
  and GRU matrices with zero biases, as recommenders' Keras LSTUR; word and topic embeddings
  N(0, embedding_std) with row 0 zero; user embeddings zero (``layers.UserEmbedding`` says why).

An empty history (no click) is run as one GRU step on a zero input: ini gives GRU(0, u_l), a learned
function of the long-term vector; con gives [GRU(0, 0) ; u_l], whose first half is a learned constant.
Either way the candidates are not all tied, and the step's parameters learn from the empty histories
of train. The GRU has no per-click attention, so ``explain`` measures what each click changes instead.

Shapes: B batch, L title length, H history length, C candidates, N news, U unique news of a batch,
E word dim, F filters, D news_dim, G GRU width (D for ini, D/2 for con).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .config import ModelConfig
from .layers import TitleCNN, UserEmbedding, word_embedding
from .model import AdditiveAttention, evaluating, glorot_init


class LSTURNewsEncoder(nn.Module):
    """Title tokens (and, with ``use_categories``, category ids) -> news vector [N,D]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = word_embedding(config)
        self.dropout = nn.Dropout(config.dropout)
        self.cnn = TitleCNN(word_dim=config.word_dim, filters=config.filters, window=config.window)
        self.pooling = AdditiveAttention(input_dim=config.filters, query_dim=config.query_dim)
        self.use_categories = config.use_categories
        if config.use_categories:  # id 0 is the unknown category: a zero vector
            self.category_embedding = nn.Embedding(config.num_categories, config.category_dim, padding_idx=0)
            self.subcategory_embedding = nn.Embedding(config.num_subcategories, config.category_dim, padding_idx=0)
            for table in (self.category_embedding, self.subcategory_embedding):
                nn.init.normal_(table.weight, std=config.embedding_std)
        for table in self.modules():
            if isinstance(table, nn.Embedding):
                with torch.no_grad():
                    table.weight[0].zero_()

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None):
        """``tokens`` [N,L] int; ``mask`` [N,L] bool, by default ``tokens != 0``; ``categories`` and
        ``subcategories`` [N] ids of the train split's category vocabulary (``use_categories`` only).
        Returns (news [N,D], word weights [N,L] when ``need_weights``, else None)."""
        if mask is None:
            mask = tokens != 0  # [N,L]
        embedded = self.dropout(self.embedding(tokens))  # [N,L] -> [N,L,E]
        context = self.dropout(self.cnn(embedded, mask))  # [N,L,E] -> [N,L,F]
        title, word_weights = self.pooling(context, mask, need_weights)  # [N,L,F] -> [N,F]
        if not self.use_categories:
            return title, word_weights
        if categories is None or subcategories is None:
            raise ValueError("this model reads categories: pass the news' category and subcategory ids")
        news = torch.cat([title, self.category_embedding(categories).to(title.dtype),
                          self.subcategory_embedding(subcategories).to(title.dtype)], dim=-1)  # [N,F+2*Dc]
        return news, word_weights


class LSTURUserEncoder(nn.Module):
    """Clicked news vectors and user ids -> user vector [B,D]: a GRU (short-term) with a user-id
    embedding (long-term) as its initial state ("ini") or beside its last state ("con")."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.long_short = config.long_short
        width = config.news_dim if config.long_short == "ini" else config.news_dim // 2  # G
        self.long_term = UserEmbedding(num_users=config.num_users, dim=width, mask_p=config.user_mask)
        self.gru = nn.GRU(config.news_dim, width, batch_first=True)

    def forward(self, clicked: torch.Tensor, mask: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``clicked`` [B,H,D] news vectors, oldest first; ``mask`` [B,H] bool, right-padded (the clicks
        of a row come first); ``users`` [B] int64 ids of the train user vocabulary (0: unknown)."""
        long_term = self.long_term(users)  # [B] -> [B,G]
        return self.combine(self.short_term(clicked, mask, long_term), long_term)  # [B,D]

    def short_term(self, clicked: torch.Tensor, mask: torch.Tensor, long_term: torch.Tensor) -> torch.Tensor:
        """The GRU's last hidden state over each row's clicks, [B,H,D] -> [B,G]; an empty row runs one
        step on a zero input."""
        lengths = mask.sum(dim=1)  # [B,H] -> [B]
        positions = torch.arange(mask.shape[1], device=mask.device)  # [H]
        if not torch.equal(mask, positions[None, :] < lengths[:, None]):
            raise ValueError("the history mask must be right-padded: each row's clicks first, then padding")
        dtype = self.gru.weight_ih_l0.dtype  # the GRU runs in its weights' dtype (an autocast input may be bf16)
        inputs = clicked.to(dtype).masked_fill(~mask.unsqueeze(-1), 0.0)  # [B,H,D]; padding never enters
        if inputs.shape[0] == 0:  # no sample: nothing for the GRU to pack
            return inputs.new_zeros(0, self.gru.hidden_size)  # [0,G]
        if inputs.shape[1] == 0:  # no history column at all: the one zero step of an empty history
            inputs = inputs.new_zeros(inputs.shape[0], 1, inputs.shape[2])  # [B,0,D] -> [B,1,D]
        packed = pack_padded_sequence(inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        initial = long_term.to(dtype).unsqueeze(0) if self.long_short == "ini" else None  # [B,G] -> [1,B,G]
        _, last = self.gru(packed, initial)  # last: [1,B,G]
        return last.squeeze(0)  # [1,B,G] -> [B,G]

    def combine(self, short_term: torch.Tensor, long_term: torch.Tensor) -> torch.Tensor:
        """The user vector from the two parts: ini, the GRU state itself; con, [h ; u_l]."""
        if self.long_short == "ini":
            return short_term  # [B,D]
        return torch.cat([short_term, long_term.to(short_term.dtype)], dim=-1)  # 2 x [B,D/2] -> [B,D]


@dataclass(frozen=True)
class LSTURExplanation:
    """What LSTUR attended to for one user and a set of candidates (NumPy, on CPU).

    The GRU has no per-click attention (``click_attention`` is False), so no per-click weights exist;
    ``leave_one_out`` measures what each click changes instead, and ``unknown_user_scores`` what the
    long-term vector changes. Both are measured differences, not a decomposition of the score. For
    "con" the score splits exactly (``exact``): ``scores == short_term_scores + long_term_scores``,
    the news vector's first half against the GRU state and its second half against u_l.
    """

    history_word_weights: np.ndarray  # [H,L] additive attention over each clicked title's words
    candidate_word_weights: np.ndarray  # [C,L]
    scores: np.ndarray  # [C]
    unknown_user_scores: np.ndarray  # [C] the same history scored as the unknown user (id 0)
    leave_one_out: np.ndarray  # [C,H] score with click i left out minus ``scores``
    short_term_scores: np.ndarray  # [C] con only ([0] for ini)
    long_term_scores: np.ndarray  # [C] con only ([0] for ini)
    exact: bool  # True for con: short_term_scores + long_term_scores == scores
    kind: str = "lstur"
    click_attention: bool = False  # a GRU: there are no per-click attention weights to show


class LSTUR(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.check_buildable("lstur")  # num_users too (row 0: the unknown user)
        self.config = config
        self.news_encoder = LSTURNewsEncoder(config)
        self.user_encoder = LSTURUserEncoder(config)
        if config.init == "glorot":
            glorot_init(self)
            self.news_encoder.cnn.glorot_()
            for name, weight in self.user_encoder.gru.named_parameters():
                if name.startswith("weight"):
                    nn.init.xavier_uniform_(weight)
                else:
                    nn.init.zeros_(weight)

    def encode_news(self, titles: torch.Tensor, categories: torch.Tensor | None = None,
                    subcategories: torch.Tensor | None = None) -> torch.Tensor:
        """[N,L] tokens (plus [N] category ids when ``use_categories``) -> [N,D] news vectors."""
        return self.news_encoder(titles, categories=categories, subcategories=subcategories)[0]  # [N,L] -> [N,D]

    def encode_users_with_ids(self, clicked: torch.Tensor, mask: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[B,H,D] clicked news vectors, [B,H] right-padded mask, [B] user ids -> [B,D] user vectors.

        Named apart from NRAM's ``encode_users(clicked, mask)``: a caller that has no user ids must not
        get unknown-user vectors by accident."""
        return self.user_encoder(clicked, mask, users)  # [B,H,D] -> [B,D]

    def forward(self, titles: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor,
                candidates: torch.Tensor, *, users: torch.Tensor | None = None,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits [B,C]. ``titles`` [U,L] are the batch's unique news, each encoded once; ``history``
        [B,H] and ``candidates`` [B,C] index its rows; ``users`` [B] ids of the train user vocabulary
        (None: every sample is the unknown user 0); ``categories`` and ``subcategories`` [U] with
        ``use_categories`` only."""
        news = self.encode_news(titles, categories, subcategories)  # [U,L] -> [U,D]
        if users is None:
            users = torch.zeros(history.shape[0], dtype=torch.long, device=history.device)  # [B]
        user = self.encode_users_with_ids(news[history], history_mask, users)  # [B,H] -> [B,H,D] -> [B,D]
        return (news[candidates] @ user.to(news.dtype).unsqueeze(-1)).squeeze(-1)  # [B,C,D]@[B,D,1] -> [B,C]

    def score_batch(self, batch) -> torch.Tensor:
        """Logits [B,C] of a ``nram_core.data.batching.Batch``. Its ``users`` are ids of the run's train
        user vocabulary; a batch without them (None, or a Batch that has no such field) scores every
        sample as the unknown user. With ``use_categories`` its category ids must be the train
        vocabulary's (``nram_core.data.split.align_categories``)."""
        categories = (batch.categories, batch.subcategories) if self.config.use_categories else (None, None)
        return self(batch.titles, batch.history, batch.history_mask, batch.candidates,
                    users=getattr(batch, "users", None), categories=categories[0], subcategories=categories[1])

    @torch.no_grad()
    def explain(self, history_titles: torch.Tensor, candidate_titles: torch.Tensor, *, user: int = 0,
                history_categories: tuple[torch.Tensor, torch.Tensor] | None = None,
                candidate_categories: tuple[torch.Tensor, torch.Tensor] | None = None) -> LSTURExplanation:
        """Word attention and measured score differences for one user (``user``: an id of the train user
        vocabulary, 0 unknown; ``history_titles`` [H,L], oldest first) and candidates [C,L].

        With ``use_categories``, ``*_categories`` are the news' (category ids, subcategory ids), [H] or [C]
        each. Runs in eval mode (no dropout, no user masking) and restores the previous mode afterwards.
        """
        with evaluating(self):
            hist_cat, hist_sub = history_categories or (None, None)
            cand_cat, cand_sub = candidate_categories or (None, None)
            hist_vecs, hist_words = self.news_encoder(history_titles, need_weights=True, categories=hist_cat,
                                                      subcategories=hist_sub)  # [H,L] -> [H,D]
            cand_vecs, cand_words = self.news_encoder(candidate_titles, need_weights=True, categories=cand_cat,
                                                      subcategories=cand_sub)  # [C,L] -> [C,D]
            clicks = hist_vecs.shape[0]
            device = hist_vecs.device
            # Row 0: the whole history; row 1 + i: click i left out (the later clicks move up one place);
            # the last row: the whole history as the unknown user.
            left_out = torch.eye(clicks, dtype=torch.int8, device=device)  # [H,H]
            order = torch.argsort(left_out, dim=1, stable=True)  # [H,H] the kept clicks first, in order
            rows = torch.cat([torch.arange(clicks, device=device)[None, :], order,
                              torch.arange(clicks, device=device)[None, :]])  # [2+H,H]
            lengths = torch.full((2 + clicks,), max(clicks - 1, 0), device=device)  # [2+H]
            lengths[0] = lengths[-1] = clicks
            mask = torch.arange(clicks, device=device)[None, :] < lengths[:, None]  # [2+H,H]
            ids = torch.tensor([user, 0], dtype=torch.long, device=device)  # [2] this user, the unknown user
            long_term = self.user_encoder.long_term(ids)  # [2] -> [2,G]
            starts = torch.cat([long_term[:1].expand(1 + clicks, -1), long_term[1:]])  # [2+H,G]
            short = self.user_encoder.short_term(hist_vecs[rows], mask, starts)  # [2+H,H] -> [2+H,H,D] -> [2+H,G]
            users = self.user_encoder.combine(short, starts)  # [2+H,D]
            all_scores = cand_vecs @ users.T  # [C,D]@[D,2+H] -> [C,2+H]
            scores = all_scores[:, 0]  # [C]
            exact = self.config.long_short == "con"
            half = self.config.news_dim // 2
            short_scores = cand_vecs[:, :half] @ short[0] if exact else scores.new_zeros(0)  # [C,D/2]@[D/2] -> [C]
            long_scores = cand_vecs[:, half:] @ long_term[0] if exact else scores.new_zeros(0)  # [C]

        def cpu(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        return LSTURExplanation(
            history_word_weights=cpu(hist_words),
            candidate_word_weights=cpu(cand_words),
            scores=cpu(scores),
            unknown_user_scores=cpu(all_scores[:, 1 + clicks]),
            leave_one_out=cpu(all_scores[:, 1:1 + clicks] - scores[:, None]),  # [C,H]
            short_term_scores=cpu(short_scores),
            long_term_scores=cpu(long_scores),
            exact=exact,
        )
