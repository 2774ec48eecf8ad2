"""Cold users (a history with no click): a learned empty-history vector instead of tied scores."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from nram_core.config import ModelConfig, from_dict, preset
from nram_core.data.split import Corpus, load_corpus
from nram_core.data.layout import resolve_layout
from nram_core.model import NRAM
from nram_core.scoring import score_impressions
from nram_core.train import Trainer


def _model(**fields) -> NRAM:
    config, _ = preset("demo")
    torch.manual_seed(0)
    return NRAM(dataclasses.replace(config, vocab_size=40, **fields)).eval()


def test_an_empty_history_gives_the_learned_vector_and_padding_changes_nothing():
    model = _model()
    with torch.no_grad():
        model.user_encoder.empty_history.vector.normal_()
    clicked = torch.randn(3, 5, model.config.news_dim)  # [B,H,D]
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    users = model.encode_users(clicked, mask)
    assert torch.equal(users[1], model.user_encoder.empty_history.vector)
    wider = torch.cat([clicked, torch.randn(3, 2, model.config.news_dim)], dim=1)  # two more padding columns
    wider_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model.encode_users(wider, wider_mask), users)
    assert not torch.allclose(users[0], users[1]) and not torch.allclose(users[2], users[1])


def test_without_the_field_an_empty_history_is_the_zero_vector():
    model = _model(empty_history=False)
    users = model.encode_users(torch.randn(2, 3, model.config.news_dim), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(users, torch.zeros_like(users))
    assert "user_encoder.empty_history.vector" not in model.state_dict()


def test_a_saved_config_without_the_field_loads_as_trained_without_it():
    saved = json.loads(json.dumps(dataclasses.asdict(ModelConfig())))
    del saved["empty_history"]
    assert from_dict(ModelConfig, saved).empty_history is False
    assert from_dict(ModelConfig, {**saved, "empty_history": True}).empty_history is True


def test_training_learns_the_vector_and_cold_impressions_are_no_longer_ties(demo_corpus, tmp_path):
    model_config, train_config = preset("demo")
    layout = resolve_layout(demo_corpus)
    corpus = load_corpus(layout, title_len=model_config.title_len)
    model_config = dataclasses.replace(model_config, vocab_size=len(corpus.vocab))
    train_config = dataclasses.replace(train_config, epochs=1, max_steps=60, word_vectors="none", validation=0.0)
    trainer = Trainer(model_config=model_config, train_config=train_config,
                      corpus=Corpus(vocab=corpus.vocab, train=corpus.train, dev=None))
    trainer.fit()
    model = trainer.model.eval()
    assert float(model.user_encoder.empty_history.vector.detach().norm()) > 0  # trained on train's empty histories
    dev = corpus.dev
    cold = np.flatnonzero(dev.history_lengths() == 0)
    assert len(cold) > 0
    fast, _, offsets = score_impressions(model, dev)
    slow, _, _ = score_impressions(model, dev, fast=False)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)  # both paths give the learned vector
    spread = [np.ptp(fast[offsets[i]: offsets[i + 1]]) for i in cold if offsets[i + 1] - offsets[i] > 1]
    assert min(spread) > 0  # every cold impression's candidates get different scores
