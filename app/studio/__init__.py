"""Helpers of the NRAM Studio front end (the Streamlit app in ``app/``).

Everything model- or data-related is delegated to ``nram_core``; this package holds
the glue a UI needs: where datasets and runs live (``registry``), the cache layer
(``cache``: every ``st.cache_*`` of the app), the session's context (``context``), the one
background job (``jobs``; ``training`` and ``suites`` start it), and chart helpers
(``charts``). Only the job's thread runs code off the script thread, and it never calls
``st.*``.
"""
