"""One writer per run folder, disk errors during a save, the memory budget, file modes and
refusals that name their flag (issue 25). Each refusal is one line with exit 2, and what was
committed before stays whole."""
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nram_core.checkpoint import load_run
from nram_core.cli import main
from nram_core.fileio import LOCK_FILE, DataError, FolderLock, atomic_write_with
from nram_core.memory import check_budget, parameter_bytes

from test_nonfinite import TINY_FLAGS, error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv: str, env: dict | None = None, preexec=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nram_core", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec, timeout=timeout)


# ---- one writer per run folder -------------------------------------------------------------------
def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
    with FolderLock(tmp_path, what="run folder"):
        with pytest.raises(DataError, match=rf"another process is writing this run folder \(pid {os.getpid()} "):
            FolderLock(tmp_path, what="run folder")
    FolderLock(tmp_path).release()  # released: the next writer gets it


def test_train_refused_on_a_folder_another_process_writes(demo_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):
        code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", out, *TINY_FLAGS)
    assert code == 2
    assert f"another process is writing this run folder (pid {os.getpid()}" in error_line(err)
    assert "--out" in error_line(err)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing


# The winner: the CLI's `train`, held at the start of training (after it took the lock and wrote its
# config) until the test lets it go, so that the second run surely meets a live writer.
HELD_TRAIN = """
import sys, time
from pathlib import Path
from nram_core.cli import main
from nram_core.cli.progress import TrainingBar

def wait_for_go(self, trainer):
    while not Path(sys.argv[1]).exists():
        time.sleep(0.05)

TrainingBar.on_train_start = wait_for_go
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_trains_on_one_out_one_runs_the_other_is_refused(demo_corpus, tmp_path):
    """The winner holds the lock from before its first write; a second `train --out` started while
    it runs is refused in one line, and the folder ends up entirely the winner's."""
    out, go = tmp_path / "run", tmp_path / "go"
    flags = ["train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS]
    winner = subprocess.Popen([sys.executable, "-c", HELD_TRAIN, str(go), *flags, "--seed", "7"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "config.json").is_file():  # written under the lock
            assert winner.poll() is None, winner.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        loser = cli(*flags, "--seed", "8")
    finally:
        go.touch()
        stdout, stderr = winner.communicate(timeout=300)
    assert winner.returncode == 0, stderr
    assert loser.returncode == 2 and "Traceback" not in loser.stderr
    assert f"(pid {winner.pid} on " in loser.stderr.strip().splitlines()[-1]
    config = json.loads((out / "config.json").read_text())
    state = json.loads((out / "state.json").read_text())
    assert config["train"]["seed"] == 7 and state["epochs_done"] == 1
    assert load_run(out).model is not None


def test_a_run_that_commits_no_epoch_leaves_no_folder_the_cli_made(demo_corpus, tmp_path, capsys, monkeypatch):
    """Without --out the CLI makes the run folder; a run that diverges in epoch 1 takes it away again
    (a half run of config.json and vocab.json would be listed as a model). A named --out stays."""
    monkeypatch.setenv("NRAM_HOME", str(tmp_path / "home"))
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, *TINY_FLAGS, "--embedding-std", "1e30")
    assert code == 2 and "training diverged at epoch 1" in error_line(err)
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not list(runs.iterdir())
    named = tmp_path / "named"
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, *TINY_FLAGS, "--embedding-std", "1e30",
                           "--out", named)
    assert code == 2 and (named / "config.json").is_file() and not (named / "state.json").exists()


# ---- a full disk during an epoch save ------------------------------------------------------------
def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past ``limit`` bytes fail with EFBIG, as on a full disk
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _assert_clean_refusal(result: subprocess.CompletedProcess, out: Path, *, epochs_kept: int) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "could not save epoch" in line, line
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    if epochs_kept:
        state = json.loads((out / "state.json").read_text())
        assert state["epochs_done"] == epochs_kept
        committed = {entry["name"] for entry in state["files"].values()}
        assert {n for n in names if n.startswith(("weights-e", "optimizer-e"))} == committed, names
        assert load_run(out).model is not None
    else:
        assert not [n for n in names if n.startswith(("weights-e", "optimizer-e", "state"))], names


def test_a_save_past_the_file_size_limit_is_one_line_and_leaves_no_stray_file(demo_corpus, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS, "--word-dim", "64",
                 "--no-residual", preexec=_file_size_limit(200_000))  # the weights file is bigger; config, vocab and caches fit
    _assert_clean_refusal(result, out, epochs_kept=0)


