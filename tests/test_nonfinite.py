"""Nothing silently wrong (issue 25): non-finite settings, losses, gradients, weights and scores,
devices this torch build lacks and sizes past their caps each stop in one line with exit 2."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nram_core.checkpoint import committed_file, load_run
from nram_core.cli import main
from nram_core.config import MAX_NEGATIVES, MAX_TITLE_LEN, ModelConfig, RuntimeConfig, TrainConfig, from_dict
from nram_core.data import resolve_layout
from nram_core.fileio import DataError
from nram_core.train import Callback, Diverged, Trainer, pick_device, prepare_run

from conftest import recommit_best

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(word_dim=16, num_heads=2, head_dim=8, query_dim=16, title_len=12, history_len=20)
TINY_FLAGS = ["--word-dim", "16", "--num-heads", "2", "--head-dim", "8", "--query-dim", "16", "--title-len", "12",
              "--history-len", "20", "--epochs", "1", "--max-impressions", "50", "--max-dev-impressions", "50",
              "--word-vectors", "none", "--no-progress"]


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's refusals (``_Parser.error``) exit from the parser
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one error line of a refused command (other stderr lines are progress, never a traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def tiny_run(demo_corpus, tmp_path_factory):
    """A tiny one-epoch run, trained by the CLI (each test copies it before spoiling it)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS]) == 0
    return out


def spoiled_copy(run: Path, tmp_path: Path, change) -> Path:
    """A copy of ``run`` whose committed best weights (what ``load_run`` reads) went through ``change``,
    committed as a run that trained into them would have: state.json records their SHA-256."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = committed_file(copy, "best")
    tensors = change(load_file(str(path)))
    save_file(tensors, str(path), metadata={"format": "nram"})
    recommit_best(copy)
    return copy


@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(lr=math.inf), "lr"),
    (lambda: TrainConfig(grad_clip=math.nan), "grad_clip"),
    (lambda: TrainConfig(vector_std=math.nan), "vector_std"),
    (lambda: TrainConfig(weight_decay=-math.inf), "weight_decay"),
    (lambda: ModelConfig(embedding_std=math.nan), "embedding_std"),
    (lambda: ModelConfig(dropout=math.nan), "dropout"),
    (lambda: from_dict(ModelConfig, {"embedding_std": math.inf}), "embedding_std"),
])
def test_configs_refuse_non_finite_floats(make, field):
    with pytest.raises(ValueError, match=rf"^{field} must be a finite number, got -?(nan|inf)$") as caught:
        make()
    assert caught.value.settings == (field,)
    RuntimeConfig()  # no float fields, and valid


@pytest.mark.parametrize("flag, value", [("--grad-clip", "nan"), ("--lr", "inf"), ("--vector-std", "nan"),
                                         ("--embedding-std", "nan"), ("--dropout", "nan")])
def test_train_refuses_a_non_finite_flag_in_one_line(capsys, tmp_path, flag, value):
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "never-read", *TINY_FLAGS, flag, value,
                             "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert error_line(err) == (f"error: {flag[2:].replace('-', '_')} must be a finite number, got {value} "
                               f"(see {flag})")
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


@pytest.mark.parametrize("make, message", [
    (lambda: ModelConfig(title_len=10**9), f"title_len must be <= {MAX_TITLE_LEN}, got 1000000000"),
    (lambda: ModelConfig(history_len=10**6), "history_len must be <= 1024, got 1000000"),
    (lambda: ModelConfig(word_dim=10**5), "word_dim must be <= 4096, got 100000"),
    (lambda: ModelConfig(num_heads=1000), "num_heads must be <= 256, got 1000"),
    (lambda: ModelConfig(num_heads=200, head_dim=200, word_dim=64), "num_heads * head_dim must be <= 4096"),
    (lambda: TrainConfig(negatives=10**6), f"negatives must be <= {MAX_NEGATIVES}, got 1000000"),
])
def test_sizes_past_their_caps_are_refused_before_allocation(make, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        make()


@pytest.mark.parametrize("flag, value", [("--title-len", "1000000000"), ("--negatives", "1000000")])
def test_train_refuses_a_size_past_its_cap_in_one_line(capsys, tmp_path, flag, value):
    code, _, err = run_cli(capsys, "train", "--data", tmp_path, *TINY_FLAGS, flag, value, "--out", tmp_path / "run")
    assert code == 2 and "must be <= " in error_line(err) and err.rstrip().endswith(f"(see {flag})")


def test_training_stops_at_the_first_non_finite_loss_in_a_fresh_process(demo_corpus, tmp_path):
    """Finite settings that overflow (random word vectors of std 1e30): exit 2, one line naming the
    step and the settings, and no epoch committed."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "nram_core", "train", "--data", str(demo_corpus), *TINY_FLAGS,
                           "--embedding-std", "1e30", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    line = error_line(done.stderr)
    assert "training diverged at epoch 1, step 1 (global step 1): loss nan; nothing was committed" in line
    assert "embedding_std 1e+30" in line and "(see --lr, --grad-clip, --vector-std, --embedding-std" in line
    assert not (out / "state.json").exists() and not list(out.glob("weights-*"))


