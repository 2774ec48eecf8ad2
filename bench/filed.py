"""``python -m bench.filed``: evaluation against ``evaluate_split`` as it was when the CPU-speed issue was filed.

Issue 14 asks for 4x "today's fp32 evaluate_split", today being the commit it was filed against
(``FILED_COMMIT``). ``bench.evaluate`` stands in for that code with the current plain path
(``precompute=False``), which shares helpers that got faster since (the metrics' sorts,
distinct histories). This benchmark runs the filed code itself: ``git archive`` writes that
commit's ``nram_core`` into a temporary folder, which is imported as a second package,
``nram_core_filed``; its NRAM gets the same weights, and its ``evaluate_split`` scores the same
split object. The default path (bf16 autocast on CUDA, as in ``bench.evaluate``), the plain path
and the filed code (both fp32) are timed in turns, in this one process. The plain and the filed
paths must give the same AUC, else the benchmark fails: the filed code did not get the same model
or split.

Needs git and this repository's history (a clone, not an installed copy).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

from nram_core.scoring import evaluate_split

from . import common


class FiledError(Exception):
    """The filed code cannot be read, cannot build the model, or disagrees with today's."""


FILED_COMMIT = "4cbb0688c2c6163f954c7e6c41c3e404be299e19"  # the commit issue 14 was filed against
PACKAGE = "nram_core_filed"
ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        detail = err.stderr.decode(errors="replace") if isinstance(err, subprocess.CalledProcessError) else str(err)
        raise FiledError(f"git {args[0]} failed in {ROOT}: {' '.join(detail.split()) or 'no message'}") from None


def resolve_commit(commit: str) -> str:
    """The full hash of ``commit`` in this repository's history (never read as a git option)."""
    if commit.startswith("-"):
        raise FiledError(f"not a commit: {commit!r}")
    try:
        return _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}").decode().strip()
    except FiledError:
        raise FiledError(f"cannot read commit {commit} from the git history of {ROOT}") from None


def import_filed(commit: str, into: Path) -> ModuleType:
    """``nram_core`` at ``commit`` (a full hash) of this repository, extracted under ``into`` and
    imported as ``nram_core_filed``."""
    archive = _git("archive", "--format=tar", commit, "--", "nram_core")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
        outside = [m.name for m in members if m.name.split("/")[0] != "nram_core" or ".." in Path(m.name).parts
                   or not (m.isfile() or m.isdir())]
        if outside:
            raise FiledError(f"the archive of {commit} holds unexpected entries: {outside[:3]}")
        tar.extractall(into, members=members)  # names checked above: plain files and folders under nram_core/
    forget_filed()
    package = into / "nram_core"
    spec = importlib.util.spec_from_file_location(PACKAGE, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the filed code is foreign to this process: report, never trace back
        raise FiledError(f"the code of {commit} does not import: {err!r}".splitlines()[0]) from None
    return module


def forget_filed() -> None:
    """Drop ``nram_core_filed`` and its submodules from ``sys.modules`` (their folder is temporary)."""
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def filed_model(model):
    """The filed code's NRAM (``import_filed`` first) with ``model``'s configuration and weights, in eval mode."""
    try:
        config_module = importlib.import_module(f"{PACKAGE}.config")
        model_module = importlib.import_module(f"{PACKAGE}.model")
        filed_fields = {f.name for f in dataclasses.fields(config_module.ModelConfig)}
        fields = {f.name for f in dataclasses.fields(model.config)}
        if fields - filed_fields:
            raise FiledError(f"the filed ModelConfig lacks {sorted(fields - filed_fields)}: it cannot build this model")
        twin = model_module.NRAM(config_module.ModelConfig(**{name: getattr(model.config, name)
                                                              for name in filed_fields & fields}))
        twin.load_state_dict(model.state_dict(), strict=True)
    except FiledError:
        raise
    except Exception as err:  # a model or config that changed shape since: one line, not a traceback
        raise FiledError(f"the filed code cannot take this model: {err!r}".splitlines()[0]) from None
    return twin.to(next(model.parameters()).device).eval()


def _time_paths(args, split, model, commit: str, folder: Path, amp: bool) -> tuple[dict, dict]:
    """Seconds of each timed round and the AUC, per path: today's default and plain paths, and the filed code."""
    import_filed(commit, folder)
    twin = filed_model(model)
    filed_evaluate = getattr(importlib.import_module(f"{PACKAGE}.scoring"), "evaluate_split", None)
    if filed_evaluate is None:
        raise FiledError(f"the code of {commit} has no scoring.evaluate_split")
    paths = {  # the plain and the filed paths are fp32 on every device, as in bench.evaluate
        "default": lambda n: evaluate_split(model, split, max_impressions=n, amp=amp),
        "plain": lambda n: evaluate_split(model, split, max_impressions=n, precompute=False),
        "filed": lambda n: filed_evaluate(twin, split, max_impressions=n),
    }
    for run in paths.values():
        run(min(64, split.num_impressions))  # warm-up
    seconds, auc = {name: [] for name in paths}, {}
    for _ in range(args.rounds):
        for name, run in paths.items():
            start = time.perf_counter()
            auc[name] = run(args.impressions).auc
            seconds[name].append(time.perf_counter() - start)
    return seconds, auc


def main(argv=None) -> int:
    try:
        return _main(argv)
    except FiledError as err:
        print(f"bench.filed: {err}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--run", help="a run folder: score its trained model (default: an untrained --preset model)")
    p.add_argument("--impressions", type=int, default=0, help="first N dev impressions (0: all)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each path, in turns; the best counts")
    p.add_argument("--commit", default=FILED_COMMIT, help="the commit whose evaluate_split is the reference")
    args = p.parse_args(argv)
    commit = resolve_commit(args.commit)
    device, _, split, model = common.scoring_setup(args)
    with tempfile.TemporaryDirectory(prefix="nram-filed-") as tmp:
        try:
            seconds, auc = _time_paths(args, split, model, commit, Path(tmp), amp=device.type == "cuda")
        finally:
            forget_filed()
    best = {name: min(times) for name, times in seconds.items()}
    # The plain and the filed paths do the same arithmetic; a gap means another model or split. The
    # default path may swap near-tied candidates on the last bit (bench.evaluate counts those).
    if not abs(auc["plain"] - auc["filed"]) <= 1e-4:
        raise FiledError(f"the plain and the filed paths disagree on AUC ({auc}): not the same model or split")
    n = split.num_impressions if not args.impressions else min(args.impressions, split.num_impressions)
    common.emit({
        "bench": "filed", "commit": commit, "preset": None if args.run else args.preset, "run": args.run,
        "device": str(device), "impressions": n, "machine": common.machine(device), "rounds": args.rounds,
        "seconds": round(best["default"], 4), "plain_seconds": round(best["plain"], 4),
        "filed_seconds": round(best["filed"], 4),
        "speedup_vs_filed": round(best["filed"] / best["default"], 2),
        "speedup_vs_fp32": round(best["plain"] / best["default"], 2),
        "plain_vs_filed": round(best["filed"] / best["plain"], 3),
        "auc": round(auc["default"], 6), "plain_auc": round(auc["plain"], 6), "filed_auc": round(auc["filed"], 6),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
