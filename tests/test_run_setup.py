"""The pieces of a run's set-up that every entry point shares: configs that check their fields when
they are made, the recipe/runtime split, the run folder's name and the ``data`` record of config.json."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from nram_core.config import (PRESETS, RUNTIME_FIELDS, ModelConfig, RuntimeConfig, TrainConfig, from_dict,
                              with_overrides)
from nram_core.data.layout import Layout, resolve_layout
from nram_core.fileio import DataError
from nram_core.run_info import create_run_dir, data_info, read_run_info, run_slug

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("make, message", [
    (lambda: ModelConfig(num_heads=0), "num_heads must be >= 1, got 0"),
    (lambda: ModelConfig(dropout=1.0), "dropout must be in [0, 1), got 1.0"),
    (lambda: ModelConfig(init="xavier"), "init must be one of"),
    (lambda: dataclasses.replace(PRESETS["demo"][0], num_heads=3), "residual needs num_heads * head_dim == word_dim"),
    (lambda: TrainConfig(epochs=0), "epochs must be >= 1, got 0"),
    (lambda: with_overrides(TrainConfig(), {"lr": -1.0}), "lr must be > 0, got -1.0"),
    (lambda: from_dict(RuntimeConfig, {"num_workers": -1}), "num_workers must be >= 0, got -1"),
    (lambda: RuntimeConfig(title_chunk=-2), "title_chunk must be >= 0, got -2"),
])
def test_a_config_with_a_bad_field_cannot_be_made(make, message):
    with pytest.raises(ValueError) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_category_sizes_are_checked_once_the_data_gave_them():
    config = ModelConfig(use_categories=True)  # before the data is read: no sizes yet, and that is fine
    with pytest.raises(ValueError, match="use_categories needs num_categories"):
        config.check_data_sizes()
    dataclasses.replace(config, num_categories=5, num_subcategories=9).check_data_sizes()


def test_the_recipe_and_the_runtime_share_no_field_and_an_old_run_config_reads_into_both():
    """TrainConfig is what a run learns from, RuntimeConfig how it computes: no field in both. A run
    written before the split kept the runtime fields inside "train"; both configs read from it."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(RUNTIME_FIELDS) and not set(RUNTIME_FIELDS) & train_fields
    old_train = {"epochs": 2, "lr": 0.01, "num_workers": 3, "amp": False, "title_chunk": 0}
    assert from_dict(TrainConfig, old_train) == TrainConfig(epochs=2, lr=0.01)
    assert from_dict(RuntimeConfig, old_train) == RuntimeConfig(num_workers=3, amp=False, title_chunk=0)
    assert RuntimeConfig().plain_fp32() == RuntimeConfig(amp=False, title_chunk=0, fused_adam=False,
                                                         fast_dropout=False)


def test_run_folders_are_named_by_slug_and_time_and_never_shared(tmp_path):
    first = create_run_dir(tmp_path / "runs", "demo")
    assert first.is_dir() and not any(first.iterdir())
    assert re.fullmatch(r"demo-\d{8}-\d{6}", first.name), first.name
    same_second = [create_run_dir(tmp_path / "runs", "demo") for _ in range(3)]
    names = [first.name, *(p.name for p in same_second)]
    assert len(set(names)) == 4
    stamp = first.name[len("demo-"):]
    assert {n for n in names if n.startswith(f"demo-{stamp}")} <= {f"demo-{stamp}", *(f"demo-{stamp}-{i}" for i in
                                                                                     range(2, 5))}
    named = create_run_dir(tmp_path / "runs", "  my run: lr 1e-3! ", fallback="demo")
    assert named.name.startswith("my-run-lr-1e-3-")
    assert create_run_dir(tmp_path / "runs", " ../ ", fallback="paper").name.startswith("paper-")
    assert run_slug("MINDsmall_train") == "MINDsmall_train" and run_slug("", "data") == "data"


def test_data_info_records_the_splits_the_preset_and_how_to_make_a_synthetic_corpus_again(demo_corpus, tmp_path):
    layout = resolve_layout(demo_corpus)
    info = data_info(layout, preset="demo", dataset="Demo corpus")
    assert info == {"train": layout.train.name, "dev": layout.dev.name, "preset": "demo",
                    "synthetic": {"scale": "demo", "seed": 0}, "dataset": "Demo corpus"}
    assert str(layout.train.parent) not in json.dumps(data_info(layout))  # names, not this machine's paths
    assert data_info(Layout(train=layout.train, dev=None))["dev"] is None  # one split folder: its corpus's facts
    assert data_info(Layout(train=layout.train, dev=None))["synthetic"] == {"scale": "demo", "seed": 0}
    plain = tmp_path / "plain"
    shutil.copytree(layout.train, plain / "train")
    assert data_info(Layout(train=plain / "train", dev=None)) == {"dataset": "plain", "train": "train", "dev": None}


def test_a_saved_run_with_a_bad_field_is_a_one_line_data_error_and_the_shipped_run_still_loads(tmp_path):
    shipped = read_run_info(ROOT / "assets" / "demo_model")
    assert shipped.model_config.vocab_size == len(shipped.vocab)
    run = tmp_path / "run"
    shutil.copytree(ROOT / "assets" / "demo_model", run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["batch_size"] = 0
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"config.json: missing or bad field \(batch_size must be >= 1, got 0\)"):
        read_run_info(run)


@pytest.mark.parametrize("name", ["config.json", "state.json", "model.safetensors"])
def test_deeply_nested_json_in_a_run_folder_is_one_line_naming_the_file(tmp_path, name):
    """A hostile run folder whose JSON (or safetensors header) nests 100,000 levels deep: one DataError
    line that names the file, never a RecursionError."""
    run = tmp_path / "run"
    shutil.copytree(ROOT / "assets" / "demo_model", run)
    nested = "[" * 100_000 + "]" * 100_000
    if name == "model.safetensors":
        weights = next(run.glob("*.safetensors"))
        header = nested.encode()
        weights.write_bytes(len(header).to_bytes(8, "little") + header)
        name = weights.name
    else:
        (run / name).write_text(nested)
    with pytest.raises(DataError) as caught:
        read_run_info(run)
    message = str(caught.value)
    assert name in message and "\n" not in message
