"""torchrun data parallelism: 2 ranks on CPU (gloo) train exactly like 1 process with the same global batch."""
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from nram_core.cli import main
from nram_core.config import ModelConfig
from nram_core.data import load_corpus, resolve_layout
from nram_core.data.batching import TrainBatches
from nram_core.data.batching import shard_rows
from nram_core.distributed import env_info
from nram_core.model import NRAM

# 300 impressions give 445 samples; a global batch of 37 leaves a last batch of 1 sample, so
# rank 1 also meets an empty share (the stand-in sample with zero loss weight).
TINY_ARGS = ["--word-dim", "16", "--num-heads", "2", "--head-dim", "8", "--query-dim", "16", "--title-len", "12",
             "--history-len", "20", "--dropout", "0", "--epochs", "2", "--max-impressions", "300",
             "--max-dev-impressions", "100", "--batch-size", "37", "--lr", "1e-4", "--no-progress",
             "--word-vectors", "none"]


TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(cmd: list[str], outputs: list[Path]) -> subprocess.CompletedProcess:
    """Run ``cmd`` under torchrun (``torchrun_agents`` with one agent)."""
    return torchrun_agents(cmd, 1, outputs, timeout=120)[0]


def torchrun_agents(cmd: list[str], count: int, outputs: list[Path], *,
                    timeout: float) -> list[subprocess.CompletedProcess]:
    """``count`` torchrun agents of ``cmd`` at once. A rank of gloo on CPU now and then aborts while
    the process exits (after its work, with TEARDOWN_ABORT on stderr; seen before and after
    ``distributed.finish``); that one crash is retried once from clean ``outputs``, and every
    assertion then applies to the retry. Any other failure fails at once."""
    for attempt in range(2):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(count)]
        streams = [p.communicate(timeout=timeout) for p in procs]
        done = [subprocess.CompletedProcess(cmd, p.returncode, out, err) for p, (out, err) in zip(procs, streams)]
        if attempt or not any(d.returncode and TEARDOWN_ABORT in d.stderr for d in done):
            return done
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return done


def test_two_ranks_train_like_one_process(demo_corpus, tmp_path, capsys):
    # fp32 GEMMs: bf16 ones round each rank's share of a batch differently from the whole batch,
    # which is not what this test compares (it checks that two ranks compute what one does).
    train = ["train", "--data", str(demo_corpus), *TINY_ARGS, "--no-amp"]
    assert main([*train, "--out", str(tmp_path / "one")]) == 0  # one process, the same CLI code path
    one = capsys.readouterr()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nram_core", *train, "--out", str(tmp_path / "two")]
    two = torchrun(cmd, [tmp_path / "two"])
    assert two.returncode == 0, two.stderr[-3000:]
    # Only rank 0 prints its JSON line and writes the run folder.
    assert len(two.stdout.strip().splitlines()) == 1
    assert two.stderr.count("training on cpu, 2 ranks") == 1
    a, b = json.loads(one.out), json.loads(two.stdout)
    assert a["impressions"] == b["impressions"] and a["auc"] == pytest.approx(b["auc"], abs=1e-4)
    lines_one = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lines_two = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [l["event"] for l in lines_two] == ["epoch", "epoch", "final"]
    for x, y in zip(lines_one[:2], lines_two[:2]):
        assert x["steps"] == y["steps"] == 13
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
    from nram_core.checkpoint import committed_file

    w1 = load_file(str(committed_file(tmp_path / "one", "last")))
    w2 = load_file(str(committed_file(tmp_path / "two", "last")))
    assert w1.keys() == w2.keys()
    # The gradients agree to float rounding (test below), but Adam divides by sqrt(v) + eps, so a
    # weight whose gradient is itself rounding noise (~1e-10 here) may move by a fraction of lr
    # differently per step: allow half of one lr-sized step.
    # The self-attention's key bias adds the same q.b to every score of a query row, which the softmax
    # ignores: its true gradient is exactly zero and its computed one is pure rounding noise, which
    # Adam turns into steps of up to lr each. It may differ by at most lr per step.
    lr = float(TINY_ARGS[TINY_ARGS.index("--lr") + 1])
    steps = sum(line["steps"] for line in lines_two[:2])
    for key in w1:
        atol = steps * lr if key.endswith("self_attention.k.bias") else 5e-5
        assert torch.allclose(w1[key], w2[key], atol=atol), (key, (w1[key] - w2[key]).abs().max())



