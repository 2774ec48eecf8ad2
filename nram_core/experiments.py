"""Experiment suites: the paper's comparison and its open questions, one command each.

``run_suite`` trains every model of a suite on the same data with the same budget
(preset, epochs, seeds, caps), evaluates each on dev with the official metrics, overall
and per segment of user history length, and writes into the suite folder

  suite.json           the settings (a rerun with other settings is refused)
  runs/MODEL/seedS/    one Trainer run folder per model and seed; result.json, written
                       last, is the done marker: a rerun skips finished runs and resumes
                       an interrupted one from its last finished epoch
  results.csv          one row per model and seed (metrics, training time, parameters)
  segments.csv         the same metrics per history-length segment
  results.md           mean ± std over seeds, per-segment AUC, heads and K tables, and
                       whether the paper's ordering NRAM > DKN > Wide&Deep holds
  plots.html           bars per metric, metrics vs heads and vs K (plotly, self-contained)

Protocol: every model trains ``epochs`` epochs and is evaluated once, after the last
epoch; there is no early stopping and no epoch picked on dev, for NRAM or the baselines.

Suites (``SUITES``): paper (NRAM, DKN, Wide&Deep, popularity, random), heads (1/5/10/15
heads at one total width), negatives (K = 1/2/4/8), ablation (NRAM, no self-attention,
categories fused), all (their union; identical configurations are trained once).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .baselines import BASELINE_PRESETS, DKN, SEGMENTS, Popularity, RandomScores, WideDeep, evaluate_model
from .config import ModelConfig, TrainConfig, preset as get_preset, to_dict
from .data.entities import EntityVocab, entity_files, load_entity_vectors, read_entity_ids, with_entities
from .data.prepare import CategoryVocab, Corpus, Layout, load_corpus, resolve_layout, with_train_categories
from .fileio import DataError, atomic_write_json, atomic_write_text, nram_home
from .metrics import METRIC_NAMES

SUITE_NAMES = ("paper", "heads", "negatives", "ablation", "all")
HEADS = (1, 5, 10, 15)
NEGATIVES = (1, 2, 4, 8)
HEADS_WIDTH_UNIT = 30  # lcm(1, 5, 10, 15): every head count splits the width evenly
RESULT_FILE = "result.json"
KIND_LABELS = {"nram": "NRAM", "dkn": "DKN", "wide_deep": "Wide&Deep", "popularity": "Popularity",
               "random": "Random"}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a suite: a kind and the config fields it changes."""

    name: str
    kind: str  # nram | dkn | wide_deep | popularity | random
    group: str  # paper | heads | negatives | ablation
    model: tuple[tuple[str, Any], ...] = ()  # ModelConfig overrides
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides

    @property
    def trained(self) -> bool:
        return self.kind not in ("popularity", "random")


