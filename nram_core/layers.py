"""Layers shared by the model families: the word-vector table (all), the title CNN and the user-id
embedding (LSTUR, NAML, NPA), and the learned vector of a history with no click (every family whose
user vector pools the clicks). The attention layers they use are NRAM's (``model.AdditiveAttention``,
``model.masked_softmax``).

Shapes: N news, L title length, E word dim, w window, F filters, B batch, U users.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def word_embedding(config) -> nn.Embedding:
    """The word-vector table of a ``ModelConfig``: N(0, embedding_std), row 0 (padding) zero and never
    trained (pretrained vectors replace the values, ``data/vectors.py``)."""
    table = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)
    nn.init.normal_(table.weight, std=config.embedding_std)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class TitleCNN(nn.Module):
    """A word CNN with "same" padding and ReLU: each word's vector from the ``window`` words centred
    on it, ``c_i = ReLU(W [x_{i-k}; ...; x_{i+k}] + b)`` with k = window // 2.

    It is written as one ``nn.Linear`` over the unfolded windows, [N,L,w*E] -> [N,L,F], which is
    ``nn.Conv1d(E, F, w, padding=k)`` with ``linear.weight == conv.weight.permute(0, 2, 1).reshape(F, w*E)``
    (window-major: column ``j*E + e`` is word ``i-k+j``'s dimension ``e``), so that the fast path's
    Linear (bf16 GEMMs) covers it. Padding positions are zeroed on the way in and on the way out: a
    padding token's vector never reaches a real word's window (a title padded with more columns
    gives the same real positions), and padded positions come out as zeros.
    """

    def __init__(self, *, word_dim: int, filters: int, window: int):
        super().__init__()
        if window % 2 == 0:
            raise ValueError(f"window must be odd (a word at its centre), got {window}")
        self.window = window
        self.proj = nn.Linear(window * word_dim, filters)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [N,L,E] word vectors, ``mask`` [N,L] bool (True where a word is real) -> [N,L,F]."""
        keep = mask.unsqueeze(-1).to(x.dtype)  # [N,L] -> [N,L,1]
        half = self.window // 2
        padded = F.pad(x * keep, (0, 0, half, half))  # [N,L,E] -> [N,L+w-1,E]
        windows = padded.unfold(1, self.window, 1)  # [N,L+w-1,E] -> [N,L,E,w]
        windows = windows.transpose(-1, -2).flatten(-2)  # [N,L,E,w] -> [N,L,w*E]
        return torch.relu(self.proj(windows)) * keep  # [N,L,w*E] -> [N,L,F]

    def glorot_(self) -> None:
        """Glorot-uniform with a convolution's fans (Keras' Conv1D, as the reference LSTUR and NAML
        initialise it): fan_in = w*E, fan_out = w*F, zero bias. ``model.glorot_init`` would use the
        Linear's fans (w*E and F), a wider bound."""
        filters, fan_in = self.proj.weight.shape
        bound = math.sqrt(6.0 / (fan_in + self.window * filters))
        with torch.no_grad():
            self.proj.weight.uniform_(-bound, bound)
            self.proj.bias.zero_()


class UserEmbedding(nn.Module):
    """A long-term vector per user id; id 0 is the unknown user (one absent from the train split),
    whose vector is zero and never trained.

    In training mode each sample's whole vector is masked to zero with probability ``mask_p``, with no
    1/(1-p) rescale (LSTUR's rule, An et al. 2019, §3.3: ``u_l = M * W_u[u]``, M ~ B(1, 1-p)). A masked
    user is then the unknown user, so the model is trained for the users it will meet unseen.

    The table starts at zero, as microsoft/recommenders' LSTUR (``embeddings_initializer="zeros"``).
    yusanshi/news-recommendation draws N(0, 1) instead. Zero is chosen because every user then starts
    as the unknown user: a random start would feed each user a random GRU state (ini) or add a random
    term to every score (con), noise of the size of a learned signal that rare users, updated only
    a few times, would keep. A zero row still learns, since the gradient with respect to a user's
    row is not zero (each row is its own parameter, so no symmetry needs breaking).
    """

    def __init__(self, *, num_users: int, dim: int, mask_p: float):
        super().__init__()
        if num_users < 1:
            raise ValueError(f"num_users must be >= 1 (row 0 is the unknown user), got {num_users}")
        if not 0.0 <= mask_p < 1.0:
            raise ValueError(f"mask_p must be in [0, 1), got {mask_p}")
        self.mask_p = mask_p
        self.table = nn.Embedding(num_users, dim, padding_idx=0)  # padding_idx: row 0 gets no gradient
        nn.init.zeros_(self.table.weight)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """``users`` [B] int64 ids (0: unknown) -> [B,dim]."""
        vectors = self.table(users)  # [B] -> [B,dim]
        if self.training and self.mask_p > 0:
            keep = torch.rand(users.shape, device=users.device) >= self.mask_p  # [B]
            vectors = vectors * keep.unsqueeze(-1).to(vectors.dtype)  # [B,dim]
        return vectors


class EmptyHistory(nn.Module):
    """The user vector of a history with no click: one learned vector in place of the pooled clicks.

    Pooling attention over no click gives the zero vector, and a zero user vector scores every
    candidate the same, so a cold user's ranking would be a tie (AUC exactly .5). This vector is
    trained on the empty histories of train, like any parameter. It starts at zero, which is the old
    behaviour: a run saved without it (``config.ABSENT_FROM_OLDER_RUNS``) is the same model with it off.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(dim))

    def forward(self, user: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``user`` [B,D] pooled clicks, ``mask`` [B,H] bool -> [B,D], the learned vector where a row has no click."""
        empty = ~mask.any(dim=-1, keepdim=True)  # [B,H] -> [B,1]
        return torch.where(empty, self.vector.to(user.dtype), user)  # [B,D]
