"""Training from the app: the Train form's settings as configs, a run as a background job
(``jobs.BackgroundJob``), and what a run folder says about itself in words.

The form maps its values onto config fields by name, through ``config.with_overrides``, exactly as
the CLI maps its flags (``cli.commands.cmd_train``); each setting's command-line twin is read from
the CLI's own parser, never from a second table. The run is set up by ``nram_core.train.prepare_run``,
as the CLI sets one up; its progress reaches the page through a trainer ``Callback`` that writes the
job's state. This module imports no torch until a run starts, so pages that only describe runs
(the Overview, the runs table) stay quick.
"""
from __future__ import annotations

import dataclasses
import functools
import shlex
import shutil
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

from nram_core.callbacks import Callback, EpochInfo, StepInfo
from nram_core.config import (DATA_SIZES, RUNTIME_FIELDS, ModelConfig, TrainConfig, flag_of, preset, to_dict,
                               with_overrides)
from nram_core.data.layout import Layout
from nram_core.fileio import DataError, read_json
from nram_core.run_info import best_metrics, dataset_name, read_config, read_state

from .jobs import BackgroundJob, JobContext

MAX_LOSS_POINTS = 5000
FROM_DATA = (*DATA_SIZES, "kind")  # sizes read from the data, never set; the family has its own choice


# ---- the form's settings and their command-line twins ---------------------------------------------
@functools.lru_cache(maxsize=1)
def _config_defaults() -> dict[str, Any]:
    """Each config field a ``train`` flag sets, and its default (the sizes read from the data have none)."""
    return {f.name: f.default for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
            if f.name not in FROM_DATA}


def cli_flag(field: str, value: Any = None) -> str:
    """The ``train`` flag that sets config ``field``: for a switch given ``value``, the one form
    that sets it (``--no-self-attention``), else every form (``--self-attention / --no-self-attention``).
    The CLI gives every config field the flag ``config.flag_of(field)`` (a switch its ``--no-`` form
    too); tests/test_app_train_form.py parses each flag it names with the CLI's own parser.

    >>> cli_flag("negatives"), cli_flag("self_attention"), cli_flag("self_attention", False)
    ('--negatives', '--self-attention / --no-self-attention', '--no-self-attention')
    """
    defaults = _config_defaults()
    if field not in defaults:
        raise KeyError(f"the train command has no flag for {field!r}")
    flag = flag_of(field)
    if not isinstance(defaults[field], bool):
        return flag
    negative = "--no-" + flag.removeprefix("--")
    return " / ".join((flag, negative)) if value is None else flag if value else negative


