"""One protocol, no peeking (issue 27): the latest part of train, by time, chooses the epoch and
stops training early; dev is scored once, by the chosen epoch's weights, for the report."""
import json

import numpy as np
import pytest

from nram_core.checkpoint import load_run
from nram_core.config import ModelConfig, TrainConfig
from nram_core.data import resolve_layout
from nram_core.data.split import carve_validation, load_corpus
from nram_core.scoring import evaluate_split
from nram_core.train import Trainer, prepare_run

from test_nonfinite import TINY, TINY_FLAGS, error_line, run_cli


@pytest.fixture(scope="module")
def train_split(demo_corpus):
    return load_corpus(resolve_layout(demo_corpus), title_len=12, splits=("train",)).train


def test_the_validation_part_is_the_latest_share_of_train_by_time(train_split):
    fit, validation = carve_validation(train_split, 0.1)
    assert validation.num_impressions == round(0.1 * train_split.num_impressions)
    assert fit.num_impressions + validation.num_impressions == train_split.num_impressions
    assert fit.behaviors.times.max() <= validation.behaviors.times.min()
    ids = np.concatenate([fit.behaviors.impression_ids, validation.behaviors.impression_ids])
    assert sorted(ids.tolist()) == sorted(train_split.behaviors.impression_ids.tolist())
    assert validation.name == "validation" and fit.news is train_split.news
    # every impression keeps its own history, candidates and labels
    row = int(np.flatnonzero(train_split.behaviors.impression_ids == validation.behaviors.impression_ids[0])[0])
    assert np.array_equal(validation.history_of(0), train_split.history_of(row))
    assert all(np.array_equal(a, b) for a, b in zip(validation.candidates_of(0), train_split.candidates_of(row)))
    assert validation.users[0] == train_split.users[row]
    assert validation.behaviors.user_ids[0] == train_split.behaviors.user_ids[row]
    again, _ = carve_validation(train_split, 0.1)
    assert np.array_equal(again.behaviors.impression_ids, fit.behaviors.impression_ids)


def test_a_split_too_small_to_hold_out_is_refused(train_split):
    from nram_core.data.split import take_impressions
    from nram_core.fileio import DataError

    one = take_impressions(train_split, np.array([0]), name="train")
    with pytest.raises(DataError, match="too few to hold out"):
        carve_validation(one, 0.1)


def _train(demo_corpus, out=None, **train):
    train_config = TrainConfig(epochs=2, batch_size=32, max_impressions=200, max_dev_impressions=100,
                               word_vectors="none", lr=3e-3, **train)
    prepared = prepare_run(resolve_layout(demo_corpus), ModelConfig(**TINY), train_config)
    trainer = Trainer(**prepared.trainer_args(), run_dir=out)
    return trainer, trainer.fit()


def test_the_epoch_is_chosen_on_validation_and_dev_is_scored_once_by_its_weights(demo_corpus, tmp_path,
                                                                                  monkeypatch):
    import nram_core.train as train_module

    scored = []
    real = train_module.evaluate_split
    monkeypatch.setattr(train_module, "evaluate_split",
                        lambda model, split, **kw: scored.append(split.name) or real(model, split, **kw))
    out = tmp_path / "run"
    trainer, result = _train(demo_corpus, out, validation=0.1)
    assert scored == ["validation", "validation", "dev"]  # one score of dev, after the choice
    state = json.loads((out / "state.json").read_text())
    final = state["final"]
    assert final["chosen_on"] == "validation" and result.chosen_on == "validation"
    assert final["validation"] == state["history"][final["best_epoch"] - 1]["metrics"]
    run = load_run(out)  # the served weights are the chosen epoch's, and they give the reported dev score
    dev = evaluate_split(run.model, trainer.corpus.dev, max_impressions=100).as_dict()
    assert dev["auc"] == pytest.approx(final["auc"], abs=1e-6) and result.metrics["auc"] == final["auc"]


def test_without_a_run_folder_the_trainer_ends_holding_the_chosen_epoch(demo_corpus):
    trainer, result = _train(demo_corpus, validation=0.1, patience=0)
    chosen = result.history[result.best_epoch - 1]["metrics"]
    now = evaluate_split(trainer.model, trainer.corpus.validation, max_impressions=100).as_dict()
    assert now["auc"] == pytest.approx(chosen["auc"], abs=1e-6)


def test_the_cli_line_says_what_chose_the_epoch(demo_corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", tmp_path / "a", *TINY_FLAGS)
    assert code == 0, err  # the presets hold out the latest 10% of train
    line = json.loads(out.strip().splitlines()[-1])
    assert line["chosen_on"] == "validation" and line["best_epoch"] == 1
    assert "epoch 1: loss" in err and "on validation" in err and "scored once on dev" in err
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", tmp_path / "b", *TINY_FLAGS,
                             "--validation", "0")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["chosen_on"] == "dev"  # the older protocol
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", tmp_path / "c", *TINY_FLAGS,
                           "--validation", "0.9")
    assert code == 2 and "--validation" in error_line(err)
