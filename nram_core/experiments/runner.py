"""The suite runner: train every model of a suite on the same data and budget, evaluate each once
on dev, and keep the suite folder resumable (see the package docstring for its layout)."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..baselines import BASELINE_PRESETS, DKN, Popularity, RandomScores, WideDeep
from ..checkpoint import committed_file, load_weights
from ..config import KINDS, RUNTIME_FIELDS, ModelConfig, RuntimeConfig, TrainConfig, preset as get_preset, to_dict
from ..data.entities import EntityVocab, entity_files, load_entity_vectors, read_entity_ids, with_entities
from ..data.layout import Layout, resolve_layout
from ..data.split import CategoryVocab, Corpus, load_corpus, with_train_categories
from ..fileio import DataError, atomic_write_json, json_loads, nram_home, read_json
from ..metrics import HISTORY_SEGMENTS
from ..run_info import data_info, run_slug
from ..scoring import evaluate_split
from ..train import Callback, EpochInfo, StepInfo, Trainer
from .report import RESULT_FILE, write_reports
from .suites import ModelSpec, SuiteSettings, run_configs, suite_groups, suite_specs


@dataclass(frozen=True)
class Progress:
    """What the runner is doing; sent to the ``progress`` callback from the runner's thread."""

    run: int  # 1-based index of the model x seed run
    runs: int
    model: str
    seed: int
    phase: str  # loading | train | eval | done | skipped | finished
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_in_epoch: int = 0
    loss: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        """Share of the suite done, counting the current run's steps."""
        inside = 0.0
        if self.phase == "train" and self.epochs and self.steps_in_epoch:
            inside = ((self.epoch - 1) + self.step / self.steps_in_epoch) / self.epochs
        elif self.phase in ("eval", "done", "skipped"):
            inside = 1.0
        return 1.0 if self.phase == "finished" else min(1.0, ((self.run - 1) + inside) / max(1, self.runs))


ProgressFn = Callable[[Progress], None]


class Cancelled(Exception):
    """The suite was stopped; finished runs stay on disk and a rerun continues from them."""


# ---- data --------------------------------------------------------------------------------------
@dataclass
class SuiteData:
    """The data every model of a suite shares, loaded once by ``load_suite_data``. Each run then
    goes through ``train.prepare_run`` with this corpus, which sizes its model and makes its word
    vectors (the one set-up of a training run); nothing here is per model."""

    corpus: Corpus  # splits aligned to the train category vocabulary, with title entities
    categories: CategoryVocab
    entities: EntityVocab
    entity_vectors: np.ndarray | None
    entity_coverage: float | None
    layout: Layout
    strict: bool = False  # how the data was read; each run's word vectors are read the same way
    cache: bool = True


def load_suite_data(layout: Layout, *, title_len: int, min_count: int, strict: bool = False,
                    cache: bool = True) -> SuiteData:
    """Load train and dev once for every model of a suite, with what the baselines read besides the
    titles: categories mapped through the train vocabulary (dev-only names -> 0) for every model
    (Wide&Deep reads them, whether or not NRAM does), entity ids aligned to title tokens, entity
    vectors when the split folders hold ``entity_embedding.vec``."""
    corpus = load_corpus(layout, title_len=title_len, min_count=min_count, strict=strict, cache=cache)
    if corpus.train is None or corpus.dev is None:
        raise DataError("experiments need a train and a dev split: pass a folder holding train/ and dev/")
    corpus, categories = with_train_categories(corpus)
    files = entity_files(layout.train, layout.dev)
    with_vectors = read_entity_ids(files) if files else set()
    dev_entities = set(EntityVocab.build([corpus.dev]).ids[1:])
    entities = EntityVocab.build([corpus.train], also=dev_entities & with_vectors)
    vectors = coverage = None
    if files:
        loaded = load_entity_vectors(files, entities)
        vectors, coverage = loaded.vectors, loaded.coverage
    train, dev = (with_entities(s, entities) for s in (corpus.train, corpus.dev))
    return SuiteData(corpus=Corpus(vocab=corpus.vocab, train=train, dev=dev), categories=categories,
                     entities=entities, entity_vectors=vectors, entity_coverage=coverage, layout=layout,
                     strict=strict, cache=cache)


BEYOND_TOP = 10  # the list length of the suites' beyond-accuracy figures