def form_configs(preset_name: str, values: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with the form's ``values`` (config field -> value) set, as the CLI sets
    its flags; a bad value or combination raises the configs' own one-line ValueError."""
    model_config, train_config = preset(preset_name)
    known = {*to_dict(model_config), *to_dict(train_config)}
    unknown = sorted(set(values) - known)
    if unknown:  # with_overrides skips names it does not know; a form field must never vanish that way
        raise KeyError(f"not config fields: {unknown}")
    return with_overrides(model_config, values), with_overrides(train_config, values)


def setting_error(exc: Exception) -> str:
    """A config's ValueError as one line, naming the command-line flag of the field it is about."""
    names = [name for name in getattr(exc, "settings", ()) if name in _config_defaults()]
    return f"{exc}" + (f" (command line: {', '.join(cli_flag(n) for n in names)})" if names else "")


def cli_command(preset_name: str, model_config: ModelConfig, train_config: TrainConfig, *, layout: Layout,
                shown_path: Callable[[Path], str] = str) -> str:
    """The ``train`` command that trains the same recipe as these configs on ``layout``'s data: the
    preset, then a flag for each field that differs from it (``shown_path``: how a page shows a path)."""
    base_model, base_train = preset(preset_name)
    parts = ["python -m nram_core train", *_data_flags(layout, shown_path), f"--preset {preset_name}"]
    for base, chosen in ((base_model, model_config), (base_train, train_config)):
        for name, value in to_dict(chosen).items():
            if name in FROM_DATA or name in RUNTIME_FIELDS or getattr(base, name) == value:
                continue
            if isinstance(value, bool):
                parts.append(cli_flag(name, value))
            else:
                parts.append(f"{cli_flag(name).split(' / ')[0]} {shlex.quote(str(value))}")
    return " ".join(parts)


def _data_flags(layout: Layout, shown_path: Callable[[Path], str]) -> list[str]:
    """``--data ROOT`` for a root holding train/ and dev/ (the demo corpus), else the split folders
    themselves: a root may hold several MIND sizes, which ``--data`` refuses as ambiguous."""
    train, dev = layout.train, layout.dev
    if train is not None and dev is not None and train.name == "train" and dev == train.parent / "dev":
        return [f"--data {shlex.quote(shown_path(train.parent))}"]
    return [f"{flag} {shlex.quote(shown_path(folder))}" for flag, folder in (("--train", train), ("--dev", dev))
            if folder is not None]


# ---- what a run folder says, in words ------------------------------------------------------------
def impressions_text(metrics: dict[str, Any], split: str = "dev") -> str:
    """On how many impressions ``metrics`` were measured, in words.

    >>> impressions_text({"impressions": 3000}), impressions_text({})
    ('3,000 dev impressions', 'an unrecorded number of dev impressions')
    """
    count = metrics.get("impressions")
    if not isinstance(count, int) or isinstance(count, bool):
        return f"an unrecorded number of {split} impressions"
    return f"{count:,} {split} impression" + ("" if count == 1 else "s")


def auc_text(metrics: dict[str, Any], *, split: str = "dev", digits: int = 4) -> str:
    """An AUC with the number of impressions it was measured on; every AUC the app shows says it, since
    one on 1,000 impressions and one on 3,000 are not the same measurement.

    >>> auc_text({"auc": 0.78596, "impressions": 3000})
    'AUC 0.7860 on 3,000 dev impressions'
    """
    auc = metrics.get("auc")
    if not isinstance(auc, (int, float)):
        return "no dev AUC yet"
    return f"AUC {auc:.{digits}f} on {impressions_text(metrics, split)}"


def _dataset_name(data: dict[str, Any]) -> str:
    """The data a run was trained on by name: a generated corpus's scale and seed, the dataset's
    recorded name (the app's label), or for a run recorded before names were, its train folder's
    name (``run_info.dataset_name``; never the machine's path to it)."""
    synthetic = data.get("synthetic")
    if isinstance(synthetic, dict) and synthetic.get("scale"):
        return f"{synthetic['scale']} corpus (seed {synthetic.get('seed', '?')})"
    if isinstance(data.get("dataset"), str) and data["dataset"].strip():
        return data["dataset"].strip()
    if isinstance(data.get("train"), str) and data["train"].strip():
        return dataset_name(Path(data["train"]))
    return "unrecorded data"


def trained_on(data: dict[str, Any], train: dict[str, Any]) -> str:
    """What a run learned from, in words, from its config.json's ``data`` and ``train`` fields.

    >>> trained_on({"train": "/x/demo0/train", "synthetic": {"scale": "demo", "seed": 0}}, {"max_impressions": 1000})
    'demo corpus (seed 0), train split, first 1,000 impressions'
    >>> trained_on({"train": "/data/MINDsmall_train"}, {"max_impressions": 0})
    'MINDsmall_train, train split, all impressions'
    """
    cap = train.get("max_impressions")
    amount = f"first {cap:,} impressions" if isinstance(cap, int) and cap > 0 else "all impressions"
    return f"{_dataset_name(data)}, train split, {amount}"


def variant(model: dict[str, Any]) -> str:
    """Which of the paper's switches a run's model config has on, in a few words.

    >>> variant({"self_attention": False, "residual": True, "use_categories": True})
    'no self-attention + categories'
    >>> variant({"kind": "naml", "use_categories": True})
    'NAML + categories'
    """
    kind = model.get("kind", "nram")
    if kind != "nram":  # another family: NRAM's switches (self-attention, residual) do not apply
        words = [str(kind).upper()]
    else:
        words = ["self-attention" + (" + residual" if model.get("residual") else "")
                 if model.get("self_attention", True) else "no self-attention"]
    if model.get("use_categories"):
        words.append("categories")
    return " + ".join(words)


def run_facts(folder: Path) -> dict[str, Any]:
    """What a run folder says about itself in words: which switches its model has on, what it learned
    from, and its best epoch's dev AUC with the number of impressions it was measured on ({} for a
    folder whose files cannot be read: the runs table already says what it can)."""
    try:
        config, state = read_config(folder), read_state(folder)
        metrics = best_metrics(state) or _suite_metrics(folder)
    except DataError:
        return {}
    return {"dev AUC": metrics.get("auc"), "dev impressions": metrics.get("impressions"),
            "variant": variant(_section(config, "model")),
            "trained on": trained_on(_section(config, "data"), _section(config, "train"))}


def _suite_metrics(folder: Path) -> dict[str, Any]:
    """A suite run's dev metrics: a suite evaluates each run once, after its last epoch, into the
    run's result.json (``experiments.RESULT_FILE``; that package imports torch), not its state.json."""
    path = Path(folder) / "result.json"
    result = read_json(path) if path.is_file() else {}
    metrics = result.get("metrics") if isinstance(result, dict) else None
    return metrics if isinstance(metrics, dict) else {}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A field of config.json that should be an object, or {} (a hand-edited file may say otherwise)."""
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def setting_differences(folder_a: Path, folder_b: Path) -> list[dict[str, str]]:
    """The recipe settings (model and train fields, not how it computed) on which two runs' config.json
    differ, each with its command-line flag; the data they learned from comes first when it differs.
    Raises DataError when a config.json cannot be read."""
    config_a, config_b = read_config(folder_a), read_config(folder_b)
    rows = []
    data_a = trained_on(_section(config_a, "data"), _section(config_a, "train"))
    data_b = trained_on(_section(config_b, "data"), _section(config_b, "train"))
    if data_a != data_b:
        rows.append({"setting": "trained on", "flag": "--data", "A": data_a, "B": data_b})
    for section in ("model", "train"):
        a, b = _section(config_a, section), _section(config_b, section)
        for name in dict.fromkeys([*a, *b]):
            if name in RUNTIME_FIELDS or a.get(name) == b.get(name):
                continue
            flag = ("--model" if name == "kind" else cli_flag(name) if name in _config_defaults()
                    else "(from the data)")
            rows.append({"setting": name, "flag": flag, "A": _shown(a.get(name)), "B": _shown(b.get(name))})
    return rows


def _shown(value: Any) -> str:
    """A config value as a reader reads it: switches as on/off, numbers without float noise, a file
    (GloVe word vectors) by its name, never the machine's path to it.

    >>> _shown(False), _shown(0.003), _shown("/home/ada/glove.6B.300d.txt")
    ('off', '0.003', 'glove.6B.300d.txt')
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PureWindowsPath(value).name  # splits on both separators
    return "–" if value is None else str(value)


# ---- the run as a background job ------------------------------------------------------------------
class _Progress(Callback):
    """Trainer progress -> the job's state; a cancel request -> ``trainer.request_stop()``."""

    def __init__(self, context: JobContext):
        self.context = context

    def on_train_start(self, trainer: Any) -> None:
        self.context.update(status="running", steps_in_epoch=len(trainer.batches), total_steps=trainer.total_steps,
                            samples=trainer.batches.num_samples, precision=trainer.precision)
        if self.context.stop.is_set():
            trainer.request_stop()

    def on_step(self, trainer: Any, info: StepInfo) -> None:
        def record(s: dict[str, Any]) -> None:
            s.update(epoch=info.epoch, step=info.step, global_step=info.global_step,
                     steps_in_epoch=info.steps_in_epoch, samples_per_s=info.samples_per_s)
            s["losses"].append(float(info.loss))
            s["loss_steps"].append(int(info.global_step))
            if len(s["losses"]) > MAX_LOSS_POINTS:  # keep every other point: bounded memory, same shape
                s["losses"], s["loss_steps"] = s["losses"][::2], s["loss_steps"][::2]

        self.context.change(record)
        if self.context.stop.is_set():
            trainer.request_stop()

    def on_epoch_end(self, trainer: Any, info: EpochInfo) -> None:
        record = {"epoch": info.epoch, "train_loss": info.train_loss, "seconds": info.seconds,
                  "improved": info.improved}
        record.update({k: v for k, v in (info.metrics or {}).items() if isinstance(v, (int, float))})
        self.context.change(lambda s: s["epochs_log"].append(record))
        if self.context.stop.is_set():  # a cancel during the dev evaluation: stop before the next epoch
            trainer.request_stop()


def start_training(job: BackgroundJob, *, layout: Layout, model_config: ModelConfig, train_config: TrainConfig,
                   run_dir: Path, data_info: dict[str, Any], label: str, command: str = "") -> str | None:
    """Start a training run into ``run_dir`` (``run_info.create_run_dir``) on ``job``; returns None, or a
    message saying why it cannot start (and then removes ``run_dir`` if it is still empty). ``command``:
    the same run's CLI twin (``cli_command``), shown beside its progress."""

    def work(context: JobContext) -> dict[str, Any] | None:
        from nram_core.train import Trainer, prepare_run  # torch: only once a run starts

        completed = False
        try:
            prepared = prepare_run(layout, model_config, train_config,
                                   on_status=lambda text: context.update(phase=text))
            if context.stop.is_set():
                return None
            trainer = Trainer(**prepared.trainer_args(), run_dir=run_dir, callbacks=[_Progress(context)],
                              data_info=data_info)
            result = trainer.fit()
            completed = not result.cancelled
            return {"epochs_done": result.epochs_done, "best_epoch": result.best_epoch, "metrics": result.metrics,
                    "cancelled": result.cancelled, "stopped_early": result.stopped_early,
                    "global_step": result.global_step}
        finally:
            kept = (run_dir / "state.json").is_file()  # written when an epoch is saved
            context.update(kept=kept)
            if not kept and not completed and run_dir.is_dir():
                shutil.rmtree(run_dir, ignore_errors=True)  # no epoch finished: leave no half run behind

    problem = job.start(work, label=label, state={
        "run_dir": str(run_dir), "epoch": 0, "step": 0, "global_step": 0, "steps_in_epoch": 0, "total_steps": 0,
        "epochs": train_config.epochs, "batch_size": train_config.batch_size, "samples": 0,
        "phase": "loading the data", "samples_per_s": 0.0, "command": command,
        "losses": [], "loss_steps": [], "epochs_log": [], "kept": False})
    if problem and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # made for this start, which did not happen
    return problem
