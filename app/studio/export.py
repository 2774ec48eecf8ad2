"""One user's view as a single self-contained HTML file, for stakeholders who never run the app.

Inline CSS only: no script, no font, no image, nothing fetched, so it opens offline in any
browser. It holds the model card line, the history with its word-attention shading, the ranked
impression with the true clicks, and for the top candidate the click attention, the exact
per-click contributions to its score and the removal test of its word attention (``trust``).
"""
from __future__ import annotations

import html
import time

import numpy as np

from nram_core.recommend import Ranked, click_effects, has_click_attention, word_weights

from . import cache, charts, trust
from .views_common import impression_label

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;margin:2rem auto;max-width:980px;
line-height:1.45;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #ddd}
.card{color:#57606a;font-size:.9rem}table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{padding:.25rem .5rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f4f1}.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{position:relative;background:#f3f0ec;border-radius:3px;height:14px;width:180px}
.fill{height:14px;border-radius:3px}.uniform{position:absolute;top:-2px;bottom:-2px;border-left:2px dashed #57606a}
.up{color:#1a7f37}.down{color:#cf222e}
.metrics span{display:inline-block;margin-right:1.2rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def user_report_html(*, user: str, dataset: str, split: str, model_line: str, impression_label: str,
                     news_titles: list[str], news_categories: list[str], history: np.ndarray,
                     history_words: list[list[str]], ranked: Ranked, top_title: str,
                     explanation, faithfulness: str = "") -> str:
    """The page. ``history``: the clicks the user encoder reads, oldest first; ``history_words``:
    their title words; ``explanation``: ``Recommender.explain`` of that history and the top candidate
    (``news_titles``/``news_categories`` are indexed by news row); ``faithfulness``: the removal test of
    the top candidate's word attention, in words (``trust.faithfulness_line``)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>NRAM Studio: user {_e(user)}"
             f"</title><meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style>"
             "</head><body>",
             f"<h1>Recommendations for user {_e(user)}</h1>",
             f"<div class='card'>{_e(model_line)} · dataset {_e(dataset)} ({_e(split)} split) · "
             f"exported {_e(time.strftime('%Y-%m-%d %H:%M'))} from NRAM Studio</div>"]

    metrics = ranked.metrics
    parts.append(f"<h2>Ranked impression {_e(impression_label)}</h2>")
    if metrics:
        parts.append("<div class='metrics'>" + "".join(
            f"<span><b>{name}</b> {metrics[key]:.3f}</span>" for name, key in
            (("AUC", "auc"), ("MRR", "mrr"), ("nDCG@5", "ndcg@5"), ("nDCG@10", "ndcg@10"))) + "</div>")
    parts.append("<table><tr><th>rank</th><th>clicked</th><th>title</th><th>category</th>"
                 "<th class='num'>score</th><th class='num'>probability</th></tr>")
    labels = ranked.labels if ranked.labels is not None else np.zeros(len(ranked.rows))
    for rank, (row, score, prob, label) in enumerate(zip(ranked.rows, ranked.scores, ranked.probabilities, labels),
                                                     start=1):
        parts.append(f"<tr><td class='num'>{rank}</td><td>{'✓' if label > 0 else ''}</td>"
                     f"<td>{_e(news_titles[int(row)])}</td><td>{_e(news_categories[int(row)])}</td>"
                     f"<td class='num'>{float(score):.4f}</td><td class='num'>{float(prob):.3f}</td></tr>")
    parts.append("</table><p class='card'>✓ marks the news the user really clicked.</p>")

    parts.append(f"<h2>Why “{_e(top_title)}” ranks first</h2>")
    if len(history) == 0:
        parts.append("<p>This user has no clicks (a cold user): there is no click to explain the score by.</p>")
    elif not has_click_attention(explanation):
        parts.append(_measured_clicks_html(explanation, history, history_words, news_categories))
    else:
        history_weights, _ = word_weights(explanation)
        weights = np.asarray(explanation.click_weights, dtype=float)
        contributions = np.asarray(explanation.contributions[0], dtype=float)
        parts.append(f"<p>The score {float(explanation.scores[0]):+.4f} is the sum of one term per click, "
                     "α<sub>i</sub> (the user encoder's attention on the click) times the click's match with "
                     "the candidate. Green clicks pushed it up, red ones pulled it down.</p>")
        parts.append("<table><tr><th>#</th><th>clicked news (newest first), words shaded by attention</th>"
                     "<th>attention α (bar: relative to the largest)</th><th class='num'>contribution</th></tr>")
        # Bars run to the largest α (not to 1): with 50 clicks a share of 0.02 would be a sliver.
        # The colour rule is the Attention page's (charts.attention_bar_colours); the dashed tick is 1/n.
        longest = float(weights.max()) if len(weights) else 1.0
        colours = charts.attention_bar_colours(weights)
        uniform = 100.0 * (1.0 / len(weights)) / longest if longest > 0 else 0.0
        for k, i in enumerate(range(len(history) - 1, -1, -1), start=1):
            row = int(history[i])
            shading = charts.shaded_title_html(history_words[i], history_weights[i][:len(history_words[i])])
            width = 100.0 * weights[i] / longest if longest > 0 else 0.0
            css = "up" if contributions[i] >= 0 else "down"
            parts.append(f"<tr><td class='num'>{k}</td><td>{shading}<span class='card'>{_e(news_categories[row])}"
                         f"</span></td><td><div class='bar'><div class='fill' style='width:{width:.1f}%;"
                         f"background:{colours[i]}'></div><div class='uniform' style='left:{uniform:.1f}%'></div>"
                         f"</div>{weights[i]:.3f}</td><td class='num {css}'>{contributions[i]:+.4f}</td></tr>")
        parts.append(f"<tr><td></td><td><b>sum of the contributions</b></td><td></td>"
                     f"<td class='num'><b>{contributions.sum():+.4f}</b></td></tr></table>")
        parts.append(f"<p class='card'>{_e(charts.ATTENTION_LEGEND_TEXT)} {_e(charts.BAR_LEGEND_TEXT)} "
                     f"{_e(charts.peakedness_text(weights, 'Attention over the clicks'))}</p>")
    if faithfulness and len(history):
        parts.append(f"<h2>Is the word shading of “{_e(top_title)}” faithful?</h2><p>{_e(faithfulness)}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _measured_clicks_html(explanation, history: np.ndarray, history_words: list[list[str]],
                          news_categories: list[str]) -> str:
    """The "why" of a family without per-click attention (LSTUR's GRU): each click's measured effect on
    the top candidate's score (the score with the click minus the score without it), beside its words."""
    history_weights, _ = word_weights(explanation)
    effects = click_effects(explanation)[0]  # [H]
    parts = [f"<p>The score is {float(explanation.scores[0]):+.4f}. This model's user encoder is a GRU: it has "
             "no per-click attention, so the score does not split over the clicks. Each click's effect is "
             "measured instead: the score with the click minus the score with it left out (the effects need not "
             "add up to the score). Green clicks raised it, red ones lowered it.</p>"]
    unknown = getattr(explanation, "unknown_user_scores", None)
    if unknown is not None:
        parts.append(f"<p class='card'>The same history scored as the unknown user (no user embedding): "
                     f"{float(unknown[0]):+.4f}.</p>")
    parts.append("<table><tr><th>#</th><th>clicked news (newest first), words shaded by attention</th>"
                 "<th class='num'>effect on the score</th></tr>")
    for k, i in enumerate(range(len(history) - 1, -1, -1), start=1):
        row = int(history[i])
        shading = charts.shaded_title_html(history_words[i], history_weights[i][:len(history_words[i])])
        css = "up" if effects[i] >= 0 else "down"
        parts.append(f"<tr><td class='num'>{k}</td><td>{shading}<span class='card'>{_e(news_categories[row])}"
                     f"</span></td><td class='num {css}'>{effects[i]:+.4f}</td></tr>")
    parts.append(f"</table><p class='card'>{_e(charts.ATTENTION_LEGEND_TEXT)}</p>")
    return "".join(parts)


def view_report(c, impression: int, ranked: Ranked) -> str:
    """``user_report_html`` of what the Recommendations page shows for ``c`` (a ``context.Ctx``)."""
    news = c.news()
    recent = np.asarray(c.history, dtype=np.int64)[-c.info.model_config.history_len:]
    top = int(ranked.rows[0])
    rec = c.for_user(c.rec)
    exp = cache.explain(rec, recent, [top])
    best = (c.info.state or {}).get("best_auc")
    model_line = (f"model {c.model.label} · {c.info.num_parameters:,} parameters"
                  + (f" · best dev AUC {best:.4f}" if isinstance(best, (int, float)) else ""))
    return user_report_html(
        user=c.user, dataset=c.dataset.label, split=c.split_name, model_line=model_line,
        impression_label=impression_label(c, impression), news_titles=list(news["title"]),
        news_categories=list(news["category"]), history=recent,
        history_words=[c.title_words(r) for r in recent],
        ranked=ranked, top_title=str(news.at[top, "title"]), explanation=exp,
        faithfulness=trust.faithfulness_line(c, rec, recent, top))
