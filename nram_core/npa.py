"""NPA: neural news recommendation with personalized attention (Wu et al., KDD 2019,
doi.org/10.1145/3292500.3330665).

User queries: the user id's embedding e_u (``user_dim`` wide) gives, through two dense layers with
ReLU, a word-level query q_w = ReLU(V_w e_u + v_w) and a news-level query q_d = ReLU(V_d e_u + v_d),
``query_dim`` wide each (the paper's "preference queries").
News encoder: word embeddings -> dropout -> title CNN (ReLU) -> dropout -> personalized attention
over the words, a_i = softmax_i(c_i . tanh(W_p q_w + b_p)), giving r = sum_i a_i c_i, ``news_dim =
filters`` wide. The same title gets another vector for another user: clicked and candidate news are
both encoded with the reader's q_w.
User encoder: personalized attention over the clicked news vectors with q_d (its own W_p', b_p'),
u = sum_i b_i r_i.
Click score: the inner product of u and the candidate's vector r'.

Sizes: the paper's (§4.1: 300-d words, 400 filters of window 3, 50-d user embedding, 200-d queries,
dropout 0.2), which microsoft/recommenders' npa.yaml also uses (user_emb_dim 50, attention_hidden_dim
200, filter_num 400, window_size 3); ``config.FAMILY_SIZES["npa"]``. yusanshi/news-recommendation
has no NPA (its models: NRMS, NAML, LSTUR, DKN, Hi-Fi Ark, TANR, FIM), so recommenders' Keras NPA is
the one reference.

Choices where the paper and recommenders differ:
* Attention form: the paper's, a_i = c_i . tanh(W_p q + b_p): the query is projected into the CNN's
  space once per user and each word costs one dot product. recommenders' ``PersonalizedAttentivePooling``
  is additive attention with the user's query in place of a learned one, a_i = q . tanh(W c_i + b),
  and it applies a second dropout (0.2) to the pooled vectors inside the layer; neither is taken.
* Queries: ReLU dense layers, as in the paper (recommenders: a linear Dense).
* User embeddings start at zero (recommenders' ``embeddings_initializer="zeros"``;
  ``layers.UserEmbedding`` says why). With ReLU queries that start is a trap: at e_u = 0 with zero
  biases every query unit sits at ReLU's kink, where its gradient is zero, so neither the queries
  nor the user embeddings would ever train. The two query layers' biases therefore start at
  ``QUERY_BIAS`` = 0.1 (the usual small positive ReLU bias that starts units active; Goodfellow et
  al., Deep Learning, 2016, §6.3.1), with ``init="glorot"`` as with ``init="torch"``.
* User masking: the paper has none; here each sample's e_u is masked whole with probability
  ``user_mask`` in training (LSTUR's rule, ``layers.UserEmbedding``), so the zero embedding is
  trained.
* Masks: padding words and padding clicks get no attention (masked softmax, -inf fill);
  recommenders pools its padding too.
* Empty history: ``layers.EmptyHistory`` (with ``config.empty_history``): a learned user vector for
  a history with no click, trained on train's empty histories; attention over no click would give
  the zero vector and tie every candidate.

Unknown and cold users. Id 0 of the train ``UserVocab`` is the unknown user (a dev or test user absent
from train) and also what a masked training sample is. Its embedding is the zero vector, so its
queries are ReLU(v_w) and ReLU(v_d): the dense layers' learned biases, one generic query per level,
trained by the masked samples. A known user's queries are those biases moved by its embedding.

Scoring. Every news vector depends on the reader, so news and users cannot be encoded apart: NPA has
no ``encode_users(clicked, mask)``, ``scoring.encodes_apart`` is False for it (it reads user ids), and
``scoring.score_impressions`` scores it impression by impression through ``score_batch``. Within a
batch the CNN runs once per unique news ([U,L,F]); only the personalized pooling runs per (sample,
news) pair, on the real pairs (no padding click), in chunks of ``POOL_CELLS`` gathered values, so a
scoring batch of thousands of impressions stays bounded.

Shapes: B batch, L title length, H history length, C candidates, N = H + C news per sample, U unique
news of a batch, P real (sample, news) pairs, E word dim, F filters (= D, news_dim), Q query dim,
Du user dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import ModelConfig
from .layers import EmptyHistory, TitleCNN, UserEmbedding, word_embedding
from .model import evaluating, glorot_init, masked_softmax

QUERY_BIAS = 0.1  # initial bias of the query layers: see the module docstring (ReLU at a zero embedding)
POOL_CELLS = 1 << 22  # gathered CNN values (pairs x L x F) per chunk of personalized word pooling: 16 MB fp32


class PersonalizedAttention(nn.Module):
    """Pool a sequence with a query per row, a_i = softmax_i(x_i . tanh(W_p q + b_p)): NPA's attention over
    the words of a title (q = q_w) and over the clicked news (q = q_d)."""

    def __init__(self, *, query_dim: int, input_dim: int):
        super().__init__()
        self.proj = nn.Linear(query_dim, input_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, query: torch.Tensor, need_weights: bool = False):
        """``x`` [R,S,F], ``mask`` [R,S] bool, ``query`` [R,Q] -> (pooled [R,F], weights [R,S] or None).
        A row with no real position pools to zeros."""
        key = torch.tanh(self.proj(query)).to(x.dtype)  # [R,Q] -> [R,F]
        scores = (x @ key.unsqueeze(-1)).squeeze(-1)  # [R,S,F]@[R,F,1] -> [R,S]
        weights = masked_softmax(scores, mask)  # [R,S]
        pooled = (weights.unsqueeze(1) @ x).squeeze(1)  # [R,1,S]@[R,S,F] -> [R,F]
        return pooled, (weights if need_weights else None)


class PreferenceQueries(nn.Module):
    """User ids -> (word query q_w, news query q_d), each [B,Q]: ReLU dense layers over the id's
    embedding; the unknown (or masked) user's zero embedding gives the biases' generic queries."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = UserEmbedding(num_users=config.num_users, dim=config.user_dim, mask_p=config.user_mask)
        self.word = nn.Linear(config.user_dim, config.query_dim)
        self.news = nn.Linear(config.user_dim, config.query_dim)

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``users`` [B] int64 ids of the train user vocabulary (0: unknown) -> (q_w [B,Q], q_d [B,Q])."""
        embedded = self.embedding(users)  # [B] -> [B,Du]
        return torch.relu(self.word(embedded)), torch.relu(self.news(embedded))  # [B,Du] -> 2 x [B,Q]

    def start_biases(self) -> None:
        """Both biases at QUERY_BIAS, so that the query units start active (see the module docstring)."""
        for layer in (self.word, self.news):
            nn.init.constant_(layer.bias, QUERY_BIAS)


class NPANewsEncoder(nn.Module):
    """Title tokens -> per-word CNN vectors [N,L,F] (``contextualise``), then each (reader, news) pair's
    personalized pooling (``pool``) -> [B,N,F]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = word_embedding(config)
        self.dropout = nn.Dropout(config.dropout)
        self.cnn = TitleCNN(word_dim=config.word_dim, filters=config.filters, window=config.window)
        self.pooling = PersonalizedAttention(query_dim=config.query_dim, input_dim=config.filters)

    def contextualise(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``tokens`` [N,L] int, ``mask`` [N,L] bool -> the CNN's word vectors [N,L,F] (zero at padding)."""
        embedded = self.dropout(self.embedding(tokens))  # [N,L] -> [N,L,E]
        return self.dropout(self.cnn(embedded, mask))  # [N,L,E] -> [N,L,F]

    def pool(self, context: torch.Tensor, mask: torch.Tensor, news: torch.Tensor, real: torch.Tensor,
             word_query: torch.Tensor, need_weights: bool = False):
        """Each sample's news pooled with its own word query.

        ``context`` [U,L,F] and ``mask`` [U,L] of the unique news; ``news`` [B,N] indexes them; ``real``
        [B,N] bool marks the pairs to encode (the others, padding clicks, come out as zero vectors);
        ``word_query`` [B,Q]. Returns (vectors [B,N,F], word weights [B,N,L] when ``need_weights``).
        The pooling runs on the real pairs only, in chunks of about POOL_CELLS gathered values."""
        batch, per_sample = news.shape
        pairs = real.reshape(-1).nonzero().squeeze(-1)  # [B*N] -> [P] flat (sample, news) positions
        sample = torch.div(pairs, per_sample, rounding_mode="floor")  # [P]
        rows = news.reshape(-1)[pairs]  # [P] rows of ``context``
        step = max(1, POOL_CELLS // max(1, context.shape[1] * context.shape[2]))
        pooled, weights = [], []
        for lo in range(0, len(pairs), step):
            chunk, who = rows[lo:lo + step], sample[lo:lo + step]  # [p], [p]
            vectors, chunk_weights = self.pooling(context[chunk], mask[chunk], word_query[who],
                                                  need_weights)  # [p,L,F] -> [p,F]
            pooled.append(vectors)
            weights.append(chunk_weights)
        width = context.shape[2]
        flat = context.new_zeros(batch * per_sample, width)  # [B*N,F]
        if pooled:
            flat = flat.index_copy(0, pairs, torch.cat(pooled).to(flat.dtype))  # p x [p,F] -> [P,F] -> [B*N,F]
        vectors = flat.view(batch, per_sample, width)  # [B*N,F] -> [B,N,F]
        if not need_weights:
            return vectors, None
        flat_weights = context.new_zeros(batch * per_sample, context.shape[1])  # [B*N,L]
        if weights:
            picked = torch.cat(weights).to(flat_weights.dtype)  # p x [p,L] -> [P,L]
            flat_weights = flat_weights.index_copy(0, pairs, picked)  # [P,L] -> [B*N,L]
        return vectors, flat_weights.view(batch, per_sample, -1)  # [B*N,L] -> [B,N,L]


class NPAUserEncoder(nn.Module):
    """Clicked news vectors and the news query -> user vector [B,D]: personalized attention over the
    clicks; the learned empty-history vector for a history with no click (``config.empty_history``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pooling = PersonalizedAttention(query_dim=config.query_dim, input_dim=config.news_dim)
        self.empty_history = EmptyHistory(config.news_dim) if config.empty_history else None

    def forward(self, clicked: torch.Tensor, mask: torch.Tensor, news_query: torch.Tensor,
                need_weights: bool = False):
        """``clicked`` [B,H,D], ``mask`` [B,H] bool, ``news_query`` [B,Q] -> (user [B,D], click weights
        [B,H] or None)."""
        user, click_weights = self.pooling(clicked, mask, news_query, need_weights)  # [B,H,D] -> [B,D]
        if self.empty_history is not None:
            user = self.empty_history(user, mask)  # [B,D]
        return user, click_weights


@dataclass(frozen=True)
class NPAExplanation:
    """What NPA attended to for one user and a set of candidates (NumPy, on CPU).

    ``scores[c] == contributions[c].sum()``: the user vector is u = sum_i click_weights[i] * r_i, so
    r'_c . u = sum_i click_weights[i] * (r'_c . r_i). That holds whenever the history has a click;
    with none, ``contributions`` is [C,0] and the scores are the learned empty-history vector's.
    The ``unknown_*`` fields are the same titles read by the unknown user (id 0, the generic
    queries): what personalisation changes.
    """

    history_word_weights: np.ndarray  # [H,L] personalized word attention of each clicked title
    candidate_word_weights: np.ndarray  # [C,L]
    click_weights: np.ndarray  # [H] personalized news attention over the clicks
    contributions: np.ndarray  # [C,H] per-click share of each candidate's score
    scores: np.ndarray  # [C]
    unknown_history_word_weights: np.ndarray  # [H,L] the same titles' word attention for the unknown user
    unknown_candidate_word_weights: np.ndarray  # [C,L]
    unknown_click_weights: np.ndarray  # [H]
    unknown_user_scores: np.ndarray  # [C]
    kind: str = "npa"
    click_attention: bool = True  # per-click weights exist, and the score splits exactly over them


class NPA(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.check_buildable("npa")  # num_users too (row 0: the unknown user)
        self.config = config
        self.queries = PreferenceQueries(config)
        self.news_encoder = NPANewsEncoder(config)
        self.user_encoder = NPAUserEncoder(config)
        if config.init == "glorot":
            glorot_init(self)
            self.news_encoder.cnn.glorot_()
        self.queries.start_biases()

    def forward(self, titles: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor,
                candidates: torch.Tensor, *, users: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits [B,C]. ``titles`` [U,L] are the batch's unique news, each run through the CNN
        once; ``history`` [B,H] and ``candidates`` [B,C] index its rows; ``users`` [B] ids of the train
        user vocabulary (None: every sample is the unknown user 0)."""
        if users is None:
            users = torch.zeros(history.shape[0], dtype=torch.long, device=history.device)  # [B]
        news = torch.cat([history, candidates], dim=1)  # [B,H]+[B,C] -> [B,N]
        real = torch.cat([history_mask, torch.ones_like(candidates, dtype=torch.bool)], dim=1)  # [B,N]
        vectors, _, news_query = self.read(titles, news, real, users)  # [B,N] -> [B,N,D]
        clicked, candidate = vectors.split([history.shape[1], candidates.shape[1]], dim=1)  # [B,H,D], [B,C,D]
        user, _ = self.user_encoder(clicked, history_mask, news_query)  # [B,H,D] -> [B,D]
        return (candidate @ user.to(candidate.dtype).unsqueeze(-1)).squeeze(-1)  # [B,C,D]@[B,D,1] -> [B,C]

    def read(self, titles: torch.Tensor, news: torch.Tensor, real: torch.Tensor, users: torch.Tensor,
             need_weights: bool = False):
        """Each (reader, news) pair's vector: ``titles`` [U,L] of the unique news, each run through the CNN
        once; ``news`` [B,N] indexes them; ``real`` [B,N] bool marks the pairs to encode; row b is read by
        user ``users[b]`` [B]. Returns (vectors [B,N,D], word weights [B,N,L] when ``need_weights``, else
        None, and the readers' news queries [B,Q], which the user encoder takes)."""
        word_query, news_query = self.queries(users)  # [B] -> 2 x [B,Q]
        mask = titles != 0  # [U,L]
        context = self.news_encoder.contextualise(titles, mask)  # [U,L] -> [U,L,F]
        vectors, weights = self.news_encoder.pool(context, mask, news, real, word_query,
                                                  need_weights)  # [B,N] -> [B,N,D], [B,N,L] or None
        return vectors, weights, news_query

    def score_batch(self, batch) -> torch.Tensor:
        """Logits [B,C] of a ``nram_core.data.batching.Batch``. Its ``users`` are ids of the run's train
        user vocabulary; a batch without them (None, or a Batch that has no such field) scores every
        sample as the unknown user."""
        return self(batch.titles, batch.history, batch.history_mask, batch.candidates,
                    users=getattr(batch, "users", None))

    @torch.no_grad()
    def explain(self, history_titles: torch.Tensor, candidate_titles: torch.Tensor, *,
                user: int = 0) -> NPAExplanation:
        """Personalized attention and the score decomposition for one user (``user``: an id of the train
        user vocabulary, 0 unknown; ``history_titles`` [H,L]) and candidates [C,L], beside the same
        titles read by the unknown user. Runs in eval mode (no dropout, no user masking) and restores
        the previous mode afterwards."""
        if not 0 <= user < self.config.num_users:
            raise ValueError(f"user must be an id of the run's user vocabulary (0 to {self.config.num_users - 1}), "
                             f"got {user}")
        with evaluating(self):
            clicks, shown = history_titles.shape[0], candidate_titles.shape[0]
            device = history_titles.device
            titles = torch.cat([history_titles, candidate_titles])  # [H,L]+[C,L] -> [N,L]
            news = torch.arange(clicks + shown, device=device).expand(2, -1)  # [2,N]: this user, the unknown user
            readers = torch.tensor([user, 0], device=device)  # [2]
            vectors, word_weights, news_query = self.read(titles, news, torch.ones_like(news, dtype=torch.bool),
                                                          readers, need_weights=True)  # [2,N] -> [2,N,D]
            clicked, candidate = vectors.split([clicks, shown], dim=1)  # [2,H,D], [2,C,D]
            history_mask = torch.ones(2, clicks, dtype=torch.bool, device=device)  # [2,H]
            users, click_weights = self.user_encoder(clicked, history_mask, news_query, need_weights=True)  # [2,D]
            scores = (candidate @ users.unsqueeze(-1)).squeeze(-1)  # [2,C,D]@[2,D,1] -> [2,C]
            contributions = (candidate[0] @ clicked[0].T) * click_weights[0]  # [C,D]@[D,H] -> [C,H]

        def cpu(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        return NPAExplanation(
            history_word_weights=cpu(word_weights[0, :clicks]),  # [2,N,L] -> [H,L]
            candidate_word_weights=cpu(word_weights[0, clicks:]),  # [2,N,L] -> [C,L]
            click_weights=cpu(click_weights[0]),  # [2,H] -> [H]
            contributions=cpu(contributions),
            scores=cpu(scores[0]),  # [2,C] -> [C]
            unknown_history_word_weights=cpu(word_weights[1, :clicks]),  # [2,N,L] -> [H,L]
            unknown_candidate_word_weights=cpu(word_weights[1, clicks:]),  # [2,N,L] -> [C,L]
            unknown_click_weights=cpu(click_weights[1]),  # [2,H] -> [H]
            unknown_user_scores=cpu(scores[1]),  # [2,C] -> [C]
        )
