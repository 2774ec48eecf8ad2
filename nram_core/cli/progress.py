"""What the CLI draws on stderr while the core works: tqdm bars and status lines, fed by the core's
callbacks (bytes downloaded, a file read, a training step, a suite's run). The core only calls back."""
from __future__ import annotations

import sys
from pathlib import Path

from ..callbacks import Callback, EpochInfo, StepInfo, TrainResult, seconds_left


class TqdmProgress:
    """A tqdm bar per key: the ``on_progress(key, done, total_or_None)`` callback of
    ``download_mind`` (a bar per split, in bytes) and of reading a split (a bar per file).

    Use as a context manager (or call :meth:`close`) so bars are closed even when the work fails.
    """

    def __init__(self, **tqdm_kwargs) -> None:
        self._kwargs = dict(unit="B", unit_scale=True, unit_divisor=1024, leave=True)
        self._kwargs.update(tqdm_kwargs)
        self._bars: dict[str, object] = {}

    def __call__(self, key: str, done: int, total: int | None) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(key)
        if bar is None:
            bar = tqdm(total=total, initial=done, desc=key, **self._kwargs)
            self._bars[key] = bar
        if total != bar.total or done < bar.n:  # server restarted the body from zero
            bar.reset(total=total)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReadingBars:
    """A tqdm bar per file while a split is read the first time; a warm start (the prepared arrays
    mapped) or a file read in under a second draws nothing."""

    def __init__(self, enabled: bool = True):
        self.bars = TqdmProgress(delay=1.0, file=sys.stderr, leave=False) if enabled else None

    def __call__(self, path: str, done: int, total: int) -> None:
        if self.bars is not None:
            self.bars(f"reading {Path(path).parent.name}/{Path(path).name}", done, total)

    def __enter__(self) -> "ReadingBars":
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.close()


class TrainingBar(Callback):
    """The trainer's callbacks on the command line: a tqdm bar per epoch (loss, samples/s and the time
    the whole run has left at that pace, as the studio shows) and a line of dev metrics."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def on_step(self, trainer, info: StepInfo) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info.steps_in_epoch, desc=f"epoch {info.epoch}", file=sys.stderr, leave=False)
        self.bar.update(1)
        left = 0.0 if info.global_step >= trainer.total_steps else seconds_left(
            done_steps=info.global_step, total_steps=trainer.total_steps,
            batch_size=trainer.train_config.batch_size, samples_per_s=info.samples_per_s)
        self.bar.set_postfix(loss=f"{info.loss:.4f}", samples_s=f"{info.samples_per_s:.0f}",
                             left="?" if left is None else f"{int(left) // 60}m{int(left) % 60:02d}s")

    def on_epoch_end(self, trainer, info: EpochInfo) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (info.metrics or {}).items() if isinstance(v, float))
        where = f" on {trainer.chosen_on}" if info.metrics else ""
        print(f"epoch {info.epoch}: loss {info.train_loss:.4f}{where} {shown} ({info.seconds:.1f}s)", file=sys.stderr)

    def on_train_end(self, trainer, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()
        if result.chosen_on == "validation" and trainer.corpus.dev is not None and result.metrics:
            print(f"epoch {result.best_epoch}, chosen on validation, scored once on dev: "
                  f"auc {result.metrics['auc']:.4f}", file=sys.stderr)


class SuiteLines:
    """``run_suite``'s progress as lines: each message and, every 20 steps, the training loss;
    ``quiet`` keeps only the line that ends each run."""

    def __init__(self, quiet: bool):
        self.quiet, self.last = quiet, ""

    def __call__(self, p) -> None:
        if self.quiet:
            if p.message and p.phase in ("done", "skipped", "finished"):
                print(f"[{p.run}/{p.runs}] {p.message}", file=sys.stderr, flush=True)
            return
        if p.message:
            print(f"[{p.run}/{p.runs}] {p.model} seed {p.seed}: {p.message}", file=sys.stderr, flush=True)
        elif p.phase == "train" and p.step % 20 == 0:
            line = (f"[{p.run}/{p.runs}] {p.model} seed {p.seed}: epoch {p.epoch}/{p.epochs} "
                    f"step {p.step}/{p.steps_in_epoch} loss {p.loss:.4f}")
            if line != self.last:
                print(line, file=sys.stderr, flush=True)
                self.last = line
