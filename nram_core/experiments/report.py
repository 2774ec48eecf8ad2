"""Reports of a suite folder: results.csv, segments.csv and results.md from the finished runs.

Charts are drawn by the app's Experiments page from the same rows (``results_rows``,
``summarise``); the core draws none.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import DataError, atomic_write_text
from ..metrics import HISTORY_SEGMENTS, METRIC_NAMES
from .suites import KIND_LABELS, model_label

RESULT_FILE = "result.json"  # one per finished run, written last: the run's done marker
ATTENTION_KEYS = ("word_entropy", "click_entropy", "topical_common_ratio")  # see attention_stats.py
# The beyond-accuracy figures of each dev user's top 10 (nram_core/beyond.py, FIGURES)
BEYOND_KEYS = ("coverage", "gini", "intra_list_diversity", "category_entropy", "calibration_kl", "novelty",
               "personalisation")
RESULT_COLUMNS = ("model", "label", "kind", "group", "seed", "num_heads", "head_dim", "negatives",
                  "self_attention", "use_categories", *METRIC_NAMES, "impressions", *ATTENTION_KEYS,
                  *BEYOND_KEYS, "train_seconds", "eval_seconds", "epochs", "best_epoch", "chosen_on", "parameters",
                  "same_as")
SEGMENT_COLUMNS = ("model", "seed", "segment", *METRIC_NAMES, "impressions")


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
                   **{k: (r.get("attention") or {}).get(k) for k in ATTENTION_KEYS},
                   **{k: (r.get("beyond") or {}).get(k) for k in BEYOND_KEYS})
        rows.append(row)
    return rows


def segment_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": r["name"], "seed": r["seed"], "segment": name,
             **{m: r["segments"][name][m] for m in METRIC_NAMES}, "impressions": r["segments"][name]["impressions"]}
            for r in records for name, _, _ in HISTORY_SEGMENTS if name in r.get("segments", {})]


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buffer.getvalue()


def summarise(rows: list[dict[str, Any]],
              keys: tuple[str, ...] = (*METRIC_NAMES, *ATTENTION_KEYS, *BEYOND_KEYS, "train_seconds")
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
    verdict = "holds" if order == ["nram", "dkn", "wide_deep"] else "does not hold"
    return f"{metric.upper()}: {shown} — the paper's ordering NRAM > DKN > Wide&Deep {verdict}."


def _figure_section(summary: list[dict[str, Any]], keys: tuple[str, ...], *, title: str, about: str,
                    headers: tuple[str, ...]) -> list[str]:
    """A section of the report: the mean ± std (3 places) of ``keys`` for each model that has the first
    one, under ``title`` and ``about``; no lines when no model has it."""
    rows = [s for s in summary if not math.isnan(s[keys[0]])]
    if not rows:
        return []
    lines = ["", f"## {title}", "", about, "",
             "| model | " + " | ".join(headers) + " |", "|---" * (len(keys) + 1) + "|"]  # a column per key
    return lines + [f"| {s['label']} | " + " | ".join(_pm(s[k], s[f'{k}_std'], 3) for k in keys) + " |" for s in rows]


def results_markdown(folder: Path, records: list[dict[str, Any]]) -> str:
    saved = json.loads((folder / "suite.json").read_text(encoding="utf-8"))
    settings = saved["settings"]
    rows = results_rows(records)
    summary = summarise(rows)
    lines = [f"# Experiment suite `{settings['suite']}`", "",
             f"Preset `{settings['preset']}`, {settings['epochs']} epoch(s), seeds 0..{settings['seeds'] - 1}, "
             f"train overrides {settings['train'] or 'none'}; data: train `{saved['data']['train']}`, "
             f"dev `{saved['data']['dev']}`. Every model is scored once on the dev impressions (official MIND "
             "metrics): after the epoch chosen on the latest share of train held out for validation, when the "
             "recipe holds one out (`validation`), else after its last epoch. Mean ± sample std over seeds.", "",
             "| model | AUC | MRR | nDCG@5 | nDCG@10 | train s/run | parameters | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['label']} | " + " | ".join(_pm(s[m], s[f'{m}_std']) for m in METRIC_NAMES)
                     + f" | {s['train_seconds']:.0f} | {s['parameters'] or 0:,} | {s['seeds']} |")
    lines += _figure_section(
        summary, ATTENTION_KEYS, title="How peaked the attention is",
        about="Mean normalised entropy of the additive attention (1 = uniform, 0 = one position) over the "
              "words of each dev title (NPA: each dev candidate title, read by its impression's user) and "
              "over the clicks of each dev history (none for LSTUR's GRU), and, on a synthetic corpus, the "
              "mean word weight of topical words over that of common words.",
        headers=("word attention entropy", "click attention entropy", "topical / common"))
    lines += _figure_section(
        summary, BEYOND_KEYS, title="Beyond accuracy",
        about="Over the top 10 of each dev user's latest impression with more than 10 candidates "
              "(nram_core/beyond.py): catalog coverage, Gini of the recommendation counts, intra-list "
              "diversity (cosine distance in the model's own news vectors; – for a model without them), "
              "category entropy (bits), calibration KL to the history's categories, novelty (bits) and "
              "personalisation (1 − mean Jaccard overlap of two users' lists).",
        headers=("coverage", "Gini", "intra-list diversity", "category entropy", "calibration KL", "novelty",
                 "personalisation"))
    ordering = paper_ordering(summary)
    if ordering:
        lines += ["", ordering]
    segs = segment_rows(records)
    if segs:
        seg_names = [name for name, _, _ in HISTORY_SEGMENTS]
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


def write_reports(folder: str | Path) -> None:
    """results.csv, segments.csv and results.md from the finished runs."""
    folder = Path(folder)
    records = read_records(folder)
    if not records:
        return
    rows = results_rows(records)
    atomic_write_text(folder / "results.csv", _csv(rows, RESULT_COLUMNS))
    atomic_write_text(folder / "segments.csv", _csv(segment_rows(records), SEGMENT_COLUMNS))
    atomic_write_text(folder / "results.md", results_markdown(folder, records))