@pytest.mark.slow
def test_a_full_tmpfs_during_an_epoch_save_keeps_the_last_commit(demo_corpus, tmp_path):
    """A real full disk: a 3 MB tmpfs (in a user namespace, so no root is needed) that holds epoch 1
    and fills during a later epoch's save. Skipped where the kernel allows no user namespaces."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no user namespaces here to mount a tmpfs in")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    out = mount / "run"
    flags = " ".join(["train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS, "--epochs", "3",
                      "--word-dim", "200", "--no-residual", "--max-dev-impressions", "20"])
    script = (f"mount -t tmpfs -o size=3m tmpfs {mount} && cd {ROOT} && "
              f"{sys.executable} -m nram_core {flags}; echo \"rc=$?\"; ls -a {out}; cat {out}/state.json")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NRAM_HOME": str(tmp_path / "home")})
    assert "rc=2" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not save epoch" in errors[0], result.stderr
    listing, state_text = result.stdout.split("rc=2\n", 1)[1].split("{", 1)
    state = json.loads("{" + state_text)
    kept = state["epochs_done"]
    assert kept >= 1 and f"epoch {kept} is the last committed" in errors[0]
    committed = {entry["name"] for entry in state["files"].values()}
    names = set(listing.split())
    assert {n for n in names if n.startswith(("weights-e", "optimizer-e"))} == committed, names
    assert not [n for n in names if n.endswith(".tmp")]


# ---- the memory budget ---------------------------------------------------------------------------
def test_a_batch_out_of_reach_is_refused_before_any_weight_exists(demo_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", out, *TINY_FLAGS,
                           "--batch-size", "100000000")
    assert code == 2
    line = error_line(err)
    assert "one training step needs about" in line and "--batch-size" in line
    assert not out.exists()


def test_a_run_whose_config_and_header_agree_on_a_huge_vocabulary_is_refused(tmp_path):
    """A hostile run folder: config.json and the weights header agree on 2**33 words, the file is
    sparse. Refused from the shapes, before the 8 GiB table is allocated."""
    import struct

    from nram_core.config import ModelConfig, TrainConfig, to_dict
    from nram_core.model import NRAM
    import torch

    run = tmp_path / "huge"
    run.mkdir()
    cfg = ModelConfig(word_dim=16, num_heads=2, head_dim=8, query_dim=16, vocab_size=2**33)
    with torch.device("meta"):
        shapes = {k: list(v.shape) for k, v in NRAM(cfg).state_dict().items()}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.tensor(shape).prod())
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    with open(run / "model.safetensors", "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.truncate(8 + len(blob) + offset)  # sparse: nothing of it is on the disk
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model": to_dict(cfg),
                                                 "train": to_dict(TrainConfig())}))
    (run / "vocab.json").write_text(json.dumps({"words": ["[PAD]", "[UNK]", "a"]}))
    with pytest.raises(DataError) as refusal:
        load_run(run)
    assert str(run) in str(refusal.value)


def test_check_budget_counts_meta_parameters_without_allocating():
    import torch

    with torch.device("meta"):
        table = torch.nn.Embedding(2**34, 64)  # 4 TiB if it were real
    assert parameter_bytes(table) == 2**34 * 64 * 4
    with pytest.raises(DataError, match="more than the 1.0 GiB"):
        check_budget(parameter_bytes(table), what="this model", settings=(), budget=1 << 30)


# ---- file modes ----------------------------------------------------------------------------------
def test_every_file_of_a_run_folder_gets_the_mode_open_would_give(demo_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", out, *TINY_FLAGS)
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert any(name.startswith("weights-e") for name in modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_atomic_writes_keep_the_mode_when_the_writer_makes_its_own_file(tmp_path):
    target = tmp_path / "x.bin"

    def writer(tmp: Path) -> None:  # as safetensors does: a new file (0600) in place of the temp one
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)

    atomic_write_with(target, writer)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert target.read_bytes() == b"data"


# ---- refusals name their flag --------------------------------------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--dropout", "1.5"], "--dropout"),
    (["train", "--init", "zeros"], "--init"),
    (["train", "--embedding-std", "0"], "--embedding-std"),
    (["train", "--eval-batch-size", "0"], "--eval-batch-size"),
    (["train", "--num-heads", "3", "--head-dim", "10", "--word-dim", "64", "--residual"], "--residual"),
    (["download", "--max-unzipped-gb", "nan"], "--max-unzipped-gb"),
    (["download", "--max-zip-ratio", "-3"], "--max-zip-ratio"),
    (["demo-data", "x", "--seed", "-1"], "--seed"),
    (["experiment", "--seeds", "0"], "--seeds"),
])
def test_each_refusal_names_its_flag(argv, flag, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert flag in error_line(err)
    assert not (tmp_path / "run").exists()


# ---- weights that are not the committed ones -----------------------------------------------------
def test_weights_other_than_the_committed_ones_are_refused_at_loading(tmp_path, capsys, demo_corpus):
    """state.json records the SHA-256 of the best weights; finite weights put in their place (by hand,
    or a damaged copy) are refused in one line instead of being scored as if they were the model's."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(ROOT / "assets" / "demo_model", run)
    weights = run / "model.safetensors"
    save_file({k: v * 3 for k, v in load_file(str(weights)).items()}, str(weights), metadata={"format": "nram"})
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--data", demo_corpus, "--max-impressions", "10")
    assert code == 2 and not out
    assert "does not match the SHA-256 that state.json committed" in error_line(err)
