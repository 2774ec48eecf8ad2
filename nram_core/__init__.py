"""NRAM: NRMS-style attention-based news recommendation on MIND."""

__version__ = "0.1.0"
