"""Charts and the one attention colour scale used everywhere (words, heatmaps, click bars)."""
from __future__ import annotations

import html

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

# One sequential scale for every attention weight in the app: pale = ignored, dark red = attended.
ATTENTION_SCALE = "OrRd"
ATTENTION_STOPS = [0.0, 0.25, 0.5, 0.75, 1.0]
UP, DOWN = "#1a7f37", "#cf222e"  # contributions: pushed the score up / pulled it down
PLOT_CONFIG = {"displayModeBar": False}

ATTENTION_LEGEND_TEXT = (
    "Attention colour is relative to uniform attention: a word (or click) that gets its fair share "
    "1/n of n, or less, stays white; the colour darkens as the weight rises from 1/n to 1 (all "
    "attention on it). A title that is all white is attended evenly."
)


def above_uniform(weights: np.ndarray) -> np.ndarray:
    """Weights on the legend's scale: 0 at or below uniform (1/n for n positions), 1 for all of the
    attention on one position.

    >>> above_uniform(np.array([0.25, 0.25, 0.25, 0.25])).tolist(), above_uniform(np.array([1.0, 0.0])).tolist()
    ([0.0, 0.0, 0.0, 0.0], [1.0, 0.0])
    """
    weights = np.asarray(weights, dtype=float)
    n = len(weights)
    if n < 2:
        return np.zeros(n)
    return np.clip((weights * n - 1.0) / (n - 1.0), 0.0, 1.0)


def peakedness_text(weights: np.ndarray, what: str) -> str:
    """One sentence on how peaked a view's attention is, from its normalised entropy."""
    from nram_core.metrics import normalized_entropy

    weights = np.asarray(weights, dtype=float)
    if len(weights) < 2:
        return f"{what}: a single position, nothing to compare."
    entropy = float(normalized_entropy(weights[None, :], np.ones((1, len(weights)), dtype=bool))[0])
    verdict = ("spread almost evenly" if entropy > 0.95 else "mildly focused" if entropy > 0.8
               else "focused on a few" if entropy > 0.5 else "concentrated on one or two")
    return f"{what}: {verdict} (normalised entropy {entropy:.2f}; 1 = uniform, 0 = one position)."


_LUT_SIZE = 256
_LUT = sample_colorscale(ATTENTION_SCALE, list(np.linspace(0.0, 1.0, _LUT_SIZE)))  # sampling is slow: once


def attention_colour(value: float) -> str:
    """Colour of a weight already scaled to [0, 1] (the same colours plotly draws for ATTENTION_SCALE)."""
    return _LUT[int(round(float(np.clip(value, 0.0, 1.0)) * (_LUT_SIZE - 1)))]


def _text_colour(value: float) -> str:
    return "#ffffff" if value > 0.6 else "#1f2328"


# Bars (the click attention chart, the export's α bars) cannot stay white at or below uniform as
# words do: a white bar on a white page is no bar. They start from a grey, and any weight above
# uniform starts at a visible orange of the same scale, so that "a little above its fair share"
# still reads as coloured when the attention is nearly even (normalised entropy ~0.98).
BAR_AT_OR_BELOW_UNIFORM = "#b8b2aa"
BAR_FLOOR = 0.3  # where on the scale the first weight above uniform starts
BAR_LEGEND_TEXT = ("Bar colour: grey = at or below the uniform share 1/n; orange to dark red = above it, darker "
                   "the closer to all attention on one click. The dashed line marks 1/n.")


def attention_bar_colours(weights: np.ndarray) -> list[str]:
    """One colour per attention bar by the above-uniform rule: grey at or below 1/n, then the
    attention scale from ``BAR_FLOOR`` (just above uniform) to its darkest (all weight on one).

    >>> c = attention_bar_colours(np.array([0.2, 0.3, 0.5]))  # uniform is 1/3
    >>> c[0] == c[1] == BAR_AT_OR_BELOW_UNIFORM, c[2] == attention_colour(BAR_FLOOR + (1 - BAR_FLOOR) * 0.25)
    (True, True)
    """
    values = above_uniform(weights)
    return [attention_colour(BAR_FLOOR + (1.0 - BAR_FLOOR) * v) if v > 0 else BAR_AT_OR_BELOW_UNIFORM
            for v in values]


def attention_legend_html() -> str:
    colours = ", ".join(sample_colorscale(ATTENTION_SCALE, ATTENTION_STOPS))
    return (
        "<div style='display:flex;align-items:center;gap:.6rem;font-size:.85rem;margin:.2rem 0 .6rem 0'>"
        "<span>uniform (1/n) or less</span>"
        f"<span style='display:inline-block;width:180px;height:14px;border-radius:3px;"
        f"background:linear-gradient(to right, {colours});border:1px solid #ddd'></span>"
        "<span>all attention on it</span>"
        f"<span style='color:#57606a'>· {html.escape(ATTENTION_LEGEND_TEXT)}</span></div>"
    )