def heads_width(base: ModelConfig) -> int:
    """Total width of the heads suite: the largest multiple of 30 not above the preset's news
    width (60 for the demo preset's 64, 300 for the paper's 15 x 20), at least 30."""
    return max(HEADS_WIDTH_UNIT, base.news_dim // HEADS_WIDTH_UNIT * HEADS_WIDTH_UNIT)


def suite_groups(suite: str) -> list[str]:
    """The groups a suite name stands for: one name, ``all``, or several joined by commas
    (``paper,ablation``: a configuration both share is trained once)."""
    names = [name.strip() for name in suite.split(",")]
    unknown = [name for name in names if name not in SUITE_NAMES]
    if unknown:
        raise DataError(f"unknown suite {suite!r}; choose one of {', '.join(SUITE_NAMES)}, or several "
                        "joined by commas")
    return [g for g in ("paper", "heads", "negatives", "ablation") if g in names or "all" in names]


def suite_specs(suite: str, base: ModelConfig) -> list[ModelSpec]:
    chosen = suite_groups(suite)
    width = heads_width(base)
    residual = "nram_residual" if not base.residual else "nram_no_residual"
    groups = {
        "paper": [ModelSpec("nram", "nram", "paper"), ModelSpec("dkn", "dkn", "paper"),
                  ModelSpec("wide_deep", "wide_deep", "paper"), ModelSpec("popularity", "popularity", "paper"),
                  ModelSpec("random", "random", "paper")],
        # With a residual the word dim must equal the heads' total width: it follows the width.
        "heads": [ModelSpec(f"nram_heads{h}", "nram", "heads", model=(("num_heads", h), ("head_dim", width // h))
                            + ((("word_dim", width),) if base.residual else ())) for h in HEADS],
        "negatives": [ModelSpec(f"nram_k{k}", "nram", "negatives", train=(("negatives", k),)) for k in NEGATIVES],
        "ablation": [ModelSpec("nram", "nram", "ablation"),
                     ModelSpec("nram_no_self_attention", "nram", "ablation", model=(("self_attention", False),)),
                     ModelSpec("nram_categories", "nram", "ablation", model=(("use_categories", True),)),
                     ModelSpec(residual, "nram", "ablation", model=(("residual", not base.residual),)),
                     ModelSpec("nram_no_vectors", "nram", "ablation", train=(("word_vectors", "none"),))],
    }
    specs, seen = [], set()
    for group in chosen:
        for spec in groups[group]:
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    return specs


@dataclass(frozen=True)
class SuiteSettings:
    suite: str
    preset: str
    epochs: int
    seeds: int
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides beyond epochs (caps, batch size, lr)

    def matches(self, saved: dict[str, Any]) -> bool:
        """Same settings except the number of seeds (adding seeds to a suite is allowed)."""
        mine = {k: v for k, v in self.as_dict().items() if k != "seeds"}
        return mine == {k: v for k, v in saved.items() if k in mine}

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "preset": self.preset, "epochs": self.epochs, "seeds": self.seeds,
                "train": dict(self.train)}


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
    corpus: Corpus  # splits aligned to the train category vocabulary, with title entities
    categories: CategoryVocab
    entities: EntityVocab
    entity_vectors: np.ndarray | None
    entity_coverage: float | None
    layout: Layout
    strict: bool = False  # how the data was read; each run's word vectors are read the same way
    cache: bool = True


def prepare_data(layout: Layout, *, title_len: int, min_count: int, strict: bool = False,
                 cache: bool = True) -> SuiteData:
    """Load train and dev once for every model: categories mapped through the train vocabulary
    (dev-only names -> 0), entity ids aligned to title tokens, entity vectors when the split
    folders hold ``entity_embedding.vec``."""
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


# ---- one run -------------------------------------------------------------------------------------
def run_configs(spec: ModelSpec, *, base_model: ModelConfig, base_train: TrainConfig,
                seed: int) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with the spec's overrides and the seed; ``train.prepare_run`` sizes
    them from the data."""
    model_cfg = dataclasses.replace(base_model, **dict(spec.model))
    train_cfg = dataclasses.replace(base_train, seed=seed, **dict(spec.train))
    if not spec.trained:  # popularity and random read no word vectors
        train_cfg = dataclasses.replace(train_cfg, word_vectors="none")
    model_cfg.validate(data_sizes=False)
    train_cfg.validate()
    return model_cfg, train_cfg


def build_model(spec: ModelSpec, model_cfg: ModelConfig, *, data: SuiteData, preset: str, seed: int):
    from .model import NRAM

    baseline = BASELINE_PRESETS.get(preset, BASELINE_PRESETS["paper"])
    if spec.kind == "nram":
        return NRAM(model_cfg)
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


class _Relay:
    """Trainer callback -> Progress, plus cancellation."""

    def __init__(self, emit: Callable[..., None], stop: threading.Event | None):
        self.emit, self.stop = emit, stop

    def on_train_start(self, trainer) -> None:
        pass

    def on_step(self, trainer, info) -> None:
        self.emit(phase="train", epoch=info.epoch, step=info.step, steps_in_epoch=info.steps_in_epoch,
                  loss=info.loss)
        if self.stop is not None and self.stop.is_set():
            trainer.request_stop()

    def on_epoch_end(self, trainer, info) -> None:
        self.emit(phase="train", epoch=info.epoch, step=1, steps_in_epoch=1, loss=info.train_loss,
                  message=f"epoch {info.epoch}: train loss {info.train_loss:.4f} ({info.seconds:.0f}s)")

    def on_train_end(self, trainer, result) -> None:
        pass


def run_one(spec: ModelSpec, *, seed: int, run_dir: Path, data: SuiteData, base_model: ModelConfig,
            base_train: TrainConfig, preset: str, device: str | None, emit: Callable[..., None],
            stop: threading.Event | None) -> dict[str, Any]:
    """Train (or resume) and evaluate one model x seed; writes result.json last and returns it."""
    from .train import Trainer, prepare_run, seed_everything

    model_cfg, train_cfg = run_configs(spec, base_model=base_model, base_train=base_train, seed=seed)
    run_key = _run_key(spec, model_cfg, train_cfg)
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
    train_seconds, epochs_done = 0.0, 0
    if spec.trained:
        data.entities.save(run_dir / "entities.json")
        train_only = Corpus(vocab=data.corpus.vocab, train=data.corpus.train, dev=None)  # evaluated once, below
        trainer = Trainer(**{**prepared.trainer_args(), "corpus": train_only}, run_dir=run_dir,
                          callbacks=[_Relay(emit, stop)], device=device, model=model,
                          resume=(run_dir / "state.json").is_file(),
                          data_info={"train": str(data.layout.train), "dev": str(data.layout.dev),
                                     "experiment": info})
        result = trainer.fit()
        if result.cancelled or (stop is not None and stop.is_set()):
            raise Cancelled(f"stopped during {spec.name} seed {seed}")
        train_seconds = float(sum(r["seconds"] for r in result.history))
        epochs_done = result.epochs_done
        model = trainer.model
    emit(phase="eval", message="evaluating on dev")
    start = time.perf_counter()
    metrics, segments = evaluate_model(model, data.corpus.dev, max_impressions=base_train.max_dev_impressions)
    attention = {}
    if spec.kind == "nram":
        from .attention_stats import attention_stats
        from .synth import read_truth

        attention = attention_stats(model, data.corpus.dev, data.corpus.vocab,
                                    truth=read_truth(data.layout.train.parent),
                                    max_impressions=base_train.max_dev_impressions or 5000)
    record = {**info, "run_key": run_key, "metrics": metrics, "segments": segments, "attention": attention,
              "train_seconds": train_seconds,
              "eval_seconds": time.perf_counter() - start, "epochs": epochs_done,
              "parameters": count_parameters(model), "num_heads": model_cfg.num_heads,
              "head_dim": model_cfg.head_dim, "negatives": train_cfg.negatives,
              "self_attention": model_cfg.self_attention, "use_categories": model_cfg.use_categories,
              "model_config": to_dict(model_cfg), "train_config": to_dict(train_cfg)}
    atomic_write_json(run_dir / RESULT_FILE, record)
    return record


# ---- the suite -------------------------------------------------------------------------------------
def default_out(suite: str, preset: str, epochs: int, layout: Layout) -> Path:
    source = layout.train.parent if layout.train is not None else Path("data")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-.") or "data"
    return nram_home() / "experiments" / f"{'+'.join(suite_groups(suite))}-{preset}-e{epochs}-{slug}"


def _run_key(spec: ModelSpec, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    return json.dumps([spec.kind, to_dict(model_cfg), to_dict(train_cfg)], sort_keys=True)


def run_suite(*, suite: str, data: str | Path | None = None, layout: Layout | None = None,
              out: str | Path | None = None, preset: str = "demo", epochs: int | None = None, seeds: int = 3,
              train_overrides: dict[str, Any] | None = None, device: str | None = None,
              progress: ProgressFn | None = None, stop: threading.Event | None = None,
              strict: bool = False, cache: bool = True) -> Path:
    """Run (or continue) a suite; returns its folder. ``progress`` is called from this thread."""
    if seeds < 1:
        raise DataError(f"--seeds must be >= 1, got {seeds}")
    base_model, base_train = get_preset(preset)
    overrides = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)} | ({"seed"} & set(overrides))
    if unknown:
        raise DataError(f"unknown or fixed train settings: {sorted(unknown)}")
    base_train = dataclasses.replace(base_train, **overrides, **({"epochs": epochs} if epochs else {}))
    base_train.validate()
    settings = SuiteSettings(suite=suite, preset=preset, epochs=base_train.epochs, seeds=seeds,
                             train=tuple(sorted(overrides.items())))
    specs = suite_specs(suite, base_model)
    layout = layout or resolve_layout(data)
    folder = Path(out) if out else default_out(suite, preset, base_train.epochs, layout)
    saved_path = folder / "suite.json"
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        if not settings.matches(saved.get("settings", {})):
            raise DataError(f"{folder}: holds a suite with other settings ({saved.get('settings')}); "
                            "use the same settings to continue it, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved_path, {"settings": settings.as_dict(), "data": {"train": str(layout.train),
                                   "dev": str(layout.dev)}, "models": [dataclasses.asdict(s) for s in specs],
                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    runs = [(spec, seed) for seed in range(seeds) for spec in specs]  # seed-major: every model gets seed 0 first
    state = {"run": 0, "model": "", "seed": 0}

    def emit(**fields: Any) -> None:
        if progress is not None:
            progress(Progress(run=state["run"], runs=len(runs), model=state["model"], seed=state["seed"],
                              epochs=base_train.epochs, **fields))

    state.update(run=1, model=runs[0][0].name)
    emit(phase="loading", message="loading the data")
    prepared = prepare_data(layout, title_len=base_model.title_len, min_count=base_train.min_word_count,
                            strict=strict, cache=cache)
    done_by_key: dict[str, dict[str, Any]] = {}
    for index, (spec, seed) in enumerate(runs, start=1):
        state.update(run=index, model=spec.name, seed=seed)
        run_dir = folder / "runs" / spec.name / f"seed{seed}"
        model_cfg, train_cfg = run_configs(spec, base_model=base_model, base_train=base_train, seed=seed)
        key = _run_key(spec, model_cfg, train_cfg)
        result_path = run_dir / RESULT_FILE
        if result_path.is_file():
            saved_record = json.loads(result_path.read_text(encoding="utf-8"))
            if saved_record.get("run_key") != key:
                raise DataError(f"{run_dir}: finished with another configuration (other settings, or an older "
                                "version of NRAM Studio); choose another --out")
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
        record = run_one(spec, seed=seed, run_dir=run_dir, data=prepared, base_model=base_model,
                         base_train=base_train, preset=preset, device=device, emit=emit, stop=stop)
        done_by_key[key] = record
        write_reports(folder)
        m = record["metrics"]
        emit(phase="done", message=f"{spec.name} seed {seed}: AUC {m['auc']:.4f} MRR {m['mrr']:.4f} "
                                   f"({record['train_seconds']:.0f}s training)")
    write_reports(folder)
    emit(phase="finished", message=f"results in {folder}")
    return folder


# ---- results -----------------------------------------------------------------------------------------
ATTENTION_KEYS = ("word_entropy", "click_entropy", "topical_common_ratio")  # see attention_stats.py
RESULT_COLUMNS = ("model", "label", "kind", "group", "seed", "num_heads", "head_dim", "negatives",
                  "self_attention", "use_categories", *METRIC_NAMES, "impressions", *ATTENTION_KEYS,
                  "train_seconds", "eval_seconds", "epochs", "parameters", "same_as")
SEGMENT_COLUMNS = ("model", "seed", "segment", *METRIC_NAMES, "impressions")


def model_label(record: dict[str, Any]) -> str:
    name = record["name"]
    if record["kind"] != "nram":
        return KIND_LABELS.get(record["kind"], name)
    if name.startswith("nram_heads"):
        return f"NRAM {record['num_heads']}×{record['head_dim']} heads"
    if name.startswith("nram_k"):
        return f"NRAM K={record['negatives']}"
    return {"nram": "NRAM", "nram_no_self_attention": "NRAM − self-attention",
            "nram_categories": "NRAM + categories", "nram_residual": "NRAM + residual",
            "nram_no_residual": "NRAM − residual", "nram_no_vectors": "NRAM, random word vectors"}.get(name, name)


def read_records(folder: str | Path) -> list[dict[str, Any]]:
    """The result.json of every finished run of a suite folder, in suite order."""
    folder = Path(folder)
    order = {}
    try:
        saved = json.loads((folder / "suite.json").read_text(encoding="utf-8"))
        order = {m["name"]: i for i, m in enumerate(saved.get("models", []))}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{folder}: not an experiment suite folder ({exc})") from exc
    records = []
    for path in sorted((folder / "runs").glob(f"*/seed*/{RESULT_FILE}")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable result ({exc})") from exc
    records.sort(key=lambda r: (order.get(r["name"], len(order)), r["seed"]))
    return records


def results_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        row = {c: r.get(c) for c in RESULT_COLUMNS}
        row.update(model=r["name"], label=model_label(r), **{m: r["metrics"][m] for m in METRIC_NAMES},
                   impressions=r["metrics"]["impressions"],
                   **{k: (r.get("attention") or {}).get(k) for k in ATTENTION_KEYS})
        rows.append(row)
    return rows


def segment_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": r["name"], "seed": r["seed"], "segment": name,
             **{m: r["segments"][name][m] for m in METRIC_NAMES}, "impressions": r["segments"][name]["impressions"]}
            for r in records for name, _, _ in SEGMENTS if name in r.get("segments", {})]


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buffer.getvalue()


def summarise(rows: list[dict[str, Any]], keys: tuple[str, ...] = (*METRIC_NAMES, *ATTENTION_KEYS, "train_seconds")
              ) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per model, in first-seen order."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    out = []
    for model, group in by_model.items():
        summary = {k: group[0].get(k) for k in ("model", "label", "kind", "group", "num_heads", "head_dim",
                                                 "negatives", "parameters")}
        summary["seeds"] = len(group)
        for k in keys:
            values = np.asarray([float(g[k]) for g in group if g.get(k) not in (None, "")], dtype=float)
            summary[k] = float(values.mean()) if values.size else math.nan
            summary[f"{k}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out.append(summary)
    return out


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def paper_ordering(summary: list[dict[str, Any]], metric: str = "auc") -> str | None:
    """Whether NRAM > DKN > Wide&Deep holds on ``metric`` (means over seeds), as one sentence."""
    by = {s["model"]: s for s in summary}
    if not all(m in by for m in ("nram", "dkn", "wide_deep")):
        return None
    values = {m: by[m][metric] for m in ("nram", "dkn", "wide_deep")}
    order = sorted(values, key=lambda m: -values[m])
    shown = " > ".join(f"{KIND_LABELS[by[m]['kind']]} ({values[m]:.4f})" for m in order)
    holds = order == ["nram", "dkn", "wide_deep"]
    return f"{metric.upper()}: {shown} — the paper's ordering NRAM > DKN > Wide&Deep {'holds' if holds else 'does not hold'}."


def results_markdown(folder: Path, records: list[dict[str, Any]]) -> str:
    saved = json.loads((folder / "suite.json").read_text(encoding="utf-8"))
    settings = saved["settings"]
    rows = results_rows(records)
    summary = summarise(rows)
    lines = [f"# Experiment suite `{settings['suite']}`", "",
             f"Preset `{settings['preset']}`, {settings['epochs']} epoch(s), seeds 0..{settings['seeds'] - 1}, "
             f"train overrides {settings['train'] or 'none'}; data: train `{saved['data']['train']}`, "
             f"dev `{saved['data']['dev']}`. Every model is evaluated once, after its last epoch, on the dev "
             "impressions (official MIND metrics). Mean ± sample std over seeds.", "",
             "| model | AUC | MRR | nDCG@5 | nDCG@10 | train s/run | parameters | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['label']} | " + " | ".join(_pm(s[m], s[f'{m}_std']) for m in METRIC_NAMES)
                     + f" | {s['train_seconds']:.0f} | {s['parameters'] or 0:,} | {s['seeds']} |")
    with_attention = [s for s in summary if not math.isnan(s["word_entropy"])]
    if with_attention:
        lines += ["", "## How peaked the attention is", "",
                  "Mean normalised entropy of the additive attention (1 = uniform, 0 = one position) over the "
                  "words of each dev title and over the clicks of each dev history, and, on a synthetic "
                  "corpus, the mean word weight of topical words over that of common words.", "",
                  "| model | word attention entropy | click attention entropy | topical / common |",
                  "|---|---|---|---|"]
        for s in with_attention:
            lines.append(f"| {s['label']} | " + " | ".join(_pm(s[k], s[f'{k}_std'], 3) for k in ATTENTION_KEYS)
                         + " |")
    ordering = paper_ordering(summary)
    if ordering:
        lines += ["", ordering]
    segs = segment_rows(records)
    if segs:
        seg_names = [name for name, _, _ in SEGMENTS]
        counts = {s["segment"]: s["impressions"] for s in segs}
        lines += ["", "## AUC by user history length (clicks)", "",
                  "| model | " + " | ".join(f"{n} ({counts.get(n, 0)} imp.)" for n in seg_names) + " |",
                  "|---|" + "---|" * len(seg_names)]
        labels = {r["model"]: r["label"] for r in rows}
        for model in dict.fromkeys(s["model"] for s in segs):
            cells = []
            for name in seg_names:
                vals = np.asarray([s["auc"] for s in segs if s["model"] == model and s["segment"] == name], float)
                vals = vals[~np.isnan(vals)]
                cells.append(_pm(float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
                             if vals.size else "–")
            lines.append(f"| {labels[model]} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def write_plots(folder: Path, summary: list[dict[str, Any]]) -> None:
    """plots.html: bars per metric and lines vs heads and vs K (plotly, its JS embedded once)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    figures = []
    bars = go.Figure()
    for metric in METRIC_NAMES:
        bars.add_bar(name=metric, x=[s["label"] for s in summary], y=[s[metric] for s in summary],
                     error_y={"type": "data", "array": [s[f"{metric}_std"] for s in summary]})
    bars.update_layout(title="Dev metrics by model (mean ± std over seeds)", barmode="group", yaxis_title="value")
    figures.append(bars)
    for group, x_key, x_title in (("heads", "num_heads", "attention heads (same total width)"),
                                  ("negatives", "negatives", "K (non-clicks per click)")):
        chosen = sorted((s for s in summary if s["group"] == group), key=lambda s: s[x_key])
        if not chosen:
            continue
        line = go.Figure()
        for metric in METRIC_NAMES:
            line.add_scatter(name=metric, x=[s[x_key] for s in chosen], y=[s[metric] for s in chosen],
                             mode="lines+markers", error_y={"type": "data", "array": [s[f"{metric}_std"] for s in chosen]})
        line.update_layout(title=f"Dev metrics vs {x_title}", xaxis_title=x_title, yaxis_title="value",
                           xaxis={"type": "category"})
        figures.append(line)
    parts = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(figures)]
    atomic_write_text(folder / "plots.html", "<!DOCTYPE html><html><head><meta charset='utf-8'>"
                      "<title>NRAM experiments</title></head><body>" + "\n".join(parts) + "</body></html>\n")


def write_reports(folder: str | Path) -> None:
    """results.csv, segments.csv, results.md and plots.html from the finished runs."""
    folder = Path(folder)
    records = read_records(folder)
    if not records:
        return
    rows = results_rows(records)
    atomic_write_text(folder / "results.csv", _csv(rows, RESULT_COLUMNS))
    atomic_write_text(folder / "segments.csv", _csv(segment_rows(records), SEGMENT_COLUMNS))
    atomic_write_text(folder / "results.md", results_markdown(folder, records))
    write_plots(folder, summarise(rows))


# ---- finding suites, and a background runner for the app ------------------------------------------------
def experiments_dir() -> Path:
    return nram_home() / "experiments"


def list_suites(root: Path | None = None) -> list[Path]:
    """Suite folders (holding suite.json) directly under NRAM_HOME/experiments, newest first."""
    root = root or experiments_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "suite.json").is_file()]
    return sorted(found, key=lambda p: (p / "suite.json").stat().st_mtime_ns, reverse=True)


