"""The model families, by ``ModelConfig.kind``: each lives in one readable file (``model.py`` for
NRAM, ``lstur.py``, ``naml.py`` and ``npa.py`` for the others) and is built from its config here,
so that the trainer, the run folder, the suites and the memory budget name no family.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from .fileio import DataError


def model_class(kind: str) -> type[torch.nn.Module]:
    """The module class of family ``kind`` (``config.KINDS``)."""
    if kind == "nram":
        from .model import NRAM

        return NRAM
    if kind == "lstur":
        from .lstur import LSTUR

        return LSTUR
    if kind == "naml":
        from .naml import NAML

        return NAML
    if kind == "npa":
        from .npa import NPA

        return NPA
    raise ValueError(f"unknown model kind {kind!r}")


def build_model(config: ModelConfig) -> torch.nn.Module:
    """A new model of ``config.kind``, sized by ``config`` (inside ``memory.shapes_only()``: shapes only)."""
    return model_class(config.kind)(config)


def require_nram(model: torch.nn.Module, what: str) -> None:
    """Refuse in one line ``what`` only NRAM offers so far (ranking one user's news, explanations,
    attention figures) for a model of another family."""
    kind = getattr(getattr(model, "config", None), "kind", "nram")
    if kind != "nram":
        raise DataError(f"{what}: built for NRAM models so far; this is a {kind} model "
                        "(evaluate and predict score it)")
