"""Word vectors from the corpus's own news text: deterministic, cached, click-free, reported; and the
one training set-up (``prepare_run``) that the CLI, the app and the experiment suites share."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nram_core.cli import main
from nram_core.config import ModelConfig, TrainConfig
from nram_core.data import resolve_layout
from nram_core.data import vectors as vec
from nram_core.data.layout import Layout
from nram_core.data.split import build_vocab
from nram_core.fileio import DataError
from nram_core.model import NRAM

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(word_dim=16, num_heads=2, head_dim=8, query_dim=16, title_len=12, history_len=20)
FAST = vec.Word2VecSettings(min_epochs=1, max_epochs=2, min_words=1)  # a quick word2vec for the tests


def _vectors(corpus, *, seed=0, cache=True, dim=16, settings=FAST):
    layout = resolve_layout(corpus)
    vocab = build_vocab(layout.train, min_count=1, cache=False)
    return vec.corpus_vectors(layout, vocab, dim=dim, seed=seed, cache=cache, settings=settings), vocab


def test_corpus_vectors_are_deterministic_across_processes_and_depend_on_the_seed(demo_corpus, tmp_path):
    first, vocab = _vectors(demo_corpus, cache=False)
    again, _ = _vectors(demo_corpus, cache=False)
    assert np.array_equal(first.vectors, again.vectors) and first.digest == again.digest
    other_seed, _ = _vectors(demo_corpus, seed=1, cache=False)
    assert not np.array_equal(first.vectors, other_seed.vectors)
    assert first.vectors.shape == (len(vocab), 16) and first.vectors.dtype == np.float32
    assert not first.vectors[0].any(), "the padding row stays zero"
    # Another interpreter, with another hash seed: gensim must not depend on Python's str hash.
    code = ("import sys; from nram_core.data import resolve_layout, vectors as v; "
            "from nram_core.data.layout import Layout; from nram_core.data.split import build_vocab; l = resolve_layout(sys.argv[1]); "
            "s = v.Word2VecSettings(min_epochs=1, max_epochs=2, min_words=1); "
            "print(v.corpus_vectors(l, build_vocab(l.train, min_count=1, cache=False), dim=16, seed=0, "
            "cache=False, settings=s).digest)")
    # The BLAS settings pass through: a BLAS kernel chosen for another core type rounds differently,
    # which is not what this test is about.
    blas = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "MKL_", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", code, str(demo_corpus)], capture_output=True, text=True, check=True,
                         env={**blas, "PYTHONHASHSEED": "12345", "NRAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         cwd=ROOT)
    assert out.stdout.strip() == first.digest


def test_corpus_vectors_are_cached_and_reused(demo_corpus, isolated_nram_home, monkeypatch):
    first, _ = _vectors(demo_corpus)
    files = list((isolated_nram_home / "prepared").glob("vectors-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(vec, "train_word2vec", lambda *a, **k: pytest.fail("the cache was not used"))
    again, _ = _vectors(demo_corpus)
    assert np.array_equal(first.vectors, again.vectors) and again.found == first.found
    # other settings are another cache entry, never a stale hit
    with pytest.raises(pytest.fail.Exception):
        _vectors(demo_corpus, dim=8)


def test_vectors_read_news_text_only_never_a_behaviors_row(demo_corpus, tmp_path, monkeypatch):
    copy = tmp_path / "corpus"
    shutil.copytree(demo_corpus, copy)
    before, _ = _vectors(copy, cache=False)
    for split in ("train", "dev"):  # other clicks, same news text: the same vectors
        (copy / split / "behaviors.tsv").write_text("1\tU1\t11/11/2019 9:05:58 AM\t\tN1-1\n")
    from nram_core.data import mind, split as split_module

    def no_behaviors(*args, **kwargs):
        raise AssertionError("word vectors read behaviors.tsv")

    monkeypatch.setattr(mind, "read_behaviors", no_behaviors)
    monkeypatch.setattr(split_module, "read_behaviors", no_behaviors)
    after, _ = _vectors(copy, cache=False)
    assert np.array_equal(before.vectors, after.vectors)


def test_sentences_are_tokenised_titles_and_abstracts_each_news_once(tmp_path):
    row = "N1\tnews\tcat\tBig Game: Wins!\tThe abstract here\turl\t[]\t[]\n"
    for split in ("train", "dev"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "news.tsv").write_text(row + ("N2\tnews\tcat\tSecond one\t\turl\t[]\t[]\n"
                                                          if split == "dev" else ""))
        (tmp_path / split / "behaviors.tsv").write_text("")
    sentences = vec.news_sentences(vec.news_files(resolve_layout(tmp_path)))
    assert sentences == [["big", "game", "wins", "!"], ["the", "abstract", "here"], ["second", "one"]]


def test_coverage_counts_the_words_that_got_a_learned_vector():
    from nram_core.data.text import Vocab

    vocab = Vocab.build(["alpha beta gamma", "delta"])
    matrix, found = vec._matrix({"alpha": np.ones(4, np.float32), "gamma": np.full(4, 2, np.float32)}, vocab,
                                dim=4, seed=0)
    assert found == 2 and vec.WordVectors(vectors=matrix, source="corpus", found=found, vocab_size=len(vocab)).coverage == pytest.approx(0.5)
    assert np.array_equal(matrix[vocab.index["alpha"]], np.ones(4)) and not matrix[0].any()


def test_cli_train_reports_coverage_and_records_the_vectors(demo_corpus, tmp_path, capsys):
    code = main(["train", "--data", str(demo_corpus), "--out", str(tmp_path / "run"), "--no-progress",
                 "--max-steps", "2", "--max-impressions", "100", "--max-dev-impressions", "50", "--epochs", "1",
                 *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), [])])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "word vectors: corpus, 100.0% of the vocabulary found" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["word_vectors"] == "corpus"
    recorded = config["data"]["word_vectors"]
    assert recorded["choice"] == "corpus" and recorded["coverage"] == 1.0 and len(recorded["sha"]) == 24


def test_word_vectors_none_is_the_random_initialisation(demo_corpus, tmp_path, isolated_nram_home):
    from nram_core.train import Trainer, prepare_run, seed_everything

    layout = resolve_layout(demo_corpus)
    model_cfg, train_cfg = ModelConfig(**TINY), TrainConfig(word_vectors="none", max_impressions=50, epochs=1)
    prepared = prepare_run(layout, model_cfg, train_cfg)
    assert prepared.word_vectors is None
    assert not list((isolated_nram_home / "prepared").glob("vectors-*")), "no word2vec ran"
    trainer = Trainer(**prepared.trainer_args(), run_dir=tmp_path / "run")
    seed_everything(train_cfg.seed)
    reference = NRAM(prepared.model_config)
    assert torch.equal(trainer.model.news_encoder.embedding.weight, reference.news_encoder.embedding.weight)
    trainer.fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["word_vectors"] == {"choice": "none"}


def test_corpus_vectors_fill_the_embedding_and_a_glove_path_still_works(demo_corpus, tmp_path, capsys):
    from nram_core.train import Trainer, prepare_run

    layout = resolve_layout(demo_corpus)
    prepared = prepare_run(layout, ModelConfig(**TINY), TrainConfig(max_impressions=50, epochs=1))
    trainer = Trainer(**prepared.trainer_args())
    assert np.allclose(trainer.model.news_encoder.embedding.weight.detach().numpy(), prepared.word_vectors.vectors)
    glove = tmp_path / "vectors.txt"
    glove.write_text("the " + " ".join(["0.5"] * 16) + "\n")
    for flag in ("--word-vectors", "--glove"):  # --glove is the old name of the same choice
        code = main(["train", "--data", str(demo_corpus), "--out", str(tmp_path / flag), "--no-progress",
                     "--max-steps", "1", "--max-impressions", "40", "--max-dev-impressions", "20", "--epochs", "1",
                     flag, str(glove), *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), [])])
        _, err = capsys.readouterr()
        assert code == 0, err
        recorded = json.loads((tmp_path / flag / "config.json").read_text())["data"]["word_vectors"]
        assert recorded["source"] == str(glove) and 0 < recorded["coverage"] < 0.01
    code = main(["train", "--data", str(demo_corpus), "--out", str(tmp_path / "x"), "--word-vectors",
                 str(tmp_path / "missing.txt")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "missing.txt: no such file" in err


def test_prepare_run_sizes_the_model_from_the_data_and_fails_on_bad_flags_first(demo_corpus):
    from nram_core.train import prepare_run

    layout = resolve_layout(demo_corpus)
    prepared = prepare_run(layout, ModelConfig(**TINY, use_categories=True), TrainConfig(word_vectors="none"))
    assert prepared.model_config.vocab_size == len(prepared.corpus.vocab)
    assert prepared.model_config.num_categories == len(prepared.categories.categories) >= 2
    assert prepared.corpus.train.news.categories == list(prepared.categories.categories)  # aligned to train's names
    with pytest.raises(ValueError, match="num_heads"):
        prepare_run(layout, ModelConfig(**{**TINY, "num_heads": 0}), TrainConfig())
    with pytest.raises(DataError, match="no train split"):
        prepare_run(Layout(train=None, dev=layout.dev), ModelConfig(**TINY), TrainConfig())


def test_experiment_runs_go_through_prepare_run_and_report_attention(demo_corpus, tmp_path, monkeypatch):
    import nram_core.train as train_module
    from nram_core.experiments import run_suite

    calls = []
    real = train_module.prepare_run

    def spy(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "prepare_run", spy)
    run_suite(suite="ablation", data=demo_corpus, out=tmp_path / "suite", epochs=1, seeds=1,
              train_overrides={"max_impressions": 30, "max_dev_impressions": 30, "batch_size": 16,
                               "max_steps": 1})
    assert len(calls) == 5 and sum(c.use_categories for c in calls) == 1
    records = {r["name"]: r for r in json.loads("[" + ",".join(
        p.read_text() for p in sorted((tmp_path / "suite").glob("runs/*/seed0/result.json"))) + "]")}
    assert records["nram"]["attention"]["word_entropy"] is not None
    assert records["nram_no_vectors"]["train_config"]["word_vectors"] == "none"
    report = (tmp_path / "suite" / "results.md").read_text()
    assert "How peaked the attention is" in report and "topical / common" in report


def test_a_damaged_vector_cache_is_rebuilt_not_a_traceback(demo_corpus, isolated_nram_home):
    first, _ = _vectors(demo_corpus)
    (cached,) = (isolated_nram_home / "prepared").glob("vectors-*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # cut short, as by a full disk
    again, _ = _vectors(demo_corpus)
    assert np.array_equal(first.vectors, again.vectors)


def test_glove_alias_takes_a_file_only_and_excludes_word_vectors(demo_corpus, tmp_path, capsys):
    for argv in (["--glove", "none"], ["--glove", "x.txt", "--word-vectors", "none"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--data", str(demo_corpus), *argv])
        assert exit_info.value.code == 2
    assert "--glove takes a file" in capsys.readouterr().err


def test_suites_build_valid_configs_for_every_preset():
    from nram_core.config import PRESETS
    from nram_core.experiments import run_configs, suite_specs

    for name, (model_cfg, train_cfg) in PRESETS.items():
        for spec in suite_specs("all", model_cfg):  # the heads suite keeps a residual preset valid
            run_configs(spec, base_model=model_cfg, base_train=train_cfg, seed=0)


def test_a_run_saved_before_a_config_field_existed_resumes(demo_corpus, tmp_path):
    from nram_core.train import Trainer, prepare_run

    prepared = prepare_run(resolve_layout(demo_corpus), ModelConfig(**TINY),
                           TrainConfig(epochs=1, max_impressions=60, max_dev_impressions=20, word_vectors="none"))
    Trainer(**prepared.trainer_args(), run_dir=tmp_path / "run").fit()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    for newer in ("init", "embedding_std", "residual"):  # fields an older version did not write
        del config["model"][newer]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    later = dataclasses.replace(prepared.train_config, epochs=2)
    result = Trainer(**{**prepared.trainer_args(), "train_config": later}, run_dir=tmp_path / "run",
                     resume=True).fit()
    assert result.epochs_done == 2


def test_experiment_without_cache_writes_nothing_to_the_cache(demo_corpus, tmp_path, isolated_nram_home):
    code = main(["experiment", "--suite", "ablation", "--data", str(demo_corpus), "--out", str(tmp_path / "s"),
                 "--no-cache", "--no-progress", "--epochs", "1", "--seeds", "1", "--max-impressions", "20",
                 "--max-dev-impressions", "20", "--batch-size", "16"])
    assert code == 0
    assert not (isolated_nram_home / "prepared").exists() or not any((isolated_nram_home / "prepared").iterdir())