@pytest.mark.slow
def test_two_nodes_meet_at_a_rendezvous_and_train_like_one_process(demo_corpus, tmp_path, capsys):
    """A 2-node launch, simulated on one machine: two torchrun agents (one process each, as two
    machines with one device each) meet at a c10d rendezvous on 127.0.0.1, the address node 0
    would have, and train what one process trains."""
    train = ["train", "--data", str(demo_corpus), *TINY_ARGS, "--no-amp"]
    assert main([*train, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "nram-two-nodes",
             "-m", "nram_core", *train, "--out", str(tmp_path / "two")]
    done = torchrun_agents(agent, 2, [tmp_path / "two"], timeout=240)
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    printed = [d.stdout.strip() for d in done if d.stdout.strip()]
    assert len(printed) == 1, "global rank 0 alone prints the result"
    assert sum(d.stderr.count("training on cpu, 2 ranks") for d in done) == 1
    two = json.loads(printed[0])
    assert two["impressions"] == one["impressions"] and two["auc"] == pytest.approx(one["auc"], abs=1e-4)
    assert [json.loads(line)["event"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()] \
        == ["epoch", "epoch", "final"]


STOP_WORKER = """
import json, pathlib, sys
from nram_core import distributed
from nram_core.config import ModelConfig, TrainConfig
from nram_core.data import resolve_layout
from nram_core.train import Callback, Trainer, prepare_run

info, _ = distributed.init_from_env()

class StopInSecondEpoch(Callback):
    def on_step(self, trainer, step):
        if step.epoch == 2 and step.step == 3:
            trainer.request_stop()

with distributed.main_first():  # rank 0 fills the caches, the other rank reads them
    prepared = prepare_run(resolve_layout(sys.argv[1]),
                           ModelConfig(word_dim=16, num_heads=2, head_dim=8, query_dim=16, title_len=12, history_len=20),
                           TrainConfig(epochs=3, batch_size=37, max_impressions=300, max_dev_impressions=50,
                                       word_vectors="none"))
trainer = Trainer(**prepared.trainer_args(), run_dir=sys.argv[2], callbacks=[StopInSecondEpoch()])
result = trainer.fit()
distributed.finish()
# One file per rank: two processes printing to one pipe can interleave their lines.
pathlib.Path(sys.argv[3], f"rank{info.rank}.json").write_text(json.dumps(
    {"rank": info.rank, "epochs": result.epochs_done, "cancelled": result.cancelled, "steps": result.global_step}))
"""


def test_a_stop_requested_on_rank_0_stops_every_rank_at_the_same_step(demo_corpus, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(STOP_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(demo_corpus), str(tmp_path / "run"), str(tmp_path)]
    done = torchrun(cmd, [tmp_path / "run", tmp_path / "rank0.json", tmp_path / "rank1.json"])
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Callbacks run on rank 0 only; rank 1 learns of the stop at the same step.
    assert results == [{"rank": r, "epochs": 1, "cancelled": True, "steps": 13 + 3} for r in (0, 1)]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epochs_done"] == 1


def test_shards_cover_the_batch_and_score_like_it(demo_corpus):
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=12, splits=("train",))
    batches = TrainBatches(corpus.train, batch_size=37, negatives=4, history_len=20, max_impressions=300)
    batches.set_epoch(1)
    batch = batches[0]
    torch.manual_seed(0)
    model = NRAM(ModelConfig(vocab_size=len(corpus.vocab), word_dim=16, num_heads=2, head_dim=8, query_dim=16,
                             dropout=0.0, title_len=12, history_len=20)).eval()
    with torch.no_grad():
        whole = model.score_batch(batch)  # [37,5]
        parts = []
        for rank in range(3):
            shard = batch.shard(rank, 3)
            assert shard.global_size == 37
            sub = shard.batch
            assert len(np.unique(sub.news_rows.numpy())) == len(sub.news_rows)  # still deduplicated
            parts.append(model.score_batch(sub)[: shard.rows])
    assert [len(p) for p in parts] == [13, 12, 12]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-5)

    # The per-rank losses (sum * world / global size), averaged as DDP does, give the global gradient.
    model.train()
    def gradients(loss_fn):
        model.zero_grad()
        loss_fn().backward()
        return torch.cat([p.grad.ravel() for p in model.parameters()])
    full = gradients(lambda: F.cross_entropy(model.score_batch(batch), batch.labels))
    def ranks_averaged():
        total = 0.0
        for rank in range(3):
            shard = batch.shard(rank, 3)
            losses = F.cross_entropy(model.score_batch(shard.batch), shard.batch.labels, reduction="none")
            total = total + losses[: shard.rows].sum() * 3 / shard.global_size
        return total / 3
    assert torch.allclose(gradients(ranks_averaged), full, rtol=1e-4, atol=1e-8)
    assert [shard_rows(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    empty = batch.select(0, 2).shard(2, 3)
    assert empty.rows == 0 and len(empty.batch.labels) == 1  # a stand-in sample, weighted zero


def test_env_read_at_call_time(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main, info.enabled) == (3, 4, 1, False, True)
    monkeypatch.delenv("WORLD_SIZE")
    assert not env_info().enabled
