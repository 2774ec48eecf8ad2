"""What every benchmark shares: arguments, the corpus, the machine description, timing helpers.

Nothing here imports torch at module level, so that ``bench.prepare``'s child process
measures the data path alone.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nram_core.config import PRESETS, ModelConfig, TrainConfig, preset


def parser(description: str, *, default_preset: str = "paper") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", help="MIND-format corpus (default: generate the demo corpus, seed 0, in a temp dir)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=default_preset)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    return p


def apply_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@contextlib.contextmanager
def corpus_dir(data: str | None) -> Iterator[Path]:
    """``--data``, or a freshly generated demo corpus (``synth.generate(dir, scale="demo", seed=0)``)."""
    if data:
        yield Path(data)
        return
    from nram_core.synth import generate

    with tempfile.TemporaryDirectory(prefix="nram-bench-") as tmp:
        yield generate(Path(tmp) / "demo", scale="demo", seed=0)


def scoring_setup(args: argparse.Namespace):
    """Shared start of the scoring benchmarks: threads, device, the corpus, the split to score
    (dev, else train) and a seeded, untrained ``paper``/``demo`` NRAM in eval mode on that device;
    or, with ``args.run`` (a run folder), that run's trained model and the split read its way."""
    from nram_core.data import load_corpus, resolve_layout
    from nram_core.model import NRAM
    from nram_core.train import pick_device, seed_everything

    apply_threads(args.threads)
    device = pick_device(args.device)
    if getattr(args, "run", None):
        from nram_core.checkpoint import load_run

        run = load_run(args.run, device=device)
        with corpus_dir(args.data) as folder:
            layout = resolve_layout(folder)
            name, split_folder = ("dev", layout.dev) if layout.dev is not None else ("train", layout.train)
            split = run.load_split(name, split_folder)
        return device, None, split, run.model
    with corpus_dir(args.data) as folder:
        corpus = load_corpus(resolve_layout(folder), title_len=preset(args.preset)[0].title_len,
                             splits=("train", "dev"))
    split = corpus.dev if corpus.dev is not None else corpus.train
    model_cfg, _ = configs(args.preset, len(corpus.vocab))
    seed_everything(args.seed)
    return device, corpus, split, NRAM(model_cfg).to(device).eval()


def configs(name: str, vocab_size: int, **train_overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    model_cfg, train_cfg = preset(name)
    chosen = {k: v for k, v in train_overrides.items() if v is not None}
    return dataclasses.replace(model_cfg, vocab_size=vocab_size), dataclasses.replace(train_cfg, **chosen)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far.

    On Linux, VmHWM of /proc/self/status: unlike ``ru_maxrss``, it does not carry over the
    high-water mark of the parent that forked this process before ``exec``.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB -> MiB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, macOS: bytes
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def machine(device: Any = None) -> dict[str, Any]:
    import torch

    from nram_core.train import cpu_has_bf16

    # the CPU decides the ratios: AMX tiles or only AVX-512 bf16 dot products give different bf16 gains
    amx_probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    info = {"cpus": os.cpu_count(), "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_bf16(), "amx": bool(amx_probe()) if callable(amx_probe) else False,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "loadavg_1m": round(os.getloadavg()[0], 2)}  # other work on the machine while measuring
    if device is not None and str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1e3, q)), 3)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)
