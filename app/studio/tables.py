"""The tables the pages show, built with pandas: a split's figures (from the summaries stored with
the prepared split), the runs and the experiment suites on disk. No Streamlit here; ``cache``
caches each of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nram_core.data.split import Split
from nram_core.fileio import DataError
from nram_core.run_info import best_metrics, read_config, read_state, run_status

from . import registry


def user_table(split: Split) -> pd.DataFrame:
    """One row per user, in ``Split.user_ids`` order (sorted ids): impressions, clicks, history length
    as of the latest impression, and whether that impression can be scored (a click and a
    non-click). From the summaries stored with the prepared split (``nram_core.data.stats``)."""
    users = split.overview()[1]
    return pd.DataFrame({
        "user": split.user_ids,
        "impressions": np.asarray(users.impressions),
        "history": np.asarray(users.history),
        "clicks": np.asarray(users.clicks),
        "scorable": np.asarray(users.scorable),
    })


def news_frame(split: Split) -> pd.DataFrame:
    """Titles, ids and category names by news row (row 0 is padding)."""
    news = split.news
    cats = np.asarray(news.categories, dtype=object)
    subs = np.asarray(news.subcategories, dtype=object)
    frame = pd.DataFrame({
        "news_id": news.ids,
        "title": news.titles,
        "category": cats[news.category] if len(cats) else "",
        "subcategory": subs[news.subcategory] if len(subs) else "",
    })
    frame.loc[0, ["category", "subcategory"]] = ""
    return frame


def _reports(split: Split) -> pd.DataFrame:
    """The rows each file skipped or dropped while it was read, one line per file."""
    rows = []
    for r in split.reports:
        # "dropped" before the long "why": on a narrow window the last column is the one cut off
        rows.append({"file": Path(r.file).name, "rows": r.rows, "kept": r.kept, "skipped": r.total_skipped,
                     "dropped": "; ".join(f"{count} {what}" for what, count in sorted(r.dropped.items())),
                     "why": "; ".join(f"{reason}: {count} (first at line "
                                      f"{', '.join(map(str, r.first_lines.get(reason, [])))})"
                                      for reason, count in sorted(r.skipped.items()))})
    return pd.DataFrame(rows)


def split_stats(split: Split) -> dict:
    """Dataset figures and the tables behind the Overview charts, from the summaries stored with the
    prepared split: no pass over its millions of candidates on a page view."""
    summary, users = split.overview()
    by_cat = (pd.Series(summary.news_per_category, dtype=np.int64).rename_axis("category").reset_index(name="news")
              .sort_values("news", ascending=False, kind="stable"))
    shown = pd.Series(summary.shown_per_category, dtype=np.int64)
    clicked = pd.Series(summary.clicks_per_category, dtype=np.int64).reindex(shown.index, fill_value=0)
    ctr = (pd.DataFrame({"category": shown.index, "ctr": clicked.to_numpy() / shown.to_numpy(),
                         "clicks": clicked.to_numpy(), "shown": shown.to_numpy()})
           .sort_values("ctr", ascending=False, kind="stable"))
    per_hour = pd.DataFrame({"hour": pd.to_datetime(list(summary.impressions_per_hour), unit="s"),
                             "impressions": list(summary.impressions_per_hour.values())})
    per_day = (per_hour.groupby(per_hour["hour"].dt.normalize())["impressions"].sum().rename_axis("day")
               .reset_index())
    history = np.asarray(users.history)
    return {
        "news": summary.news,
        "users": summary.users,
        "impressions": summary.impressions,
        "clicks": summary.clicks,
        "candidates": summary.candidates,
        "ctr": summary.ctr,
        "cold_users": int((history == 0).sum()),
        "mean_history": float(history.mean()) if len(history) else 0.0,
        "by_category": by_cat,
        "ctr_by_category": ctr,
        "per_day": per_day,
        "per_hour": per_hour,
        "history_lengths": history,
        "reports": _reports(split),
    }


def title_matches(lowered_titles: pd.Series, query: str, limit: int = 25) -> list[int]:
    """News rows (padding row 0 left out) whose lower-cased title contains ``query``, at most ``limit``.

    >>> title_matches(pd.Series(["", "rain in spain", "the plain truth", "sun"]), " Plain ")
    [2]
    """
    query = query.strip().lower()
    if not query:
        return []
    hits = np.flatnonzero(lowered_titles.str.contains(query, regex=False).to_numpy())
    return [int(h) for h in hits if h][:limit]


def runs_table(folders: list[Path]) -> pd.DataFrame:
    """One row per run folder that has a readable config and state: its settings, status and best
    dev metrics (a folder that cannot be read is left out)."""
    rows = []
    for folder in folders:
        try:
            config = read_config(folder)
            state = read_state(folder)
        except DataError:
            continue
        model, train = (config.get(part) if isinstance(config.get(part), dict) else {} for part in ("model", "train"))
        best = best_metrics(state)
        history = [h for h in state.get("history") or [] if isinstance(h, dict)] \
            if isinstance(state.get("history"), list) else []
        rows.append({
            "run": folder.name if folder != registry.demo_model_dir() else "demo model (shipped)",
            "preset": (config.get("data") or {}).get("preset", ""),
            "status": run_status(state),
            "epochs": state.get("epochs_done", 0),
            "heads × dim": f"{model.get('num_heads')}×{model.get('head_dim')}",
            "title/history": f"{model.get('title_len')}/{model.get('history_len')}",
            "batch": train.get("batch_size"), "K": train.get("negatives"), "lr": train.get("lr"),
            "train imps cap": train.get("max_impressions"),
            "auc": best.get("auc"), "mrr": best.get("mrr"), "ndcg@5": best.get("ndcg@5"),
            "ndcg@10": best.get("ndcg@10"),
            "minutes": sum(h["seconds"] for h in history if isinstance(h.get("seconds"), (int, float))) / 60,
            "folder": str(folder),
        })
    return pd.DataFrame(rows)


def suite_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A suite folder's results (one row per model and seed), its per-segment rows, and its
    results.md ("" when absent)."""
    from nram_core import experiments as ex  # imports torch: the Overview and the sidebar never need it

    records = ex.read_records(folder)
    report = folder / "results.md"
    return (pd.DataFrame(ex.results_rows(records)), pd.DataFrame(ex.segment_rows(records)),
            report.read_text(encoding="utf-8") if report.is_file() else "")
