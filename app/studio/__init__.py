"""Helpers of the NRAM Studio front end (the Streamlit app in ``app/``).

Everything model- or data-related is delegated to ``nram_core``; this package holds
the glue a UI needs: where datasets and runs live, cached loaders, the background
training job, and chart helpers. Only ``training`` runs code off the script thread,
and it never calls ``st.*`` there.
"""
