"""What every benchmark shares: arguments, the corpus, the set-up (``prepare_run``), the
best-of-rounds harness and the one JSON line (figures, settings, machine).

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
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from nram_core.config import PRESETS, preset


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


def start(p: argparse.ArgumentParser, argv: list[str] | None):
    """Parse ``argv``; set torch's CPU threads (``--threads``); (the arguments, the ``--device`` to run on)."""
    from nram_core.train import pick_device

    args = p.parse_args(argv)
    apply_threads(args.threads)
    return args, pick_device(args.device)


# A busy machine as a second training job makes it: another torch process multiplying matrices on
# every core it gets (plain busy loops do not reproduce it: they leave the FPUs and caches alone).
HOG = """
import sys, torch
a = torch.randn(384, 384)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ a)
"""


def add_hogs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hogs", type=int, default=0,
                   help="start N other torch processes multiplying 384x384 matrices beside the measurement "
                        "(a busy machine), stopped after it")


@contextlib.contextmanager
def hogs(count: int) -> Iterator[list]:
    """``count`` hog processes (``HOG``, their ``Popen`` objects) running, each past its first product,
    for the block; killed and reaped after it."""
    import subprocess

    # The hogs run with torch's own defaults, whatever the measured process was started with.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OMP_", "GOMP_", "KMP_"))}
    procs = [subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(max(0, count))]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a hog process did not start")
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def corpus_dir(data: str | None) -> Iterator[Path]:
    """``--data``, or a freshly generated demo corpus (``synth.generate(dir, scale="demo", seed=0)``)."""
    if data:
        yield Path(data)
        return
    from nram_core.synth import generate

    with tempfile.TemporaryDirectory(prefix="nram-bench-") as tmp:
        yield generate(Path(tmp) / "demo", scale="demo", seed=0)


def prepare(args: argparse.Namespace, folder: Path, *, dev: bool = True, **train_overrides: Any):
    """``prepare_run`` on ``folder`` with ``--preset`` (of the family ``--model``, where the benchmark has that
    flag) and the non-None ``train_overrides``; with
    ``dev=False`` the dev split is not read, so a Trainer of it evaluates nothing inside the timing."""
    from nram_core.data import resolve_layout
    from nram_core.train import prepare_run

    model_cfg, train_cfg = preset(args.preset, getattr(args, "model", "nram"))
    chosen = {name: value for name, value in train_overrides.items() if value is not None}
    layout = resolve_layout(folder)
    if not dev:
        layout = dataclasses.replace(layout, dev=None)
    return prepare_run(layout, model_cfg, dataclasses.replace(train_cfg, **chosen))


def scoring_setup(args: argparse.Namespace, device):
    """Shared start of the scoring benchmarks: (the split to score, dev else train; a seeded,
    untrained ``--preset`` NRAM on ``device`` in eval mode, sized by ``prepare_run``). With
    ``args.run`` (a run folder): that run's trained model and the split read its way, and
    ``args.preset`` is set to None, as the run's own configuration holds."""
    from nram_core.data import resolve_layout
    from nram_core.model import NRAM
    from nram_core.train import seed_everything

    if getattr(args, "run", None):
        from nram_core.checkpoint import load_run

        args.preset = None
        run = load_run(args.run, device=device)
        with corpus_dir(args.data) as folder:
            layout = resolve_layout(folder)
            name, split_folder = ("dev", layout.dev) if layout.dev is not None else ("train", layout.train)
            split = run.load_split(name, split_folder)
        return split, run.model.eval()
    with corpus_dir(args.data) as folder:
        prepared = prepare(args, folder, word_vectors="none")
    corpus = prepared.corpus
    seed_everything(args.seed)
    return corpus.dev if corpus.dev is not None else corpus.train, NRAM(prepared.model_config).to(device).eval()


def runtime(**overrides: Any):
    """``RuntimeConfig`` (how a Trainer computes) with the non-None ``overrides``."""
    from nram_core.config import RuntimeConfig

    return RuntimeConfig(**{name: value for name, value in overrides.items() if value is not None})


def train_only(prepared, **trainer_args: Any):
    """A Trainer of ``prepared`` (``trainer_args`` added or replaced) on the train split alone:
    no dev evaluation inside what is timed."""
    from nram_core.train import Trainer

    corpus = dataclasses.replace(prepared.corpus, dev=None)
    return Trainer(**{**prepared.trainer_args(), "corpus": corpus, **trainer_args})


@dataclasses.dataclass(frozen=True)
class Lap:
    """One timed run of one path: its seconds, the work done in them (samples, impressions; 1: the
    run itself) and what the run returned."""

    seconds: float
    work: float = 1.0
    value: Any = None

    @property
    def rate(self) -> float:
        return self.work / self.seconds


class Laps(list):
    """One path's laps, round by round."""

    @property
    def best(self) -> Lap:
        """The lap of the highest rate (for the same work: the fewest seconds)."""
        return max(self, key=lambda lap: lap.rate)


def best_of_rounds(paths: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, Laps]:
    """Each path's laps over ``rounds`` rounds; every round runs every path once, in turn.

    Taking turns spreads the machine's changing load over all paths alike, so the ratio of two
    paths' best laps, measured in one run, is the figure to compare. A path that times itself
    (to leave its warm-up steps out, say) returns its ``Lap``; any other return value is kept as
    the ``value`` of a lap timed around the call. Warm-ups are the caller's, before this.

    >>> laps = best_of_rounds({"a": lambda: Lap(2.0, work=10), "b": lambda: 7}, rounds=2)
    >>> laps["a"].best.rate, len(laps["b"]), laps["b"].best.value
    (5.0, 2, 7)
    """
    laps = {name: Laps() for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            out, seconds = timed(path)
            laps[name].append(out if isinstance(out, Lap) else Lap(seconds, value=out))
    return laps


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """What ``fn()`` returns, and the seconds it took."""
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


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

    from nram_core.cpu_wait import wait_settings
    from nram_core.fastpath import cpu_has_bf16

    # the CPU decides the ratios: AMX tiles or only AVX-512 bf16 dot products give different bf16 gains
    amx_probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    info = {"cpus": os.cpu_count(), "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_bf16(), "amx": bool(amx_probe()) if callable(amx_probe) else False,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine while measuring
            "omp_wait": wait_settings()}  # how the CPU threads wait between kernels (nram_core.cpu_wait)
    if device is not None and str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1e3, q)), 3)


def settings(args: argparse.Namespace | Mapping[str, Any] | None) -> dict[str, Any]:
    """The command's settings as parsed (paths as text; hidden ones, named ``_...``, left out)."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return {name: str(value) if isinstance(value, Path) else value for name, value in given.items()
            if not name.startswith("_")}


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: strict JSON has no NaN.

    >>> strict({"a": float("nan"), "b": [1.5, float("inf")]})
    {'a': None, 'b': [1.5, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def emit(bench: str, figures: Mapping[str, Any], *, args: Any = None, device: Any = None) -> None:
    """The benchmark's one line on stdout: ``bench``, its figures, ``settings`` and ``machine``."""
    record = {"bench": bench, **figures, "settings": settings(args), "machine": machine(device)}
    print(json.dumps(strict(record), sort_keys=True, allow_nan=False), flush=True)
