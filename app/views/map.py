"""News map: every news vector of the split projected to 2-D (PCA), coloured by category, with the
user's clicks and top recommendations marked."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from studio import cache, charts
from studio.context import need_user

c = need_user()
st.title("News map")
news = c.news()
projection = cache.news_map(c.rec)
share = projection.share
total = len(news) - 1
st.caption(f"Each dot is a news vector of the {c.split_name} split, projected onto its two principal components "
           f"(they hold {share[0]:.0%} and {share[1]:.0%} of the vectors' variance). News the model encodes alike "
           "sit close together. Hover for the title.")
drawn = len(projection.rows)
if drawn < total:
    st.info(f"A seeded sample of {drawn:,} of the {total:,} news is drawn, to keep the map fast; the user's clicks "
            "and recommendations are always placed.")

clicked = list(dict.fromkeys(np.asarray(c.history).tolist()))
recommended = cache.rank_catalog(c.rec, c.history, top=10).rows.tolist()
marked = np.asarray(list(dict.fromkeys(clicked + recommended)), dtype=np.int64)
placed = projection.with_news(marked, c.rec.vectors(marked))  # marked news outside the sample are placed too
rows, xy = placed.rows, placed.xy
frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "row": rows})
frame["title"] = news["title"].to_numpy()[rows]
frame["category"] = news["category"].to_numpy()[rows]

fig = charts.news_map(frame, [("clicked by the user", clicked, "circle-open", "#1f2328"),
                              ("top 10 recommended", recommended, "star", charts.UP)])
st.plotly_chart(fig, config=charts.PLOT_CONFIG, key="map_chart")
st.caption(f"{len(clicked)} of the user's {len(c.history)} clicks and their {len(recommended)} top recommendations "
           "are marked; a recommendation close to the clicks is one the model finds alike.")