def topical_legend_html() -> str:
    return ("<div style='font-size:.85rem;margin-bottom:.4rem'><span style='text-decoration:underline 2px #0550ae;"
            "font-weight:700'>underlined</span> = a topical word of the news' subcategory in the demo "
            "corpus' <code>truth.json</code> (what the clicks were really generated from).</div>")


def shaded_title_html(words: list[str], weights: np.ndarray, *, topical: set[str] | None = None,
                      prefix: str = "") -> str:
    """A title with every word's background shaded by how far its weight rises above uniform."""
    weights = np.asarray(weights, dtype=float)
    values = above_uniform(weights)
    spans = []
    for word, weight, value in zip(words, weights, values):
        style = (f"background:{attention_colour(value)};color:{_text_colour(value)};padding:1px 4px;"
                 "border-radius:3px;margin:1px;display:inline-block")
        if topical and word.lower() in topical:
            style += ";text-decoration:underline 2px #0550ae;font-weight:700"
        spans.append(f"<span title='{weight:.3f}' style='{style}'>{html.escape(word)}</span>")
    return f"<div style='line-height:1.9'>{prefix}{''.join(spans) or '<i>(no words)</i>'}</div>"


def _layout(fig: go.Figure, *, height: int = 320, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title)
    return fig


# Bars and histograms are Vega-Lite (Altair): the Overview shows four of them on the first start,
# and the browser draws them far sooner than Plotly charts, whose script is much larger to load.
def _axis_labels(values: pd.Series) -> pd.Series:
    if not pd.api.types.is_datetime64_any_dtype(values):
        return values.astype(str)
    whole_days = bool((values == values.dt.normalize()).all())
    return values.dt.strftime("%Y-%m-%d" if whole_days else "%m-%d %H:%M")


