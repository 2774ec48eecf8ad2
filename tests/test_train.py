import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nram_core.checkpoint import load_run
from nram_core.cli import main
from nram_core.config import ModelConfig, TrainConfig
from nram_core.data import load_corpus, resolve_layout
from nram_core.data.split import build_vocab
from nram_core.fileio import LOCK_FILE
from nram_core.scoring import evaluate_split
from nram_core.train import Callback, Trainer, prepare_run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(word_dim=16, num_heads=2, head_dim=8, query_dim=16, title_len=12, history_len=20)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_demo(demo_corpus, tmp_path_factory):
    """The demo preset trained by the CLI on the demo corpus (the README's command)."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    code = main(["train", "--data", str(demo_corpus), "--preset", "demo", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


@pytest.mark.slow
def test_demo_training_reaches_target_and_json_matches_metrics_file(trained_demo, demo_corpus):
    final = json.loads((trained_demo / "metrics.jsonl").read_text().splitlines()[-1])
    truth = json.loads((demo_corpus / "truth.json").read_text())
    assert final["event"] == "final"
    assert final["auc"] >= 0.70
    assert final["auc"] >= 0.9 * truth["oracle"]["auc"], (final["auc"], truth["oracle"]["auc"])
    assert final["auc"] < truth["oracle"]["auc"] + 0.02  # nothing beats the true probabilities by much
    # The model on disk reproduces the recorded figures.
    run = load_run(trained_demo)
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=run.model_config.title_len, vocab=run.vocab,
                         splits=("dev",))
    again = evaluate_split(run.model, corpus.dev).as_dict()
    for key in ("auc", "mrr", "ndcg@5", "ndcg@10", "impressions"):
        assert again[key] == pytest.approx(final[key], abs=1e-6)


@pytest.mark.slow
def test_cli_json_line_agrees_with_metrics_jsonl(trained_demo, demo_corpus, capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--run", trained_demo, "--data", demo_corpus)
    assert code == 0
    line = json.loads(out.strip().splitlines()[-1])
    final = json.loads((trained_demo / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(line) == {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "skipped_impressions", "split"}
    assert line["split"] == str(demo_corpus / "dev")
    for key in ("auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "skipped_impressions"):
        assert line[key] == pytest.approx(final[key], abs=1e-6)


@pytest.mark.slow
def test_attention_prefers_topical_words_over_common_words(trained_demo, demo_corpus):
    truth = json.loads((demo_corpus / "truth.json").read_text())
    topical = {w for words in truth["topical_words"].values() for w in words}
    common = set(truth["common_words"])
    run = load_run(trained_demo)
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=run.model_config.title_len, vocab=run.vocab,
                         splits=("dev",))
    tokens = torch.from_numpy(corpus.dev.news.tokens[1:])
    with torch.no_grad():
        _, att = run.model.news_encoder(tokens, need_weights=True)
    words = np.array(run.vocab.words)[tokens.numpy()]
    weights = att.pooling.numpy()
    is_topical = np.isin(words, list(topical))
    is_common = np.isin(words, list(common))
    assert is_topical.sum() > 1000 and is_common.sum() > 1000
    assert weights[is_topical].mean() > 1.5 * weights[is_common].mean()


@pytest.mark.slow
def test_shipped_demo_model_matches_generator_and_recorded_auc(demo_corpus):
    shipped = ROOT / "assets" / "demo_model"
    run = load_run(shipped)
    assert run.data.get("synthetic") == {"scale": "demo", "seed": 0}
    vocab = build_vocab(resolve_layout(demo_corpus).train, min_count=run.train_config.min_word_count, cache=False)
    assert vocab == run.vocab, "assets/demo_model was trained on another corpus: regenerate it (README)"
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=run.model_config.title_len, vocab=run.vocab,
                         splits=("dev",))
    recorded = run.state["history"][run.state["best_epoch"] - 1]["metrics"]
    assert evaluate_split(run.model, corpus.dev).auc == pytest.approx(recorded["auc"], abs=1e-4)
    assert recorded["auc"] >= 0.70


def tiny_trainer(demo_corpus, run_dir=None, **train_kw):
    defaults = dict(epochs=2, batch_size=32, lr=3e-3, max_impressions=200, max_dev_impressions=100,
                    word_vectors="none")
    prepared = prepare_run(resolve_layout(demo_corpus), ModelConfig(dropout=0.1, **TINY),
                           TrainConfig(**{**defaults, **train_kw}))
    return Trainer(**prepared.trainer_args(), run_dir=run_dir,
                   **({"resume": True} if run_dir and (Path(run_dir) / "state.json").exists() else {}))


def test_resume_continues_exactly_where_it_stopped(demo_corpus, tmp_path):
    straight = tiny_trainer(demo_corpus, tmp_path / "straight")
    straight.fit()
    first = tiny_trainer(demo_corpus, tmp_path / "resumed", epochs=1)
    first.fit()
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["epochs_done"] == 1
    second = tiny_trainer(demo_corpus, tmp_path / "resumed", epochs=2)
    result = second.fit()
    assert result.epochs_done == 2 and len(result.history) == 2
    from safetensors.torch import load_file

    # The latest epoch's weights (model.safetensors is the best epoch, which may be the first).
    from nram_core.checkpoint import committed_file

    a = load_file(str(committed_file(tmp_path / "straight", "last")))
    b = load_file(str(committed_file(tmp_path / "resumed", "last")))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert json.loads((tmp_path / "straight" / "state.json").read_text())["history"][1]["metrics"] == \
        json.loads((tmp_path / "resumed" / "state.json").read_text())["history"][1]["metrics"]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["event"] for l in lines] == ["epoch", "epoch", "final"]  # rewritten from state.json


def test_cancel_keeps_last_finished_epoch_and_callbacks_report_progress(demo_corpus, tmp_path):
    events = []

    class StopInSecondEpoch(Callback):
        def on_step(self, trainer, info):
            events.append(("step", info.epoch, info.loss))
            if info.epoch == 2 and info.step == 2:
                trainer.request_stop()

        def on_epoch_end(self, trainer, info):
            events.append(("epoch", info.epoch, info.metrics["auc"]))

    trainer = tiny_trainer(demo_corpus, tmp_path / "run", epochs=3)
    trainer.callbacks.append(StopInSecondEpoch())
    result = trainer.fit()
    assert result.cancelled and result.epochs_done == 1
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epochs_done"] == 1
    from nram_core.run_info import run_status

    assert run_status(state) == "cancelled"  # the runs table reads this, not the weights file
    assert [e for e in events if e[0] == "epoch"][0][1] == 1
    assert sum(1 for e in events if e[0] == "step" and e[1] == 2) == 2
    assert load_run(tmp_path / "run").model is not None


def test_max_steps_and_loss_falls(demo_corpus):
    losses = []

    class Record(Callback):
        def on_step(self, trainer, info):
            losses.append(info.loss)

    trainer = tiny_trainer(demo_corpus, epochs=5, max_steps=40, max_impressions=2000)
    trainer.callbacks.append(Record())
    result = trainer.fit()
    assert result.global_step == 40 and len(losses) == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_glove_flag_reports_coverage(demo_corpus, tmp_path, capsys):
    glove = tmp_path / "vectors.txt"
    glove.write_text("the " + " ".join(["0.5"] * 16) + "\nquarterback " + " ".join(["0.1"] * 16) + "\n")
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", tmp_path / "run", "--glove", glove,
                             "--word-dim", 16, "--num-heads", 2, "--head-dim", 8, "--epochs", 1,
                             "--max-steps", 2, "--max-dev-impressions", 20, "--no-progress")
    assert code == 0, err
    assert f"word vectors: {glove}, " in err and "of the vocabulary found" in err
    run = load_run(tmp_path / "run")
    assert 0 < run.data["word_vectors"]["coverage"] < 0.01 and run.train_config.word_vectors == str(glove)
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", tmp_path / "run2", "--glove", glove,
                           "--epochs", 1, "--max-steps", 1, "--no-progress")
    assert code == 2 and "field 'vector' has 16 values, expected 64" in err


def test_cli_predict_recommend_explain(demo_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", run_dir, "--word-dim", 16,
                             "--num-heads", 2, "--head-dim", 8, "--epochs", 1, "--max-steps", 3,
                             "--max-dev-impressions", 50, "--no-progress")
    assert code == 0, err
    assert set(json.loads(out)) >= {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions"}

    code, out, _ = run_cli(capsys, "predict", "--run", run_dir, "--data", demo_corpus)
    assert code == 0
    lines = (run_dir / "prediction.txt").read_text().splitlines()
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=12, splits=("dev",),
                         vocab=load_run(run_dir).vocab)
    assert len(lines) == corpus.dev.num_impressions
    imp_id, ranks = lines[0].split(" ")
    n = len(corpus.dev.candidates_of(0)[0])
    assert int(imp_id) == corpus.dev.behaviors.impression_ids[0]
    assert sorted(json.loads(ranks)) == list(range(1, n + 1))
    import zipfile

    with zipfile.ZipFile(run_dir / "prediction.zip") as archive:
        assert archive.read("prediction.txt").decode().splitlines() == lines

    user = corpus.dev.user_ids[corpus.dev.users[0]]
    code, out, _ = run_cli(capsys, "recommend", "--run", run_dir, "--data", demo_corpus, "--user", user, "--top", 5)
    rows = [json.loads(l) for l in out.strip().splitlines()]
    assert code == 0 and len(rows) == 5 and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["score"] >= rows[-1]["score"]
    history = set(corpus.dev.news.ids[r] for r in corpus.dev.user_history(user))
    assert not history & {r["news_id"] for r in rows}

    news_id = rows[0]["news_id"]
    code, out, _ = run_cli(capsys, "explain", "--run", run_dir, "--data", demo_corpus, "--user", user,
                           "--news", news_id)
    exp = json.loads(out)
    assert code == 0 and exp["sum_of_contributions"] == pytest.approx(exp["score"], abs=1e-4)
    assert exp["score"] == pytest.approx(rows[0]["score"], abs=1e-4)


def test_cli_category_model_trains_evaluates_recommends_and_explains(demo_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", run_dir, "--word-dim", 16,
                             "--num-heads", 2, "--head-dim", 8, "--epochs", 1, "--max-steps", 3,
                             "--max-dev-impressions", 50, "--use-categories", "--no-progress")
    assert code == 0, err
    trained = json.loads(out)
    categories = json.loads((run_dir / "categories.json").read_text())
    run = load_run(run_dir)
    assert run.model_config.use_categories and run.categories is not None
    assert run.model_config.num_categories == len(categories["categories"]) == len(run.categories.categories)
    assert categories["categories"][0] == "<unk>"
    saved = (run_dir / "categories.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", run_dir, "--word-dim", 16,
                           "--num-heads", 2, "--head-dim", 8, "--epochs", 1, "--max-steps", 3, "--use-categories",
                           "--no-progress")
    assert code == 2 and "already holds a run" in err
    assert (run_dir / "categories.json").read_bytes() == saved  # a refused run writes nothing

    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", demo_corpus, "--max-impressions", 50)
    assert code == 0, err
    assert json.loads(out)["auc"] == pytest.approx(trained["auc"], abs=1e-6)  # same ids as in training

    split = run.load_split("dev", demo_corpus / "dev")
    assert list(split.news.categories) == categories["categories"]  # the run's ids, not the split's own
    user = split.user_ids[split.users[0]]
    code, out, _ = run_cli(capsys, "recommend", "--run", run_dir, "--data", demo_corpus, "--user", user, "--top", 3)
    top = json.loads(out.strip().splitlines()[0])
    code, out, err = run_cli(capsys, "explain", "--run", run_dir, "--data", demo_corpus, "--user", user,
                             "--news", top["news_id"])
    assert code == 0, err
    exp = json.loads(out)
    assert exp["score"] == pytest.approx(top["score"], abs=1e-4)
    assert exp["sum_of_contributions"] == pytest.approx(exp["score"], abs=1e-4)
    assert set(exp["candidate_views"]) == {"title", "category", "subcategory"}
    assert sum(exp["candidate_views"].values()) == pytest.approx(1.0, abs=1e-3)

    (run_dir / "categories.json").unlink()
    code, _, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", demo_corpus)
    assert code == 2 and "categories.json is missing" in err


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    code, _, err = run_cli(capsys, "evaluate", "--run", tmp_path, "--data", tmp_path)
    assert code == 2 and "not a run folder" in err
    code, _, err = run_cli(capsys, "train", "--data", tmp_path, "--epochs", 0)
    assert code == 2 and "epochs must be >= 1" in err


def test_mind_sample_trains_one_short_epoch_and_reports(mind_sample, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--data", mind_sample, "--out", tmp_path / "run", "--word-dim", 16,
                             "--num-heads", 2, "--head-dim", 8, "--epochs", 1, "--no-progress")
    assert code == 0, err
    assert "unresolved history ids" in err and "unresolved impression ids" in err
    result = json.loads(out)
    assert result["impressions"] >= 1 and 0.0 <= result["auc"] <= 1.0


def test_a_cut_short_or_foreign_weights_file_is_a_clear_error(tmp_path):
    import shutil

    from nram_core.fileio import DataError
    from nram_core.run_info import read_run_info

    shipped = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
    if not (shipped / "model.safetensors").is_file():
        pytest.skip("no shipped model in this checkout")
    run_dir = tmp_path / "run"
    shutil.copytree(shipped, run_dir)
    weights = run_dir / "model.safetensors"
    full = weights.read_bytes()
    assert read_run_info(run_dir).num_parameters > 0
    weights.write_bytes(full[: len(full) // 2])  # an interrupted copy
    with pytest.raises(DataError, match="cut short"):
        read_run_info(run_dir)
    with pytest.raises(DataError, match="model.safetensors"):
        load_run(run_dir)
    weights.write_bytes(b"PK\x03\x04 not safetensors at all")
    with pytest.raises(DataError, match="not a complete safetensors file"):
        read_run_info(run_dir)


def test_every_resume_check_refuses_before_anything_is_written(demo_corpus, tmp_path):
    import dataclasses

    from nram_core.data.split import CategoryVocab
    from nram_core.fileio import DataError

    run_dir = tmp_path / "run"
    tiny_trainer(demo_corpus, run_dir, epochs=1).fit()
    def files() -> dict[str, bytes]:  # all but the writer lock, whose holder note each opening rewrites
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_FILE}

    saved = files()
    with pytest.raises(DataError, match="vocabulary differs"):
        tiny_trainer(demo_corpus, run_dir, epochs=2, min_word_count=3).fit()
    prepared = prepare_run(resolve_layout(demo_corpus), ModelConfig(dropout=0.3, **TINY),
                           TrainConfig(epochs=2, max_impressions=200, word_vectors="none"))
    with pytest.raises(DataError, match="different model config"):
        Trainer(**prepared.trainer_args(), run_dir=run_dir, resume=True).fit()
    with_categories = prepare_run(resolve_layout(demo_corpus), ModelConfig(dropout=0.1, use_categories=True, **TINY),
                                  TrainConfig(epochs=1, max_impressions=200, word_vectors="none"))
    cat_dir = tmp_path / "categories"
    Trainer(**with_categories.trainer_args(), run_dir=cat_dir).fit()
    other = dataclasses.replace(with_categories.categories,
                                subcategories=with_categories.categories.subcategories[::-1])
    assert isinstance(other, CategoryVocab)
    with pytest.raises(DataError, match="categories differ"):
        Trainer(**{**with_categories.trainer_args(), "categories": other}, run_dir=cat_dir, resume=True).fit()
    assert files() == saved
    # a saved config.json whose model field no config accepts: one DataError that names the file
    broken = json.loads(saved["config.json"])
    broken["model"]["num_heads"] = 0
    (run_dir / "config.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match=r"config\.json: missing or bad field \(num_heads must be >= 1"):
        tiny_trainer(demo_corpus, run_dir, epochs=2).fit()