# ---- one run -------------------------------------------------------------------------------------
def build_model(spec: ModelSpec, model_cfg: ModelConfig, *, data: SuiteData, preset: str, seed: int):
    from ..families import build_model as build_family

    baseline = BASELINE_PRESETS.get(preset, BASELINE_PRESETS["paper"])
    if spec.kind in KINDS:  # nram and the families of its kind (naml, lstur, npa)
        return build_family(model_cfg)
    if spec.kind == "wide_deep":
        return WideDeep(config=model_cfg, baseline=baseline, num_categories=len(data.categories.categories),
                        num_subcategories=len(data.categories.subcategories))
    if spec.kind == "dkn":
        return DKN(config=model_cfg, baseline=baseline, num_entities=len(data.entities),
                   entity_vectors=data.entity_vectors)
    if spec.kind == "popularity":
        return Popularity(data.corpus.train)
    if spec.kind == "random":
        return RandomScores(seed)
    raise ValueError(f"unknown model kind {spec.kind!r}")


def count_parameters(model) -> int:
    params = getattr(model, "parameters", None)
    return int(sum(p.numel() for p in params() if p.requires_grad)) if params else 0


class _Relay(Callback):
    """Trainer callback -> Progress, plus cancellation."""

    def __init__(self, emit: Callable[..., None], stop: threading.Event | None):
        self.emit, self.stop = emit, stop

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        self.emit(phase="train", epoch=info.epoch, step=info.step, steps_in_epoch=info.steps_in_epoch,
                  loss=info.loss)
        if self.stop is not None and self.stop.is_set():
            trainer.request_stop()

    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None:
        self.emit(phase="train", epoch=info.epoch, step=1, steps_in_epoch=1, loss=info.train_loss,
                  message=f"epoch {info.epoch}: train loss {info.train_loss:.4f} ({info.seconds:.0f}s)")


def run_one(spec: ModelSpec, *, seed: int, run_dir: Path, data: SuiteData, base_model: ModelConfig,
            base_train: TrainConfig, runtime: RuntimeConfig, preset: str, device: str | None,
            emit: Callable[..., None], stop: threading.Event | None) -> dict[str, Any]:
    """Train (or resume) and evaluate one model x seed; writes result.json last and returns it."""
    from ..train import prepare_run, seed_everything

    model_cfg, train_cfg = run_configs(spec, base_model=base_model, base_train=base_train, seed=seed)
    run_key = suite_run_key(spec, model_cfg, train_cfg)
    prepared = prepare_run(data.layout, model_cfg, train_cfg, corpus=data.corpus, categories=data.categories,
                           strict=data.strict, cache=data.cache,
                           on_status=lambda text: emit(phase="loading", message=text))
    model_cfg = prepared.model_config
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model = build_model(spec, model_cfg, data=data, preset=preset, seed=seed)
    info = {"name": spec.name, "kind": spec.kind, "group": spec.group, "seed": seed,
            "model_overrides": dict(spec.model), "train_overrides": dict(spec.train)}
    if spec.kind == "dkn":
        info["entities"] = {"count": len(data.entities) - 1,
                            "vectors": "entity_embedding.vec" if data.entity_vectors is not None else "learned",
                            "coverage": data.entity_coverage}
    if spec.kind in ("dkn", "wide_deep"):
        info["baseline"] = to_dict(BASELINE_PRESETS.get(preset, BASELINE_PRESETS["paper"]))
    atomic_write_json(run_dir / "experiment.json", info)
    train_seconds, epochs_done, chosen = 0.0, 0, {}
    if spec.trained:
        data.entities.save(run_dir / "entities.json")
        # prepare_run's corpus: the train part (and the validation part that chooses the epoch) aligned to
        # what this model reads (its users, its abstracts); dev is scored once, below.
        train_only = dataclasses.replace(prepared.corpus, dev=None)
        trainer = Trainer(**{**prepared.trainer_args(), "corpus": train_only}, run_dir=run_dir,
                          callbacks=[_Relay(emit, stop)], device=device, model=model,
                          resume=(run_dir / "state.json").is_file(), runtime=runtime,
                          data_info=data_info(data.layout, preset=preset, experiment=info))
        result = trainer.fit()
        if result.cancelled or (stop is not None and stop.is_set()):
            raise Cancelled(f"stopped during {spec.name} seed {seed}")
        train_seconds = float(sum(r["seconds"] for r in result.history))
        epochs_done = result.epochs_done
        model = trainer.model
        chosen = {"best_epoch": result.best_epoch, "chosen_on": result.chosen_on}
        if result.chosen_on == "validation":  # the epoch chosen on the held-out part of train, not the last
            load_weights(model, committed_file(run_dir, "best"))
    emit(phase="eval", message="evaluating on dev")
    start = time.perf_counter()
    evaluation = evaluate_split(model, prepared.corpus.dev, max_impressions=base_train.max_dev_impressions,
                                segments=HISTORY_SEGMENTS)
    metrics = evaluation.as_dict()
    segments = {name: result.as_dict() for name, result in evaluation.segments.items()}
    attention = {}
    if spec.kind in KINDS:  # the neural families: each reports the attention it has (attention_stats.py)
        from ..attention_stats import attention_stats
        from ..synth import read_truth

        # prepared.corpus.vocab: NAML's own covers the abstracts too, so the suite's shared one may not fit it
        attention = attention_stats(model, prepared.corpus.dev, prepared.corpus.vocab,
                                    truth=read_truth(data.layout.train.parent),
                                    max_impressions=base_train.max_dev_impressions or 5000)
    from ..beyond import beyond_accuracy

    # Catalog-level figures of each dev user's top 10 (issue 28); intra-list diversity in the model's own
    # news vectors (None for a model without them: popularity, random, DKN, Wide&Deep, NPA).
    try:
        beyond = beyond_accuracy(model, prepared.corpus.dev, prepared.corpus.train, top=BEYOND_TOP)
    except DataError as exc:  # e.g. no dev impression long enough for a top 10: the accuracy figures stand alone
        beyond = {"skipped": str(exc)}
    record = {**info, "run_key": run_key, "metrics": metrics, "segments": segments, "attention": attention,
              "beyond": beyond,
              "train_seconds": train_seconds,
              "eval_seconds": time.perf_counter() - start, "epochs": epochs_done, **chosen,
              "parameters": count_parameters(model), "num_heads": model_cfg.num_heads,
              "head_dim": model_cfg.head_dim, "negatives": train_cfg.negatives,
              "self_attention": model_cfg.self_attention, "use_categories": model_cfg.use_categories,
              "model_config": to_dict(model_cfg), "train_config": to_dict(train_cfg),
              "runtime_config": to_dict(runtime)}
    atomic_write_json(run_dir / RESULT_FILE, record)
    return record