def bar(df: pd.DataFrame, x: str, y: str, *, title: str | None = None, height: int = 300,
        colour: str = "#d7301f", y_format: str | None = None) -> alt.Chart:
    """Bars in the frame's row order; datetime ``x`` values are labelled by day (or by hour)."""
    frame = pd.DataFrame({x: _axis_labels(df[x]), y: df[y].to_numpy()})
    return alt.Chart(frame, height=height, title=title or "").mark_bar(color=colour).encode(
        # labelOverlap off: Vega-Lite drops rotated labels whose boxes touch (5 of 10 categories showed)
        x=alt.X(f"{x}:N", sort=None, title=x, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
        y=alt.Y(f"{y}:Q", title=y, axis=alt.Axis(format=y_format) if y_format else alt.Axis()),
        tooltip=[alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{y}:Q", format=y_format or ",")],
    )


def histogram(values: np.ndarray, *, title: str | None = None, xlabel: str = "", height: int = 300,
              vline: float | None = None, vlabel: str = "", nbins: int = 50) -> alt.Chart | alt.LayerChart:
    """Counts in ``nbins`` equal bins (binned here, so a 50k-news catalog sends 50 rows, not 50k)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    bins: int | np.ndarray = nbins
    if len(values) and np.all(values == np.round(values)):  # counts: whole-number bins, none holding more ints
        low, high = int(values.min()), int(values.max())
        width = max(1, -(-(high - low + 1) // nbins))  # ceil
        bins = np.arange(low, high + width + 1, width) - 0.5
    counts, edges = np.histogram(values, bins=bins) if len(values) else (np.zeros(0, dtype=np.int64), [0.0])
    frame = pd.DataFrame({"from": edges[:-1], "to": edges[1:], "count": counts})
    chart = alt.Chart(frame, height=height, title=title or "").mark_bar(color="#fc8d59").encode(
        # nice=False: the axis spans the bins, not Vega's rounded domain (it started at -10)
        x=alt.X("from:Q", title=xlabel, scale=alt.Scale(nice=False)), x2="to:Q",
        y=alt.Y("count:Q", title="count"), y2=alt.datum(0),
        tooltip=[alt.Tooltip("from:Q", format=".3~f"), alt.Tooltip("to:Q", format=".3~f"), "count:Q"],
    )
    if vline is None:
        return chart
    line = pd.DataFrame({"x": [vline], "label": [vlabel]})
    rule = alt.Chart(line).mark_rule(color="#7f0000", strokeDash=[5, 4]).encode(x="x:Q")
    text = alt.Chart(line).mark_text(align="left", dx=4, dy=-6, color="#7f0000").encode(
        x="x:Q", y=alt.value(0), text="label:N")
    return chart + rule + text


def self_attention_heatmap(matrix: np.ndarray, words: list[str], *, title: str, raw: np.ndarray | None = None,
                           positions: np.ndarray | None = None) -> go.Figure:
    """Word-by-word attention: row = the word attending (query), column = the word attended to (key).
    ``raw``: the model's own weights when ``matrix`` is rescaled (stop words hidden), for the hover;
    ``positions``: the words' places in the title when some are left out (0-based)."""
    places = range(len(words)) if positions is None else positions
    labels = [f"{int(i) + 1}·{w}" for i, w in zip(places, words)]  # positions keep repeated words apart
    matrix = np.asarray(matrix, dtype=float)
    shade = np.stack([above_uniform(row) for row in matrix]) if len(matrix) else matrix  # each row: one query
    if raw is None:
        custom, hover = matrix, "%{y} → %{x}: weight %{customdata:.3f}<extra></extra>"
    else:
        custom = np.stack([matrix, np.asarray(raw, dtype=float)], axis=-1)  # [n,n,2]
        hover = ("%{y} → %{x}: %{customdata[0]:.3f} of the weight on the words shown "
                 "(model weight %{customdata[1]:.3f})<extra></extra>")
    fig = go.Figure(go.Heatmap(
        z=shade, customdata=custom, x=labels, y=labels, colorscale=ATTENTION_SCALE, zmin=0.0, zmax=1.0,
        colorbar=dict(title="above<br>uniform"), hovertemplate=hover,
    ))
    fig.update_yaxes(autorange="reversed", title="query word (attends…)")
    fig.update_xaxes(title="key word (…to)", tickangle=-45)
    side = max(320, 26 * len(words) + 140)
    return _layout(fig, height=min(side, 720), title=title)


def click_attention_bar(labels: list[str], weights: np.ndarray, *, title: str) -> go.Figure:
    """Horizontal bars of the user encoder's α, coloured by ``attention_bar_colours``, with the
    uniform share 1/n as a dashed line; the axis ends just past the longest bar, so that nearly even
    weights still show as bars of readable length."""
    weights = np.asarray(weights, dtype=float)
    fig = go.Figure(go.Bar(
        x=weights, y=labels, orientation="h", marker=dict(color=attention_bar_colours(weights)),
        hovertemplate="%{y}<br>weight %{x:.3f}<extra></extra>",
    ))
    if len(weights):
        fig.add_vline(x=1.0 / len(weights), line=dict(color="#57606a", dash="dash", width=1),
                      annotation_text=f"uniform 1/{len(weights)}", annotation_position="top")
        fig.update_xaxes(range=[0.0, float(weights.max()) * 1.08])
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title="attention weight α over the clicks (sums to 1)")
    return _layout(fig, height=max(260, 22 * len(labels) + 80), title=title)


def contribution_waterfall(labels: list[str], contributions: np.ndarray, score: float, *,
                           max_bars: int = 15) -> go.Figure:
    """Per-click contributions α_i·(h_i·n), largest push up first, ending at the exact score."""
    contributions = np.asarray(contributions, dtype=float)
    order = np.argsort(-contributions, kind="stable")
    if len(order) > max_bars:  # keep the strongest pushes and pulls, fold the middle into one bar
        strongest = np.argsort(-np.abs(contributions), kind="stable")[:max_bars - 1]
        keep = [i for i in order if i in set(strongest.tolist())]
        rest = [i for i in order if i not in set(keep)]
    else:
        keep, rest = list(order), []
    names = [labels[i] for i in keep]
    values = [float(contributions[i]) for i in keep]
    if rest:
        names.append(f"{len(rest)} other clicks")
        values.append(float(contributions[rest].sum()))
        # keep the sorted look: put the folded bar where its value belongs
        pairs = sorted(zip(names, values), key=lambda p: -p[1])
        names, values = [p[0] for p in pairs], [p[1] for p in pairs]
    fig = go.Figure(go.Waterfall(
        orientation="h",
        measure=["relative"] * len(values) + ["total"],
        y=names + ["= score"],
        x=values + [score],
        increasing=dict(marker=dict(color=UP)),
        decreasing=dict(marker=dict(color=DOWN)),
        totals=dict(marker=dict(color="#57606a")),
        connector=dict(line=dict(color="#bbb", width=1)),
        hovertemplate="%{y}<br>%{x:+.4f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title="contribution to the score (running total)")
    return _layout(fig, height=max(300, 26 * (len(values) + 1) + 90))


def loss_curve(steps: list[int], losses: list[float]) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines+markers" if len(losses) < 60 else "lines",
                             name="loss per step", line=dict(color="#fc8d59", width=1.5), marker=dict(size=5)))
    if len(losses) >= 5:
        window = max(5, len(losses) // 30)
        smooth = pd.Series(losses).rolling(window, min_periods=1).mean()
        fig.add_trace(go.Scatter(x=steps, y=smooth, mode="lines", name=f"moving mean ({window})",
                                 line=dict(color="#b30000", width=2)))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="train loss")
    fig.update_layout(legend=dict(orientation="h", y=1.12))
    return _layout(fig, height=300)


def news_map(points: pd.DataFrame, marked: list[tuple[str, list[int], str, str]]) -> go.Figure:
    """Scatter of news ``points`` (columns x, y, row, title, category), one trace per category, and on
    top one trace per ``(label, rows, symbol, colour)`` of ``marked`` (the user's clicks, the
    recommendations), placed at those rows' points."""
    fig = go.Figure()
    scatter = go.Scattergl if len(points) > 5000 else go.Scatter  # WebGL only where SVG would be slow
    for category, group in points.groupby("category", sort=True):
        fig.add_trace(scatter(x=group["x"], y=group["y"], mode="markers", name=str(category),
                              marker=dict(size=4, opacity=0.45), text=group["title"],
                              hovertemplate="%{text}<extra>" + str(category) + "</extra>"))
    by_row = points.set_index("row")
    for label, rows, symbol, colour in marked:
        chosen = by_row.reindex(rows)
        fig.add_trace(go.Scatter(x=chosen["x"], y=chosen["y"], mode="markers", name=label, text=chosen["title"],
                                 marker=dict(size=12, symbol=symbol, color=colour, line=dict(width=2, color=colour)),
                                 hovertemplate="%{text}<extra>" + label + "</extra>"))
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"),
                      xaxis=dict(title="component 1", zeroline=False), yaxis=dict(title="component 2", zeroline=False))
    return fig