class SuiteJob:
    """One suite at a time in a daemon thread that only writes its state under a lock; a UI polls
    ``snapshot()``. Never touches any UI library."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"status": "idle"}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._state, default=str))

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._state["status"] in ("running", "stopping")

    def start(self, **kwargs: Any) -> str | None:
        """Start ``run_suite(**kwargs)``; returns None, or why it cannot start."""
        with self._lock:
            if self._state["status"] in ("running", "stopping"):
                return "A suite is already running; wait for it or stop it."
            self._stop.clear()
            self._state = {"status": "running", "started": time.time(), "fraction": 0.0, "log": [],
                           "progress": None, "folder": None, "error": None, "settings": {
                               k: str(v) for k, v in kwargs.items()}}
        self._thread = threading.Thread(target=self._run, kwargs=kwargs, name="nram-suite", daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        with self._lock:
            if self._state["status"] == "running":
                self._state["status"] = "stopping"
        self._stop.set()

    def _progress(self, p: Progress) -> None:
        with self._lock:
            self._state["progress"] = dataclasses.asdict(p)
            self._state["fraction"] = p.fraction
            if p.message:
                self._state["log"] = (self._state["log"] + [f"[{p.run}/{p.runs}] {p.message}"])[-200:]

    def _run(self, **kwargs: Any) -> None:
        try:
            folder = run_suite(progress=self._progress, stop=self._stop, **kwargs)
            with self._lock:
                self._state.update(status="finished", folder=str(folder), fraction=1.0, finished=time.time())
        except Cancelled as exc:
            with self._lock:
                self._state.update(status="stopped", error=str(exc), finished=time.time())
        except Exception as exc:  # noqa: BLE001 - reported to the UI as a message
            traceback.print_exc()
            with self._lock:
                self._state.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time())