class _InfiniteGradientsAfterEpochOne(Callback):
    """From epoch 2 on, the gradient of one weight is infinite while the loss stays finite."""

    def on_epoch_end(self, trainer, info):
        if info.epoch == 1:
            trainer.model.user_encoder.pooling.proj.weight.register_hook(lambda grad: torch.full_like(grad, math.inf))


def test_a_non_finite_gradient_norm_stops_training_and_keeps_the_last_finite_epoch(demo_corpus, tmp_path):
    model_config = ModelConfig(**TINY)
    train_config = TrainConfig(epochs=3, batch_size=32, max_impressions=40, max_dev_impressions=20, grad_clip=1.0,
                               word_vectors="none", lr=1e-3)
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, train_config)
    run_dir = tmp_path / "run"
    trainer = Trainer(**prepared.trainer_args(), run_dir=run_dir, callbacks=[_InfiniteGradientsAfterEpochOne()])
    with pytest.raises(Diverged, match=r"^training diverged at epoch 2, step 1 \(global step \d+\): gradient norm "
                                       r"(inf|nan); epoch 1 is the last committed\. Likely settings: lr 0\.001, "
                                       r"grad_clip 1,") as caught:
        trainer.fit()
    assert "\n" not in str(caught.value) and "grad_clip" in caught.value.settings
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epochs_done"] == 1 and "final" not in state
    assert sorted(p.name for p in run_dir.glob("weights-*")) == ["weights-e0001.safetensors"]
    load_run(run_dir)  # the committed epoch is whole and finite


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_nan_weights_are_refused_at_loading_in_one_line(tiny_run, demo_corpus, tmp_path, capsys, command):
    def nan_pooling(tensors):
        tensors["user_encoder.pooling.proj.weight"] = torch.full_like(tensors["user_encoder.pooling.proj.weight"],
                                                                      math.nan)
        return tensors

    run = spoiled_copy(tiny_run, tmp_path, nan_pooling)
    code, out, err = run_cli(capsys, command, "--run", run, "--data", demo_corpus)
    assert code == 2 and out == ""
    assert error_line(err) == (f"error: {committed_file(run, 'best')}: tensor 'user_encoder.pooling.proj.weight' "
                               "holds 256 NaN or infinite value(s) of 256 (weights of a diverged run?)")
    assert not (run / "prediction.txt").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_finite_weights_that_overflow_give_refused_scores_not_a_ranking(tiny_run, demo_corpus, tmp_path, capsys,
                                                                         command):
    def huge_words(tensors):
        tensors["news_encoder.embedding.weight"] = tensors["news_encoder.embedding.weight"] * 1e30  # finite
        return tensors

    run = spoiled_copy(tiny_run, tmp_path, huge_words)
    code, out, err = run_cli(capsys, command, "--run", run, "--data", demo_corpus)
    assert code == 2 and out == ""
    assert error_line(err).startswith(f"error: --run {run}: the model gives non-finite scores (")
    assert not (run / "prediction.txt").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:9", "mps"])
def test_a_device_this_build_lacks_is_one_line(capsys, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "cuda:9" and torch.cuda.device_count() > 9:
        pytest.skip("this machine has ten CUDA devices")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DataError, match=rf"^device '{device}': this") as caught:
        pick_device(device)
    assert caught.value.settings == ("device",)
    for command in (["train", "--data", tmp_path, "--out", tmp_path / "run"], ["evaluate", "--run", tmp_path]):
        code, out, err = run_cli(capsys, *command, "--device", device)
        assert code == 2 and out == ""
        assert f"argument --device: device '{device}': this" in error_line(err)
    assert pick_device("cpu") == torch.device("cpu")


def test_resume_on_a_missing_run_folder_is_one_line_not_a_fresh_run(demo_corpus, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    code = main(["train", "--data", str(demo_corpus), "--preset", "demo", "--epochs", "1", "--max-impressions", "50",
                 "--word-vectors", "none", "--no-progress", "--resume", "--out", str(missing)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "no run folder to resume" in errors[0] and "--resume" in errors[0]
    assert not missing.exists()