# ---- the suite -------------------------------------------------------------------------------------
def default_out(suite: str, preset: str, epochs: int, layout: Layout) -> Path:
    """The suite folder's fixed name (not timestamped: a rerun continues it)."""
    source = layout.train.parent if layout.train is not None else Path("data")
    slug = run_slug(source.name, "data")
    return nram_home() / "experiments" / f"{'+'.join(suite_groups(suite))}-{preset}-e{epochs}-{slug}"


def suite_run_key(spec: ModelSpec, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    """What makes two runs of a suite the same run: the kind, the model config and the recipe
    (``TrainConfig``; the ``RuntimeConfig`` changes how a run computes, not what it learns, and
    each run's config.json still records it)."""
    return json.dumps([spec.kind, to_dict(model_cfg), to_dict(train_cfg)], sort_keys=True)


def _as_recipe_key(saved: str) -> str:
    """A saved run key as ``suite_run_key`` writes it today: a key written before ``RuntimeConfig``
    also held runtime fields (workers, eval batch, amp, compile), which no longer make a run."""
    try:
        kind, model, train = json_loads(saved, source="run_key")  # depth-checked: a DataError is a ValueError
        return json.dumps([kind, model, {k: v for k, v in train.items() if k not in RUNTIME_FIELDS}],
                          sort_keys=True)
    except (ValueError, TypeError, AttributeError):
        return saved


def _suite_file(path: Path, *objects: str) -> dict[str, Any]:
    """A suite.json or result.json this module wrote: a JSON object (read with the nesting and size
    caps of ``fileio.read_json``) whose fields ``objects`` are objects too, else one line naming it."""
    saved = read_json(path)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(name), dict) for name in objects):
        raise DataError(f"{path}: not a suite file NRAM Studio wrote; choose another output folder")
    return saved