def leave_one_out_bar(labels: list[str], effects: np.ndarray, *, title: str) -> go.Figure:
    """Horizontal bars of what each click adds to the score (the score minus the score with that click
    left out): green where the click raised it, red where it lowered it. For a user encoder with no
    per-click attention (LSTUR's GRU) these measured effects stand where the attention bars would."""
    effects = np.asarray(effects, dtype=float)
    fig = go.Figure(go.Bar(
        x=effects, y=labels, orientation="h", marker=dict(color=[UP if e >= 0 else DOWN for e in effects]),
        hovertemplate="%{y}<br>score with it minus without it: %{x:+.4f}<extra></extra>",
    ))
    fig.add_vline(x=0.0, line=dict(color="#57606a", width=1))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title="score with the click minus the score without it")
    return _layout(fig, height=max(260, 22 * len(labels) + 80), title=title)


def paired_click_attention_bar(labels: list[str], weights: dict[str, np.ndarray], *, title: str) -> go.Figure:
    """Grouped horizontal bars of the attention over the clicks under several readers (NPA: the chosen
    user and the unknown user), one colour each, with the uniform share 1/n as a dashed line."""
    fig = go.Figure()
    colours = ("#d7301f", "#8c96a0")
    for (name, values), colour in zip(weights.items(), colours):
        fig.add_trace(go.Bar(x=np.asarray(values, dtype=float), y=labels, orientation="h", name=name,
                             marker=dict(color=colour), hovertemplate="%{y}<br>" + name + ": %{x:.3f}<extra></extra>"))
    if labels:
        fig.add_vline(x=1.0 / len(labels), line=dict(color="#57606a", dash="dash", width=1),
                      annotation_text=f"uniform 1/{len(labels)}", annotation_position="top")
    fig.update_layout(barmode="group", legend=dict(orientation="h", x=0.0, y=-0.12, yanchor="top"))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title="attention weight over the clicks (each reader's sum to 1)")
    return _layout(fig, height=max(300, 34 * len(labels) + 140), title=title)


def view_attention_bar(views: tuple[str, ...], weights: dict[str, np.ndarray], *,
                       title: str | None = None) -> alt.Chart:
    """Grouped bars of view attention (NAML: title, abstract, category, subcategory), one group per view
    and one bar per news (``weights``: name -> [V] weights, summing to 1 over the views a news has)."""
    frame = pd.DataFrame([{"view": view, "news": name, "weight": float(w[i])}
                          for name, w in weights.items() for i, view in enumerate(views)])
    return alt.Chart(frame, height=260, title=title or "").mark_bar().encode(
        x=alt.X("view:N", sort=list(views), title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("news:N", sort=list(weights)),
        y=alt.Y("weight:Q", title="view attention weight", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("news:N", sort=list(weights), title=None,
                        scale=alt.Scale(range=["#d7301f", "#fdbb84", "#8c96a0"])),
        tooltip=["news:N", "view:N", alt.Tooltip("weight:Q", format=".3f")],
    )


def attention_shift(weights: np.ndarray, other: np.ndarray) -> float:
    """How far two attention distributions over the same positions differ: half their L1 distance
    (total variation), 0 for the same weights, 1 for attention on disjoint positions.

    >>> attention_shift(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5]))
    0.5
    """
    return float(0.5 * np.abs(np.asarray(weights, dtype=float) - np.asarray(other, dtype=float)).sum())
