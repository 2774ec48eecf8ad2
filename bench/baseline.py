"""Reference paths, written the way typical NRMS code is, on NRAM's own modules.

They call ``model.news_encoder`` and ``model.user_encoder`` of the very model the fast path
uses, with the same hyperparameters and samples, so a benchmark's ratio measures the data
path alone:

* training: a map-style Dataset whose ``__getitem__`` tokenises the title strings of one
  sample (``tokenize`` + vocabulary lookup), batched by a DataLoader into tokens
  [B,H,L] and [B,C,L]; every history and candidate title is encoded separately, padding
  included (no de-duplication, no trimming of padding columns);
* evaluation: impressions in batches, each impression's history [H,L] and candidates [C,L]
  encoded anew (news re-encoded per impression), from pre-tokenised arrays;
* serving: each request encodes its history and candidates (or the whole catalog) anew.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from nram_core.data.batching import TrainBatches, gather_histories
from nram_core.data.split import Split
from nram_core.data.text import UNK_ID, Vocab, tokenize


class NaiveTrainSamples(torch.utils.data.Dataset):
    """Item ``i``: (history tokens [H,L], history mask [H], candidate tokens [1+K,L], label 0).

    The samples are the trainer's (one per click whose impression has a non-click); the K
    negatives are drawn per sample with ``random.sample`` (with replacement when fewer).
    """

    def __init__(self, split: Split, vocab: Vocab, *, title_len: int, history_len: int, negatives: int,
                 seed: int = 0, max_impressions: int = 0):
        samples = TrainBatches(split, batch_size=1, negatives=negatives, history_len=history_len,
                               max_impressions=max_impressions)
        self.impressions, self.clicks = samples.sample_impression, samples.sample_candidate
        self.split, self.vocab, self.seed = split, vocab, seed
        self.title_len, self.history_len, self.negatives = title_len, history_len, negatives

    def __len__(self) -> int:
        return len(self.impressions)

    def tokens(self, title: str) -> np.ndarray:
        ids = [self.vocab.index.get(word, UNK_ID) for word in tokenize(title)[: self.title_len]]
        return np.array(ids + [0] * (self.title_len - len(ids)), dtype=np.int64)  # [L]

    def __getitem__(self, i: int):
        b, titles = self.split.behaviors, self.split.news.titles
        imp = int(self.impressions[i])
        lo, hi = b.candidate_offsets[imp], b.candidate_offsets[imp + 1]
        negatives = [int(c) for c, label in zip(b.candidates[lo:hi], b.labels[lo:hi]) if label == 0]
        rng = random.Random(self.seed * 1_000_003 + i)
        if len(negatives) >= self.negatives:
            picked = rng.sample(negatives, self.negatives)
        else:
            picked = [rng.choice(negatives) for _ in range(self.negatives)]
        clicked = self.split.history_of(imp)[-self.history_len:]
        history = np.zeros((self.history_len, self.title_len), dtype=np.int64)  # [H,L]
        for j, row in enumerate(clicked):
            history[j] = self.tokens(titles[row])
        mask = np.arange(self.history_len) < len(clicked)  # [H]
        rows = [int(b.candidates[self.clicks[i]]), *picked]  # the click first: label 0
        candidates = np.stack([self.tokens(titles[row]) for row in rows])  # 1+K x [L] -> [1+K,L]
        return torch.from_numpy(history), torch.from_numpy(mask), torch.from_numpy(candidates), 0


def naive_logits(model, history: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Logits [B,C], every title encoded separately: history [B,H,L], mask [B,H], candidates [B,C,L]."""
    batch, hist_len, title_len = history.shape
    n_cand = candidates.shape[1]
    clicked = model.news_encoder(history.reshape(batch * hist_len, title_len))[0]  # [B*H,L] -> [B*H,D]
    user = model.user_encoder(clicked.view(batch, hist_len, -1), mask)[0]  # [B,H,D] -> [B,D]
    cand = model.news_encoder(candidates.reshape(batch * n_cand, title_len))[0]  # [B*C,L] -> [B*C,D]
    return (cand.view(batch, n_cand, -1) @ user.unsqueeze(-1)).squeeze(-1)  # [B,C,D]@[B,D,1] -> [B,C]


@torch.inference_mode()
def naive_score_impressions(model, split: Split, n: int, *, batch_size: int = 64,
                            device: torch.device | str = "cpu") -> np.ndarray:
    """Flat candidate scores of the first ``n`` impressions, each impression's news encoded anew."""
    model.eval()
    b, tokens = split.behaviors, split.news.tokens
    hist_len = model.config.history_len
    out = []
    for start in range(0, n, batch_size):
        imps = np.arange(start, min(start + batch_size, n))
        rows, mask = gather_histories(split, imps, hist_len)  # [b,H], [b,H]
        lo, hi = b.candidate_offsets[imps[0]], b.candidate_offsets[imps[-1] + 1]
        owner = np.repeat(np.arange(len(imps)), np.diff(b.candidate_offsets[imps[0]: imps[-1] + 2]))  # [m]
        history = torch.from_numpy(tokens[rows].astype(np.int64)).to(device)  # [b,H] -> [b,H,L]
        clicked = model.news_encoder(history.flatten(0, 1))[0]  # [b*H,L] -> [b*H,D]
        user = model.user_encoder(clicked.view(len(imps), hist_len, -1),
                                  torch.from_numpy(mask).to(device))[0]  # [b,H,D] -> [b,D]
        cand = model.news_encoder(torch.from_numpy(tokens[b.candidates[lo:hi]].astype(np.int64)).to(device))[0]  # [m,D]
        out.append((cand * user[torch.from_numpy(owner).to(device)]).sum(-1).float().cpu().numpy())  # [m]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


@torch.inference_mode()
def naive_rank(model, tokens: np.ndarray, history: np.ndarray, candidates: np.ndarray, *,
               device: torch.device | str = "cpu", chunk: int = 1024) -> np.ndarray:
    """Candidate rows ranked for one request: history and candidate titles encoded for this request."""
    model.eval()
    hist_len = model.config.history_len
    recent = np.asarray(history, dtype=np.int64)[-hist_len:]
    rows = np.zeros(hist_len, dtype=np.int64)
    rows[: len(recent)] = recent
    mask = torch.from_numpy(np.arange(hist_len) < len(recent)).to(device)[None]  # [1,H]
    clicked = model.news_encoder(torch.from_numpy(tokens[rows].astype(np.int64)).to(device))[0]  # [H,L] -> [H,D]
    user = model.user_encoder(clicked[None], mask)[0][0]  # [1,H,D] -> [D]
    scores = []
    for i in range(0, len(candidates), chunk):
        cand = torch.from_numpy(tokens[candidates[i: i + chunk]].astype(np.int64)).to(device)  # [c,L]
        scores.append((model.news_encoder(cand)[0] @ user).float().cpu().numpy())  # [c,D]@[D] -> [c]
    return candidates[np.argsort(-np.concatenate(scores), kind="stable")]
