import dataclasses

import numpy as np
import pytest
import torch

from nram_core.config import ModelConfig, preset
from nram_core.model import NRAM, AdditiveAttention, MultiHeadSelfAttention, masked_softmax


def small_config(**kw):
    base = ModelConfig(vocab_size=50, word_dim=16, num_heads=4, head_dim=4, query_dim=8, dropout=0.0,
                       title_len=12, history_len=6)
    return dataclasses.replace(base, **kw)


def random_titles(n, length, *, seed=0, min_len=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 50, (n, length), generator=g)
    lengths = torch.randint(min_len, length + 1, (n,), generator=g)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens


def test_masked_softmax_zero_on_padding_and_empty_rows():
    scores = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    w = masked_softmax(scores, mask)
    assert torch.all(w[~mask] == 0)
    assert torch.allclose(w[:2].sum(-1), torch.ones(2))
    assert torch.all(w[2] == 0) and not torch.isnan(w).any()


def test_padding_gets_zero_attention_everywhere():
    torch.manual_seed(0)
    model = NRAM(small_config()).eval()
    titles = random_titles(5, 12, min_len=2)
    mask = titles != 0
    _, att = model.news_encoder(titles, need_weights=True)
    assert torch.all(att.pooling[~mask] == 0)
    key_padding = (~mask)[:, None, None, :].expand_as(att.self_attention)
    assert torch.all(att.self_attention[key_padding] == 0)


def test_output_ignores_padding_token_values():
    torch.manual_seed(0)
    model = NRAM(small_config()).eval()
    titles = random_titles(6, 12, min_len=2)
    mask = titles != 0
    noisy = titles.clone()
    noisy[~mask] = torch.randint(2, 50, (int((~mask).sum()),))
    with torch.no_grad():
        clean_vecs = model.news_encoder(titles, mask)[0]
        noisy_vecs = model.news_encoder(noisy, mask)[0]
        clean_w = model.news_encoder(titles, mask, need_weights=True)[0]
    assert torch.allclose(clean_vecs, noisy_vecs, atol=1e-6)
    assert torch.allclose(clean_vecs, clean_w, atol=1e-5)  # fused and explicit paths agree

    # the same for the user encoder: padded clicks carry arbitrary vectors
    clicks = torch.randn(2, 6, 16)
    hmask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    garbage = clicks.clone()
    garbage[~hmask] = torch.randn(int((~hmask).sum()), 16) * 100
    with torch.no_grad():
        assert torch.allclose(model.encode_users(clicks, hmask), model.encode_users(garbage, hmask), atol=1e-5)


def test_fused_and_explicit_attention_match():
    torch.manual_seed(1)
    mhsa = MultiHeadSelfAttention(input_dim=16, num_heads=4, head_dim=4)
    x = torch.randn(3, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6], dtype=torch.bool)
    fused, none = mhsa(x, mask)
    explicit, weights = mhsa(x, mask, need_weights=True)
    assert none is None and weights.shape == (3, 4, 7, 7)
    assert torch.allclose(fused[mask], explicit[mask], atol=1e-5)
    pooled, w = AdditiveAttention(input_dim=16, query_dim=8)(x, mask, need_weights=True)
    assert pooled.shape == (3, 16) and torch.allclose(w.sum(-1), torch.ones(3))


def test_empty_history_user_is_zero_not_nan_and_gradients_are_finite():
    torch.manual_seed(0)
    model = NRAM(small_config(dropout=0.1))
    titles = random_titles(8, 12)
    titles[0] = 0  # the padding news of a batch
    history = torch.tensor([[1, 2, 3, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    history_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0] * 6], dtype=torch.bool)
    candidates = torch.tensor([[4, 5, 6], [5, 6, 7]])
    logits = model(titles, history, history_mask, candidates)
    assert torch.all(logits[1] == 0) and not torch.isnan(logits).any()
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long)).backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_explain_contributions_sum_to_score_and_match_forward():
    torch.manual_seed(3)
    model = NRAM(small_config(dropout=0.2))
    titles = random_titles(9, 12, seed=3)
    hist, cands = titles[:5], titles[5:]
    exp = model.explain(hist, cands)
    assert model.training  # mode restored
    assert np.allclose(exp.contributions.sum(1), exp.scores, atol=1e-5)
    model.eval()
    with torch.no_grad():
        logits = model(titles, torch.arange(5)[None], torch.ones(1, 5, dtype=torch.bool), torch.arange(5, 9)[None])
    assert np.allclose(logits[0].numpy(), exp.scores, atol=1e-5)
    assert exp.history_word_weights.shape == (5, 12) and exp.candidate_self_attention.shape == (4, 4, 12, 12)
    assert exp.click_self_attention.shape == (4, 5, 5) and np.isclose(exp.click_weights.sum(), 1.0)
    empty = model.explain(titles[:0], cands)
    assert np.all(empty.scores == 0) and empty.contributions.shape == (4, 0)


def test_explain_works_without_self_attention():
    """The ablation without self-attention has no self-attention weights to show, and says so with
    empty arrays (the CLI's explain and the Attention page crashed on it before)."""
    torch.manual_seed(4)
    model = NRAM(small_config(self_attention=False)).eval()
    titles = random_titles(7, 12, seed=4)
    exp = model.explain(titles[:4], titles[4:])
    assert np.allclose(exp.contributions.sum(1), exp.scores, atol=1e-5)
    assert exp.click_self_attention.size == 0 and exp.candidate_self_attention.size == 0
    assert np.isclose(exp.click_weights.sum(), 1.0)


def test_module_follows_input_device_and_presets():
    paper, _ = preset("paper")
    assert (paper.num_heads, paper.head_dim, paper.word_dim, paper.query_dim) == (15, 20, 300, 200)
    with pytest.raises(ValueError):
        NRAM(paper)  # vocab_size must come from the data
    model = NRAM(small_config()).to("meta")
    assert next(model.parameters()).device.type == "meta"


def test_model_file_is_the_paper_model_only():
    """model.py holds the layers of the paper; the speed machinery is nram_core/fastpath.py."""
    from pathlib import Path

    import nram_core.model as model_module

    source = Path(model_module.__file__).read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400
    for machinery in ("autograd.Function", "bfloat16", "title_chunk", "key_width", "fastpath import"):
        assert machinery not in source, machinery