def run_suite(*, suite: str, data: str | Path | None = None, layout: Layout | None = None,
              out: str | Path | None = None, preset: str = "demo", epochs: int | None = None, seeds: int = 3,
              train_overrides: dict[str, Any] | None = None, runtime: RuntimeConfig | None = None,
              device: str | None = None, progress: ProgressFn | None = None, stop: threading.Event | None = None,
              strict: bool = False, cache: bool = True) -> Path:
    """Run (or continue) a suite; returns its folder. ``progress`` is called from this thread.

    ``train_overrides`` change the recipe (caps, batch size, lr) and are part of the suite's
    settings; ``runtime`` (workers, precision, kernels) is not, and may differ on a rerun."""
    if seeds < 1:
        raise DataError(f"seeds must be >= 1, got {seeds}")
    base_model, base_train = get_preset(preset)
    overrides = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    if set(overrides) & set(RUNTIME_FIELDS):
        raise DataError(f"runtime settings are not train overrides: pass runtime=RuntimeConfig(...) for "
                        f"{sorted(set(overrides) & set(RUNTIME_FIELDS))}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)} | ({"seed"} & set(overrides))
    if unknown:
        raise DataError(f"unknown or fixed train settings: {sorted(unknown)}")
    # The suite's flags become configs here, once: a bad value fails in one line, before any data is read.
    base_train = dataclasses.replace(base_train, **overrides, **({"epochs": epochs} if epochs else {}))
    runtime = runtime or RuntimeConfig()
    settings = SuiteSettings(suite=suite, preset=preset, epochs=base_train.epochs, seeds=seeds,
                             train=tuple(sorted(overrides.items())))
    specs = suite_specs(suite, base_model, preset)
    layout = layout or resolve_layout(data)
    folder = Path(out) if out else default_out(suite, preset, base_train.epochs, layout)
    saved_path = folder / "suite.json"
    if saved_path.is_file():
        saved = _suite_file(saved_path, "settings")
        if not settings.matches(saved["settings"]):
            raise DataError(f"{folder}: holds a suite with other settings ({saved.get('settings')}); "
                            "use the same settings to continue it, or choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved_path, {"settings": settings.as_dict(), "data": data_info(layout),
                                   "models": [dataclasses.asdict(s) for s in specs],
                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    runs = [(spec, seed) for seed in range(seeds) for spec in specs]  # seed-major: every model gets seed 0 first
    state = {"run": 0, "model": "", "seed": 0}

    def emit(**fields: Any) -> None:
        if progress is not None:
            progress(Progress(run=state["run"], runs=len(runs), model=state["model"], seed=state["seed"],
                              epochs=base_train.epochs, **fields))

    state.update(run=1, model=runs[0][0].name)
    emit(phase="loading", message="loading the data")
    suite_data = load_suite_data(layout, title_len=base_model.title_len, min_count=base_train.min_word_count,
                                 strict=strict, cache=cache)
    done_by_key: dict[str, dict[str, Any]] = {}
    for index, (spec, seed) in enumerate(runs, start=1):
        state.update(run=index, model=spec.name, seed=seed)
        run_dir = folder / "runs" / spec.name / f"seed{seed}"
        model_cfg, train_cfg = run_configs(spec, base_model=base_model, base_train=base_train, seed=seed)
        key = suite_run_key(spec, model_cfg, train_cfg)
        result_path = run_dir / RESULT_FILE
        if result_path.is_file():
            saved_record = _suite_file(result_path)
            if _as_recipe_key(str(saved_record.get("run_key"))) != key:
                raise DataError(f"{run_dir}: finished with another configuration (other settings, or an older "
                                "version of NRAM Studio); choose another output folder")
            done_by_key.setdefault(key, saved_record)
            emit(phase="skipped", message=f"{spec.name} seed {seed}: already done")
            continue
        if key in done_by_key:  # the same configuration under another name in this suite
            twin = done_by_key[key]
            run_dir.mkdir(parents=True, exist_ok=True)
            record = {**twin, "name": spec.name, "group": spec.group, "same_as": twin["name"]}
            atomic_write_json(result_path, record)
            emit(phase="done", message=f"{spec.name} seed {seed}: same configuration as {twin['name']}")
            continue
        if stop is not None and stop.is_set():
            raise Cancelled("stopped")
        record = run_one(spec, seed=seed, run_dir=run_dir, data=suite_data, base_model=base_model,
                         base_train=base_train, runtime=runtime, preset=preset, device=device, emit=emit,
                         stop=stop)
        done_by_key[key] = record
        write_reports(folder)
        m = record["metrics"]
        emit(phase="done", message=f"{spec.name} seed {seed}: AUC {m['auc']:.4f} MRR {m['mrr']:.4f} "
                                   f"({record['train_seconds']:.0f}s training)")
    write_reports(folder)
    emit(phase="finished", message=f"results in {folder}")
    return folder


def experiments_dir() -> Path:
    return nram_home() / "experiments"


def list_suites(root: Path | None = None) -> list[Path]:
    """Suite folders (holding suite.json) directly under NRAM_HOME/experiments, newest first."""
    root = root or experiments_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "suite.json").is_file()]
    return sorted(found, key=lambda p: (p / "suite.json").stat().st_mtime_ns, reverse=True)
