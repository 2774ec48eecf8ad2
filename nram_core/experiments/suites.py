"""Experiment suites: which models a suite trains and with which config overrides.

Suites (``SUITE_NAMES``): paper (NRAM, DKN, Wide&Deep, popularity, random), heads (1/5/10/15
heads at one total width), negatives (K = 1/2/4/8), ablation (NRAM without self-attention, with
categories fused, with the residual toggled, with random word vectors), sota (NRAM beside the
attention models of its family, NAML, LSTUR and NPA, each at its own sizes for the preset
(``config.FAMILY_SIZES``), with popularity and random as floors), all (their union).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import FAMILY_SIZES, ModelConfig, TrainConfig
from ..fileio import DataError

SUITE_NAMES = ("paper", "heads", "negatives", "ablation", "sota", "all")
GROUPS = ("paper", "heads", "negatives", "ablation", "sota")
HEADS = (1, 5, 10, 15)
NEGATIVES = (1, 2, 4, 8)
HEADS_WIDTH_UNIT = 30  # lcm(1, 5, 10, 15): every head count splits the width evenly
KIND_LABELS = {"nram": "NRAM", "naml": "NAML", "lstur": "LSTUR", "npa": "NPA", "dkn": "DKN",
               "wide_deep": "Wide&Deep", "popularity": "Popularity", "random": "Random"}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a suite: a kind and the config fields it changes."""

    name: str
    kind: str  # a family of config.KINDS (nram, naml, lstur, npa) | dkn | wide_deep | popularity | random
    group: str  # paper | heads | negatives | ablation
    model: tuple[tuple[str, Any], ...] = ()  # ModelConfig overrides
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides

    @property
    def trained(self) -> bool:
        return self.kind not in ("popularity", "random")


def heads_width(base: ModelConfig) -> int:
    """Total width of the heads suite: the largest multiple of 30 not above the preset's news
    width (60 for the demo preset's 64, 300 for the paper's 15 x 20), at least 30."""
    return max(HEADS_WIDTH_UNIT, base.news_dim // HEADS_WIDTH_UNIT * HEADS_WIDTH_UNIT)


def suite_groups(suite: str) -> list[str]:
    """The groups a suite name stands for: one name, ``all``, or several joined by commas
    (``paper,ablation``: a configuration both share is trained once)."""
    names = [name.strip() for name in suite.split(",")]
    unknown = [name for name in names if name not in SUITE_NAMES]
    if unknown:
        raise DataError(f"unknown suite {suite!r}; choose one of {', '.join(SUITE_NAMES)}, or several "
                        "joined by commas")
    return [g for g in GROUPS if g in names or "all" in names]


def family_spec(kind: str, group: str, preset: str) -> ModelSpec:
    """A model of another family at that family's sizes for ``preset`` (``config.FAMILY_SIZES``)."""
    return ModelSpec(kind, kind, group, model=tuple(sorted(FAMILY_SIZES[kind][preset].items())))


def suite_specs(suite: str, base: ModelConfig, preset: str = "demo") -> list[ModelSpec]:
    """The models of ``suite`` over the preset's NRAM config ``base`` (``preset`` names it, for the
    other families' sizes)."""
    chosen = suite_groups(suite)
    width = heads_width(base)
    residual = "nram_residual" if not base.residual else "nram_no_residual"
    groups = {
        "paper": [ModelSpec("nram", "nram", "paper"), ModelSpec("dkn", "dkn", "paper"),
                  ModelSpec("wide_deep", "wide_deep", "paper"), ModelSpec("popularity", "popularity", "paper"),
                  ModelSpec("random", "random", "paper")],
        # With a residual the word dim must equal the heads' total width: it follows the width.
        "heads": [ModelSpec(f"nram_heads{h}", "nram", "heads", model=(("num_heads", h), ("head_dim", width // h))
                            + ((("word_dim", width),) if base.residual else ())) for h in HEADS],
        "negatives": [ModelSpec(f"nram_k{k}", "nram", "negatives", train=(("negatives", k),)) for k in NEGATIVES],
        "ablation": [ModelSpec("nram", "nram", "ablation"),
                     ModelSpec("nram_no_self_attention", "nram", "ablation", model=(("self_attention", False),)),
                     ModelSpec("nram_categories", "nram", "ablation", model=(("use_categories", True),)),
                     ModelSpec(residual, "nram", "ablation", model=(("residual", not base.residual),)),
                     ModelSpec("nram_no_vectors", "nram", "ablation", train=(("word_vectors", "none"),))],
        "sota": [ModelSpec("nram", "nram", "sota"),
                 *(family_spec(kind, "sota", preset) for kind in ("naml", "lstur", "npa")),
                 ModelSpec("popularity", "popularity", "sota"), ModelSpec("random", "random", "sota")],
    }
    specs, seen = [], set()
    for group in chosen:
        for spec in groups[group]:
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    return specs


@dataclass(frozen=True)
class SuiteSettings:
    suite: str
    preset: str
    epochs: int
    seeds: int
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides beyond epochs (caps, batch size, lr)

    def matches(self, saved: dict[str, Any]) -> bool:
        """Same settings except the number of seeds (adding seeds to a suite is allowed)."""
        mine = {k: v for k, v in self.as_dict().items() if k != "seeds"}
        return mine == {k: v for k, v in saved.items() if k in mine}

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "preset": self.preset, "epochs": self.epochs, "seeds": self.seeds,
                "train": dict(self.train)}


def run_configs(spec: ModelSpec, *, base_model: ModelConfig, base_train: TrainConfig,
                seed: int) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with the spec's overrides and the seed (each config checks its fields as
    it is made); ``train.prepare_run`` sizes them from the data."""
    model_cfg = dataclasses.replace(base_model, **dict(spec.model))
    train_cfg = dataclasses.replace(base_train, seed=seed, **dict(spec.train),
                                    **({} if spec.trained else {"word_vectors": "none"}))  # popularity, random
    return model_cfg, train_cfg


def model_label(record: dict[str, Any]) -> str:
    name = record["name"]
    if record["kind"] != "nram":
        return KIND_LABELS.get(record["kind"], name)
    if name.startswith("nram_heads"):
        return f"NRAM {record['num_heads']}×{record['head_dim']} heads"
    if name.startswith("nram_k"):
        return f"NRAM K={record['negatives']}"
    return {"nram": "NRAM", "nram_no_self_attention": "NRAM − self-attention",
            "nram_categories": "NRAM + categories", "nram_residual": "NRAM + residual",
            "nram_no_residual": "NRAM − residual", "nram_no_vectors": "NRAM, random word vectors"}.get(name, name)
