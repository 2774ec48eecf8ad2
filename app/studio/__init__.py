"""Helpers of the NRAM Studio front end (the Streamlit app in ``app/``).

Everything model- or data-related is ``nram_core``'s (scoring and explaining through
``nram_core.recommend.Recommender``, the vocabulary check in ``nram_core.vocab_fit``, the news map's
projection in ``nram_core.news_map``); this package holds the glue a UI needs:

- ``registry``: where datasets and models come from (no Streamlit);
- ``cache``: every ``st.cache_data`` / ``st.cache_resource`` of the app, thin wrappers and nothing
  else; a Recommender is cached by its run folder, weights and split, and hashed by its identity,
  so that pages never build a cache key;
- ``tables``: the pandas tables the pages show (a split's figures, the runs, the suites);
- ``context``: the shared sidebar and the ``Ctx`` every page reads;
- ``widgets``: choosing a widget value that may be missing from its options;
- ``views_common``, ``charts``, ``export``: table, chart and HTML-report helpers of the pages;
- ``jobs``: the one background job (``training`` and ``suites`` start it).

Three kinds of thread run off the script thread, and none calls ``st.*``: a job's worker
(``jobs``), the warm-up that builds the chosen model's Recommender into the cache
(``context.warm_up``), and, on a first start, the generation of the demo corpus (``main.py``).
"""
