"""News map: every news vector of the split projected to 2-D (PCA), coloured by category, with the
user's clicks and top recommendations marked."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from studio import cache, charts
from studio.context import need_user

c = need_user()
st.title("News map")
news = c.news()
projection = cache.news_map_points(c.rec, c.key)
rows, xy, share = projection.rows, projection.xy, projection.share
total = len(news) - 1
st.caption(f"Each dot is a news vector of the {c.split_name} split, projected onto its two principal components "
           f"(they hold {share[0]:.0%} and {share[1]:.0%} of the vectors' variance). News the model encodes alike "
           "sit close together. Hover for the title.")
if len(rows) < total:
    st.info(f"A seeded sample of {len(rows):,} of the {total:,} news is drawn, to keep the map fast; the user's "
            "clicks and recommendations are always placed.")

clicked = [int(r) for r in dict.fromkeys(np.asarray(c.history).tolist())]
recommended = [int(r) for r in cache.rank_catalog(c.rec, c.key, c.history, top=10).rows]
marked = list(dict.fromkeys(clicked + recommended))
drawn = set(rows.tolist())
extra = np.asarray([r for r in marked if r not in drawn], dtype=np.int64)
if len(extra):  # outside the sample: placed with the same projection
    rows = np.concatenate([rows, extra])
    xy = np.concatenate([xy, projection.project(c.rec.news_vectors[extra].float().cpu().numpy())])
frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "row": rows})
frame["title"] = news["title"].to_numpy()[rows]
frame["category"] = news["category"].to_numpy()[rows]

fig = go.Figure()
scatter = go.Scattergl if len(frame) > 5000 else go.Scatter  # WebGL only where SVG would be slow
for category, group in frame.groupby("category", sort=True):
    fig.add_trace(scatter(x=group["x"], y=group["y"], mode="markers", name=str(category),
                               marker=dict(size=4, opacity=0.45), text=group["title"],
                               hovertemplate="%{text}<extra>" + str(category) + "</extra>"))
for label, chosen_rows, symbol, colour in (("clicked by the user", clicked, "circle-open", "#1f2328"),
                                           ("top 10 recommended", recommended, "star", charts.UP)):
    chosen = frame.set_index("row").reindex(chosen_rows)
    fig.add_trace(go.Scatter(x=chosen["x"], y=chosen["y"], mode="markers", name=label, text=chosen["title"],
                             marker=dict(size=12, symbol=symbol, color=colour, line=dict(width=2, color=colour)),
                             hovertemplate="%{text}<extra>" + label + "</extra>"))
fig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"),
                  xaxis=dict(title="component 1", zeroline=False), yaxis=dict(title="component 2", zeroline=False))
st.plotly_chart(fig, config=charts.PLOT_CONFIG, key="map_chart")
st.caption(f"{len(clicked)} of the user's {len(c.history)} clicks and their {len(recommended)} top recommendations "
           "are marked; a recommendation close to the clicks is one the model finds alike.")
